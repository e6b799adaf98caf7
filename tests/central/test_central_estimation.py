"""Estimation: boundary interpolation, long-gap fallbacks in order, replacements, readings untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from central.db import Database
from central.estimation import EstimationLimits, point_consumption, property_consumption
from central.keys import MeterKeyBox
from central.models import Meter, MeterPoint, Reading
from central.site_import import import_site
from protocols.site import SiteExport

T0 = datetime(2025, 3, 1, tzinfo=UTC)
MARCH = (T0, datetime(2025, 4, 1, tzinfo=UTC))
# Apartment object number -> area; every apartment has a cold water meter 1000000N.
AREAS = {"A1": "60", "A2": "62", "A3": "58", "A4": "61", "A5": "120"}


def site() -> SiteExport:
    return SiteExport.model_validate(
        {
            "property": {"id": "BRF-EST", "name": "Brf Est"},
            "buildings": [{"id": "H", "name": "Hus"}],
            "apartments": [
                {"object_number": o, "number": o[1:], "building": "H", "area_m2": a} for o, a in AREAS.items()
            ],
            "meters": [
                {
                    "id": f"1000000{n}",
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 0x16,
                    "medium": "cold_water",
                    "apartment": o,
                    "primary_address": n,
                }
                for n, o in enumerate(AREAS, start=1)
            ],
        }
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'est.sqlite'}")
    try:
        await import_site(database, site(), MeterKeyBox(tmp_path / "k"))
        async with database.sessions.begin() as session:
            for meter in (await session.execute(select(Meter))).scalars():
                meter.installed_at = datetime(2024, 1, 1, tzinfo=UTC)
        yield database
    finally:
        await database.close()


async def add_daily(
    db: Database, serial: str, start: datetime, days: int, per_day: str, *, base: str = "10", hour: int = 12
) -> None:
    """Daily readings at ``hour`` o'clock, growing by ``per_day`` m³ a day."""
    async with db.sessions.begin() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == serial))).scalar_one()
        for d in range(days):
            session.add(
                Reading(
                    meter_id=meter.id,
                    register="0413",
                    read_at=start + timedelta(days=d, hours=hour),
                    quantity="volume",
                    unit="m3",
                    value=Decimal(base) + Decimal(per_day) * d,
                )
            )


async def point_of(db: Database, serial: str) -> MeterPoint:
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == serial))).scalar_one()
        point = await session.get(MeterPoint, meter.meter_point_id)
        assert point is not None
        return point


async def consumption_of(db: Database, serial: str, limits: EstimationLimits | None = None) -> dict:
    point = await point_of(db, serial)
    async with db.sessions() as session:
        result = await point_consumption(session, point, *MARCH, limits or EstimationLimits())
        return result.as_dict()


async def test_boundaries_are_interpolated_between_daily_readings(db: Database) -> None:
    await add_daily(db, "10000001", T0 - timedelta(days=3), 40, "0.100")
    result = await consumption_of(db, "10000001")
    # 0.100 m³/day and readings at noon: the midnight values interpolate exactly; 31 days of use.
    assert result["method"] == "interpolated"
    assert result["estimated"] is False
    assert result["consumption"] == "3.100"
    start = result["segments"][0]["start"]
    assert start["method"] == "interpolated"
    assert start["value"] == "10.250"  # 10 + 0.1 * 2.5 days
    assert len(start["readings"]) == 2


async def test_a_reading_at_the_boundary_is_measured(db: Database) -> None:
    await add_daily(db, "10000001", T0 - timedelta(days=1), 40, "0.100", hour=0)
    result = await consumption_of(db, "10000001")
    assert result["method"] == "measured"
    assert result["consumption"] == "3.100"


async def test_long_gap_uses_same_period_last_year_first(db: Database) -> None:
    await add_daily(db, "10000001", datetime(2024, 2, 25, tzinfo=UTC), 40, "0.200")
    await add_daily(db, "10000001", T0 - timedelta(days=30), 20, "0.100")  # silent from 19 February
    for serial in ("10000002", "10000003", "10000004"):
        await add_daily(db, serial, T0 - timedelta(days=3), 40, "0.100")
    result = await consumption_of(db, "10000001")
    assert result["method"] == "same_period_last_year"
    assert result["estimated"] is True
    assert result["consumption"] == "6.200"  # 31 days at last year's 0.2 m³/day
    assert result["basis"]["consumption"] == "6.200"


async def test_without_last_year_comparable_apartments_per_m2_then_building_average(db: Database) -> None:
    for serial in ("10000002", "10000003", "10000004", "10000005"):
        await add_daily(db, serial, T0 - timedelta(days=3), 40, "0.100")
    result = await consumption_of(db, "10000001")
    # A2..A4 (58-62 m², within 25 % of 60) used 3.1 m³: medians per m² 3.1/61 -> times 60 m².
    assert result["method"] == "comparable_apartments"
    assert result["basis"]["apartments"] == 3
    assert Decimal(result["consumption"]) == (Decimal("3.1") / Decimal(61) * 60).quantize(Decimal("0.001"))
    stricter = await consumption_of(db, "10000001", EstimationLimits(min_comparable=4))
    assert stricter["method"] == "building_average"
    assert stricter["basis"]["apartments"] == 4
    expected = (sum(Decimal("3.1") / Decimal(a) for a in ("62", "58", "61", "120")) / 4 * 60).quantize(
        Decimal("0.001")
    )
    assert Decimal(stricter["consumption"]) == expected
    nothing = await consumption_of(db, "10000001", EstimationLimits(fallbacks=()))
    assert nothing["method"] == "missing"
    assert nothing["consumption"] is None


async def test_short_gap_interpolates_long_gap_does_not(db: Database) -> None:
    # Readings up to 24 February noon, then from 10 March noon: a 14-day gap around 1 March.
    await add_daily(db, "10000001", datetime(2025, 2, 10, tzinfo=UTC), 15, "0.100")
    await add_daily(db, "10000001", datetime(2025, 3, 10, tzinfo=UTC), 25, "0.100", base="13")
    wide = await consumption_of(db, "10000001", EstimationLimits(max_interpolation_gap=timedelta(days=20)))
    assert wide["segments"][0]["start"]["method"] == "interpolated"
    narrow = await consumption_of(db, "10000001", EstimationLimits(fallbacks=()))
    assert narrow["segments"][0]["start"]["method"] == "missing"
    assert narrow["method"] == "missing"


async def test_replacement_adds_old_and_new_meter_on_one_point(db: Database) -> None:
    change = datetime(2025, 3, 16, tzinfo=UTC)
    async with db.sessions.begin() as session:
        old = (await session.execute(select(Meter).where(Meter.serial == "10000001"))).scalar_one()
        old.removed_at = change
        session.add(
            Meter(
                serial="20000001",
                manufacturer="KAM",
                medium="cold_water",
                meter_point_id=old.meter_point_id,
                installed_at=change,
            )
        )
    await add_daily(db, "10000001", T0 - timedelta(days=3), 18, "0.100")  # last at 14 March noon
    async with db.sessions.begin() as session:
        old = (await session.execute(select(Meter).where(Meter.serial == "10000001"))).scalar_one()
        session.add(Reading(meter_id=old.id, register="manual", read_at=change, quantity="volume", unit="m3",
                            value=Decimal("11.900")))  # fmt: skip
    await add_daily(db, "20000001", change, 17, "0.100", base="0", hour=6)
    result = await consumption_of(db, "10000001")
    assert [s["meter"] for s in result["segments"]] == ["10000001", "20000001"]
    old_part, new_part = result["segments"]
    assert old_part["end"]["method"] == "measured"  # the removal reading
    assert old_part["consumption"] == "1.650"  # 10.250 -> 11.900
    assert new_part["start"]["method"] == "installation"  # first reading 6 h after installation
    assert new_part["consumption"] == "1.575"  # 0.000 -> 1.575 (1 April 00:00 between 1.500 and 1.600)
    assert result["consumption"] == "3.225"
    assert result["method"] == "installation"
    assert result["estimated"] is False


async def test_estimates_never_touch_readings(db: Database) -> None:
    for serial in ("10000002", "10000003", "10000004"):
        await add_daily(db, serial, T0 - timedelta(days=3), 40, "0.100")
    async with db.sessions() as session:
        before = (await session.execute(select(func.count()).select_from(Reading))).scalar_one()
        prop_id = (await point_of(db, "10000001")).property_id
        results = await property_consumption(session, prop_id, *MARCH, medium="cold_water")
    methods = {r.apartment.object_number: r.method for r in results if r.apartment}
    assert methods == {
        "A1": "comparable_apartments",
        "A2": "interpolated",
        "A3": "interpolated",
        "A4": "interpolated",
        "A5": "building_average",  # 120 m² has no comparable apartment
    }
    async with db.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Reading))).scalar_one() == before
