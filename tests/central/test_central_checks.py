"""Meter-function checks on synthetic meter histories fed through the real ingest, and the fault workflow."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from central.checks import REGISTRY, run_collector_checks, run_meter_checks
from central.db import Database
from central.faults import FaultTransitionError, raise_fault, transition
from central.ingest import IngestProcessor
from central.models import Fault, FaultEvent, Meter
from central.site_import import import_site
from protocols.mbus.encode import data_record, rsp_ud_frame
from protocols.messages import (
    CollectorState,
    CollectorStatus,
    FrameBatch,
    FrameMessage,
    FrameStatus,
    encode,
    frames_topic,
    status_topic,
)
from protocols.site import SiteExport

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WATER, HEAT, IDLE, MAIN, HOT = "11110001", "22220002", "33330003", "44440004", "55550005"


def water_frame(
    liters: int, flow_lph: int = 0, *, ident: str = WATER, status: int = 0, info: int = 0
) -> bytes:
    records = [data_record(0x04, 0x13, liters), data_record(0x04, 0x3B, flow_lph)]
    records.append(data_record(0x02, b"\xff\x20", info))  # Kamstrup water info code
    return rsp_ud_frame(1, ident, "KAM", 1, 0x16, 1, status, records)


def heat_frame(kwh: int, volume_cl: int, flow_c: int, return_c: int, clock: datetime | None = None) -> bytes:
    records = [
        data_record(0x04, 0x06, kwh),
        data_record(0x04, 0x14, volume_cl),
        data_record(0x02, 0x59, flow_c * 100),
        data_record(0x02, 0x5D, return_c * 100),
    ]
    if clock is not None:
        records.append(data_record(0x04, 0x6D, clock))
    return rsp_ud_frame(2, HEAT, "KAM", 1, 0x04, 1, 0, records)


def site(*, tenant: str | None = "T-1") -> SiteExport:
    return SiteExport.model_validate(
        {
            "property": {"id": "BRF-CHECK", "name": "Brf Check"},
            "buildings": [{"id": "A", "name": "Hus A"}],
            "apartments": [
                {
                    "object_number": "O1",
                    "number": "1001",
                    "building": "A",
                    "area_m2": "60",
                    "tenant_ref": tenant,
                },
                {"object_number": "O2", "number": "1002", "building": "A", "area_m2": "70"},
            ],
            "meters": [
                {
                    "id": WATER,
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 0x16,
                    "medium": "cold_water",
                    "apartment": "O1",
                    "primary_address": 1,
                },
                {
                    "id": HEAT,
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 4,
                    "medium": "heat",
                    "apartment": "O1",
                    "primary_address": 2,
                },
                {
                    "id": HOT,
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 0x06,
                    "medium": "hot_water",
                    "apartment": "O1",
                    "primary_address": 5,
                },
                {
                    "id": MAIN,
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 0x16,
                    "medium": "cold_water",
                    "apartment": None,
                    "primary_address": 4,
                },
                {
                    "id": IDLE,
                    "manufacturer": "KAM",
                    "version": 1,
                    "device_type": 0x16,
                    "medium": "cold_water",
                    "apartment": "O2",
                    "primary_address": 3,
                },
            ],
        }
    )


class History:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.processor = IngestProcessor(db)
        self.sequence = 0

    async def feed(self, at: datetime, raw: bytes | None, *, address: str | None = None) -> None:
        self.sequence += 1
        frame = FrameMessage(
            sequence=self.sequence,
            received_at=at,
            port="mbus0",
            address=address,
            raw=(raw or b"").hex(),
            status=FrameStatus.OK if raw is not None else FrameStatus.NO_ANSWER,
        )
        batch = FrameBatch(collector="chk-c1", sent_at=at, frames=[frame])
        await self.processor.handle(frames_topic("chk-c1"), encode(batch))

    async def meter_id(self, serial: str) -> int:
        async with self.db.sessions() as session:
            return (await session.execute(select(Meter.id).where(Meter.serial == serial))).scalar_one()

    async def faults(self, rule: str, state: str | None = None) -> list[Fault]:
        async with self.db.sessions() as session:
            query = select(Fault).where(Fault.rule == rule).order_by(Fault.id)
            if state:
                query = query.where(Fault.state == state)
            return list((await session.execute(query)).scalars())

    async def check(self, rule: str, now: datetime, serial: str = WATER, **params: object) -> list[Fault]:
        await run_meter_checks(
            self.db, [await self.meter_id(serial)], now=now, rules=[rule], overrides={rule: params}
        )
        return await self.faults(rule)


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[History]:
    from central.keys import MeterKeyBox

    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'checks.sqlite'}")
    try:
        await import_site(db, site(), MeterKeyBox(tmp_path / "k"))
        yield History(db)
    finally:
        await db.close()


def test_registry_documents_every_rule() -> None:
    import central.checks.rules  # noqa: F401

    expected = {
        "communication_gap",
        "device_status",
        "register_backwards",
        "stuck_register",
        "continuous_flow",
        "spike",
        "heat_sanity",
        "wrong_clock",
        "frame_failures",
        "decryption_failure",
        "collector_offline",
        "collector_alarm",
    }
    assert expected <= set(REGISTRY)
    for r in REGISTRY.values():
        assert len(r.description) > 30, r.name
        assert r.severity in ("info", "warning", "critical")


async def test_communication_gap_opens_once_counts_repeats_and_resolves(history: History) -> None:
    later = datetime.now(UTC) + timedelta(hours=49)
    first = await history.check("communication_gap", later)
    again = await history.check("communication_gap", later + timedelta(hours=1))
    assert len(first) == 1
    assert len(again) == 1
    assert again[0].count == 2
    assert again[0].state == "open"
    await history.feed(later + timedelta(hours=2), water_frame(1000))
    resolved = await history.check("communication_gap", later + timedelta(hours=2))
    assert resolved[0].state == "resolved"
    assert resolved[0].resolved_at == later + timedelta(hours=2)


async def test_device_status_bits_raise_and_clear(history: History) -> None:
    await history.feed(T0, water_frame(1000, status=0x08 | 0x04))
    faults = await history.check("device_status", T0)
    assert faults[0].severity == "critical"
    assert "permanent error" in faults[0].message
    assert "low battery" in faults[0].message
    await history.feed(T0 + timedelta(hours=1), water_frame(1001))
    assert (await history.check("device_status", T0 + timedelta(hours=1)))[0].state == "resolved"


async def test_manufacturer_leak_flag_from_kamstrup_info_code(history: History) -> None:
    await history.feed(T0, water_frame(1000, info=0x0004 | 0x0008))  # leak + burst
    faults = await history.check("device_status", T0)
    assert faults[0].message == "burst, leak"
    assert faults[0].severity == "critical"


async def test_register_backwards_and_rollover(history: History) -> None:
    await history.feed(T0, water_frame(100_000))
    await history.feed(T0 + timedelta(hours=1), water_frame(99_000))
    faults = await history.check("register_backwards", T0 + timedelta(hours=2))
    assert faults[0].severity == "warning"
    assert "100.000 to 99.000" in faults[0].message
    assert "raw_frame_id" in (faults[0].evidence or "")


async def test_rollover_is_reported_as_info(history: History) -> None:
    await history.feed(T0, water_frame(99_999_500))  # 99999.5 m3 on a 5-digit register
    await history.feed(T0 + timedelta(hours=1), water_frame(300))
    faults = await history.check("register_backwards", T0 + timedelta(hours=2))
    assert faults[0].severity == "info"
    assert "rolled over" in faults[0].message


async def test_reset_of_a_meter_near_a_power_of_ten_is_no_rollover(history: History) -> None:
    """A 32-bit register reset from 95.3 m³ to zero: 95.3 is near 100, but no water meter wraps at
    100 m³, so this is a fault; an 8-digit BCD register wraps exactly at its range."""
    from central.checks.rules import register_capacity

    await history.feed(T0, water_frame(95_300))
    await history.feed(T0 + timedelta(hours=1), water_frame(0))
    faults = await history.check("register_backwards", T0 + timedelta(hours=2))
    assert faults[0].severity == "warning"
    assert register_capacity("0c13", Decimal("95.300"), "volume") == Decimal("100000")
    assert register_capacity("0413", Decimal("95.300"), "volume") == Decimal("10000")
    assert register_capacity("0413", Decimal("99999.500"), "volume") == Decimal("100000")


async def test_a_note_that_becomes_a_warning_is_recorded_in_the_history(history: History) -> None:
    await history.feed(T0, water_frame(99_999_500))
    await history.feed(T0 + timedelta(hours=1), water_frame(300))
    assert (await history.check("register_backwards", T0 + timedelta(hours=2)))[0].severity == "info"
    # A week later the rollover is out of the window and the register drops for real.
    await history.feed(T0 + timedelta(days=7, hours=3), water_frame(300))
    await history.feed(T0 + timedelta(days=8), water_frame(200))
    later = T0 + timedelta(days=8, hours=1)
    [fault] = await history.check("register_backwards", later)
    assert fault.severity == "warning"
    async with history.db.sessions() as session:
        query = select(FaultEvent.kind, FaultEvent.at).where(FaultEvent.fault_id == fault.id)
        events = [(kind, at) for kind, at in (await session.execute(query)).all()]
    assert ("escalated", later) in events
    assert fault.first_seen_at == T0 + timedelta(hours=2)  # still the note's


async def test_stuck_register(history: History) -> None:
    for day in range(16):
        await history.feed(T0 + timedelta(days=day), water_frame(5000))
        await history.feed(T0 + timedelta(days=day, minutes=1), heat_frame(1000 + day, 500 + day, 60, 40))
        await history.feed(T0 + timedelta(days=day, minutes=1), water_frame(3000 + 20 * day, ident=HOT))
        await history.feed(T0 + timedelta(days=day, minutes=2), water_frame(7000, ident=IDLE))
    now = T0 + timedelta(days=16)
    faults = await history.check("stuck_register", now)
    assert len(faults) == 1
    assert f"meter {HOT} of the apartment moved" in faults[0].message  # O1 is lived in
    # Nothing moves in O2: it stands empty, which is no meter fault.
    assert len(await history.check("stuck_register", now, serial=IDLE)) == 1
    assert len(await history.check("stuck_register", now, require_tenant=True)) == 1  # O1 has a tenant


async def test_stuck_register_takes_no_evidence_from_a_faulty_meter(history: History) -> None:
    """The hot water meter moves only because it leaks (an open fault): the flat may stand empty."""
    for day in range(16):
        await history.feed(T0 + timedelta(days=day), water_frame(5000))
        await history.feed(T0 + timedelta(days=day, minutes=1), water_frame(3000 + 20 * day, ident=HOT))
    now = T0 + timedelta(days=16)
    [stuck] = await history.check("stuck_register", now)
    assert stuck.state == "open"  # evidence from the moving hot water meter
    async with history.db.sessions.begin() as session:
        await raise_fault(
            session, "device_status", at=now, severity="warning", message="low battery",
            meter_id=await history.meter_id(HOT),
        )  # fmt: skip
    [stuck] = await history.check("stuck_register", now + timedelta(minutes=30))
    assert stuck.state == "open"  # a low battery does not move a register
    async with history.db.sessions.begin() as session:
        await raise_fault(
            session, "continuous_flow", at=now, severity="warning", message="leak",
            meter_id=await history.meter_id(HOT),
        )  # fmt: skip
    [stuck] = await history.check("stuck_register", now + timedelta(hours=1))
    assert stuck.state == "resolved"


async def test_stuck_register_takes_no_evidence_from_after_the_meters_last_reading(history: History) -> None:
    """A meter exchanged while its flat stood empty (a holiday) sends its last reading, unchanged for
    weeks; the people come home afterwards. What the other meter does after the last reading says
    nothing of the silent one (the communication rule's case), so no stuck register."""
    for day in range(16):
        await history.feed(T0 + timedelta(days=day), water_frame(5000))
        await history.feed(T0 + timedelta(days=day, minutes=1), water_frame(3000, ident=HOT))
    for day in range(16, 20):
        await history.feed(T0 + timedelta(days=day, minutes=1), water_frame(3000 + 20 * day, ident=HOT))
    assert await history.check("stuck_register", T0 + timedelta(days=20)) == []


async def test_a_register_run_down_and_standing_is_backwards_not_stuck(history: History) -> None:
    for day in range(18):
        await history.feed(T0 + timedelta(days=day), water_frame(max(0, 40 - 20 * day)))
        await history.feed(T0 + timedelta(days=day, minutes=1), water_frame(3000 + 20 * day, ident=HOT))
    now = T0 + timedelta(days=18)
    assert len(await history.check("register_backwards", T0 + timedelta(days=2, hours=1))) == 1
    assert await history.check("stuck_register", now) == []


async def test_continuous_flow_is_a_leak_unless_flow_stops(history: History) -> None:
    for hour in range(0, 25, 4):
        await history.feed(T0 + timedelta(hours=hour), water_frame(1000 + hour * 10, flow_lph=12))
    faults = await history.check("continuous_flow", T0 + timedelta(hours=24))
    assert len(faults) == 1
    assert "flow never below 0.012" in faults[0].message
    await history.feed(T0 + timedelta(hours=26), water_frame(1300, flow_lph=0))
    assert (await history.check("continuous_flow", T0 + timedelta(hours=26)))[0].state == "resolved"


async def test_spike_beyond_physical_maximum_blocks_billing(history: History) -> None:
    await history.feed(T0, water_frame(1000))
    await history.feed(T0 + timedelta(hours=1), water_frame(101_000))  # 100 m3 in one hour
    faults = await history.check("spike", T0 + timedelta(hours=1))
    assert faults[0].severity == "critical"
    assert faults[0].blocks_billing is True


async def test_heat_sanity_and_wrong_clock(history: History) -> None:
    clock = dt.datetime(2025, 1, 1, 4, 0)  # meter says 04:00 local; received at 00:00 UTC = 01:00 CET
    await history.feed(T0, heat_frame(1000, 500, flow_c=40, return_c=60, clock=clock))
    sanity = await history.check("heat_sanity", T0, serial=HEAT)
    assert "below return temperature" in sanity[0].message
    skew = await history.check("wrong_clock", T0, serial=HEAT)
    assert "off by 120 min" in skew[0].message


async def test_heat_energy_without_volume_needs_more_than_a_summer_tick(history: History) -> None:
    """In summer a radiator circuit barely flows: the energy register's next 1 kWh step can come
    before the volume register's; only several kWh without any volume are a fault."""
    await history.feed(T0, heat_frame(1000, 500, flow_c=40, return_c=30))
    await history.feed(T0 + timedelta(hours=20), heat_frame(1001, 500, flow_c=40, return_c=30))
    assert await history.check("heat_sanity", T0 + timedelta(hours=21), serial=HEAT) == []
    await history.feed(T0 + timedelta(hours=40), heat_frame(1009, 500, flow_c=40, return_c=30))
    [fault] = await history.check("heat_sanity", T0 + timedelta(hours=41), serial=HEAT)
    assert "while volume stood still" in fault.message


async def test_frame_failures_matched_by_bus_address(history: History) -> None:
    for n in range(3):
        await history.feed(T0 + timedelta(minutes=n), None, address="1")
    faults = await history.check("frame_failures", T0 + timedelta(minutes=5))
    assert "3 of 3 frames failed" in faults[0].message


async def test_collector_offline_from_last_will(history: History) -> None:
    status = CollectorStatus(collector="chk-c1", state=CollectorState.OFFLINE, at=T0)
    await history.processor.handle(status_topic("chk-c1"), encode(status))
    await run_collector_checks(history.db, now=T0 + timedelta(minutes=1))
    faults = await history.faults("collector_offline")
    assert faults[0].collector_id == "chk-c1"
    assert faults[0].severity == "critical"


async def test_collector_alarm_opens_from_the_status_and_resolves_when_it_clears(history: History) -> None:
    full = "outbox cannot store frames: database or disk is full (12 frames not stored since start)"
    status = CollectorStatus(collector="chk-c1", state=CollectorState.ONLINE, at=T0, alarms=[full])
    await history.processor.handle(status_topic("chk-c1"), encode(status))
    await run_collector_checks(history.db, now=T0 + timedelta(minutes=1))
    (fault,) = await history.faults("collector_alarm")
    assert (fault.collector_id, fault.state, fault.severity) == ("chk-c1", "open", "warning")
    assert full in fault.message
    cleared = CollectorStatus(collector="chk-c1", state=CollectorState.ONLINE, at=T0 + timedelta(minutes=5))
    await history.processor.handle(status_topic("chk-c1"), encode(cleared))
    await run_collector_checks(history.db, now=T0 + timedelta(minutes=6))
    assert [f.state for f in await history.faults("collector_alarm")] == ["resolved"]


async def test_fault_workflow_transitions_and_history(history: History) -> None:
    await history.feed(T0, water_frame(1000, status=0x10))
    fault = (await history.check("device_status", T0))[0]
    async with history.db.sessions.begin() as session:
        row = await session.get(Fault, fault.id)
        assert row is not None
        await transition(session, row, "acknowledge", actor="anna", at=T0 + timedelta(hours=1))
        with pytest.raises(FaultTransitionError):
            await transition(session, row, "acknowledge", actor="anna", at=T0 + timedelta(hours=1))
        await transition(
            session, row, "resolve", actor="anna", at=T0 + timedelta(hours=2), text="battery swapped"
        )
    # The condition is still there: a new fault opens (the resolved one keeps its history).
    faults = await history.check("device_status", T0 + timedelta(hours=3))
    assert [f.state for f in faults] == ["resolved", "open"]
    async with history.db.sessions() as session:
        kinds = list(
            (
                await session.execute(
                    select(FaultEvent.kind).where(FaultEvent.fault_id == fault.id).order_by(FaultEvent.id)
                )
            ).scalars()
        )
    assert kinds == ["opened", "acknowledged", "resolved"]


@pytest.mark.parametrize(("main_liters", "expected"), [(100_000, 1), (85_000, 0)])
async def test_sum_check_main_meter_against_apartment_meters(
    history: History, main_liters: int, expected: int
) -> None:
    start, end = T0, T0 + timedelta(days=30)
    for at, factor in ((start, 0), (end, 1)):
        await history.feed(at, water_frame(1_000_000 + factor * main_liters, ident=MAIN))
        await history.feed(at, water_frame(10_000 + factor * 40_000, ident=WATER))
        await history.feed(at, water_frame(20_000 + factor * 40_000, ident=IDLE))
    faults = await history.check("sum_check", end, serial=MAIN)
    assert len(faults) == expected
    if expected:
        assert "loss 20.0%" in faults[0].message
        assert faults[0].evidence is not None
        assert '"sub_meters": "80.000"' in faults[0].evidence


async def test_frames_after_removal(history: History) -> None:
    async with history.db.sessions.begin() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == WATER))).scalar_one()
        meter.removed_at = T0
    await history.feed(T0 + timedelta(days=2), water_frame(1000))
    faults = await history.check("after_removal", T0 + timedelta(days=2))
    assert "after removal" in faults[0].message
