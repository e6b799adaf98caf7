"""Ingest through the real broker: readings/s committed to SQLite and PostgreSQL, end-to-end latency.

The simulator's fleet (:class:`hwsim.fleet.Fleet`) makes the messages - every telegram of every meter
of every property, wrapped in ``FrameBatch`` messages exactly as :func:`hwsim.fleet.publish` sends
them. They are generated before the clock starts and published at QoS 1 by a separate process: the
simulator computes a readout at ~11,000 readings/s on one core, slower than the ingest it is meant
to load, and on a 2-core machine its CPU would be taken from the ingest being measured.

Central's real :class:`central.ingest.MqttIngest` (paho, persistent session, manual ack after the
commit) stores them. Two phases per database:

* throughput: everything published as fast as the broker takes it (at most ``WINDOW`` messages
  ahead of the commits, below Mosquitto's default ``max_queued_messages`` of 1000, so the broker
  never drops QoS 1 messages) -> readings committed per second, first publish to last commit;
* latency: messages paced at ``--latency-rate`` readings/s, below capacity -> publish -> commit
  time per message, p50/p95/p99 (a saturated run's latency only measures its backlog).

Broker: ``--mqtt-url``, else Mosquitto on 127.0.0.1:1883 when it answers, else the embedded broker.
PostgreSQL: a scratch database created and dropped on the server of ``--pg-url``
(``$IMD_BENCH_DATABASE_URL``, default postgres@127.0.0.1:5432); skipped with the reason when it is
not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hardware-sim"))

WINDOW = 800  # messages published but not yet committed, at most
APARTMENTS = 12  # per property; the fleet's building has ~49 meters with 12 apartments
# Near the simulator's epoch (2023-01-01): a readout integrates consumption since then, so a start
# years later makes generation (not ingest) the slow part.
START = datetime(2023, 1, 2, tzinfo=UTC)
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass
class PhaseResult:
    messages: int = 0
    readings: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- messages --------------------------------------------------------------------------------------


def generate(meters: int, readings: int, seed: int) -> tuple[list[str], list[tuple[str, bytes]], list[int]]:
    """(collectors, messages, numeric readings per message) from the simulator's fleet."""
    from hwsim.fleet import Fleet

    from protocols.messages import encode, frames_topic

    probe = Fleet(seed=seed, properties=1, apartments=APARTMENTS)
    properties = max(1, round(meters / max(1, probe.meter_count)))
    fleet = Fleet(seed=seed, properties=properties, apartments=APARTMENTS)
    messages: list[tuple[str, bytes]] = []
    counts: list[int] = []
    first_round: list[int] = []
    rounds = 0
    while not counts or sum(counts) < readings:
        at = START + timedelta(hours=rounds)
        for position, (collector, batch) in enumerate(fleet.batches(at)):
            messages.append((frames_topic(collector), encode(batch)))
            if rounds == 0:  # every round has the same meters and telegram layouts
                first_round.append(sum(_numeric_records(f.raw_bytes) for f in batch.frames if f.raw))
            counts.append(first_round[position])
        rounds += 1
    return [p.collector for p in fleet.properties], messages, counts


def _numeric_records(raw: bytes) -> int:
    from central.ingest import decode_frame, numeric_value

    return sum(1 for r in decode_frame(raw).records if numeric_value(r.value) is not None)


# --- publisher process -----------------------------------------------------------------------------


def _publisher(  # noqa: PLR0917 - multiprocessing passes positional arguments
    path: str, mqtt_url: str, rate: float, committed: Any, sent_times: Any, ready: Any, go: Any
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocols.mqtturl import parse_mqtt_url

    with open(path, "rb") as fh:
        messages: list[tuple[str, bytes, int]] = pickle.load(fh)  # noqa: S301 - our own temp file
    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"imd-bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port, keepalive=60)
    client.loop_start()
    ready.set()
    go.wait()
    began = time.monotonic()
    done = 0
    infos = []
    for index, (topic, payload, readings) in enumerate(messages):
        while index - committed.value >= WINDOW:
            time.sleep(0.002)
        if rate > 0:
            wait = began + done / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        sent_times[index] = time.time()
        infos.append(client.publish(topic, payload, qos=1))
        done += readings
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.loop_stop()
    client.disconnect()


# --- one database ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_postgres(url: str) -> AsyncIterator[str]:
    import asyncpg

    base = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")[0]
    name = f"imd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{url.rpartition('/')[0]}/{name}"
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _forget_session(mqtt_url: str, client_id: str) -> None:
    """Connect once with a clean session so the broker drops the benchmark's persistent session."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocols.mqtturl import parse_mqtt_url

    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if url.username:
        client.username_pw_set(url.username, url.password)
    with contextlib.suppress(OSError):
        client.connect(url.host, url.port, keepalive=10)
        client.loop(timeout=1.0)
        client.disconnect()


async def run_phase(
    *,
    db_url: str,
    mqtt_url: str,
    collectors: list[str],
    messages: list[tuple[str, bytes]],
    readings_of: list[int],
    rate: float,
    pipeline: bool = False,
) -> PhaseResult:
    from central.db import Database
    from central.ingest import IngestProcessor, MqttIngest

    result = PhaseResult(messages=len(messages))
    index_of = {payload: i for i, (_topic, payload) in enumerate(messages)}
    committed_at = [0.0] * len(messages)
    ctx = mp.get_context("spawn")
    committed = ctx.Value("l", 0, lock=False)
    sent_times = ctx.Array("d", len(messages), lock=False)
    ready, go = ctx.Event(), ctx.Event()
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as fh:
        pickle.dump([(t, p, n) for (t, p), n in zip(messages, readings_of, strict=True)], fh)
        path = fh.name
    db = await Database.open(db_url)
    client_id = f"imd-bench-ingest-{uuid.uuid4().hex[:8]}"
    processor = IngestProcessor(db)
    ingest = MqttIngest(processor, mqtt_url, client_id=client_id, collectors=collectors, pipeline=pipeline)
    count = 0

    def on_committed(group: Any, at: float) -> None:
        nonlocal count
        for _topic, payload in group:
            i = index_of.get(payload)
            if i is not None and not committed_at[i]:
                committed_at[i] = at
                count += 1
        committed.value = count
        if count >= len(messages):
            finished.set()

    ingest.on_committed = on_committed
    proc = ctx.Process(target=_publisher, args=(path, mqtt_url, rate, committed, sent_times, ready, go))
    try:
        await ingest.start()
        await ingest.wait_ready(30)
        proc.start()
        await loop.run_in_executor(None, ready.wait, 60)
        readings_before = processor.stats.readings
        cpu = time.process_time()
        go.set()
        await asyncio.wait_for(finished.wait(), timeout=max(600.0, len(messages)))
        result.cpu_seconds = time.process_time() - cpu
        result.readings = processor.stats.readings - readings_before
    finally:
        await loop.run_in_executor(None, proc.join, 60)
        if proc.is_alive():
            proc.kill()
        await ingest.stop()
        await db.close()
        await loop.run_in_executor(None, _forget_session, mqtt_url, client_id)
        os.unlink(path)
    sent = list(sent_times)
    result.seconds = max(committed_at) - min(sent)
    result.latencies = [(c - s) * 1000 for c, s in zip(committed_at, sent, strict=True)]
    return result


async def run_backend(
    *,
    db_url: str, mqtt_url: str, collectors: list[str], messages: list[tuple[str, bytes]],
    readings_of: list[int], latency_rate: float, latency_share: float, pipeline: bool = False,
) -> tuple[PhaseResult, PhaseResult]:  # fmt: skip
    split = max(1, int(len(messages) * (1 - latency_share)))
    # Both phases against the same database, one after the other (the second adds new rounds).
    common: dict[str, Any] = {
        "db_url": db_url, "mqtt_url": mqtt_url, "collectors": collectors, "pipeline": pipeline,
    }  # fmt: skip
    throughput = await run_phase(
        **common, messages=messages[:split], readings_of=readings_of[:split], rate=0.0
    )
    latency = await run_phase(
        **common, messages=messages[split:], readings_of=readings_of[split:], rate=latency_rate
    )
    return throughput, latency


# --- broker and database discovery -----------------------------------------------------------------


def _mqtt_answers(host: str, port: int) -> bool:
    connect = bytes.fromhex("101000044d5154540402003c0004696d6462")  # MQTT 3.1.1 CONNECT, id "imdb"
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(connect)
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[tuple[str, str]]:
    if url:
        yield url, "given"
        return
    if _mqtt_answers("127.0.0.1", 1883):
        yield "mqtt://127.0.0.1:1883", "Mosquitto 127.0.0.1:1883"
        return
    from central.embedded_broker import EmbeddedBroker, free_port

    port = free_port()
    loop = asyncio.new_event_loop()
    embedded = EmbeddedBroker("127.0.0.1", port, {"bench": "bench"})
    thread = threading.Thread(target=loop.run_forever, name="embedded-broker", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(embedded.start(), loop).result(timeout=15)
    try:
        yield f"mqtt://bench:bench@127.0.0.1:{port}", "embedded amqtt broker"
    finally:
        asyncio.run_coroutine_threadsafe(embedded.stop(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


async def _pg_reachable(url: str) -> str | None:
    """None when a scratch database can be made on this server, else the reason."""
    try:
        import asyncpg

        base = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")[0]
        conn = await asyncio.wait_for(asyncpg.connect(f"{base}/postgres"), 5)
        await conn.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --- main ------------------------------------------------------------------------------------------


def _row(name: str, t: PhaseResult | None, lat: PhaseResult | None, note: str = "") -> str:
    if t is None or lat is None:
        return f"| {name:<10} | {'skipped: ' + note:<90} |"
    return (
        f"| {name:<10} | {t.readings:>9,} | {t.seconds:>7.2f} | {t.rate:>10,.0f} | "
        f"{t.readings / t.cpu_seconds if t.cpu_seconds else 0:>11,.0f} | "
        f"{lat.rate:>8,.0f} | {lat.percentile(50):>7.1f} | {lat.percentile(95):>7.1f} | "
        f"{lat.percentile(99):>7.1f} | {t.percentile(50):>8.0f} |"
    )


async def amain(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else 1000 + os.getpid() % 100_000
    began = time.monotonic()
    collectors, messages, readings_of = generate(args.meters, args.readings, seed)
    print(
        f"fleet seed {seed}: {len(collectors)} properties, {len(messages)} messages, "
        f"{sum(readings_of):,} readings (generated in {time.monotonic() - began:.1f} s)",
        flush=True,
    )
    results: dict[str, tuple[PhaseResult, PhaseResult] | str] = {}
    with broker(args.mqtt_url) as (mqtt_url, broker_name), tempfile.TemporaryDirectory() as tmp:
        print(
            f"broker: {broker_name}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
            f"pipeline {'on' if args.pipeline else 'off'}"
        )
        if not args.skip_sqlite:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite'}"
            results["SQLite"] = await run_backend(
                db_url=url,
                mqtt_url=mqtt_url,
                collectors=collectors,
                messages=messages,
                readings_of=readings_of,
                latency_rate=args.latency_rate,
                latency_share=0.25,
                pipeline=args.pipeline,
            )
        reason = "--skip-postgres" if args.skip_postgres else await _pg_reachable(args.pg_url)
        if reason is None:
            async with scratch_postgres(args.pg_url) as url:
                results["PostgreSQL"] = await run_backend(
                    db_url=url,
                    mqtt_url=mqtt_url,
                    collectors=collectors,
                    messages=messages,
                    readings_of=readings_of,
                    latency_rate=args.latency_rate,
                    latency_share=0.25,
                    pipeline=args.pipeline,
                )
        else:
            results["PostgreSQL"] = reason
    print(
        "| database   |  readings | seconds | readings/s | per CPU-s * | paced/s | p50 ms | p95 ms | p99 ms "
        "| sat. p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, value in results.items():
        if isinstance(value, str):
            print(_row(name, None, None, value))
        else:
            print(_row(name, *value))
    print(
        "readings/s: committed, first publish to last commit, publisher unthrottled; * readings per CPU "
        "second of the ingest process (load-independent). p50/p95/p99: publish -> commit per message at "
        f"{args.latency_rate:,.0f} readings/s offered; sat. p50: median latency in the unthrottled phase "
        "(mostly queueing)."
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=120_000, help="readings to publish (default 120000)")
    parser.add_argument("--meters", type=int, default=1000, help="meters in the fleet (default 1000)")
    parser.add_argument(
        "--latency-rate", type=float, default=5000.0, help="readings/s offered in the latency phase"
    )
    parser.add_argument("--mqtt-url", default=os.environ.get("IMD_BENCH_MQTT_URL"))
    parser.add_argument("--pg-url", default=os.environ.get("IMD_BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="decode the next group while the previous one is written (MqttIngest(pipeline=True))",
    )
    args, _unknown = parser.parse_known_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
