"""``load_input`` reads the readings around the instants a run aligns to, not the whole 45-day window:
on a simulator fleet's database it gives the same input, byte for byte, as reading the whole window
(``whole_window=True``), also where the shortcut has to widen or fall back - a gap in the read-outs
at the period's end, a meter read once a week, a tenant moving mid-period, a meter replaced
mid-period, a price change inside the period, a meter without month summaries."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from benchmarks.billing_fleet import PERIOD_FROM, PERIOD_TO, build_database
from central.billing import compute_run
from central.billing.serial import canonical_json
from central.billing.store import load_input
from central.db import Database
from central.models import (
    Apartment,
    BillingPrice,
    BillingSettings,
    Meter,
    MeterPoint,
    Property,
    Reading,
    ReadingMonth,
    Tenancy,
)
from central.reading_months import rebuild

NOW = datetime(2023, 4, 5, tzinfo=UTC)


async def _meter(session: object, prop: Property, medium: str, nth: int) -> Meter:
    rows = (
        (
            await session.execute(  # type: ignore[attr-defined]
                select(Meter)
                .join(MeterPoint, MeterPoint.id == Meter.meter_point_id)
                .where(
                    MeterPoint.property_id == prop.id,
                    MeterPoint.apartment_id.is_not(None),
                    Meter.medium == medium,
                )
                .order_by(Meter.id)
            )
        )
        .scalars()
        .all()
    )
    meter: Meter = rows[nth]
    return meter


async def _edge_cases(db: Database) -> None:
    async with db.sessions.begin() as session:
        first, second = (await session.execute(select(Property).order_by(Property.id))).scalars().all()
        # A gap: nothing read from 29 March to 3 April (the end's neighbours lie 3+ days out).
        gap = await _meter(session, first, "heat", 0)
        await session.execute(
            delete(Reading).where(
                Reading.meter_id == gap.id,
                Reading.read_at >= datetime(2023, 3, 29, tzinfo=UTC),
                Reading.read_at < datetime(2023, 4, 4, tzinfo=UTC),
            )
        )
        # Read once a week.
        weekly = await _meter(session, first, "cold_water", 1)
        for r in (await session.execute(select(Reading).where(Reading.meter_id == weekly.id))).scalars():
            if r.read_at.weekday() != 0:
                await session.delete(r)
        await session.flush()
        # A tenant moving out on the 15th, the next moving in.
        flat = (
            (
                await session.execute(
                    select(Apartment).where(Apartment.property_id == first.id).order_by(Apartment.id)
                )
            )
            .scalars()
            .all()[2]
        )
        for ref, lo, hi in (
            ("T-OLD", date(2020, 1, 1), date(2023, 3, 15)),
            ("T-NEW", date(2023, 3, 15), None),
        ):
            session.add(
                Tenancy(apartment_id=flat.id, tenant_ref=ref, move_in=lo, move_out=hi, updated_at=NOW)
            )
        # A new hot-water price from the 20th.
        price = (
            await session.execute(
                select(BillingPrice).where(
                    BillingPrice.property_id == first.id, BillingPrice.medium == "hot_water"
                )
            )
        ).scalar_one()
        price.valid_to = date(2023, 3, 20)
        session.add(
            BillingPrice(
                property_id=first.id, medium="hot_water", valid_from=date(2023, 3, 20),
                unit_price=Decimal("66.00"), fixed_fee_per_month=Decimal(0),
            )
        )  # fmt: skip
        # An electricity meter replaced on 12 March at 10:00; the new one starts from zero.
        old = await _meter(session, second, "electricity", 0)
        swap = datetime(2023, 3, 12, 10, tzinfo=UTC)
        old.removed_at = swap
        new = Meter(
            serial="99000001", manufacturer=old.manufacturer, medium=old.medium,
            meter_point_id=old.meter_point_id, installed_at=swap,
        )  # fmt: skip
        session.add(new)
        await session.flush()
        olds = (
            (
                await session.execute(
                    select(Reading).where(Reading.meter_id == old.id).order_by(Reading.read_at)
                )
            )
            .scalars()
            .all()
        )
        base = next(r.value for r in olds if r.read_at >= swap)
        for r in olds:
            if r.read_at >= swap:
                session.add(
                    Reading(
                        meter_id=new.id, register=r.register, read_at=r.read_at, quantity=r.quantity,
                        unit=r.unit, function=r.function, storage=r.storage, tariff=r.tariff,
                        subunit=r.subunit, value=r.value - base,
                    )
                )  # fmt: skip
        # The old meter's readings after its removal stay stored (and unusable on it).
        await session.flush()
        await rebuild(session, [gap.id, weekly.id, new.id])
        # A meter whose month summaries are missing: its register comes from the readings.
        bare = await _meter(session, second, "hot_water", 1)
        await session.execute(delete(ReadingMonth).where(ReadingMonth.meter_id == bare.id))


async def _inputs(db: Database) -> list[tuple[bytes, bytes, bytes, bytes, int, int]]:
    out = []
    async with db.sessions() as session:
        props = (await session.execute(select(Property).order_by(Property.id))).scalars().all()
        for prop in props:
            narrow, _ = await load_input(session, prop, PERIOD_FROM, PERIOD_TO)
            wide, _ = await load_input(session, prop, PERIOD_FROM, PERIOD_TO, whole_window=True)
            runs = [compute_run(inp, "R-1", NOW, "test") for inp in (narrow, wide)]
            count = sum(len(i.readings) for p in narrow.meter_points for i in p.installations)
            points = len(narrow.meter_points)
            out.append(
                (canonical_json(narrow), canonical_json(wide), *map(canonical_json, runs), count, points)
            )
    return out


async def _both_fetches(db: Database) -> tuple[dict[int, list[object]], dict[int, list[object]]]:
    from central.billing import store
    from central.billing.store import _billing_registers, _fetch_core, _fetch_sqlite

    chunk, parts = store._SQLITE_CHUNK, store._SQLITE_PARTS

    async with db.sessions() as session:
        meters = (await session.execute(select(Meter))).scalars().all()
        registers = {}
        for prop in (await session.execute(select(Property))).scalars():
            registers.update(await _billing_registers(session, prop.id, meters, PERIOD_FROM, PERIOD_TO))
        conn = await session.connection()
        ranges = [
            (datetime(2023, 2, 20, tzinfo=UTC), datetime(2023, 3, 2, 23, tzinfo=UTC)),
            (datetime(2023, 3, 29, 22, tzinfo=UTC), datetime(2023, 4, 30, tzinfo=UTC)),
        ]
        core = await _fetch_core(conn, registers, ranges)
        sqlite = await _fetch_sqlite(conn, registers, ranges)
        # Every prepared read gives through the driver the rows Core gives.
        prepared = {name: q for name, q in vars(store).items() if isinstance(q, store.Prepared)}
        assert len(prepared) >= 9
        for prop in (await session.execute(select(Property))).scalars():
            for name, q in prepared.items():
                months = name == "_Q_MONTH_REGISTERS"
                params = {
                    "prop": prop.id,
                    "lo": "2023-01" if months else PERIOD_FROM,
                    "hi": "2023-05" if months else PERIOD_TO,
                }
                via_core = [tuple(r) for r in (await conn.execute(q.stmt, params)).all()]
                assert [tuple(r) for r in await q.rows(conn, params)] == via_core, name
                assert via_core or name in ("_Q_FAULTS", "_Q_TENANCIES"), name
        # Small IN lists and one SELECT per statement: the rows still come in time order per meter.
        store._SQLITE_CHUNK, store._SQLITE_PARTS = 3, 1
        try:
            assert dict(await _fetch_sqlite(conn, registers, ranges)) == dict(sqlite)
        finally:
            store._SQLITE_CHUNK, store._SQLITE_PARTS = chunk, parts
        return dict(core), dict(sqlite)


async def _unflushed_changes_are_seen(db: Database) -> None:
    """A change still pending in the session is what the input carries. load_input's reads go past
    the autoflush (connection, driver), so it flushes first itself; today its ``session.get`` of the
    settings flushes as well, so this guards the behaviour, not that one line."""
    async with db.sessions() as session:
        prop = (await session.execute(select(Property).order_by(Property.id))).scalars().first()
        assert prop is not None
        price = (
            await session.execute(
                select(BillingPrice).where(
                    BillingPrice.property_id == prop.id, BillingPrice.medium == "cold_water"
                )
            )
        ).scalar_one()
        # As the endpoint does: the settings loaded before (load_input's get then needs no query).
        assert await session.get(BillingSettings, prop.id) is not None
        price.unit_price = Decimal("99.99")
        inp, _ = await load_input(session, prop, PERIOD_FROM, PERIOD_TO)
        (cold,) = [m for m in inp.media if str(m.medium) == "cold_water"]
        assert [p.unit_price for p in cold.prices] == [Decimal("99.99")]
        await session.rollback()


def test_the_readings_around_the_instants_are_the_whole_windows_cut(tmp_path: Path) -> None:
    path = tmp_path / "central.sqlite"
    asyncio.run(build_database(path, apartments=6, per_property=3, days_around=12, seed=5))

    async def check() -> list[tuple[bytes, bytes, bytes, bytes, int, int]]:
        db = await Database.open(f"sqlite+aiosqlite:///{path}", migrate=False)
        try:
            await _edge_cases(db)
            await _unflushed_changes_are_seen(db)
            core, sqlite = await _both_fetches(db)
            # The SQLite path through the driver reads what the Core path reads, converted alike.
            assert core == sqlite
            assert sum(map(len, core.values())) > 20 * len(core)
            return await _inputs(db)
        finally:
            await db.close()

    results = asyncio.run(check())
    assert len(results) == 2
    for narrow, wide, run_narrow, run_wide, count, points in results:
        assert narrow == wide
        assert run_narrow == run_wide
        assert b'"lines":[{' in run_narrow  # billed, not stopped empty
        # A month of daily read-outs on every point comes down to a few readings per meter.
        assert count < 12 * points
    # The cases are in the inputs: the move, the replacement, the price change.
    assert b"T-OLD" in results[0][0]
    assert b"T-NEW" in results[0][0]
    assert b"99000001" in results[1][0]
    assert b'"unit_price":"66.00"' in results[0][0]


def test_line_rows_written_through_the_driver_are_the_core_inserts_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """``save_run`` on SQLite writes line and link rows through the driver; the stored values and
    their SQLite types are those the Core insert stores."""
    import sqlite3

    from central.billing import store
    from central.billing.prepared import PreparedInsert, execute_insert, prepare_insert

    path = tmp_path / "central.sqlite"
    asyncio.run(build_database(path, apartments=4, per_property=4, days_around=2, seed=7))

    def core_insert(
        dialect: object, table: object, names: tuple[str, ...], rows: list[tuple[object, ...]]
    ) -> PreparedInsert:
        # The same rows through Core's own insert and bind processing (``sql=None``).
        return PreparedInsert(table, None, [dict(zip(names, r, strict=True)) for r in rows])  # type: ignore[arg-type]

    async def save(run_id: str) -> None:
        db = await Database.open(f"sqlite+aiosqlite:///{path}", migrate=False)
        try:
            async with db.sessions() as session:
                prop = (await session.execute(select(Property))).scalar_one()
                inp, ids = await load_input(session, prop, PERIOD_FROM, PERIOD_TO)
                run = compute_run(inp, run_id, NOW, "test")
                await store.save_run(
                    session, prop, run, ids, created_by="test", raw_frames=store.raw_frames_of(inp)
                )
                await session.commit()
        finally:
            await db.close()

    asyncio.run(save("R-DRIVER"))

    async def again() -> None:
        # A row that is there already: SQLAlchemy's IntegrityError, as from the Core insert.
        from sqlalchemy.exc import IntegrityError

        from central.models import BillingLineReading

        db = await Database.open(f"sqlite+aiosqlite:///{path}", migrate=False)
        try:
            async with db.sessions() as session:
                row = (await session.execute(select(BillingLineReading))).scalars().first()
                assert row is not None
                copy = (row.line_id, row.reading_id, row.run_id, None)
                conn = await session.connection()
                names = ("line_id", "reading_id", "run_id", "raw_frame_id")
                duplicate = prepare_insert(conn.dialect, BillingLineReading.__table__, names, [copy])
                with pytest.raises(IntegrityError):
                    await execute_insert(conn, duplicate)
        finally:
            await db.close()

    asyncio.run(again())
    monkeypatch.setattr(store, "prepare_insert", core_insert)
    asyncio.run(save("R-CORE"))
    con = sqlite3.connect(path)
    request.addfinalizer(con.close)
    columns = [
        r[1]
        for r in con.execute("PRAGMA table_info(billing_line)")
        if r[1] not in ("id", "run_id", "line_id")
    ]
    typed = ", ".join(f"{c}, typeof({c})" for c in columns)

    def lines(run_id: str) -> list[tuple[object, ...]]:
        return con.execute(
            f"SELECT {typed} FROM billing_line WHERE run_id = ? ORDER BY object_number, charge, period_from",
            (run_id,),
        ).fetchall()

    def links(run_id: str) -> list[tuple[object, ...]]:
        return con.execute(
            "SELECT reading_id, typeof(reading_id), raw_frame_id, typeof(raw_frame_id) "
            "FROM billing_line_reading WHERE run_id = ? ORDER BY reading_id",
            (run_id,),
        ).fetchall()

    assert len(lines("R-DRIVER")) > 4
    assert lines("R-DRIVER") == lines("R-CORE")
    assert len(links("R-DRIVER")) > 4
    assert links("R-DRIVER") == links("R-CORE")
