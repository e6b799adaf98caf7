"""The bus master over pyserial against the simulator's real pseudo-terminal segment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hwsim.building import SimBuilding, build_building
from hwsim.segment import MbusSegment

from edge.bus import BusError, SerialBus
from protocols.mbus.master import MeterReadout, Send, Timing
from protocols.messages import FrameStatus

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def building() -> SimBuilding:
    return build_building(seed=3, apartments=3)  # 13 meters, primary addresses 1..13


@pytest.fixture
def segment(building: SimBuilding) -> Iterator[MbusSegment]:
    seg = MbusSegment(building.meters)
    seg.start()
    yield seg
    seg.stop()


@pytest.fixture
def bus(segment: MbusSegment) -> Iterator[SerialBus]:
    with SerialBus(segment.port, 2400, retries=1) as serial_bus:
        yield serial_bus


def _meter(building: SimBuilding, model: str):  # type: ignore[no-untyped-def]
    return next(m for m in building.meters if type(m).__name__ == model)


def test_read_by_primary_address(building: SimBuilding, bus: SerialBus) -> None:
    heat = _meter(building, "KamstrupMultical403")
    result = bus.read_meter(heat.primary_address)
    assert result.ok
    (frame,) = result.frames
    assert frame.status is FrameStatus.OK
    assert frame.telegram is not None
    assert frame.telegram.id == f"{heat.ident:08d}"
    assert frame.telegram.manufacturer == "KAM"
    assert any(r.unit == "Wh" or r.quantity == "energy" for r in frame.telegram.records)
    # SND_NKE + REQ_UD2, nothing more on a healthy line
    assert result.requests == 2


def test_multi_telegram_readout_toggles_fcb(building: SimBuilding, bus: SerialBus) -> None:
    abb = _meter(building, "AbbA44")
    assert len(abb.layout) == 2
    result = bus.read_meter(abb.primary_address)
    assert result.ok
    assert len(result.telegrams) == 2
    assert result.telegrams[0].more_records_follow
    assert not result.telegrams[1].more_records_follow
    first, second = (t.raw for t in result.telegrams)
    assert first != second  # the second REQ_UD2 (FCB toggled) fetched the next telegram, not a repeat
    requests = [r for r in result.exchanged if r[:1] == b"\x10" and r[1] & 0x0F == 0x0B]
    assert [bool(r[1] & 0x20) for r in requests] == [True, False]


def test_read_by_secondary_address(building: SimBuilding, bus: SerialBus) -> None:
    water = _meter(building, "DiehlHydrus")
    address = water.secondary_address(datetime.now(UTC))
    result = bus.read_meter(address)
    assert result.ok, result.frames
    assert result.address == address
    assert result.telegrams[0].id == f"{water.ident:08d}"
    assert result.telegrams[0].manufacturer == water.manufacturer


def test_silent_meter_costs_only_its_retry_budget(building: SimBuilding, bus: SerialBus) -> None:
    heat = _meter(building, "KamstrupMultical403")
    assert heat.faults is not None
    heat.faults.inject(heat, "silent", LONG_AGO)
    timing = Timing(2400)
    budget = 2 * timing.answer_window(5)  # retries=1: two SND_NKE attempts
    t0 = time.monotonic()
    result = bus.read_meter(heat.primary_address)
    elapsed = time.monotonic() - t0
    assert [f.status for f in result.frames] == [FrameStatus.NO_ANSWER]
    assert "no answer after 2 attempt" in (result.frames[0].reason or "")
    assert timing.answer_window(5) < 0.25  # EN 13757-2 timing at 2400 baud, not half-second sleeps
    assert elapsed < budget + 0.15
    # the next meter on the bus is read normally right after
    other = _meter(building, "AbbA44")
    assert bus.read_meter(other.primary_address).ok


def test_corrupt_answer_becomes_failed_frame(building: SimBuilding, bus: SerialBus) -> None:
    water = _meter(building, "KamstrupMultical21")
    assert water.faults is not None
    water.faults.inject(water, "checksum", LONG_AGO, probability=1.0)
    result = bus.read_meter(water.primary_address)
    # every answer is corrupt: one failed frame per attempt, with the raw bytes and the reason
    assert result.frames, "a corrupt answer must never be dropped"
    assert all(f.status is FrameStatus.FAILED for f in result.frames)
    assert all(f.raw and "checksum" in (f.reason or "") for f in result.frames)
    assert len(result.frames) == 2  # retries=1
    assert not result.answered


def test_undecodable_frame_is_failed_not_dropped() -> None:
    # A frame whose link layer checks out but whose user data does not decode (CI 72h, truncated header).
    from protocols.mbus.link import req_ud2, rsp_ud

    machine = MeterReadout(5, send_nke=False, retries=0)
    first = machine.start()
    assert isinstance(first, Send)
    assert first.data == req_ud2(5, True)
    done = machine.feed(rsp_ud(5, 0x72, b"\x01\x02"))
    result = done.result  # type: ignore[union-attr]
    (frame,) = result.frames
    assert frame.status is FrameStatus.FAILED
    assert "does not decode" in (frame.reason or "")
    assert frame.raw.startswith(b"\x68")


def test_primary_scan_and_missing_port(building: SimBuilding, bus: SerialBus) -> None:
    found = bus.primary_scan(range(16), attempts=1)
    assert found == sorted(m.primary_address for m in building.meters)
    with pytest.raises(BusError, match="cannot open"), SerialBus("/dev/does-not-exist") as missing:
        missing.read_meter(1)


def test_secondary_search_on_the_pty(building: SimBuilding, segment: MbusSegment) -> None:
    now = datetime.now(UTC)
    # 9600 baud: the same EN 13757-2 windows, shorter in time (the untimed segment ignores the rate).
    with SerialBus(segment.port, 9600) as fast:
        result = fast.secondary_search_result()
    assert set(result.found) == {m.secondary_address(now) for m in building.meters}
    assert len(result.found) == len(building.meters)
