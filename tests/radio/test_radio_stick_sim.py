"""The simulated receiver sticks (hwsim/radio.py) on real pseudo-terminals, heard by the collector's
listener (edge/radio.py) through pyserial: configuration, encrypted telegrams, RSSI, duplicates,
neighbours, rate limit with status changes, a stalled stick, corrupted frames, and the daemon."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hwsim.building import SimBuilding, build_building
from hwsim.radio import RadioAir, RadioStick

from edge.config import RadioConfig, parse_config
from edge.daemon import Collector
from edge.outbox import Outbox
from edge.radio import Heard, RadioService, StickDriver
from protocols.messages import FrameMessage, FrameStatus, LinkKind

FAST = {"answer_timeout_s": 0.3, "idle_probe_s": 0.4, "backoff_s": (0.1, 0.5)}


@pytest.fixture
def building() -> SimBuilding:
    return build_building(seed=21, apartments=2, radio="imst", neighbours=3, radio_interval_s=0.15)


def _keys(building: SimBuilding) -> dict[str, bytes]:
    return {m.id: bytes.fromhex(m.key) for m in building.site.meters if m.key}


def _ours(building: SimBuilding) -> list[str]:
    return [m.id for m in building.site.meters if m.link == "wmbus"]


@pytest.fixture
def air(building: SimBuilding) -> Iterator[RadioAir]:
    a = RadioAir(building.radio + building.neighbours, seed=building.seed, start_within_s=0.05)
    yield a
    a.stop()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "outbox.sqlite")
    yield box
    await box.close()


async def _until(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _stored(box: Outbox) -> list[FrameMessage]:
    return [item.message() for item in await box.peek(10_000)]


def _service(
    building: SimBuilding, sticks: list[RadioStick], box: Outbox, interval: int = 3600
) -> RadioService:
    ours = _ours(building)
    radios = [
        RadioConfig(name=s.name, port=s.port, type=s.stick, forward_interval_s=interval, meters=ours)  # type: ignore[arg-type]
        for s in sticks
    ]

    async def store(messages: list[FrameMessage]) -> None:
        await box.add(messages, billing=False)

    return RadioService(radios, store, keys=_keys(building), driver_options=FAST)


@pytest.mark.parametrize("kind", ["imst", "amber"])
async def test_listener_configures_stick_and_forwards_our_encrypted_meters(
    kind: str, building: SimBuilding, air: RadioAir, outbox: Outbox
) -> None:
    with RadioStick("radio0", stick=kind, seed=1) as stick:
        air.attach(stick)
        service = _service(building, [stick], outbox)
        await service.start()
        try:
            air.start()
            ours = set(_ours(building))
            neighbours = {f"{m.meter.ident:08d}" for m in building.neighbours}
            await _until(lambda: {e.id for e in service.filter.survey()} == neighbours
                         and service.filter.stats.forwarded == len(ours))  # fmt: skip
            await asyncio.sleep(0.4)  # several more intervals: all rate-limited
            # status change: the battery of one meter runs low -> forwarded at once despite the interval
            low = building.radio[0]
            building.faults.inject(low.meter, "low_battery", air.clock.now() - timedelta(seconds=1), None)
            await _until(lambda: service.filter.stats.status_changes >= 1)
            # the same telegram again (a repeater): dropped by content
            before = service.filter.stats.duplicates
            air.transmit(building.radio[1], repeat=True)
            await _until(lambda: service.filter.stats.duplicates > before)
            await asyncio.sleep(0.05)
        finally:
            await service.stop()
    assert stick.stats.modes_set == ["C1T1"]  # configured on start (after power-up it hears nothing)
    frames = await _stored(outbox)
    first = {m.address: m for m in frames if m.status is FrameStatus.OK}
    assert set(first) == ours
    by_id = {f"{m.meter.ident:08d}": m for m in building.radio}
    for address, m in first.items():
        assert m.link is LinkKind.WMBUS
        assert m.port == "radio0"
        assert m.link_mode == "C1T1"
        assert m.rssi is not None
        assert abs(m.rssi - by_id[address].rssi_dbm) <= 2  # the stick's RSSI, recorded with the frame
        assert m.decoded is not None
        assert m.decoded["decrypted"] is True
    assert {m.decoded["security_mode"] for m in first.values() if m.decoded} == {5, 7}
    per_meter = [m.address for m in frames if m.status is FrameStatus.OK]
    assert per_meter.count(f"{low.meter.ident:08d}") == 2  # first + status change
    assert len(per_meter) == len(ours) + 1  # everything else was rate limited
    stats = service.filter.stats
    assert stats.rate_limited > 0
    assert stats.not_ours > 0
    assert not any(m.address in {e.id for e in service.filter.survey()} for m in frames)
    changed = [m for m in frames if m.address == f"{low.meter.ident:08d}"][-1]
    assert changed.decoded is not None
    assert changed.decoded["status"] & 0x04
    assert "low_battery" in changed.decoded["flags"]
    assert service.telegrams_per_min() > 0
    report = service.report()
    assert report["sticks"][0]["state"] == "stopped"
    assert len(report["heard_not_ours"]) == len(building.neighbours)


async def test_two_sticks_hearing_the_same_telegram_forward_it_once(
    building: SimBuilding, air: RadioAir, outbox: Outbox
) -> None:
    with RadioStick("radio0", stick="imst") as a, RadioStick("radio1", stick="amber") as b:
        air.attach(a)
        air.attach(b, [8] * len(air.meters))  # the second stick is further away
        service = _service(building, [a, b], outbox, interval=1)
        await service.start()
        try:
            await _until(lambda: a.host_opened.is_set() and b.host_opened.is_set())
            await _until(lambda: a.link_mode == "C1T1" and b.link_mode == "C1T1")
            for m in building.radio:
                air.transmit(m)
            await _until(lambda: service.filter.stats.heard >= 2 * len(building.radio))
        finally:
            await service.stop()
    frames = await _stored(outbox)
    assert sorted(m.address or "" for m in frames) == sorted(_ours(building))
    assert service.filter.stats.duplicates == len(building.radio)


async def test_stalled_stick_is_reset_reopened_and_reported(
    building: SimBuilding, air: RadioAir, outbox: Outbox
) -> None:
    with RadioStick("radio0", stick="imst") as stick:
        air.attach(stick)
        service = _service(building, [stick], outbox, interval=1)
        await service.start()
        try:
            air.start()
            await _until(lambda: service.filter.stats.heard > 5)
            driver = service.drivers[0]
            stick.stall()
            t0 = time.monotonic()
            await _until(lambda: bool(service.alarms()))
            alarm = service.alarms()[0]
            await _until(lambda: driver.health.recoveries == 1)
            recovered_after = time.monotonic() - t0
            heard = service.filter.stats.heard
            await _until(lambda: service.filter.stats.heard > heard + 5)
        finally:
            await service.stop()
    assert "radio radio0" in alarm
    assert "stopped answering" in alarm
    health = driver.health
    assert (health.resets, health.reopens, health.recoveries) == (1, 1, 1)
    assert health.error is None
    assert service.alarms() == []
    assert stick.stats.restarts == 1  # the reopen restarted the stalled firmware ...
    assert stick.stats.modes_set == ["C1T1", "C1T1"]  # ... and the listener configured it again
    assert any("answering again" in e for e in health.events)
    assert recovered_after < 3.0
    print(f"stalled stick recovered after {recovered_after:.2f} s")


async def test_corrupted_frames_are_stored_as_failed_and_the_loop_goes_on(
    building: SimBuilding, air: RadioAir, outbox: Outbox
) -> None:
    with RadioStick("radio0", stick="amber", corrupt_rate=1.0, noise_rate=0.5, seed=4) as stick:
        air.attach(stick)
        service = _service(building, [stick], outbox, interval=1)
        service.filter.failed_interval_s = 0.0
        await service.start()
        try:
            await _until(lambda: stick.link_mode == "C1T1")
            for m in building.radio:
                air.transmit(m)
            await _until(lambda: service.filter.stats.failed >= len(building.radio))
            stick.corrupt_rate = 0.0
            for m in building.radio:
                air.transmit(m)
            await _until(lambda: service.filter.stats.forwarded >= len(building.radio))
        finally:
            await service.stop()
    frames = await _stored(outbox)
    failed = [m for m in frames if m.status is FrameStatus.FAILED]
    assert len(failed) == len(building.radio)
    assert all(m.reason and m.address in m.reason for m in failed)
    assert all(m.raw for m in failed)  # the damaged bytes are kept for the record
    assert len([m for m in frames if m.status is FrameStatus.OK]) == len(building.radio)
    assert stick.stats.noise_bursts > 0


def test_rtl_wmbus_lines_from_stdin() -> None:
    got: list[Heard] = []
    telegram = (
        "2e4493157856341233037a2a0020255923c95aaa26d1b2e7493b013ec4a6f6d3529b520edff0ea6defc99d6d69ebf3"
    )
    lines = (
        f"T1;1;1;2019-04-03 19:00:42.000;97;148;88888888;0x{telegram}\n"
        "T1;0;1;2019-04-03 19:00:43.000;97;148;88888888;0x2e44\n"  # CRC error: reported, not delivered
    )
    driver = StickDriver(RadioConfig(name="sdr", port="-", type="rtl", link_mode="T1"), got.append,
                         stdin=io.StringIO(lines))  # fmt: skip
    driver.start()
    deadline = time.monotonic() + 5
    while driver.health.state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.stop()
    assert len(got) == 1
    assert (got[0].rssi, got[0].link_mode, got[0].raw[:2]) == (97, "T1", b"\x2e\x44")
    assert driver.health.frame_errors == 1


async def test_collector_daemon_runs_the_radio_listener(
    tmp_path: Path, mqtt_url: str, building: SimBuilding, air: RadioAir
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{i}={k.hex()}\n" for i, k in _keys(building).items()))
    with RadioStick("radio0", stick="imst") as stick:
        air.attach(stick)
        config = parse_config({
            "collector_id": f"test-radio-{uuid.uuid4().hex[:8]}",
            "data_dir": str(tmp_path),
            "meter_keys_file": str(keys),
            "mqtt": {"url": mqtt_url},
            "radios": [{"name": "radio0", "port": stick.port, "type": "imst", "forward_interval_s": 600,
                        "meters": _ours(building)}],
        })  # fmt: skip
        collector = Collector(config)
        collector.radio_options = {"driver_options": FAST}
        await collector.start()
        try:
            air.start()
            assert collector.radio is not None
            radio = collector.radio
            await _until(lambda: radio.filter.stats.forwarded >= len(_ours(building))
                         and len(radio.filter.survey()) == len(building.neighbours))  # fmt: skip
            status = await collector.status()
            report: dict[str, Any] = await collector.report()
        finally:
            await collector.stop()
    assert status.radio_telegrams_per_min is not None
    assert status.radio_telegrams_per_min > 0
    assert {h.id for h in status.radio_not_ours} == {f"{m.meter.ident:08d}" for m in building.neighbours}
    assert report["radio_listener"]["filter"]["forwarded"] >= len(_ours(building))
