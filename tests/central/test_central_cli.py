"""``imd central ...`` commands: config errors name the field, site import and users from the shell."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from central_testdata import site_export
from sqlalchemy import func, select

from central.auth import authenticate
from central.db import Database, sqlite_url
from central.models import Meter
from imd.cli import main


def test_bad_database_url_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["central", "serve", "--data-dir", str(tmp_path), "--database-url", "mysql://x/y"])
    assert code == 2
    assert "database_url" in capsys.readouterr().err


def test_bad_mqtt_url_and_port_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["central", "serve", "--data-dir", str(tmp_path), "--mqtt-url", "http://broker"]) == 2
    assert "mqtt_url" in capsys.readouterr().err
    assert main(["central", "serve", "--data-dir", str(tmp_path), "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_import_site_twice_and_create_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site.json"
    site.write_text(site_export(key="00112233445566778899AABBCCDDEEFF").model_dump_json())
    data = tmp_path / "data"
    assert main(["central", "import-site", str(site), "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["meters_created"] == 4
    assert main(["central", "import-site", str(site), "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["meters_created"] == 0
    assert (data / "meter-keys.fernet").stat().st_mode & 0o077 == 0
    assert b"00112233445566778899" not in (data / "central.sqlite").read_bytes().upper()

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pw\n"))
    assert (
        main(
            ["central", "create-user", "anna", "--role", "staff", "--password-stdin", "--data-dir", str(data)]
        )
        == 0
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1, "property": {}}')
    assert main(["central", "import-site", str(broken), "--data-dir", str(data)]) == 1
    assert "property" in capsys.readouterr().err

    async def check() -> tuple[int, bool, bool]:
        db = await Database.open(sqlite_url(data))
        try:
            async with db.sessions() as session:
                meters = (await session.execute(select(func.count()).select_from(Meter))).scalar_one()
            return (
                meters,
                await authenticate(db, "anna", "s3cret-pw") is not None,
                (await authenticate(db, "anna", "wrong") is not None),
            )
        finally:
            await db.close()

    assert asyncio.run(check()) == (4, True, False)
