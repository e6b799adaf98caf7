"""deploy/backup/backup.sh and restore.sh, round trip against the real local PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "deploy" / "backup" / "backup.sh"
RESTORE = ROOT / "deploy" / "backup" / "restore.sh"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("pg_dump", "pg_restore", "psql", "sha256sum", "tar")),
        reason="pg_dump/pg_restore/psql (apt install postgresql-client), sha256sum or tar missing",
    ),
]

SCHEMA = """
create table reading (
    id bigserial primary key, meter text not null, value numeric(20, 6) not null,
    raw bytea not null, at timestamptz not null default now()
);
create table billing_line (id serial primary key, apartment text, amount numeric(12, 2));
create index reading_meter on reading (meter);
insert into reading (meter, value, raw)
    select 'm' || (g % 7), g * 1.25, decode(md5(g::text), 'hex') from generate_series(1, 500) g;
insert into billing_line (apartment, amount) values ('1101', 1234.56), ('1102', -0.01), ('Lgh 1203', 0);
"""
DUMP_ROWS = [
    "select id, meter, value, encode(raw, 'hex'), at from reading order by id",
    "select id, apartment, amount from billing_line order by id",
]


def _libpq(url: str, database: str) -> str:
    parts = urlsplit(url.replace("+asyncpg", ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))


def _psql(url: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-At", "--dbname", url, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout


@pytest.fixture
def scratch(postgres_url: str) -> Iterator[tuple[str, list[str]]]:
    """An admin libpq URL and a list of database names created by the test, all dropped after."""
    admin = _libpq(postgres_url, urlsplit(postgres_url).path.lstrip("/") or "postgres")
    try:
        _psql(admin, "select 1")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"psql cannot log in to {admin.split('@')[-1]}: {exc}")
    names: list[str] = []
    yield admin, names
    for name in names:
        _psql(admin, f'drop database if exists "{name}" with (force)')


def _run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args], check=False, capture_output=True, text=True, env=env, timeout=60
    )


def test_backup_restore_round_trip(scratch: tuple[str, list[str]], tmp_path: Path) -> None:
    admin, names = scratch
    token = uuid.uuid4().hex[:10]
    source, target = f"imd_bk_src_{token}", f"imd_bk_dst_{token}"
    names += [source, target]
    _psql(admin, f'create database "{source}"')
    source_url = _libpq(admin, source)
    _psql(source_url, SCHEMA)
    before = [_psql(source_url, q) for q in DUMP_ROWS]
    assert before[0].count("\n") == 500

    data_dir = tmp_path / "central"
    (data_dir / "documents" / "2025").mkdir(parents=True)
    (data_dir / "documents" / "2025" / "debiteringsunderlag-1101.pdf").write_bytes(b"%PDF-1.7 fake\n")
    (data_dir / "meter-keys.fernet").write_text("not-in-the-backup\n")
    (data_dir / "token-secret").write_text("not-in-the-backup\n")

    env = {
        **os.environ,
        "IMD_ENV_FILE": str(tmp_path / "absent.env"),
        # the asyncpg URL form from central.env: the script must turn it into a libpq URL
        "IMD_DATABASE_URL": source_url.replace("postgresql://", "postgresql+asyncpg://"),
        "IMD_DATA_DIR": str(data_dir),
        "IMD_BACKUP_DIR": str(tmp_path / "backups"),
        "IMD_BACKUP_KEEP": "2",
    }
    done = _run(BACKUP, env=env)
    assert done.returncode == 0, done.stderr
    set_dir = Path(done.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in set_dir.iterdir()) == ["SHA256SUMS", "data.tar.gz", "database.dump"]
    assert oct(set_dir.stat().st_mode & 0o777) == "0o700"
    listing = subprocess.run(
        ["tar", "-tzf", str(set_dir / "data.tar.gz")], check=True, capture_output=True, text=True
    ).stdout
    assert "./documents/2025/debiteringsunderlag-1101.pdf" in listing
    assert "meter-keys.fernet" not in listing
    assert "token-secret" not in listing

    _psql(admin, f'drop database "{source}" with (force)')
    _psql(admin, f'create database "{target}"')
    target_url = _libpq(admin, target)
    restored_dir = tmp_path / "restored"
    done = _run(
        RESTORE,
        str(set_dir),
        target_url.replace("postgresql://", "postgresql+asyncpg://"),
        str(restored_dir),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert [_psql(target_url, q) for q in DUMP_ROWS] == before
    # the index and the sequence came back too: a new row continues after 500
    assert _psql(target_url, "select indexname from pg_indexes where tablename = 'reading' order by 1") == (
        "reading_meter\nreading_pkey\n"
    )
    assert (
        _psql(target_url, "insert into reading (meter, value, raw) values ('x', 1, '') returning id")
        == "501\n"
    )
    assert (
        restored_dir / "documents" / "2025" / "debiteringsunderlag-1101.pdf"
    ).read_bytes() == b"%PDF-1.7 fake\n"
    assert not (restored_dir / "meter-keys.fernet").exists()

    # a second restore into the now non-empty database is refused and changes nothing
    again = _run(RESTORE, str(set_dir), target_url, env=env)
    assert again.returncode == 1
    assert "restore only into an empty database" in again.stderr
    assert _psql(target_url, "select count(*) from reading") == "501\n"


def test_restore_refuses_a_tampered_set_and_rotation_keeps_the_newest(
    scratch: tuple[str, list[str]], tmp_path: Path
) -> None:
    admin, names = scratch
    token = uuid.uuid4().hex[:10]
    source, target = f"imd_bk_src_{token}", f"imd_bk_dst_{token}"
    names += [source, target]
    _psql(admin, f'create database "{source}"')
    _psql(_libpq(admin, source), "create table t (id int); insert into t values (1)")
    env = {
        **os.environ,
        "IMD_ENV_FILE": str(tmp_path / "absent.env"),
        "IMD_DATABASE_URL": _libpq(admin, source),
        "IMD_DATA_DIR": str(tmp_path / "no-data-dir"),
        "IMD_BACKUP_DIR": str(tmp_path / "backups"),
        "IMD_BACKUP_KEEP": "2",
    }
    sets = []
    for _ in range(3):
        done = _run(BACKUP, env=env)
        assert done.returncode == 0, done.stderr
        sets.append(Path(done.stdout.strip()))
    assert sorted((tmp_path / "backups").iterdir()) == sets[1:]  # the oldest was rotated out

    newest = sets[-1]
    with (newest / "database.dump").open("r+b") as dump:
        dump.seek(200)
        byte = dump.read(1)
        dump.seek(200)
        dump.write(bytes([byte[0] ^ 0xFF]))
    _psql(admin, f'create database "{target}"')
    done = _run(RESTORE, str(newest), _libpq(admin, target), env=env)
    assert done.returncode == 1
    assert "manifest check failed" in done.stderr
    assert _psql(_libpq(admin, target), "select count(*) from pg_tables where schemaname = 'public'") == "0\n"
