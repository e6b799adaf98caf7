"""The uplink against the real broker: frames reach central once each, deleted only after PUBACK."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox import Outbox
from edge.uplink import Backoff, MqttConnection, OutboxPublisher
from protocols.messages import (
    CollectorState,
    FrameMessage,
    frames_topic,
    parse_frame_batch,
    parse_status,
    status_topic,
)
from protocols.mqtturl import parse_mqtt_url


class Listener:
    """A plain paho subscriber standing in for central."""

    def __init__(self, url: str, topics: list[str]) -> None:
        broker = parse_mqtt_url(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:10]}")
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector() -> str:
    return f"test-uplink-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def listener(mqtt_url: str, collector: str) -> Iterator[Listener]:
    lst = Listener(mqtt_url, [frames_topic(collector), status_topic(collector)])
    yield lst
    lst.close()
    # Leave no retained status behind on the shared broker.
    cleaner = mqtt.Client(CallbackAPIVersion.VERSION2)
    broker = parse_mqtt_url(mqtt_url)
    if broker.username:
        cleaner.username_pw_set(broker.username, broker.password)
    cleaner.connect(broker.host, broker.port)
    cleaner.loop_start()
    cleaner.publish(status_topic(collector), b"", qos=1, retain=True).wait_for_publish(5)
    cleaner.disconnect()
    cleaner.loop_stop()


def _frames(n: int) -> list[FrameMessage]:
    return [
        FrameMessage(sequence=0, received_at=datetime.now(UTC), port="mbus0", address=str(i % 250), raw="e5")
        for i in range(n)
    ]


async def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_frames_published_in_batches_and_deleted_after_puback(
    tmp_path: Path, mqtt_url: str, collector: str, listener: Listener
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    conn = MqttConnection(collector, parse_mqtt_url(mqtt_url), asyncio.get_running_loop(), keepalive_s=10)
    publisher = OutboxPublisher(collector, outbox, conn, batch_max_frames=40, max_inflight=3)
    await outbox.add(_frames(250))
    assert outbox.depth == 250  # stored before any connection exists
    conn.start()
    task = asyncio.create_task(publisher.run())
    try:
        assert await publisher.drain(15), f"outbox still holds {outbox.depth}"
        def received() -> int:
            return sum(len(parse_frame_batch(p).frames) for p in listener.on(frames_topic(collector)))

        await _wait_for(lambda: received() >= 250)
        batches = [parse_frame_batch(p) for p in listener.on(frames_topic(collector))]
        seqs = [f.sequence for b in batches for f in b.frames]
        assert sorted(seqs) == list(range(1, 251))
        assert len(seqs) == 250  # nothing duplicated on a healthy link
        assert max(len(b.frames) for b in batches) == 40
        assert all(b.collector == collector for b in batches)
        assert publisher.acked_frames == 250
        statuses = [parse_status(p) for p in listener.on(status_topic(collector)) if p]
        assert statuses[0].state is CollectorState.ONLINE
    finally:
        task.cancel()
        await conn.stop(offline=True)
        await outbox.close()
    await _wait_for(lambda: any(
        p and parse_status(p).state is CollectorState.OFFLINE for p in listener.on(status_topic(collector))
    ))


async def test_broker_unreachable_keeps_frames_and_backs_off(tmp_path: Path, collector: str) -> None:
    # A port nobody listens on: the frames must stay in the outbox, the connection keep retrying.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    backoff = Backoff(initial_s=0.05, maximum_s=0.2)
    conn = MqttConnection(collector, parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), asyncio.get_running_loop(),
                          backoff=backoff)
    publisher = OutboxPublisher(collector, outbox, conn)
    await outbox.add(_frames(5))
    conn.start()
    task = asyncio.create_task(publisher.run())
    try:
        await _wait_for(lambda: backoff.attempts >= 3, timeout=5)
        assert outbox.depth == 5
        assert publisher.published_frames == 0
        assert conn.last_error is not None
        assert "cannot connect" in conn.last_error
    finally:
        task.cancel()
        await conn.stop()
        await outbox.close()


def test_backoff_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=1, maximum_s=8, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next() == 1
    jittered = Backoff(initial_s=10, maximum_s=10, jitter=0.5, rng=lambda: 1.0)
    assert jittered.next() == 5.0
