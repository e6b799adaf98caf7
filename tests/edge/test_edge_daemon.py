"""The collector daemon end to end: simulator pty -> master -> outbox -> real broker, plus commands."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hwsim.building import SimBuilding, build_building
from hwsim.segment import MbusSegment
from test_edge_uplink import Listener

from edge.config import parse_config
from edge.daemon import Collector, JitteredCron
from protocols.messages import (
    Command,
    CommandName,
    FrameStatus,
    command_result_topic,
    command_topic,
    encode,
    frames_topic,
    parse_command_result,
    parse_frame_batch,
    parse_status,
    status_topic,
)


@pytest.fixture
def building() -> SimBuilding:
    return build_building(seed=5, apartments=2)  # 9 meters


@pytest.fixture
def segment(building: SimBuilding) -> Iterator[MbusSegment]:
    seg = MbusSegment(building.meters)
    seg.start()
    yield seg
    seg.stop()


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_collector_polls_publishes_and_answers_commands(
    tmp_path: Path, mqtt_url: str, building: SimBuilding, segment: MbusSegment
) -> None:
    collector_id = f"test-daemon-{uuid.uuid4().hex[:8]}"
    meters = [{"primary": m.primary_address} for m in building.meters] + [{"primary": 77}]  # 77: nobody
    config = parse_config({
        "collector_id": collector_id,
        "data_dir": str(tmp_path / "data"),
        "mqtt": {"url": mqtt_url, "keepalive_s": 10},
        "buses": [{"name": "mbus0", "port": segment.port, "retries": 0, "meters": meters}],
        "schedule": {"interval_s": 3600, "heartbeat_s": 3600},
    })
    listener = Listener(mqtt_url, [frames_topic(collector_id), status_topic(collector_id),
                                   command_result_topic(collector_id)])
    collector = Collector(config)
    try:
        await collector.start()
        await collector.schedule()  # interval mode polls at once
        expected = sum(len(m.layout) for m in building.meters) + 1  # + the no_answer record

        def frames() -> list:  # type: ignore[type-arg]
            return [f for p in listener.on(frames_topic(collector_id)) for f in parse_frame_batch(p).frames]

        await _until(lambda: len(frames()) >= expected)
        got = frames()
        assert sorted(f.sequence for f in got) == list(range(1, expected + 1))
        ok = [f for f in got if f.status is FrameStatus.OK]
        assert len(ok) == expected - 1
        assert {f.decoded["id"] for f in ok if f.decoded} == {f"{m.ident:08d}" for m in building.meters}
        (silent,) = [f for f in got if f.status is FrameStatus.NO_ANSWER]
        assert silent.address == "77"
        await _until(lambda: collector.outbox is not None and collector.outbox.depth == 0)

        # heartbeat with health figures
        await collector.publish_status()
        statuses = lambda: [parse_status(p) for p in listener.on(status_topic(collector_id)) if p]  # noqa: E731
        await _until(lambda: any(s.last_polls for s in statuses()))
        status = statuses()[-1]
        assert status.state.value == "online"
        (poll,) = status.last_polls
        assert (poll.meters_read, poll.meters_failed) == (len(building.meters), 1)
        assert status.outbox_depth == 0
        assert status.disk_free_bytes
        assert status.disk_free_bytes > 0
        assert status.version

        # a remote command, answered with its id
        first = building.meters[0].primary_address
        command = Command(id="c-1", command=CommandName.READ_METER, args={"address": first},
                          issued_at=datetime.now(UTC))
        listener.client.publish(command_topic(collector_id), encode(command), qos=1)
        await _until(lambda: listener.on(command_result_topic(collector_id)))
        result = parse_command_result(listener.on(command_result_topic(collector_id))[0])
        assert result.id == "c-1"
        assert result.ok, result.error
        assert result.result["frames"][0]["status"] == "ok"
        assert result.result["frames"][0]["sequence"] == expected + 1

        now = datetime.now(UTC)
        report = await collector.run_command(Command(id="c-2", command=CommandName.REPORT, issued_at=now))
        assert report.ok
        assert "mqtt://" in report.result["broker"]
        sideways = Command(id="c-3", command=CommandName.SCAN, args={"mode": "sideways"}, issued_at=now)
        bad = await collector.run_command(sideways)
        assert not bad.ok
        assert "scan mode" in (bad.error or "")
    finally:
        await collector.stop()
        listener.client.publish(status_topic(collector_id), b"", qos=1, retain=True).wait_for_publish(5)
        listener.close()
    offline = [parse_status(p) for p in listener.on(status_topic(collector_id)) if p]
    assert offline[-1].state.value == "offline"


def test_jittered_cron_and_missed_run() -> None:
    trigger = JitteredCron("0 2 * * *", 1800, timezone="UTC")
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    nxt = trigger.get_next_fire_time(None, now)
    assert nxt == datetime(2024, 3, 11, 2, 30, tzinfo=UTC)
    assert trigger.previous_fire_time(now) == datetime(2024, 3, 10, 2, 30, tzinfo=UTC)
    early = datetime(2024, 3, 10, 2, 10, tzinfo=UTC)  # after 02:00 but before this collector's slot
    assert trigger.previous_fire_time(early) == datetime(2024, 3, 9, 2, 30, tzinfo=UTC)
    assert trigger.get_next_fire_time(nxt, nxt + timedelta(seconds=1)) == nxt + timedelta(days=1)


def test_status_payload_is_json_with_alarms() -> None:
    from protocols.messages import CollectorState, CollectorStatus

    payload = encode(CollectorStatus(collector="x", state=CollectorState.ONLINE, at=datetime.now(UTC),
                                     alarms=["outbox full"]))
    assert json.loads(payload)["alarms"] == ["outbox full"]
