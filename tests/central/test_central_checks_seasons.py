"""Rules over the Swedish summer on a simulator history: a 12-apartment property read out daily
through the real ingest from mid-June to late August, when most households leave for 2-4 weeks in
July. Each case first shows that the history holds what once made a rule misfire (evaluated with the
old parameters), then that the rule as it stands stays quiet there and still finds the injected
fault of the simulator's truth log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

import central.checks.rules  # noqa: F401 - registers the built-in rules
from central.checks import REGISTRY, ChunkData, MeterContext
from central.db import Database
from central.ingest import IngestProcessor
from central.keys import MeterKeyBox
from central.models import Apartment, Meter, MeterPoint
from central.site_import import import_site
from protocols.messages import encode, frames_topic

# The module fixture simulates a building through a summer: ~20 s of CPU, more on a loaded machine.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

START = datetime(2025, 6, 12, 2, 0, tzinfo=UTC)
DAYS = 70  # to 20 August
JUDGED_FROM = 19  # 1 July: the rules need a few weeks of history first
SEED = 10


# (rule, parameters) judged after every simulated read-out; "old" are the parameters that misfired.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stuck": ("stuck_register", {}),
    "stuck_old": ("stuck_register", {"min_occupied_days": 1}),
    "building": ("consumption_vs_building", {}),
    "building_old": ("consumption_vs_building", {"high_quantile": 0.5, "exclude_idle_peers": False}),
}


@dataclass
class Summer:
    stuck: str  # serial of the hot water meter injected stuck (truth log) in an occupied flat
    stuck_start: datetime
    away_share: float  # most households away on one day
    first: dict[str, dict[str, datetime]]  # variant -> serial -> first check with a warning


async def _judge(db: Database, now: datetime, first: dict[str, dict[str, datetime]]) -> None:
    """Evaluate every variant as a check run would at ``now``, without raising faults."""
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(Meter, Apartment)
                .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                .join(Apartment, MeterPoint.apartment_id == Apartment.id)
                .order_by(Meter.id)
            )
        ).all()
        chunk = await ChunkData.fetch(session, [m for m, _a in rows], now)
        for variant, (name, overrides) in VARIANTS.items():
            r = REGISTRY[name]
            params: Mapping[str, Any] = {**r.params, **overrides}
            session.info.clear()  # the building rule caches per run
            for meter, apartment in rows:
                if r.media is not None and meter.medium not in r.media:
                    continue
                ctx = MeterContext(session, meter, apartment, now, chunk=chunk)
                finding = await r.evaluate(ctx, params)
                if finding is not None and finding.severity != "info":
                    first[variant].setdefault(meter.serial, now)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def summer(tmp_path_factory: pytest.TempPathFactory) -> Summer:
    from hwsim.building import build_building
    from hwsim.consumption import Household
    from hwsim.fleet import Fleet, FleetProperty

    building = build_building(seed=SEED, apartments=12, property_id="SIM-SUMMER")
    fleet = Fleet(seed=SEED, properties=0)
    fleet.properties.append(FleetProperty(collector="sim-summer", sim=building))

    def day_index(at: datetime) -> int:
        from hwsim import climate

        return climate.day_index(climate.local(at).date())

    def present_throughout(household: Household, start: datetime, days: int) -> bool:
        first = day_index(start)
        return all(household.present(d) for d in range(first, first + days))

    # A stuck hot water meter from 1 August in a flat whose people are at home for the next weeks.
    stuck_start = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)
    candidates = [
        m
        for a in building.apartments
        if present_throughout(a.household, stuck_start, 22)
        for m in a.meters
        if m.medium.value == "hot_water"
    ]
    assert candidates, "no household at home in August in this simulated property"
    stuck = candidates[0]
    building.faults.inject(stuck.ident, "stuck", stuck_start, None)
    truth = [e for e in building.faults.events if e["event"] == "fault"]
    assert [(e["meter"], e["fault"]) for e in truth] == [(f"{stuck.ident:08d}", "stuck")]

    july = range(day_index(datetime(2025, 7, 1, tzinfo=UTC)), day_index(datetime(2025, 8, 1, tzinfo=UTC)))
    households = [a.household for a in building.apartments if a.household.occupants]
    away_share = max(sum(1 for h in households if h.away(d)) for d in july) / len(households)

    directory = tmp_path_factory.mktemp("sim-summer")
    db = await Database.open(f"sqlite+aiosqlite:///{directory / 'c.sqlite'}")
    first: dict[str, dict[str, datetime]] = {v: {} for v in VARIANTS}
    try:
        await import_site(db, building.site, MeterKeyBox(directory / "k"))
        async with db.sessions.begin() as session:
            for meter in (await session.execute(select(Meter))).scalars():
                meter.installed_at = START - timedelta(days=1)
        processor = IngestProcessor(db)
        for day in range(DAYS):
            at = START + timedelta(days=day)
            for collector, batch in fleet.batches(at, batch_size=200):
                await processor.handle(frames_topic(collector), encode(batch))
            if day >= JUDGED_FROM:
                await _judge(db, at + timedelta(hours=1), first)
    finally:
        await db.close()
    return Summer(f"{stuck.ident:08d}", stuck_start, away_share, first)


async def test_the_history_has_a_swedish_july(summer: Summer) -> None:
    assert summer.away_share >= 0.4


async def test_stuck_register_not_fooled_by_one_meter_ticking_first_after_a_holiday(summer: Summer) -> None:
    """Back from three weeks away, the 03:00 read-out can show a litre more cold water while the hot
    water register has not ticked yet: with one day of evidence that looked like a hot water meter
    stuck in an occupied flat."""
    old = summer.first["stuck_old"]
    assert set(old) - {summer.stuck}, "the history no longer shows the holiday-return case"
    now = summer.first["stuck"]
    assert set(now) == {summer.stuck}
    delay = now[summer.stuck] - summer.stuck_start
    assert timedelta(days=14) <= delay <= timedelta(days=18)


async def test_building_comparison_not_fooled_by_half_the_building_on_holiday(summer: Summer) -> None:
    """In July the building's median per m² falls towards what empty flats use; measured against the
    median, households at home looked like leaks. Against the upper quartile they do not."""
    assert summer.first["building_old"], "the history no longer shows the holiday median case"
    assert not summer.first["building"]
