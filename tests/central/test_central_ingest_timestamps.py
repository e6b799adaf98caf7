"""Ingest's fast SQL path stores instants exactly as the ORM binds them, so a query for an instant finds it.

On SQLite timestamps are text: ``2025-03-01 04:00:00`` and ``2025-03-01 04:00:00.000000`` are the
same instant but not the same string, and ``read_at >= <period start>`` compares strings. A reading
taken exactly at a billing boundary (a whole second) must be found by a query for that boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from central_testdata import corpus_frame
from sqlalchemy import func, select, text

from central.db import Database
from central.ingest import IngestProcessor
from central.models import RawFrame, Reading
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic

BOUNDARY = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)  # a whole second: no microseconds to print


async def test_a_reading_at_a_boundary_is_found_by_a_query_for_that_boundary(db: Database) -> None:
    payload = encode(
        FrameBatch(
            collector="ts-c1",
            sent_at=BOUNDARY,
            frames=[
                FrameMessage(
                    sequence=1,
                    received_at=BOUNDARY,
                    port="mbus0",
                    raw=corpus_frame("kamstrup_multical_601").hex(),
                )
            ],
        )
    )
    await IngestProcessor(db).handle_many([(frames_topic("ts-c1"), payload)])
    async with db.sessions() as session:
        stored = (await session.execute(select(func.count()).select_from(Reading))).scalar_one()
        at_boundary = (
            await session.execute(
                select(func.count())
                .select_from(Reading)
                .where(Reading.read_at >= BOUNDARY, Reading.read_at <= BOUNDARY)
            )
        ).scalar_one()
        frames = (
            await session.execute(
                select(func.count()).select_from(RawFrame).where(RawFrame.received_at == BOUNDARY)
            )
        ).scalar_one()
        if db.engine.dialect.name == "sqlite":
            # The ORM's text form, to the microsecond, for every stored reading.
            lengths = set(
                (await session.execute(text("SELECT DISTINCT length(read_at) FROM reading"))).scalars()
            )
            assert lengths == {len("2025-03-01 00:00:00.000000")}
    assert stored > 0
    assert at_boundary == stored
    assert frames == 1


async def test_migration_0005_gives_old_whole_second_rows_the_orm_form(tmp_path: Path) -> None:
    from alembic import command

    from central.db import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite'}"
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0004"))
        # The shapes an old ingest left: one reading in the short form, one with a twin in the long form.
        short, long = "2025-03-01 00:00:00", "2025-03-01 00:00:00.000000"
        async with db.engine.begin() as conn:
            await conn.execute(text("PRAGMA foreign_keys = OFF"))
            rows = [(1, "0403", short), (2, "0403", short), (2, "0403", long)]
            for meter, register, at in rows:
                await conn.execute(
                    text(
                        "INSERT INTO reading (meter_id, register, read_at, quantity, unit, function,"
                        " storage, tariff, subunit, value)"
                        " VALUES (:m, :r, :at, 'energy', 'Wh', 'instantaneous', 0, 0, 0, '1')"
                    ),
                    {"m": meter, "r": register, "at": at},
                )
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
        async with db.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT meter_id, read_at FROM reading ORDER BY id"))).all()
        assert stored == [(1, long), (2, short), (2, long)]  # the twin's partner is left, not deleted
    finally:
        await db.close()
