"""The comparison rules (own history, building median per m²) and the installation-consistency rules,
on simulator histories: a ``hwsim`` property read out daily through the real ingest with faults
injected from its truth log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select

import central.checks.rules  # noqa: F401 - registers the built-in rules
from central.checks import REGISTRY, run_collector_checks, run_meter_checks
from central.db import Database
from central.ingest import IngestProcessor
from central.keys import MeterKeyBox
from central.models import Apartment, Collector, Fault, Meter, MeterPoint, Reading
from central.site_import import import_site
from protocols.messages import encode, frames_topic

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = datetime(2025, 1, 6, 2, 0, tzinfo=UTC)
DAYS = 42
NEW_RULES = (
    "consumption_vs_history",
    "consumption_vs_building",
    "installation_period",
    "double_installation",
    "apartment_without_meter",
)


class SimHistory:
    def __init__(self, db: Database, truth: list[dict], serial_of: dict[str, str]) -> None:
        self.db = db
        self.truth = truth
        self.serial_of = serial_of  # role -> serial

    async def faults(self, rule: str) -> dict[str, Fault]:
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(Fault, Meter.serial).join(Meter, Fault.meter_id == Meter.id).where(Fault.rule == rule)
            )
            return {serial: fault for fault, serial in rows.all()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimHistory]:
    """Six weeks of daily read-outs of an 8-apartment property; a leak on one cold water meter from
    day 32 and a stuck hot water meter from day 30, as the simulator's truth log records them."""
    from hwsim.building import build_building
    from hwsim.fleet import Fleet, FleetProperty

    building = build_building(seed=11, apartments=8, property_id="SIM-CHK")
    fleet = Fleet(seed=11, properties=0)
    prop = FleetProperty(collector="sim-chk", sim=building)
    fleet.properties.append(prop)
    cold = [m for m in building.site.meters if m.medium.value == "cold_water" and m.apartment]
    hot = [m for m in building.site.meters if m.medium.value == "hot_water" and m.apartment]
    leak_serial, stuck_serial = cold[3].id, hot[6].id
    building.faults.inject(int(leak_serial), "leak", START + timedelta(days=32), None, flow_lh=120)
    building.faults.inject(int(stuck_serial), "stuck", START + timedelta(days=30), None)

    directory = tmp_path_factory.mktemp("sim-checks")
    db = await Database.open(f"sqlite+aiosqlite:///{directory / 'c.sqlite'}")
    try:
        await import_site(db, building.site, MeterKeyBox(directory / "k"))
        async with db.sessions.begin() as session:
            for meter in (await session.execute(select(Meter))).scalars():
                meter.installed_at = START - timedelta(days=1)
        processor = IngestProcessor(db)
        for day in range(DAYS):
            for collector, batch in fleet.batches(START + timedelta(days=day), batch_size=200):
                await processor.handle(frames_topic(collector), encode(batch))
        await run_meter_checks(
            db,
            now=START + timedelta(days=DAYS - 1, hours=1),
            rules=["consumption_vs_history", "consumption_vs_building"],
        )
        yield SimHistory(db, list(building.faults.events), {"leak": leak_serial, "stuck": stuck_serial})
    finally:
        await db.close()


async def test_new_rules_are_documented_with_parameters_and_severity() -> None:
    for name in NEW_RULES:
        described = REGISTRY[name].describe()
        assert len(described["description"]) > 80, name
        assert described["severity"] in ("warning", "critical")
    assert REGISTRY["consumption_vs_history"].params["high_factor"] == "4"
    assert REGISTRY["double_installation"].blocks_billing


async def test_truth_log_records_the_injected_faults(sim: SimHistory) -> None:
    kinds = {(e["meter"], e["fault"]) for e in sim.truth if e["event"] == "fault"}
    assert kinds == {(sim.serial_of["leak"], "leak"), (sim.serial_of["stuck"], "stuck")}


async def test_consumption_vs_own_history_finds_the_leak_and_nothing_else(sim: SimHistory) -> None:
    faults = await sim.faults("consumption_vs_history")
    warnings = {s for s, f in faults.items() if f.severity != "info"}
    assert warnings == {sim.serial_of["leak"]}
    leak = faults[sim.serial_of["leak"]]
    evidence = json.loads(leak.evidence or "{}")
    assert Decimal(evidence["consumption"]) > Decimal(evidence["history_median"]) * 4
    # The stuck meter used nothing this week: a note (people travel), not a warning.
    assert faults[sim.serial_of["stuck"]].severity == "info"


async def test_consumption_vs_building_median_per_m2(sim: SimHistory) -> None:
    faults = await sim.faults("consumption_vs_building")
    warnings = {s for s, f in faults.items() if f.severity != "info"}
    assert warnings == {sim.serial_of["leak"]}


@pytest_asyncio.fixture(loop_scope="module")
async def site_db(tmp_path: Path) -> AsyncIterator[Database]:
    """The simulator's site export imported (no readings): the installation register alone."""
    from hwsim.building import build_building

    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite'}")
    try:
        await import_site(
            db, build_building(seed=5, apartments=4, property_id="SIM-INST").site, MeterKeyBox(tmp_path / "k")
        )
        async with db.sessions.begin() as session:
            for meter in (await session.execute(select(Meter))).scalars():
                meter.installed_at = START
        yield db
    finally:
        await db.close()


async def _apartment_meter(db: Database, medium: str, index: int = 0) -> Meter:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Meter)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(Meter.medium == medium, MeterPoint.apartment_id.is_not(None))
            .order_by(Meter.id)
        )
        return list(rows.scalars())[index]


async def _run(db: Database, rule: str, meter: Meter | None = None) -> list[Fault]:
    now = START + timedelta(days=30)
    if REGISTRY[rule].scope == "collector":
        await run_collector_checks(db, now=now)
    else:
        await run_meter_checks(db, None if meter is None else [meter.id], now=now, rules=[rule])
    async with db.sessions() as session:
        return list(
            (await session.execute(select(Fault).where(Fault.rule == rule, Fault.state == "open"))).scalars()
        )


async def test_readings_outside_the_installation_period(site_db: Database) -> None:
    meter = await _apartment_meter(site_db, "cold_water")
    async with site_db.sessions.begin() as session:
        for at, value in ((START - timedelta(hours=6), "1.000"), (START + timedelta(days=2), "1.500")):
            session.add(
                Reading(
                    meter_id=meter.id,
                    register="0413",
                    read_at=at,
                    quantity="volume",
                    unit="m3",
                    value=Decimal(value),
                )
            )
    assert await _run(site_db, "installation_period", meter) == []  # within the day of installation
    async with site_db.sessions.begin() as session:
        session.add(
            Reading(
                meter_id=meter.id,
                register="0413",
                read_at=START - timedelta(days=5),
                quantity="volume",
                unit="m3",
                value=Decimal("0.500"),
            )
        )
    faults = await _run(site_db, "installation_period", meter)
    assert len(faults) == 1
    assert faults[0].blocks_billing
    assert '"readings": 1' in (faults[0].evidence or "")


async def test_one_meter_on_two_apartments_or_two_meters_on_one_point(site_db: Database) -> None:
    first = await _apartment_meter(site_db, "cold_water", 0)
    other = await _apartment_meter(site_db, "cold_water", 1)
    assert await _run(site_db, "double_installation", first) == []
    async with site_db.sessions.begin() as session:
        # The same identification number registered again (other manufacturer code) on another flat.
        session.add(
            Meter(
                serial=first.serial,
                manufacturer="XYZ",
                medium="cold_water",
                meter_point_id=other.meter_point_id,
                installed_at=START + timedelta(days=3),
            )
        )
    faults = await _run(site_db, "double_installation", first)
    assert len(faults) == 1
    assert faults[0].severity == "critical"
    assert "also on apartment" in faults[0].message
    async with site_db.sessions.begin() as session:
        twin = (await session.execute(select(Meter).where(Meter.manufacturer == "XYZ"))).scalar_one()
        twin.installed_at = START + timedelta(days=40)  # after the first one's ... no: first is never removed
        first_row = await session.get(Meter, first.id)
        assert first_row is not None
        first_row.removed_at = START + timedelta(days=20)  # moved: removed before the other installation
    assert await _run(site_db, "double_installation", first) == []
    # A replacement whose old meter was never marked removed: two meters on one point.
    async with site_db.sessions.begin() as session:
        session.add(
            Meter(
                serial="99000001",
                manufacturer="KAM",
                medium="cold_water",
                meter_point_id=other.meter_point_id,
                installed_at=START + timedelta(days=10),
            )
        )
    faults = await _run(site_db, "double_installation", other)
    assert len(faults) == 1
    assert "same meter point" in faults[0].message


async def test_apartment_without_a_meter_for_a_billed_medium(site_db: Database) -> None:
    async with site_db.sessions.begin() as session:
        prop_id = (await session.execute(select(Apartment.property_id))).scalars().first()
        session.add(Collector(id="inst-c1", property_id=prop_id, state="online"))
    assert await _run(site_db, "apartment_without_meter") == []
    victim = await _apartment_meter(site_db, "hot_water", 2)
    async with site_db.sessions.begin() as session:
        row = await session.get(Meter, victim.id)
        assert row is not None
        row.removed_at = START + timedelta(days=1)  # removed and no replacement installed
        apartment = (
            await session.execute(
                select(Apartment)
                .join(MeterPoint, MeterPoint.apartment_id == Apartment.id)
                .where(MeterPoint.id == victim.meter_point_id)
            )
        ).scalar_one()
    faults = await _run(site_db, "apartment_without_meter")
    assert len(faults) == 1
    assert faults[0].collector_id == "inst-c1"
    assert f'"apartment": "{apartment.object_number}", "medium": "hot_water"' in (faults[0].evidence or "")


async def test_stuck_electricity_in_an_empty_flat_by_its_standing_load(site_db: Database) -> None:
    """No water moves in an empty flat, so occupancy cannot be shown; a standing load that stops dead
    is still a stuck register. Without an unbroken standing load nothing is reported."""
    steady = await _apartment_meter(site_db, "electricity", 0)
    idle = await _apartment_meter(site_db, "electricity", 1)
    async with site_db.sessions.begin() as session:
        for day in range(30):
            at = START + timedelta(days=day, hours=2)
            value = Decimal(1000 * min(day, 14))  # 1 kWh a day for two weeks, then nothing
            session.add(Reading(meter_id=steady.id, register="0403", read_at=at, quantity="energy", unit="Wh",
                                value=value))  # fmt: skip
            idle_value = Decimal(1000 * min(day // 2, 7))  # moves every other day only
            session.add(Reading(meter_id=idle.id, register="0403", read_at=at, quantity="energy", unit="Wh",
                                value=idle_value))  # fmt: skip
    faults = await _run(site_db, "stuck_register", steady)
    assert len(faults) == 1
    assert "standing load" in faults[0].message
    after_idle = await _run(site_db, "stuck_register", idle)
    assert [f.meter_id for f in after_idle] == [steady.id]  # the idle meter adds nothing


async def test_own_history_jump_shared_by_the_apartment_is_people_not_a_leak(site_db: Database) -> None:
    """A flat empty for weeks gets a tenant: hot and cold water both jump far above their own
    (near-empty) medians. That is a note. A jump of the cold water meter alone is a warning."""
    cold = await _apartment_meter(site_db, "cold_water", 0)
    async with site_db.sessions() as session:
        point = await session.get(MeterPoint, cold.meter_point_id)
        assert point is not None
        hot = (
            await session.execute(
                select(Meter)
                .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                .where(MeterPoint.apartment_id == point.apartment_id, Meter.medium == "hot_water")
            )
        ).scalar_one()
    lone = await _apartment_meter(site_db, "cold_water", 1)
    days = 70
    now = START + timedelta(days=days - 1, hours=1)

    def litres(day: int, quiet: int, busy: int) -> Decimal:  # m³ after ``day`` days
        return Decimal(sum(busy if d >= days - 7 else quiet for d in range(day))) / 1000

    async with site_db.sessions.begin() as session:
        for day in range(days):
            at = START + timedelta(days=day, hours=0)
            for meter, value in (
                (cold, litres(day, 10, 200)),
                (hot, litres(day, 10, 100)),
                (lone, litres(day, 150, 700) + 10),
            ):
                session.add(Reading(meter_id=meter.id, register="0413", read_at=at, quantity="volume",
                                    unit="m3", value=value))  # fmt: skip
    await run_meter_checks(site_db, [cold.id, lone.id], now=now, rules=["consumption_vs_history"])
    async with site_db.sessions() as session:
        faults = {
            f.meter_id: f
            for f in (
                await session.execute(select(Fault).where(Fault.rule == "consumption_vs_history"))
            ).scalars()
        }
    assert faults[cold.id].severity == "info"
    assert f"meter {hot.serial} of the apartment rose alike" in faults[cold.id].message
    assert faults[lone.id].severity == "warning"
