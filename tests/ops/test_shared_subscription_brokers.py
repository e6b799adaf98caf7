"""The topics and the shared subscription unchanged on another broker (issue 11, point 2): three
ingest workers - each its own MQTT client id and persistent session, all in ``$share/ingest`` - on
one broker take a fleet's batches and their redeliveries between them; every frame is stored once.

The same test runs on a private Mosquitto (always, when Mosquitto is installed) and on EMQX when
``IMD_TEST_EMQX_URL`` names one (``mqtt://user:password@host:1883``; an EMQX 5 with the defaults of
docs/OPERATIONS.md). The broker must carry no other ``$share/ingest`` workers, which would take part
of the messages: a private broker, not the shared one on :1883.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from central.db import Database
from central.ingest import IngestProcessor, MqttIngest
from central.models import RawFrame
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic
from tests.conftest import mqtt_publisher
from tests.reliability.parts import MOSQUITTO, Mosquitto

WORKERS = 3
COLLECTORS = 6
BATCHES = 10  # per collector
FRAMES = 3  # per batch
FRAME = bytes.fromhex(
    "68 1F 1F 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B 13 01 8B 60 04 37 18 02"
    " 18 16".replace(" ", "")
)  # EN 13757-3 example long frame


@pytest.fixture(params=["mosquitto", "emqx"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "emqx":
        url = os.environ.get("IMD_TEST_EMQX_URL")
        if not url:
            pytest.skip("no EMQX here: set IMD_TEST_EMQX_URL=mqtt://user:password@host:1883 to run on one")
        yield url
        return
    if shutil.which(MOSQUITTO) is None:
        pytest.skip(f"needs Mosquitto ({MOSQUITTO})")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite'}")
    try:
        yield database
    finally:
        await database.close()


def _batch(collector: str, first: int) -> bytes:
    at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    frames = [
        FrameMessage(sequence=s, received_at=at, port="mbus0", raw=FRAME.hex())
        for s in range(first, first + FRAMES)
    ]
    return encode(FrameBatch(collector=collector, sent_at=at, frames=frames))


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_workers_share_the_subscription_and_store_every_frame_once(
    db: Database, broker_url: str
) -> None:
    run = uuid.uuid4().hex[:6]
    collectors = [f"t-share-{run}-{n}" for n in range(COLLECTORS)]
    processors = [IngestProcessor(db) for _ in range(WORKERS)]
    workers = [MqttIngest(p, broker_url, client_id=f"t-ingest-{run}-{n}") for n, p in enumerate(processors)]
    for worker in workers:
        await worker.start()
    pub: mqtt.Client = mqtt_publisher(broker_url, f"t-share-pub-{run}")
    messages = [(c, b * FRAMES + 1) for b in range(BATCHES) for c in collectors]
    try:
        for worker in workers:
            await worker.wait_ready()
        for collector, first in [*messages, *reversed(messages)]:  # everything twice, the repeat reversed
            pub.publish(frames_topic(collector), _batch(collector, first), qos=1).wait_for_publish(10)

        async def all_acknowledged() -> bool:
            return sum(w.acked for w in workers) >= 2 * len(messages)

        await _eventually(all_acknowledged)
    finally:
        pub.loop_stop()
        pub.disconnect()
        for worker in workers:
            await worker.stop()
    async with db.sessions() as session:
        stored = (await session.execute(select(func.count()).select_from(RawFrame))).scalar_one()
        distinct = (
            await session.execute(
                select(func.count()).select_from(
                    select(RawFrame.collector_id, RawFrame.sequence).distinct().subquery()
                )
            )
        ).scalar_one()
    shares = [p.stats.batches for p in processors]
    assert stored == distinct == len(messages) * FRAMES  # none lost, none doubled
    assert sum(p.stats.frames_new for p in processors) == len(messages) * FRAMES
    assert sum(shares) == 2 * len(messages)  # each message went to exactly one worker
    assert all(share > 0 for share in shares), f"a worker got nothing: {shares}"
