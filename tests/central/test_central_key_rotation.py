"""Meter-key rotation (issue 11, point 6): ``imd central rotate-keys`` re-encrypts every stored key
under a new key file; a crash (SIGKILL) mid-way leaves every key readable, and running it again
finishes the job. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from central.config import Settings
from central.db import Database
from central.keys import MeterKeyBox, rotate_meter_keys
from central.models import Meter, utcnow

REPO = Path(__file__).resolve().parents[2]


def key_of(n: int) -> str:
    return f"{n:02X}" * 16


async def seed(db: Database, box: MeterKeyBox, count: int) -> None:
    async with db.sessions.begin() as session:
        for n in range(count):
            session.add(
                Meter(
                    serial=f"{81000000 + n}",
                    manufacturer="KAM",
                    medium="cold_water",
                    link="wmbus",
                    installed_at=utcnow(),
                    key_encrypted=box.encrypt(key_of(n)) if n % 5 else None,  # every fifth has no key
                )
            )


async def tokens(db: Database) -> dict[str, bytes]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Meter.serial, Meter.key_encrypted).where(Meter.key_encrypted.is_not(None))
        )
        return {serial: token for serial, token in rows.all() if token is not None}


def expected(count: int) -> dict[str, bytes]:
    return {f"{81000000 + n}": bytes.fromhex(key_of(n)) for n in range(count) if n % 5}


def key_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


async def test_rotation_reencrypts_every_key_and_running_processes_follow(
    db: Database, settings: Settings
) -> None:
    key_file = settings.meter_key_file
    running = MeterKeyBox(key_file)  # an API/ingest process started before the rotation
    old_key = key_lines(key_file)[0]
    await seed(db, running, 25)

    report = await rotate_meter_keys(db, key_file, batch=4)

    assert (report.stored_keys, report.rotated, report.unreadable) == (20, 20, 0)
    assert len(key_lines(key_file)) == 1
    new_key = key_lines(key_file)[0]
    assert new_key != old_key
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert report.retired_file is not None
    retired = Path(report.retired_file)
    assert key_lines(retired) == [old_key]
    assert oct(retired.stat().st_mode & 0o777) == "0o600"
    stored = await tokens(db)
    fresh = MeterKeyBox(key_file)
    assert {s: fresh.decrypt(t) for s, t in stored.items()} == expected(25)
    for token in stored.values():  # the old key reads none of them any more
        try:
            Fernet(old_key).decrypt(token)
        except InvalidToken:
            continue
        raise AssertionError("a key is still encrypted with the old key")
    # The process that started before notices the new file: it reads the new tokens and writes new ones.
    assert running.decrypt(stored["81000001"]) == bytes.fromhex(key_of(1))
    assert Fernet(new_key).decrypt(running.encrypt(key_of(99))) == bytes.fromhex(key_of(99))
    assert key_of(1) not in str(report.as_dict())

    again = await rotate_meter_keys(db, key_file, batch=4, keep_retired=False)
    assert again.rotated == 20
    assert again.retired_file is None
    assert {s: MeterKeyBox(key_file).decrypt(t) for s, t in (await tokens(db)).items()} == expected(25)


async def test_a_row_written_with_a_stale_key_during_rotation_is_caught(
    db: Database, settings: Settings
) -> None:
    key_file = settings.meter_key_file
    box = MeterKeyBox(key_file)
    stale = Fernet(key_lines(key_file)[0])  # a process that has not reloaded the file yet
    await seed(db, box, 10)
    written = False

    async def meanwhile(rotated: int) -> None:
        nonlocal written
        if not written:
            written = True
            async with db.sessions.begin() as session:
                meter = (await session.execute(select(Meter).where(Meter.serial == "81000002"))).scalar_one()
                meter.key_encrypted = stale.encrypt(bytes.fromhex(key_of(42)))

    report = await rotate_meter_keys(db, key_file, batch=3, after_batch=meanwhile)
    assert report.passes >= 2
    assert len(key_lines(key_file)) == 1
    want = expected(10) | {"81000002": bytes.fromhex(key_of(42))}
    assert {s: MeterKeyBox(key_file).decrypt(t) for s, t in (await tokens(db)).items()} == want


async def test_an_unreadable_key_is_reported_and_left_alone(db: Database, settings: Settings) -> None:
    key_file = settings.meter_key_file
    box = MeterKeyBox(key_file)
    await seed(db, box, 6)
    foreign = Fernet(Fernet.generate_key()).encrypt(b"\x01" * 16)
    async with db.sessions.begin() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "81000001"))).scalar_one()
        meter.key_encrypted = foreign
    report = await rotate_meter_keys(db, key_file)
    assert report.unreadable == 1
    assert report.rotated == 3  # keys 2, 3 and 4; 1 is the foreign one
    assert (await tokens(db))["81000001"] == foreign


KILLER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from central.db import Database
    from central.keys import rotate_meter_keys

    async def main():
        db = await Database.open(sys.argv[1])
        async def crash(rotated):
            if rotated >= 6:
                os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup: a real crash
        await rotate_meter_keys(db, Path(sys.argv[2]), batch=3, after_batch=crash)

    asyncio.run(main())
    """
)


async def test_sigkill_mid_rotation_leaves_every_key_readable_and_a_rerun_finishes(
    db: Database, settings: Settings
) -> None:
    key_file = settings.meter_key_file
    box = MeterKeyBox(key_file)
    old_key = key_lines(key_file)[0]
    await seed(db, box, 30)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    crashed = subprocess.run(
        [sys.executable, "-c", KILLER, settings.effective_database_url, str(key_file)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]

    lines = key_lines(key_file)
    assert len(lines) == 2  # the new key first, the old one still there
    assert lines[1] == old_key
    stored = await tokens(db)
    assert {s: MeterKeyBox(key_file).decrypt(t) for s, t in stored.items()} == expected(30)
    on_new = sum(1 for t in stored.values() if MeterKeyBox(key_file).primary_decrypts(t))
    assert 6 <= on_new < 24  # really half-way

    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "imd",
            "central",
            "rotate-keys",
            "--data-dir",
            str(settings.data_dir),
            "--database-url",
            settings.effective_database_url,
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    assert '"rotated": 24' in finished.stdout.decode()
    assert "retired" in finished.stderr.decode()
    assert len(key_lines(key_file)) == 1
    assert {s: MeterKeyBox(key_file).decrypt(t) for s, t in (await tokens(db)).items()} == expected(30)
    for n in range(30):  # no key material on the terminal
        assert key_of(n) not in finished.stdout.decode() + finished.stderr.decode()
