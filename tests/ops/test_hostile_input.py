"""Hostile input at central's doors: a collector sending garbage and oversized payloads through the real
broker, and request bodies over the upload limits."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from central.api.app import create_app
from central.config import Settings
from central.db import Database
from central.ingest import MAX_REJECTED_PAYLOAD, IngestProcessor, MqttIngest
from central.models import RawFrame, RejectedMessage
from central.site_import import import_site
from protocols.messages import MAX_PAYLOAD_BYTES, FrameBatch, FrameMessage, encode, frames_topic
from tests.conftest import mqtt_publisher

MiB = 1024 * 1024
FRAME = bytes.fromhex(
    "68 1F 1F 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B 13 01 8B 60 04 37 18 02"
    " 18 16".replace(" ", "")
)  # EN 13757-3 example long frame


def _publisher(mqtt_url: str) -> mqtt.Client:
    return mqtt_publisher(mqtt_url, "t-hostile")


def _batch(collector: str, sequences: range) -> bytes:
    at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    return encode(
        FrameBatch(
            collector=collector,
            sent_at=at,
            frames=[
                FrameMessage(sequence=s, received_at=at, port="mbus0", raw=FRAME.hex()) for s in sequences
            ],
        )
    )


async def _eventually(check: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'central.sqlite'}")
    try:
        yield database
    finally:
        await database.close()


async def test_garbage_and_oversized_payloads_are_refused_without_touching_others(
    db: Database, mqtt_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    hostile, honest = f"t-bad-{uuid.uuid4().hex[:6]}", f"t-good-{uuid.uuid4().hex[:6]}"
    processor = IngestProcessor(db)
    ingest = MqttIngest(processor, mqtt_url, client_id=f"t-central-{hostile}", collectors=[hostile, honest])
    await ingest.start()
    pub = _publisher(mqtt_url)
    garbage = [
        b"\x00\xff garbage \x9c",
        b'{"schema_version": 1, "collector": "' + hostile.encode() + b'", "frames": [',  # cut off
        b'{"collector": "' + hostile.encode() + b'", "frames": "' + b"A" * (3 * MiB) + b'"}',  # 3 MiB
        b"[" * 100_000,  # nesting bomb
        b"x" * (MAX_PAYLOAD_BYTES + MiB),  # over the protocol's limit: refused before parsing
    ]
    caplog.set_level(logging.WARNING, logger="central.ingest")
    try:
        await ingest.wait_ready()
        pub.publish(frames_topic(honest), _batch(honest, range(1, 3)), qos=1).wait_for_publish(10)
        for n, payload in enumerate(garbage):
            pub.publish(frames_topic(hostile), payload, qos=1).wait_for_publish(10)
            honest_batch = _batch(honest, range(10 + n, 11 + n))  # the neighbour keeps sending meanwhile
            pub.publish(frames_topic(honest), honest_batch, qos=1).wait_for_publish(10)
        pub.publish(frames_topic(hostile), _batch(hostile, range(1, 2)), qos=1).wait_for_publish(10)

        async def all_in() -> bool:
            return (
                processor.stats.rejected >= len(garbage)
                and processor.stats.frames_new >= 2 + len(garbage) + 1
            )

        await _eventually(all_in)
        await _eventually(lambda: _ge(ingest.acked, 1 + 2 * len(garbage) + 1))
    finally:
        pub.loop_stop()
        pub.disconnect()
        await ingest.stop()
    async with db.sessions() as session:
        stored = dict(
            (
                await session.execute(
                    select(RawFrame.collector_id, func.count()).group_by(RawFrame.collector_id)
                )
            ).all()
        )
        rejected = list(
            (await session.execute(select(RejectedMessage).order_by(RejectedMessage.id))).scalars()
        )
    # the honest collector lost nothing; the hostile one's valid batch after the garbage got in too
    assert stored[honest] == 2 + len(garbage)
    assert stored[hostile] == 1
    assert len(rejected) == len(garbage)
    assert all(r.topic == frames_topic(hostile) for r in rejected)
    reasons = [r.reason for r in rejected]
    assert all(reason.startswith("invalid FrameBatch") for reason in reasons[:4]), reasons
    assert reasons[4] == f"payload of {len(garbage[4])} bytes exceeds {MAX_PAYLOAD_BYTES}"
    # what is kept of a rejected payload is bounded, and so is its log line
    assert all(len(r.payload) <= MAX_REJECTED_PAYLOAD for r in rejected)
    assert rejected[0].payload == garbage[0]
    lines = [r.getMessage() for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(lines) == len(garbage)
    assert max(len(line) for line in lines) < 1000


async def _ge(value: int, expected: int) -> bool:
    return value >= expected


# --- upload limits ------------------------------------------------------------------------------
@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "central"))
    from central_testdata import site_export

    application = create_app(Settings(data_dir=tmp_path / "data", demo=True).validated())
    async with application.router.lifespan_context(application):
        state = application.state.central
        await import_site(state.db, site_export("BRF-UP"), state.keybox)
        yield application


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60
    ) as http:
        token = (await http.post("/api/auth/token", data={"username": "demo", "password": "demo"})).json()
        http.headers["Authorization"] = f"Bearer {token['access_token']}"
        yield http


async def _chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    line = b"OBJ-9,9999,A,50.0\n"
    block = line * (size // len(line))
    sent = 0
    while sent < total:
        yield block
        sent += len(block)


async def test_import_over_10_mib_is_413_with_the_reason(admin: httpx.AsyncClient) -> None:
    url = "/api/properties/BRF-UP/imports/apartments"
    big = b"object_number,number,building,area_m2\n" + b"OBJ-9,9999,A,50.0\n" * (11 * MiB // 18)
    response = await admin.post(url, content=big, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"request body too large: imports may be at most 10 MiB (this one: {len(big):,} bytes)"
    )
    # no Content-Length (chunked): counted as it arrives, refused past the limit
    chunked = await admin.post(url, content=_chunks(11 * MiB), headers={"Content-Type": "text/csv"})
    assert chunked.status_code == 413
    assert "imports may be at most 10 MiB" in chunked.json()["detail"]
    tenancies = await admin.post("/api/billing/properties/BRF-UP/tenancies/import", content=big)
    assert tenancies.status_code == 413
    # a normal import still goes through the same door
    small = b"object_number,number,building,area_m2\nOBJ-7001,7001,A,55.5\n"
    ok = await admin.post(
        url, content=small, params={"dry_run": "true"}, headers={"Content-Type": "text/csv"}
    )
    assert ok.status_code in (200, 422), ok.text
    assert ok.status_code != 413


async def test_json_bodies_over_1_mib_are_413(admin: httpx.AsyncClient) -> None:
    invoice = {"supplier": "x" * (2 * MiB), "lines": []}
    response = await admin.post("/api/billing/properties/BRF-UP/invoices", json=invoice)
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body too large: request bodies may be at most 1 MiB")
    form = await admin.post("/login", data={"username": "demo", "password": "p" * (2 * MiB)})
    assert form.status_code == 413
    registration = await admin.post("/api/collectors/c-1/registration", content=_chunks(2 * MiB))
    assert registration.status_code == 413
