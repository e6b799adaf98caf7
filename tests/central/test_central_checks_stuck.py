"""The stuck-register rule on a simulator history: an 8-apartment property read out daily through the
real ingest from September to late October, checks every three days as the detection benchmark
runs them, faults injected from the simulator's truth log. Each case is one that the detection
benchmark's year-long fleets showed: a leaking meter taken for people living in an empty flat, and a
stuck water meter whose flat's other water meter is silent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
import pytest_asyncio
from sqlalchemy import select

import central.checks.rules  # noqa: F401 - registers the built-in rules
from central.checks import run_meter_checks
from central.db import Database
from central.ingest import IngestProcessor
from central.keys import MeterKeyBox
from central.models import Fault, Meter, Reading
from central.site_import import import_site
from protocols.messages import encode, frames_topic

# The module fixture simulates eight weeks of a building: a few seconds of CPU, more when loaded.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

START = datetime(2025, 9, 1, 2, 0, tzinfo=UTC)
DAYS = 56
SEED = 11
LEAK_DAY = 6
SILENT_DAY = 4
STUCK_DAY = 24


@dataclass
class Autumn:
    db: Database
    truth: list[dict[str, object]]
    idle_hot: str  # hot water meter of the empty flat, whose cold water meter leaks
    leaking_cold: str
    stuck_cold: str  # cold water meter stuck in a lived-in flat whose hot water meter is silent
    silent_hot: str
    electricity: str  # of the stuck meter's flat

    async def faults(self, rule: str) -> dict[str, Fault]:
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(Fault, Meter.serial).join(Meter, Fault.meter_id == Meter.id).where(Fault.rule == rule)
            )
            return {serial: fault for fault, serial in rows.all() if fault.severity != "info"}

    async def grew_on_days(self, serial: str, since: datetime) -> int:
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    select(Reading.read_at, Reading.value)
                    .join(Meter, Reading.meter_id == Meter.id)
                    .where(Meter.serial == serial, Reading.quantity == "volume", Reading.register == "0413")
                    .where(Reading.read_at >= since)
                    .order_by(Reading.read_at)
                )
            ).all()
        return sum(1 for a, b in pairwise(rows) if b[1] > a[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def autumn(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Autumn]:
    from hwsim import climate
    from hwsim.building import build_building
    from hwsim.fleet import Fleet, FleetProperty

    building = build_building(seed=SEED, apartments=8, property_id="SIM-STUCK")
    fleet = Fleet(seed=SEED, properties=0)
    fleet.properties.append(FleetProperty(collector="sim-stuck", sim=building))

    def meter(apartment: object, medium: str) -> int:
        return next(m.ident for m in apartment.meters if m.medium.value == medium)  # type: ignore[attr-defined]

    first = climate.day_index(START.date())
    empty = next(a for a in building.apartments if a.household.occupants == 0)
    lived_in = next(
        a for a in building.apartments if all(a.household.present(d) for d in range(first - 30, first + DAYS))
    )
    leaking, silent, stuck = (
        meter(empty, "cold_water"),
        meter(lived_in, "hot_water"),
        meter(lived_in, "cold_water"),
    )
    building.faults.inject(leaking, "leak", START + timedelta(days=LEAK_DAY), None, flow_lh=3)
    building.faults.inject(silent, "silent", START + timedelta(days=SILENT_DAY), None)
    building.faults.inject(stuck, "stuck", START + timedelta(days=STUCK_DAY), None)

    directory = tmp_path_factory.mktemp("sim-stuck")
    db = await Database.open(f"sqlite+aiosqlite:///{directory / 'c.sqlite'}")
    try:
        await import_site(db, building.site, MeterKeyBox(directory / "k"))
        async with db.sessions.begin() as session:
            for row in (await session.execute(select(Meter))).scalars():
                row.installed_at = START - timedelta(days=40)
        processor = IngestProcessor(db)
        # Five weeks of history first: the electricity evidence compares with the four weeks before.
        for day in range(-35, DAYS):
            at = START + timedelta(days=day)
            for collector, batch in fleet.batches(at, batch_size=200):
                await processor.handle(frames_topic(collector), encode(batch))
            if day >= 0 and day % 3 == 2:
                await run_meter_checks(db, now=at + timedelta(hours=1))
        yield Autumn(
            db,
            [e for e in building.faults.events if e["event"] == "fault"],
            f"{meter(empty, 'hot_water'):08d}",
            f"{leaking:08d}",
            f"{stuck:08d}",
            f"{silent:08d}",
            f"{meter(lived_in, 'electricity'):08d}",
        )
    finally:
        await db.close()


async def test_truth_log_holds_the_injected_faults(autumn: Autumn) -> None:
    assert {(e["meter"], e["fault"]) for e in autumn.truth} == {
        (autumn.leaking_cold, "leak"),
        (autumn.silent_hot, "silent"),
        (autumn.stuck_cold, "stuck"),
    }


async def test_a_leaking_meter_is_no_evidence_that_an_empty_flat_is_lived_in(autumn: Autumn) -> None:
    """The empty flat's cold water meter leaks 3 l/h and grows at every daily read-out; with daily
    read-outs the continuous-flow rule never has its samples, so the meter's own leak flag is what
    says it moves by itself. Its hot water meter stands still, as it should in an empty flat."""
    assert await autumn.grew_on_days(autumn.leaking_cold, START + timedelta(days=LEAK_DAY + 1)) >= 30
    assert await autumn.grew_on_days(autumn.idle_hot, START) == 0
    assert autumn.leaking_cold in await autumn.faults("device_status")  # the leak itself is found
    assert autumn.leaking_cold not in await autumn.faults("continuous_flow")
    assert autumn.idle_hot not in await autumn.faults("stuck_register")


async def test_stuck_water_meter_judged_by_electricity_when_the_other_water_meter_is_silent(
    autumn: Autumn,
) -> None:
    stuck = await autumn.faults("stuck_register")
    assert set(stuck) == {autumn.stuck_cold}
    fault = stuck[autumn.stuck_cold]
    assert fault.state == "open"  # held while the register stands where it stuck
    evidence = json.loads(fault.evidence or "{}")
    assert evidence["occupied_evidence_meter"] == autumn.electricity
    assert Decimal(evidence["electricity_share"]) >= Decimal("0.8")
    delay = fault.first_seen_at - (START + timedelta(days=STUCK_DAY))
    assert timedelta(days=14) <= delay <= timedelta(days=18)
    assert autumn.silent_hot in await autumn.faults("communication_gap")
