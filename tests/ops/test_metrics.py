"""Monitoring: /metrics after a real ingest through the broker, its access guard, readiness, alert rules."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "central"))
from central_testdata import corpus_frame, site_export

from central.api.app import create_app
from central.auth import create_user
from central.checks import run_meter_checks
from central.config import Settings
from central.metrics import METRICS_TOKEN_ENV
from central.models import BillingRunRecord, Property
from central.site_import import import_site
from protocols.messages import (
    CollectorState,
    CollectorStatus,
    FrameBatch,
    FrameMessage,
    encode,
    frames_topic,
    status_topic,
)
from tests.conftest import mqtt_publisher

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "imd-alerts.yml"


def _publisher(mqtt_url: str) -> mqtt.Client:
    return mqtt_publisher(mqtt_url, "t-metrics")


async def _eventually(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exposed_names(text: str) -> set[str]:
    """Sample names /metrics exposes, with the suffixes each declared type implies."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        names.add(name)
        names.update(name + s for s in suffixes.get(kind, ()))
    return names


@pytest.fixture
async def central(tmp_path: Path, mqtt_url: str) -> AsyncIterator[tuple[FastAPI, str]]:
    collector = f"t-met-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        mqtt_url=mqtt_url,
        demo=True,
        collectors=(collector,),
        mqtt_client_id=f"t-central-{collector}",
    ).validated()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.central
        await import_site(state.db, site_export("BRF-MET"), state.keybox)
        await create_user(state.db, "board-m", "board-pass-1", "board", properties=["BRF-MET"])
        await state.ingest.wait_ready()
        yield app, collector


async def test_metrics_count_a_real_ingest(central: tuple[FastAPI, str], mqtt_url: str) -> None:
    app, collector = central
    state = app.state.central
    at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    corrupt = bytearray(corpus_frame("EFE_Engelmann-WaterStar"))
    corrupt[5] ^= 0x01  # checksum fails: stored as failed
    batch = FrameBatch(
        collector=collector,
        sent_at=at,
        frames=[
            FrameMessage(
                sequence=1, received_at=at, port="mbus0", raw=corpus_frame("kamstrup_multical_601").hex()
            ),
            FrameMessage(sequence=2, received_at=at, port="mbus0", raw=bytes(corrupt).hex()),
        ],
    )
    pub = _publisher(mqtt_url)
    try:
        status = CollectorStatus(collector=collector, state=CollectorState.ONLINE, at=at, outbox_depth=7)
        pub.publish(status_topic(collector), encode(status), qos=1).wait_for_publish(5)
        pub.publish(frames_topic(collector), encode(batch), qos=1).wait_for_publish(5)
        pub.publish(frames_topic(collector), encode(batch), qos=1).wait_for_publish(5)  # redelivery
        pub.publish(frames_topic(collector), b"{not json", qos=1).wait_for_publish(5)
        await _eventually(lambda: _ge(state.processor.stats.batches, 2))
        await _eventually(lambda: _ge(state.processor.stats.rejected, 1))
        await _eventually(lambda: _ge(state.processor.stats.statuses, 1))
    finally:
        pub.loop_stop()
        pub.disconnect()
    await run_meter_checks(state.db, rules=["communication_gap"])  # frames from 2025: every meter silent
    async with state.db.sessions.begin() as session:
        prop = (await session.execute(select(Property))).scalars().first()
        assert prop is not None
        session.add(
            BillingRunRecord(
                id="run-met-1",
                property_id=prop.id,
                period_from=date(2025, 1, 1),
                period_to=date(2025, 1, 31),
                state="stopped",
                input_digest="0" * 64,
                created_at=at,
                result="{}",
            )
        )

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/api/health")).status_code == 200
        assert (await http.get("/api/meters")).status_code == 401
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    c = (("collector", collector),)
    assert got[("imd_frames_received_total", c)] == 2
    assert got[("imd_frames_failed_total", c)] == 1
    assert got[("imd_frames_duplicate_total", c)] == 2
    assert got[("imd_frames_stored_total", ())] == 2
    assert got[("imd_readings_stored_total", ())] == 25  # 27 records of the Multical, 25 numeric
    assert got[("imd_ingest_lag_seconds_count", ())] == 2
    # received in March 2025, committed now: the lag lands in the last (+Inf) bucket only
    assert got[("imd_ingest_lag_seconds_bucket", (("le", "86400.0"),))] == 0
    assert got[("imd_messages_rejected_total", ())] == 1
    assert got[("imd_ingest_queue_depth", ())] == 0
    assert got[("imd_ingest_connected", ())] == 1
    assert got[("imd_collector_online", c)] == 1
    assert got[("imd_collector_outbox_frames", c)] == 7
    assert got[("imd_collector_last_frame_timestamp_seconds", c)] == at.timestamp()
    assert got[("imd_collectors", (("state", "online"),))] == 1
    assert got[("imd_faults_open", (("rule", "communication_gap"),))] >= 1
    assert got[("imd_billing_runs", (("state", "stopped"),))] == 1
    health = (("method", "GET"), ("route", "/api/health"), ("status", "200"))
    assert got[("imd_http_requests_total", health)] == 1
    assert (
        got[("imd_http_requests_total", (("method", "GET"), ("route", "/api/meters"), ("status", "401")))]
        == 1
    )
    assert (
        got[("imd_http_request_duration_seconds_count", (("method", "GET"), ("route", "/api/health")))] == 1
    )


async def _ge(value: int, expected: int) -> bool:
    return value >= expected


async def test_metrics_access_guard(central: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch) -> None:
    app, _collector = central
    monkeypatch.setenv(METRICS_TOKEN_ENV, "scrape-secret-123")
    remote = httpx.ASGITransport(app=app, client=("10.0.0.9", 4711))
    async with httpx.AsyncClient(transport=remote, base_url="http://t") as http:
        assert (await http.get("/metrics")).status_code == 403
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert "metrics token" in wrong.json()["detail"]
        ok = await http.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
        assert ok.status_code == 200
        assert "imd_frames_stored_total" in ok.text
        admin = (await http.post("/api/auth/token", data={"username": "demo", "password": "demo"})).json()
        assert (await http.get("/metrics", headers=_bearer(admin))).status_code == 200
        board = (
            await http.post("/api/auth/token", data={"username": "board-m", "password": "board-pass-1"})
        ).json()
        assert (await http.get("/metrics", headers=_bearer(board))).status_code == 403
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 4711))
    async with httpx.AsyncClient(transport=local, base_url="http://t") as http:
        assert (await http.get("/metrics")).status_code == 200
        # through the reverse proxy every request comes from 127.0.0.1: the token is needed then
        proxied = await http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
        assert proxied.status_code == 403


def _bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


async def test_readiness_follows_database_and_broker(tmp_path: Path, mqtt_url: str) -> None:
    plain = create_app(Settings(data_dir=tmp_path / "a").validated())
    async with (
        plain.router.lifespan_context(plain),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://t") as http,
    ):
        response = await http.get("/api/health/ready")
        assert response.status_code == 200
        assert response.json() == {"ready": True, "checks": {"database": "ok"}}
    # a broker that does not answer: not ready, with the reason
    dead = create_app(
        Settings(data_dir=tmp_path / "b", mqtt_url="mqtt://127.0.0.1:9", mqtt_client_id="t-dead").validated()
    )
    async with (
        dead.router.lifespan_context(dead),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=dead), base_url="http://t") as http,
    ):
        response = await http.get("/api/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "ok", "mqtt": "not connected"}
    live = create_app(
        Settings(
            data_dir=tmp_path / "c",
            mqtt_url=mqtt_url,
            mqtt_client_id=f"t-ready-{uuid.uuid4().hex[:6]}",
            collectors=("t-ready",),
        ).validated()
    )
    async with live.router.lifespan_context(live):
        await live.state.central.ingest.wait_ready()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=live), base_url="http://t") as http:
            response = await http.get("/api/health/ready")
            assert response.status_code == 200, response.text
            assert response.json()["checks"]["mqtt"] == "ok"


async def test_alert_rules_parse_and_use_exposed_metrics(central: tuple[FastAPI, str]) -> None:
    app, _collector = central
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        exposition = (await http.get("/metrics")).text
    exposed = exposed_names(exposition)
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    assert {"CollectorOffline", "IngestLagHigh", "FramesFailing", "FaultsPilingUp"} <= names
    used = set()
    for alert in alerts:
        assert alert["expr"].strip()
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        used.update(re.findall(r"\bimd_[a-z_]+\b", alert["expr"]))
    assert used, "the rules reference central's metrics"
    assert used <= exposed, f"rules use metrics /metrics does not expose: {sorted(used - exposed)}"


def test_alert_rules_pass_promtool() -> None:
    promtool = os.environ.get("IMD_PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); YAML checked above")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout


def test_ingest_only_worker_writes_its_metrics_to_a_textfile(tmp_path: Path, mqtt_url: str) -> None:
    """``--no-api`` workers listen on no port; IMD_METRICS_TEXTFILE gives node-exporter their counters."""
    import subprocess
    import time

    collector = f"t-tf-{uuid.uuid4().hex[:8]}"
    textfile = tmp_path / "imd-ingest-1.prom"
    env = {**os.environ, "IMD_METRICS_TEXTFILE": str(textfile), "IMD_METRICS_TEXTFILE_SECONDS": "0.2"}
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "imd"), "central", "serve", "--no-api", "--mqtt-url", mqtt_url,
            "--collector", collector, "--client-id", f"t-tf-{collector}", "--data-dir", str(tmp_path / "d"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().startswith("Ingest: subscribed")
        at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
        frame = FrameMessage(
            sequence=1, received_at=at, port="mbus0", raw=corpus_frame("kamstrup_multical_601").hex()
        )
        pub = _publisher(mqtt_url)
        try:
            batch = FrameBatch(collector=collector, sent_at=at, frames=[frame])
            pub.publish(frames_topic(collector), encode(batch), qos=1).wait_for_publish(5)
        finally:
            pub.loop_stop()
            pub.disconnect()
        want = ("imd_frames_received_total", (("collector", collector),))
        deadline = time.monotonic() + 30
        while True:
            got = samples(textfile.read_text()) if textfile.exists() else {}
            if got.get(want) == 1:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
        assert got[("imd_ingest_connected", ())] == 1
        assert got[("imd_ingest_lag_seconds_count", ())] == 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()
