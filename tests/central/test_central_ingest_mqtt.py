"""Ingest through a real broker: idempotent redelivery, bad input never stops the loop, ack after commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from central_testdata import corpus_frame
from sqlalchemy import func, select

from central.db import Database
from central.ingest import IngestProcessor, MqttIngest
from central.models import RawFrame, Reading, RejectedMessage
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic
from protocols.mqtturl import parse_mqtt_url


def publisher(mqtt_url: str) -> mqtt.Client:
    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)


def frame_batch(collector: str, frames: list[tuple[int, bytes]]) -> bytes:
    at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    return encode(
        FrameBatch(
            collector=collector,
            sent_at=at,
            frames=[FrameMessage(sequence=s, received_at=at, port="mbus0", raw=r.hex()) for s, r in frames],
        )
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_ingest_over_broker_is_idempotent_and_survives_bad_input(db: Database, mqtt_url: str) -> None:
    collector = f"t-ing-{uuid.uuid4().hex[:8]}"
    processor = IngestProcessor(db)
    ingest = MqttIngest(processor, mqtt_url, client_id=f"t-central-{collector}", collectors=[collector])
    await ingest.start()
    pub = publisher(mqtt_url)
    try:
        await ingest.wait_ready()
        good = corpus_frame("kamstrup_multical_601")
        corrupt = bytearray(corpus_frame("EFE_Engelmann-WaterStar"))
        corrupt[5] ^= 0x01  # C field changed: checksum fails
        payload = frame_batch(collector, [(1, good), (2, bytes(corrupt))])
        publish(pub, frames_topic(collector), payload)
        publish(pub, frames_topic(collector), b"\x00garbage")
        publish(pub, frames_topic(collector), payload)  # redelivered / republished batch
        publish(pub, frames_topic(collector), frame_batch(collector, [(3, good)]))  # the loop still runs
        await eventually(lambda: _is(processor.stats.batches, 3))
        assert await count(db, RawFrame) == 3
        readings = await count(db, Reading)
        # 27 records, 25 numeric; frame 3 repeats frame 1 at the same timestamp: (meter, register, time)
        # is the reading's identity, so it adds nothing.
        assert readings == 25
        assert processor.stats.frames_duplicate == 2
        assert processor.stats.rejected == 1
        async with db.sessions() as session:
            failed = (await session.execute(select(RawFrame).where(RawFrame.sequence == 2))).scalar_one()
            rejected = (await session.execute(select(RejectedMessage))).scalar_one()
        assert failed.status == "failed"
        assert failed.reason
        assert rejected.topic == frames_topic(collector)
        assert "invalid FrameBatch" in rejected.reason
        await eventually(lambda: _is(ingest.acked, 4))
    finally:
        pub.loop_stop()
        pub.disconnect()
        await ingest.stop()


async def _is(value: int, expected: int) -> bool:
    return value >= expected


class _CrashingProcessor(IngestProcessor):
    """Receives the message and 'crashes' before committing: it never returns."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.received = asyncio.Event()

    async def handle(self, topic: str, payload: bytes) -> None:
        self.received.set()
        await asyncio.Event().wait()


def broker_version(mqtt_url: str) -> str:
    """``$SYS/broker/version`` of the broker, or "" when it publishes none within a second."""
    got: list[str] = []
    client = publisher(mqtt_url)
    try:
        client.on_message = lambda _c, _u, msg: got.append(msg.payload.decode(errors="replace"))
        client.subscribe("$SYS/broker/version", qos=0)
        deadline = time.monotonic() + 1.0
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0] if got else ""


async def test_unacknowledged_message_is_redelivered_after_a_crash(db: Database, mqtt_url: str) -> None:
    version = await asyncio.to_thread(broker_version, mqtt_url)
    if not version.lower().startswith("mosquitto"):
        pytest.skip(f"needs Mosquitto's redelivery of in-flight QoS 1 (broker: {version or 'unknown'})")
    collector = f"t-crash-{uuid.uuid4().hex[:8]}"
    client_id = f"t-central-{collector}"
    crashing = _CrashingProcessor(db)
    first = MqttIngest(crashing, mqtt_url, client_id=client_id, collectors=[collector])
    await first.start()
    pub = publisher(mqtt_url)
    try:
        await first.wait_ready()
        publish(
            pub, frames_topic(collector), frame_batch(collector, [(7, corpus_frame("kamstrup_multical_601"))])
        )
        await asyncio.wait_for(crashing.received.wait(), 10)
        await first.stop()  # the process dies: nothing committed, nothing acknowledged
        assert await count(db, RawFrame) == 0

        processor = IngestProcessor(db)
        second = MqttIngest(processor, mqtt_url, client_id=client_id, collectors=[collector])
        await second.start()
        try:
            await eventually(lambda: _is(processor.stats.batches, 1))
            assert await count(db, RawFrame) == 1
        finally:
            await second.stop()
    finally:
        pub.loop_stop()
        pub.disconnect()
