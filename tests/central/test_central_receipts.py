"""Central's end-to-end receipts: after the commit, one receipt per collector naming every stored
sequence of the group (new, already stored, and stored raw because decoding failed)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import paho.mqtt.client as mqtt
from central_testdata import corpus_frame
from test_central_ingest_mqtt import count, eventually, frame_batch, publish, publisher

from central.db import Database
from central.ingest import IngestProcessor, MqttIngest
from central.models import RawFrame
from central.receipts import batches_of, committed_sequences
from protocols.messages import IngestReceipt, frames_topic, parse_receipt, receipt_topic


class Receipts:
    """Listens on the collectors' receipt topics, as the collectors do."""

    def __init__(self, client: mqtt.Client, collectors: list[str]) -> None:
        self.got: list[IngestReceipt] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: self.ready.set()
        client.subscribe([(receipt_topic(c), 1) for c in collectors])
        assert self.ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(parse_receipt(bytes(msg.payload)))

    def sequences(self, collector: str) -> set[int]:
        with self.lock:
            return {s for r in self.got if r.collector == collector for s in r.sequences()}


async def test_receipt_names_new_duplicate_and_undecodable_frames_after_commit(
    db: Database, mqtt_url: str
) -> None:
    one, two = f"t-rc-{uuid.uuid4().hex[:8]}", f"t-rc-{uuid.uuid4().hex[:8]}"
    processor = IngestProcessor(db)
    ingest = MqttIngest(processor, mqtt_url, client_id=f"t-central-{one}", collectors=[one, two])
    await ingest.start()
    pub = publisher(mqtt_url)
    try:
        receipts = Receipts(pub, [one, two])
        await ingest.wait_ready()
        good = corpus_frame("kamstrup_multical_601")
        publish(pub, frames_topic(one), frame_batch(one, [(1, good), (2, b"\x68\x00garbage")]))
        await eventually(lambda: _at_least(lambda: receipts.sequences(one), {1, 2}))
        # A redelivery of 1 and 2 with a new 3, and the other collector: all receipted again.
        publish(pub, frames_topic(one), frame_batch(one, [(1, good), (2, b"\x68\x00garbage"), (3, good)]))
        publish(pub, frames_topic(two), frame_batch(two, [(7, good), (9, good)]))
        publish(pub, frames_topic(one), b"\x00not a batch")  # rejected: receipts nothing
        await eventually(lambda: _at_least(lambda: receipts.sequences(one), {1, 2, 3}))
        await eventually(lambda: _at_least(lambda: receipts.sequences(two), {7, 9}))
        await eventually(lambda: _is(ingest.acked, 4))
        assert await count(db, RawFrame) == 5  # every receipted frame is stored
        assert receipts.sequences(one) == {1, 2, 3}
        assert receipts.sequences(two) == {7, 9}
        assert ingest.receipts_sent >= 3
        assert all(r.ranges for r in receipts.got)
    finally:
        pub.loop_stop()
        pub.disconnect()
        await ingest.stop()


def test_sequences_of_committed_batches_by_collector() -> None:
    good = b"\xe5"
    messages = [
        (frames_topic("a"), frame_batch("a", [(1, good), (2, good)])),
        (frames_topic("a"), frame_batch("a", [(2, good), (5, good)])),
        (frames_topic("b"), frame_batch("a", [(8, good)])),  # wrong topic for its collector: rejected
        ("imd/v1/a/status", b"{}"),
        (frames_topic("a"), b"garbage"),
    ]
    assert committed_sequences(batches_of(messages)) == {"a": {1, 2, 5}}


async def _at_least(get: object, expected: set[int]) -> bool:
    return expected <= get()  # type: ignore[operator]


async def _is(value: int, expected: int) -> bool:
    await asyncio.sleep(0)
    return value >= expected
