"""Ingest stores several MQTT messages per transaction: still idempotent, still ack-after-commit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from central_testdata import corpus_frame
from sqlalchemy import func, select
from test_central_ingest_mqtt import broker_version, eventually, publish, publisher

from central.db import Database
from central.ingest import IngestProcessor, MqttIngest, PreparedGroup, decode_frame, numeric_value
from central.models import Collector, Meter, RawFrame, Reading, RejectedMessage
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic

T0 = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)


def batch(collector: str, frames: list[tuple[int, bytes]], at: datetime = T0) -> bytes:
    return encode(
        FrameBatch(
            collector=collector,
            sent_at=at,
            frames=[FrameMessage(sequence=s, received_at=at, port="mbus0", raw=r.hex()) for s, r in frames],
        )
    )


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_a_group_with_repeats_and_a_bad_message_in_the_middle(db: Database) -> None:
    heat = corpus_frame("kamstrup_multical_601")
    water = corpus_frame("itron_cyble_m-bus_v1.4_water")
    topic = frames_topic("grp-c1")
    first = batch("grp-c1", [(1, heat), (2, water)])
    later = batch("grp-c1", [(3, heat)], at=T0 + timedelta(hours=1))
    processor = IngestProcessor(db)
    group = [
        (topic, first),
        (topic, first),  # redelivered inside the same group
        (topic, b"{broken"),  # malformed, in the middle
        (frames_topic("grp-c2"), first),  # collector mismatch: rejected with the reason
        (topic, later),
    ]
    await processor.handle_many(group)
    heat_numeric = sum(1 for r in decode_frame(heat).records if numeric_value(r.value) is not None)
    water_numeric = sum(1 for r in decode_frame(water).records if numeric_value(r.value) is not None)
    assert await count(db, RawFrame) == 3
    assert await count(db, Reading) == 2 * heat_numeric + water_numeric
    assert await count(db, RejectedMessage) == 2
    assert processor.stats.frames_new == 3
    assert processor.stats.frames_duplicate == 2
    assert processor.stats.readings == 2 * heat_numeric + water_numeric

    # The whole group again (a broker redelivering after a crash): nothing new but the rejects.
    await processor.handle_many(group)
    assert await count(db, RawFrame) == 3
    assert await count(db, Reading) == 2 * heat_numeric + water_numeric
    assert processor.stats.frames_duplicate == 2 + 5
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        collector = await session.get(Collector, "grp-c1")
        values = (
            (await session.execute(select(Reading.value).where(Reading.meter_id == meter.id))).scalars().all()
        )
    assert meter.last_reading_at == T0 + timedelta(hours=1)  # the newest frame of the group
    assert collector is not None
    assert collector.last_sequence == 3
    assert collector.last_seen_at == T0 + timedelta(hours=1)
    expected = {numeric_value(r.value) for r in decode_frame(heat).records} - {None}
    assert set(values) == expected  # exact Decimals, as decoded
    assert all(isinstance(v, Decimal) for v in values)


async def test_out_of_order_frames_in_one_group_keep_the_newest(db: Database) -> None:
    heat = corpus_frame("kamstrup_multical_601")
    topic = frames_topic("grp-c3")
    processor = IngestProcessor(db)
    await processor.handle_many(
        [
            (topic, batch("grp-c3", [(9, heat)], at=T0 + timedelta(hours=2))),
            (topic, batch("grp-c3", [(8, heat)])),
        ]
    )
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        collector = await session.get(Collector, "grp-c3")
    assert meter.last_reading_at == T0 + timedelta(hours=2)
    assert collector is not None
    assert collector.last_sequence == 9


class _DiesAfterCommit(IngestProcessor):
    """Commits the group, then the process 'dies' before the acknowledgement goes out."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.committed = asyncio.Event()

    async def store(self, prepared: PreparedGroup) -> None:
        await super().store(prepared)
        self.committed.set()
        await asyncio.Event().wait()


async def test_crash_between_commit_and_ack_redelivers_and_inserts_nothing(
    db: Database, mqtt_url: str
) -> None:
    version = await asyncio.to_thread(broker_version, mqtt_url)
    if not version.lower().startswith("mosquitto"):
        pytest.skip(f"needs Mosquitto's redelivery of in-flight QoS 1 (broker: {version or 'unknown'})")
    collector = f"t-ack-{uuid.uuid4().hex[:8]}"
    client_id = f"t-central-{collector}"
    dying = _DiesAfterCommit(db)
    first = MqttIngest(dying, mqtt_url, client_id=client_id, collectors=[collector])
    await first.start()
    pub = publisher(mqtt_url)
    second: MqttIngest | None = None
    try:
        await first.wait_ready()
        publish(pub, frames_topic(collector), batch(collector, [(5, corpus_frame("kamstrup_multical_601"))]))
        await asyncio.wait_for(dying.committed.wait(), 10)
        await first.stop()
        assert first.acked == 0
        frames, readings = await count(db, RawFrame), await count(db, Reading)
        assert frames == 1

        processor = IngestProcessor(db)
        second = MqttIngest(processor, mqtt_url, client_id=client_id, collectors=[collector])
        await second.start()
        await eventually(lambda: _at_least(processor.stats.frames_duplicate, 1))
        await eventually(lambda: _at_least(second.acked if second else 0, 1))
        assert processor.stats.frames_new == 0
        assert await count(db, RawFrame) == frames
        assert await count(db, Reading) == readings
    finally:
        pub.loop_stop()
        pub.disconnect()
        if second is not None:
            await second.stop()
        _forget(mqtt_url, client_id)


async def _at_least(value: int, expected: int) -> bool:
    return value >= expected


def _forget(mqtt_url: str, client_id: str) -> None:
    """Drop the test's persistent session on the broker (connect once with a clean session)."""
    import paho.mqtt.client as mqtt

    from protocols.mqtturl import parse_mqtt_url

    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port, keepalive=10)
    client.loop(timeout=1.0)
    client.disconnect()


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
async def test_a_burst_is_stored_once_and_acknowledged_in_order(
    db: Database, mqtt_url: str, pipeline: bool
) -> None:
    """Many messages at once: groups form by themselves; with the pipeline the next group is decoded
    while the previous one is written - either way every frame is stored once, every message acked
    after its commit, and the commits come in receipt order."""
    collector = f"t-burst-{uuid.uuid4().hex[:8]}"
    heat = corpus_frame("kamstrup_multical_601")
    processor = IngestProcessor(db)
    ingest = MqttIngest(
        processor, mqtt_url, client_id=f"t-{collector}", collectors=[collector], pipeline=pipeline
    )
    order: list[bytes] = []
    ingest.on_committed = lambda group, _at: order.extend(payload for _topic, payload in group)
    payloads = [batch(collector, [(n, heat)], at=T0 + timedelta(hours=n)) for n in range(60)]
    await ingest.start()
    pub = publisher(mqtt_url)
    try:
        await ingest.wait_ready()
        for payload in payloads:
            pub.publish(frames_topic(collector), payload, qos=1)
        await eventually(lambda: _at_least(ingest.acked, len(payloads)), timeout=60)
        assert processor.stats.frames_new == len(payloads)
        assert await count(db, RawFrame) == len(payloads)
        assert order == payloads  # the broker delivers in order; commits (and acks) keep it
        async with db.sessions() as session:
            meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        assert meter.last_reading_at == T0 + timedelta(hours=59)
    finally:
        pub.loop_stop()
        pub.disconnect()
        await ingest.stop()
        _forget(mqtt_url, f"t-{collector}")
