"""The uplink against the real broker: frames reach central once each, deleted only on central's
receipt (or, with ``delete_after="puback"``, on the broker's PUBACK)."""

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
from edge.uplink import Backoff, DeleteAfter, MqttConnection, OutboxPublisher
from protocols.messages import (
    CollectorState,
    FrameMessage,
    encode,
    frames_topic,
    parse_frame_batch,
    parse_status,
    receipt_topic,
    receipts_for,
    status_topic,
)
from protocols.mqtturl import parse_mqtt_url


class Listener:
    """A plain paho subscriber standing in for central; like central it receipts every frames batch
    it gets (``receipts=False``: a central that sends none, or a broker that drops them)."""

    def __init__(self, url: str, topics: list[str], *, receipts: bool = True) -> None:
        broker = parse_mqtt_url(url)
        self.receipts = receipts
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
        if self.receipts and msg.topic.endswith("/frames"):
            batch = parse_frame_batch(bytes(msg.payload))
            sequences = [f.sequence for f in batch.frames]
            for receipt in receipts_for(batch.collector, sequences, datetime.now(UTC)):
                self.client.publish(receipt_topic(batch.collector), encode(receipt), qos=1)

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


@pytest.mark.parametrize("delete_after", ["receipt", "puback"])
async def test_frames_published_in_batches_and_deleted_after_receipt_or_puback(
    tmp_path: Path, mqtt_url: str, collector: str, listener: Listener, delete_after: DeleteAfter
) -> None:
    listener.receipts = delete_after == "receipt"
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    conn = MqttConnection(collector, parse_mqtt_url(mqtt_url), asyncio.get_running_loop(), keepalive_s=10)
    publisher = OutboxPublisher(collector, outbox, conn, batch_max_frames=40, max_inflight=3,
                                delete_after=delete_after)
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
        assert publisher.receipted_frames == (250 if delete_after == "receipt" else 0)
        assert publisher.republished_frames == 0
        statuses = [parse_status(p) for p in listener.on(status_topic(collector)) if p]
        assert statuses[0].state is CollectorState.ONLINE
    finally:
        task.cancel()
        await conn.stop(offline=True)
        await outbox.close()
    await _wait_for(lambda: any(
        p and parse_status(p).state is CollectorState.OFFLINE for p in listener.on(status_topic(collector))
    ))


async def test_receipted_batches_are_not_kept_until_the_receipt_timeout(
    tmp_path: Path, mqtt_url: str, collector: str, listener: Listener
) -> None:
    # The publisher used to keep every published sequence for receipt_timeout_s although central
    # had receipted it: ~28,000 ints at the collector benchmark's 93 frames/s.
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    conn = MqttConnection(collector, parse_mqtt_url(mqtt_url), asyncio.get_running_loop(), keepalive_s=10)
    publisher = OutboxPublisher(collector, outbox, conn, batch_max_frames=40, max_inflight=3)
    await outbox.add(_frames(250))
    conn.start()
    task = asyncio.create_task(publisher.run())
    try:
        await _wait_for(lambda: publisher.receipted_frames == 250)
        await asyncio.sleep(0.2)
        # at most the batch whose PUBACK came after its receipt (that one waits for the timeout)
        assert len(publisher._awaiting) <= 1
        assert publisher.republished_frames == 0
    finally:
        task.cancel()
        await conn.stop(offline=True)
        await outbox.close()


class Clock:
    """The publisher's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_frames_acknowledged_but_never_receipted_are_published_again_after_the_timeout(
    tmp_path: Path, mqtt_url: str, collector: str
) -> None:
    # A central that is subscribed but sends no receipts: what a broker that acknowledged the frames
    # and then dropped them looks like from the collector.
    silent = Listener(mqtt_url, [frames_topic(collector)], receipts=False)
    clock = Clock()
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    conn = MqttConnection(collector, parse_mqtt_url(mqtt_url), asyncio.get_running_loop(), keepalive_s=10,
                          backoff=Backoff(initial_s=0.05, maximum_s=0.2))
    publisher = OutboxPublisher(collector, outbox, conn, batch_max_frames=5, receipt_timeout_s=300,
                                clock=clock)
    await outbox.add(_frames(12))
    conn.start()
    task = asyncio.create_task(publisher.run())

    def received() -> list[int]:
        return [f.sequence for p in silent.on(frames_topic(collector)) for f in parse_frame_batch(p).frames]

    try:
        await _wait_for(lambda: publisher.acked_frames == 12 and len(received()) == 12)
        assert (outbox.depth, outbox.awaiting) == (12, 12)  # the broker's PUBACK deleted nothing
        clock.now += 299  # not yet: nothing goes out twice
        publisher.wake()
        await asyncio.sleep(0.3)
        assert len(received()) == 12
        assert publisher.republished_frames == 0

        # An outage does not count: days pass with the link down, and still nothing is "late". The
        # days pass inside the disconnect callback (on the loop, before the reconnect's callback can
        # run): with a 50 ms backoff, polling for "disconnected" could miss the whole outage.
        publisher_disconnected = conn.on_disconnected
        assert publisher_disconnected is not None

        outages: list[None] = []

        def outage() -> None:
            publisher_disconnected()
            if not outages:  # once: a reconnect that drops again at once reports a second disconnect
                outages.append(None)
                clock.now += 3 * 86400

        conn.on_disconnected = outage
        connects, before = conn.connects, clock.now
        await asyncio.to_thread(conn.client.disconnect)
        # the network thread reconnects after its backoff
        await _wait_for(lambda: conn.connects > connects and conn.connected.is_set())
        conn.on_disconnected = publisher_disconnected
        assert clock.now == before + 3 * 86400  # the days did pass, with the link down
        publisher.wake()
        await asyncio.sleep(0.3)
        assert publisher.republished_frames == 0

        clock.now += 2  # 301 s of link time since the PUBACKs
        publisher.wake()
        await _wait_for(lambda: len(received()) == 24)
        assert publisher.republished_frames == 12
        assert sorted(received()) == sorted(list(range(1, 13)) * 2)  # each frame exactly once more

        # Central's receipt for them at last (the copies) frees the rows.
        (receipt,) = receipts_for(collector, range(1, 13), datetime.now(UTC))
        silent.client.publish(receipt_topic(collector), encode(receipt), qos=1)
        assert await publisher.drain(10), f"outbox still holds {outbox.depth}"
        assert publisher.receipted_frames == 12
        assert outbox.awaiting == 0
    finally:
        task.cancel()
        await conn.stop(offline=False)
        await outbox.close()
        silent.close()


async def test_a_receipt_for_another_collector_or_malformed_frees_nothing(
    tmp_path: Path, mqtt_url: str, collector: str
) -> None:
    silent = Listener(mqtt_url, [frames_topic(collector)], receipts=False)
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    conn = MqttConnection(collector, parse_mqtt_url(mqtt_url), asyncio.get_running_loop(), keepalive_s=10)
    publisher = OutboxPublisher(collector, outbox, conn)
    await outbox.add(_frames(3))
    conn.start()
    task = asyncio.create_task(publisher.run())
    try:
        await _wait_for(lambda: outbox.awaiting == 3)
        (other,) = receipts_for("someone-else", [1, 2, 3], datetime.now(UTC))
        silent.client.publish(receipt_topic(collector), encode(other), qos=1)
        silent.client.publish(receipt_topic(collector), b"{not json", qos=1)
        (mine,) = receipts_for(collector, [2], datetime.now(UTC))
        silent.client.publish(receipt_topic(collector), encode(mine), qos=1)  # in order: after the others
        await _wait_for(lambda: outbox.depth == 2)
        await asyncio.sleep(0.2)
        assert outbox.depth == 2
        assert await outbox.awaiting_receipt() == [1, 3]
    finally:
        task.cancel()
        await conn.stop(offline=False)
        await outbox.close()
        silent.close()


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
