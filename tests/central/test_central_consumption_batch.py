"""A property's consumption read in a few batched queries gives the figures point-by-point reading
gives: gaps shorter and longer than the first narrow window, a missing side, a meter replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from central_testdata import BACKENDS, database_url
from sqlalchemy import select
from test_central_estimation import MARCH, T0, add_daily, site

from central.db import Database
from central.estimation import EstimationLimits, point_consumption, property_consumption
from central.keys import MeterKeyBox
from central.models import Meter, MeterPoint, Property
from central.site_import import import_site


@pytest.fixture(params=BACKENDS)
async def est_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_url(request, tmp_path) as url:
        database = await Database.open(url)
        try:
            await import_site(database, site(), MeterKeyBox(tmp_path / "k"))
            async with database.sessions.begin() as session:
                for meter in (await session.execute(select(Meter))).scalars():
                    meter.installed_at = datetime(2024, 1, 1, tzinfo=UTC)
            yield database
        finally:
            await database.close()


async def test_batched_property_figures_equal_point_by_point(est_db: Database) -> None:
    db = est_db
    before = T0 - timedelta(days=20)
    await add_daily(db, "10000001", before, 60, "0.250")  # readings every day across both boundaries
    await add_daily(db, "10000002", before + timedelta(days=16), 1, "0", base="11.5")  # 4 days before
    await add_daily(db, "10000002", T0 + timedelta(days=3), 1, "0", base="12.250")  # 3 days after
    await add_daily(db, "10000002", T0 + timedelta(days=29), 1, "0", base="20")
    await add_daily(db, "10000002", T0 + timedelta(days=37), 1, "0", base="21")
    await add_daily(db, "10000003", T0 + timedelta(days=5), 40, "0.100", hour=0)  # nothing before start
    await add_daily(db, "10000004", before, 18, "0.300")  # stops 2 days before the start: long gap
    async with db.sessions.begin() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "10000005"))).scalar_one()
        meter.removed_at = datetime(2025, 3, 15, tzinfo=UTC)  # replaced mid-month, no new meter yet
    await add_daily(db, "10000005", before, 60, "1.000")
    limits = EstimationLimits(max_interpolation_gap=timedelta(days=10))
    async with db.sessions() as session:
        prop = (await session.execute(select(Property.id))).scalar_one()
        batched = [r.as_dict() for r in await property_consumption(session, prop, *MARCH, limits)]
    async with db.sessions() as session:
        points = (await session.execute(select(MeterPoint).order_by(MeterPoint.id))).scalars().all()
        one_by_one = [(await point_consumption(session, p, *MARCH, limits)).as_dict() for p in points]
    assert batched == one_by_one
    methods = {r["apartment"]: r["method"] for r in batched}
    # A2's nearest readings lie beyond the first narrow window; A3-A5 need the long-gap estimates.
    assert methods == {"A1": "interpolated", "A2": "interpolated", "A3": "building_average",
                       "A4": "building_average", "A5": "building_average"}  # fmt: skip
