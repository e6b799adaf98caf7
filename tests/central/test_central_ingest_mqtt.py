"""Ingest through a real broker: idempotent redelivery, bad input never stops the loop, ack after commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from central_testdata import corpus_frame
from sqlalchemy import func, select

from central.api.app import create_app
from central.config import Settings
from central.db import Database
from central.ingest import IngestProcessor, MqttIngest, PreparedGroup
from central.models import RawFrame, Reading, RejectedMessage
from protocols.messages import (
    CollectorState,
    CollectorStatus,
    Command,
    CommandResult,
    FrameBatch,
    FrameMessage,
    command_result_topic,
    command_topic,
    encode,
    frames_topic,
    parse_command,
    status_topic,
)
from tests.conftest import mqtt_publisher


def publisher(mqtt_url: str) -> mqtt.Client:
    return mqtt_publisher(mqtt_url, "test-pub")


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

    # MqttIngest prepares (parses, decodes) a group and then stores it: the crash is in the store.
    async def store(self, prepared: PreparedGroup) -> None:
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


async def test_command_goes_out_over_mqtt_and_its_result_comes_back(tmp_path: Path, mqtt_url: str) -> None:
    collector = f"t-cmd-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path,
        mqtt_url=mqtt_url,
        demo=True,
        collectors=(collector,),
        mqtt_client_id=f"t-central-{collector}",
    ).validated()
    app = create_app(settings)
    received: list[Command] = []
    fake_collector = publisher(mqtt_url)

    def on_command(client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        command = parse_command(msg.payload)
        received.append(command)
        result = CommandResult(
            id=command.id, collector=collector, ok=True, result={"meters": 3}, finished_at=datetime.now(UTC)
        )
        client.publish(command_result_topic(collector), encode(result), qos=1)

    fake_collector.on_message = on_command
    fake_collector.subscribe(command_topic(collector), qos=1)
    try:
        async with app.router.lifespan_context(app):
            state = app.state.central
            await state.ingest.wait_ready()
            status = CollectorStatus(collector=collector, state=CollectorState.ONLINE, at=datetime.now(UTC))
            publish(fake_collector, status_topic(collector), encode(status))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                form = {"username": "demo", "password": "demo"}
                token = (await http.post("/api/auth/token", data=form)).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}

                async def collector_known() -> bool:
                    collectors = (await http.get("/api/collectors", headers=headers)).json()
                    return any(c["id"] == collector and c["state"] == "online" for c in collectors)

                await eventually(collector_known)
                sent = await http.post(
                    f"/api/collectors/{collector}/commands", headers=headers, json={"command": "read_all"}
                )
                assert sent.status_code == 202
                command_id = sent.json()["id"]
                bad = await http.post(
                    f"/api/collectors/{collector}/commands",
                    headers=headers,
                    json={"command": "self_destruct"},
                )
                assert bad.status_code == 422

                async def finished() -> bool:
                    rows = (await http.get(f"/api/collectors/{collector}/commands", headers=headers)).json()
                    return bool(rows) and rows[0]["ok"] is True

                await eventually(finished)
                rows = (await http.get(f"/api/collectors/{collector}/commands", headers=headers)).json()
                assert rows[0]["id"] == command_id
                assert rows[0]["result"] == {"meters": 3}
                assert [c.id for c in received] == [command_id]
    finally:
        fake_collector.loop_stop()
        fake_collector.disconnect()
