"""Monitoring: Prometheus metrics at ``/metrics`` and readiness at ``/api/health/ready``.

Counters that ingest and the HTTP layer increase live in one :class:`Metrics` per app (its own
registry, so several apps in one process - tests, the demo - do not mix). Gauges that describe the
database (open faults per rule, billing runs by state, collectors online/offline) are read at
scrape time with two cheap grouped queries, so they are right whichever worker wrote the rows.

``/metrics`` answers a direct request from the loopback address (Prometheus on the same host), a
request with ``Authorization: Bearer $IMD_METRICS_TOKEN``, or one with an admin's API token; a
request that came through the reverse proxy (it carries ``X-Forwarded-For``) needs the token even
from 127.0.0.1. The proxy limits the path to the monitoring host as well (deploy/central/nginx-imd.conf).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    write_to_textfile,
)
from sqlalchemy import func, literal, select, text, union_all

from central.api.deps import StateDep, principal_from_token
from central.models import BillingRunRecord, Collector, Fault

log = logging.getLogger(__name__)
http_log = logging.getLogger("central.http")

TEXTFILE_ENV = "IMD_METRICS_TEXTFILE"
METRICS_TOKEN_ENV = "IMD_METRICS_TOKEN"  # noqa: S105 - the variable's name, not a secret
LOOPBACK = frozenset({"127.0.0.1", "::1"})
# received_at on the collector -> committed in central: seconds on a live bus, hours after an outage
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class Metrics:
    """The registry of one central process and the instruments ingest and HTTP feed."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames_received = Counter(
            "imd_frames_received",
            "Frames newly stored per collector (duplicates not counted)",
            ["collector"],
            registry=r,
        )
        self.frames_failed = Counter(
            "imd_frames_failed",
            "Frames stored but not decodable (CRC, key, format) per collector",
            ["collector"],
            registry=r,
        )
        self.frames_duplicate = Counter(
            "imd_frames_duplicate", "Redelivered frames skipped per collector", ["collector"], registry=r
        )
        self.frames_stored = Counter("imd_frames_stored", "Frames newly stored, all collectors", registry=r)
        self.readings_stored = Counter("imd_readings_stored", "Readings stored from new frames", registry=r)
        self.messages_rejected = Counter(
            "imd_messages_rejected",
            "MQTT messages refused (malformed, oversized, wrong collector)",
            registry=r,
        )
        self.ingest_lag = Histogram(
            "imd_ingest_lag_seconds",
            "Frame received_at on the collector -> committed in central",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "imd_ingest_queue_depth",
            "MQTT messages received but not yet committed in this worker",
            registry=r,
        )
        self.ingest_connected = Gauge(
            "imd_ingest_connected", "1 when this worker's ingest is connected and subscribed", registry=r
        )
        self.faults_open = Gauge(
            "imd_faults_open", "Faults not resolved (open or acknowledged) per rule", ["rule"], registry=r
        )
        self.billing_runs = Gauge("imd_billing_runs", "Billing runs per state", ["state"], registry=r)
        self.collectors = Gauge("imd_collectors", "Collectors per reported state", ["state"], registry=r)
        self.collector_online = Gauge(
            "imd_collector_online",
            "1 when the collector's retained status says online",
            ["collector"],
            registry=r,
        )
        self.collector_last_frame = Gauge(
            "imd_collector_last_frame_timestamp_seconds",
            "Newest frame or status time seen from the collector",
            ["collector"],
            registry=r,
        )
        self.collector_outbox = Gauge(
            "imd_collector_outbox_frames",
            "Frames waiting in the collector's outbox (its last status)",
            ["collector"],
            registry=r,
        )
        self.http_requests = Counter(
            "imd_http_requests",
            "HTTP requests per route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "imd_http_request_duration_seconds",
            "HTTP request time per route template",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self._rejected_seen = 0

    # --- ingest ----------------------------------------------------------------------------
    async def after_batch(self, result: Any) -> None:
        """Ingest's after-batch hook: called once per committed frame batch."""
        collector = result.collector
        if result.frames_new:
            self.frames_received.labels(collector).inc(result.frames_new)
            self.frames_stored.inc(result.frames_new)
        if result.frames_failed:
            self.frames_failed.labels(collector).inc(result.frames_failed)
        if result.frames_duplicate:
            self.frames_duplicate.labels(collector).inc(result.frames_duplicate)
        if result.readings:
            self.readings_stored.inc(result.readings)
        received = getattr(result, "received_at", ())
        if received:
            now = time.time()
            for at in received:
                self.ingest_lag.observe(max(0.0, now - at.timestamp()))

    def attach(self, processor: Any) -> None:
        hooks = processor.after_batch
        hooks.insert(0, self.after_batch)  # first: the lag is taken before slower hooks (checks) run

    # --- scrape ----------------------------------------------------------------------------
    async def refresh(self, state: Any) -> None:
        """Read the database-backed gauges; two grouped queries."""
        counts = union_all(
            select(literal("fault"), Fault.rule, func.count())
            .where(Fault.state != "resolved")
            .group_by(Fault.rule),
            select(literal("billing"), BillingRunRecord.state, func.count()).group_by(BillingRunRecord.state),
        )
        async with state.db.sessions() as session:
            rows = (await session.execute(counts)).all()
            collectors = (
                await session.execute(
                    select(Collector.id, Collector.state, Collector.last_seen_at, Collector.last_status)
                )
            ).all()
        self.faults_open.clear()
        self.billing_runs.clear()
        for kind, key, n in rows:
            (self.faults_open if kind == "fault" else self.billing_runs).labels(str(key)).set(n)
        for gauge in (
            self.collectors,
            self.collector_online,
            self.collector_last_frame,
            self.collector_outbox,
        ):
            gauge.clear()
        by_state: dict[str, int] = {}
        for cid, cstate, seen, last_status in collectors:
            by_state[cstate] = by_state.get(cstate, 0) + 1
            self.collector_online.labels(cid).set(1 if cstate == "online" else 0)
            if isinstance(seen, datetime):
                self.collector_last_frame.labels(cid).set(seen.timestamp())
            depth = _outbox_depth(last_status)
            if depth is not None:
                self.collector_outbox.labels(cid).set(depth)
        for cstate, n in by_state.items():
            self.collectors.labels(cstate).set(n)
        self.refresh_process(state)

    def refresh_process(self, state: Any) -> None:
        """This process's own gauges (no database): ingest connection, queue depth, rejects."""
        ingest = state.ingest
        self.ingest_connected.set(
            1 if ingest is not None and ingest.connected.is_set() and ingest.subscribed.is_set() else 0
        )
        self.queue_depth.set(_queue_depth(ingest))
        processor = state.processor
        if processor is not None:
            rejected = processor.stats.rejected
            if rejected > self._rejected_seen:
                self.messages_rejected.inc(rejected - self._rejected_seen)
                self._rejected_seen = rejected

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """ASGI middleware: count and time each request by its route template, log one line for it.

    The :class:`Metrics` is the app's (``app.state.central.extras["metrics"]``), looked up per
    request: it is made in the lifespan, after the middleware stack is built.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_status(message: Any) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            # the template, never the raw path: ids and probing would blow up the label set
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            state = getattr(getattr(scope.get("app"), "state", None), "central", None)
            metrics = state.extras.get("metrics") if state is not None else None
            if metrics is not None:
                metrics.http_requests.labels(method, template, str(code)).inc()
                metrics.http_latency.labels(method, template).observe(elapsed)
            http_log.info(
                "%s %s %s %.1f ms",
                method,
                template,
                code,
                elapsed * 1000,
                extra={"method": method, "route": template, "status": code, "ms": round(elapsed * 1000, 2)},
            )


def start_textfile(state: Any) -> asyncio.Task[None] | None:
    """Ingest-only workers have no HTTP port (``SocketBindDeny=any`` in imd-ingest@.service): with
    ``IMD_METRICS_TEXTFILE=/var/lib/prometheus/node-exporter/imd-ingest-N.prom`` they write their
    metrics there every ``IMD_METRICS_TEXTFILE_SECONDS`` (15) for node-exporter's textfile collector.
    The database-backed gauges stay with the API process's ``/metrics``."""
    path = os.environ.get(TEXTFILE_ENV)
    if not path:
        return None
    every = float(os.environ.get(TEXTFILE_ENV + "_SECONDS", "15"))
    metrics = attach_metrics(state)

    async def write_forever() -> None:
        while True:
            metrics.refresh_process(state)
            try:
                write_to_textfile(path, metrics.registry)  # a temporary file renamed: never half-read
            except OSError as exc:
                log.warning("metrics textfile %s: %s", path, exc)
            await asyncio.sleep(every)

    return asyncio.create_task(write_forever(), name="metrics-textfile")


def _outbox_depth(last_status: str | None) -> int | None:
    if not last_status:
        return None
    try:
        depth = json.loads(last_status).get("outbox_depth")
    except (ValueError, AttributeError):
        return None
    return depth if isinstance(depth, int) else None


def _queue_depth(ingest: Any) -> int:
    if ingest is None:
        return 0
    depth = getattr(ingest, "queue_depth", None)
    return int(depth) if depth is not None else 0


def attach_metrics(state: Any) -> Metrics:
    """Give the central state its :class:`Metrics` and hook it into ingest (before ingest starts)."""
    metrics = state.extras.get("metrics")
    if metrics is None:
        metrics = state.extras["metrics"] = Metrics()
        if state.processor is not None:
            metrics.attach(state.processor)
    return metrics  # type: ignore[no-any-return]


async def _may_scrape(request: Request, state: Any) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential:
        expected = os.environ.get(METRICS_TOKEN_ENV, "")
        if expected and hmac.compare_digest(credential.encode(), expected.encode()):
            return True
        principal = await principal_from_token(state, credential)
        return principal is not None and principal.role == "admin"
    client = request.client.host if request.client else ""
    return client in LOOPBACK and "x-forwarded-for" not in request.headers


router = APIRouter()


@router.get("/metrics", tags=["system"], include_in_schema=False)
async def metrics_endpoint(request: Request, state: StateDep) -> Response:
    """Prometheus text exposition (loopback, ``IMD_METRICS_TOKEN`` or an admin token)."""
    if not await _may_scrape(request, state):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"metrics: only from the loopback address or with the metrics token ({METRICS_TOKEN_ENV})",
        )
    metrics = attach_metrics(state)
    await metrics.refresh(state)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/health/ready", tags=["system"])
async def ready(state: StateDep, response: Response) -> dict[str, Any]:
    """Readiness: the database answers and, when this process runs ingest, MQTT is connected and
    subscribed. 503 with the failing checks otherwise. Needs no login (load balancers probe it)."""
    checks: dict[str, str] = {}
    try:
        async with state.db.sessions() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach it is "not ready", with the reason
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ingest = state.ingest
    if ingest is not None:
        if not ingest.connected.is_set():
            checks["mqtt"] = "not connected"
        elif not ingest.subscribed.is_set():
            checks["mqtt"] = "connected, not subscribed"
        else:
            checks["mqtt"] = "ok"
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"ready": ok, "checks": checks}
