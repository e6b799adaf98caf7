"""The real parts the reliability scenarios break: broker, database, ingest workers, collector.

Each part is a separate process the scenario can stop, kill -9 and start again: a private Mosquitto
on a free port (persistence on, as in production), a private PostgreSQL cluster (``initdb`` into a
temp dir, so restarting it disturbs nobody else's tests), ``imd central serve`` workers and
``imd edge run`` reading the simulator's M-Bus segment over a pty. Nothing here is a stand-in for the
component under test; the only test-side code is the bookkeeping: a wire observer that records
every frame the broker carried, a fleet publisher, and the tally that compares the database with a
clean, fault-free ingest of the same frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from central.embedded_broker import free_port
from tests.conftest import _mqtt_answers
from tests.edge.test_edge_faults import LinkProxy, _outbox_state

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
FrameKey = tuple[str, int]  # (collector, sequence): what ingest is idempotent on


def imd_command() -> list[str]:
    exe = Path(sys.executable).with_name("imd")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "imd"]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds it took for ``predicate`` to hold; AssertionError naming ``what`` after ``timeout``."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - began


def _stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- broker ---------------------------------------------------------------------------------------


class Mosquitto:
    """A private Mosquitto with persistence: stop (SIGTERM, saves its queue) or kill -9, start again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "mosquitto.conf"
        # Production's queue limits (deploy/mosquitto/mosquitto.conf); autosave every second.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n"
            "max_inflight_messages 20\nmax_queued_messages 200000\nmax_queued_bytes 1073741824\n"
            # every PUBLISH and PUBACK per client: who was sent what, who acknowledged what
            f"log_dest file {self.dir}/mosquitto.log\nlog_type all\nlog_timestamp false\n"
        )
        if os.geteuid() == 0:
            # As root Mosquitto would switch to its own user, which cannot enter a test's private
            # temp dir; this broker listens on 127.0.0.1 only and lives for one scenario.
            with self.config.open("a") as fh:
                fh.write("user root\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def count(self, *parts: str) -> int:
        """Lines of the broker's log that contain every one of ``parts``."""
        log = self.dir / "mosquitto.log"
        if not log.exists():
            return 0
        with log.open(errors="replace") as fh:
            return sum(1 for line in fh if all(p in line for p in parts))

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _mqtt_answers("127.0.0.1", self.port), 10, "mosquitto to answer")
        return self

    def stop(self) -> None:
        _stop_process(self.proc)

    def kill(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)


class NetworkPath:
    """The collector's path to the broker (test_edge_faults' LinkProxy on its own event loop): cut it
    and refuse reconnections for an outage while the broker itself stays up."""

    def __init__(self, broker_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="network-path", daemon=True)
        self._thread.start()
        self.proxy = LinkProxy(broker_port)
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.proxy.port}"

    def down(self) -> None:
        def cut() -> None:
            self.proxy.accepting = False
            self.proxy.cut()
        self._loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self.proxy, "accepting", True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


# --- database -------------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL 15 cluster of our own (initdb in a temp dir, free port) that we may restart."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.data = workdir / "pgdata"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            self._as = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def available() -> str | None:
        """None when we can run one, else the reason."""
        if not (PG_BIN / "initdb").exists():
            return f"no PostgreSQL binaries in {PG_BIN}"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user for initdb"
        return None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/imd"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)

    def start(self) -> PrivatePostgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(self.dir, "postgres")
        if not self.data.exists():
            self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--no-sync", "-E", "UTF8")
        self._ctl("start")
        with contextlib.suppress(subprocess.CalledProcessError):  # exists after a restart
            self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      "imd")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", options, "-w", "-t", "60", action, *extra)

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "immediate") -> None:
        """``immediate`` = crash without a checkpoint: the server runs crash recovery on start."""
        self._ctl("restart", "-m", mode)


# --- central ingest workers -----------------------------------------------------------------------


class Worker:
    """One ``imd central serve --no-api`` process (an ingest worker, no HTTP port): its own stable
    MQTT client id, the shared subscription, the shared database. What it was sent and what it
    acknowledged is read from the broker's log (Mosquitto logs every PUBLISH and PUBACK)."""

    def __init__(self, name: str, database_url: str, broker: Mosquitto, data_dir: Path) -> None:
        self.name = name
        self.client_id = f"imd-rel-{name}-{uuid.uuid4().hex[:6]}"  # stable across this worker's restarts
        self.database_url = database_url
        self.broker = broker
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"worker-{name}.log"

    def start(self, timeout: float = 60) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*imd_command(), "central", "serve", "--no-api", "--data-dir", str(self.data_dir),
                 "--database-url", self.database_url, "--mqtt-url", self.broker.url,
                 "--client-id", self.client_id],
                stdout=log, stderr=log, env={**os.environ, "IMD_DEMO": ""},
            )

        def subscribed() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{tail}")
            return "Ingest: subscribed" in self.log.read_text(errors="replace")[offset:]

        wait_for(subscribed, timeout, f"worker {self.name} to subscribe", step=0.2)
        return self

    def delivered(self) -> int:
        """Frames messages the broker sent to this worker (redeliveries included)."""
        return self.broker.count(f"Sending PUBLISH to {self.client_id} ", "/frames'")

    def acknowledged(self) -> int:
        """PUBACKs the broker received from this worker: each one follows a commit."""
        return self.broker.count(f"Received PUBACK from {self.client_id} ")

    def kill(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)


# --- the collector --------------------------------------------------------------------------------


@dataclass
class CollectorProcess:
    """``imd edge run`` with its SQLite outbox, polling a simulated M-Bus segment over a pty."""

    collector_id: str
    mqtt_url: str
    serial_port: str
    primaries: Sequence[int]
    directory: Path
    data_dir: Path | None = None  # default directory / "data"; the disk-full scenario puts it on a tmpfs
    interval_s: int = 5
    batch_max_frames: int = 4
    max_inflight: int = 2
    faketime_file: Path | None = None  # wall-clock offset file for libfaketime (clock jumps)
    receipt_timeout_s: float | None = None  # default: the collector's (300 s)
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.data_dir or self.directory / "data"
        self.log = self.directory / "collector.log"
        meters = ", ".join(f"{{ primary = {p} }}" for p in self.primaries)
        receipt = f"receipt_timeout_s = {self.receipt_timeout_s}\n" if self.receipt_timeout_s else ""
        # interval_s: the demo-mode schedule (poll every N seconds), so an outage spans many polls.
        (self.directory / "collector.toml").write_text(
            f'collector_id = "{self.collector_id}"\ndata_dir = "{self.data_dir}"\nlog_level = "WARNING"\n'
            f'[mqtt]\nurl = "{self.mqtt_url}"\nkeepalive_s = 5\n'
            f"batch_max_frames = {self.batch_max_frames}\nmax_inflight_batches = {self.max_inflight}\n"
            f"{receipt}"
            f"[schedule]\ninterval_s = {self.interval_s}\nheartbeat_s = 3600\n"
            f'[[buses]]\nname = "mbus0"\nport = "{self.serial_port}"\nretries = 1\nmeters = [{meters}]\n'
        )

    @property
    def outbox_db(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "outbox.sqlite"

    def start(self) -> CollectorProcess:
        env = dict(os.environ)
        if self.faketime_file is not None:
            # Only the wall clock jumps (an NTP step, a Pi without RTC): CLOCK_MONOTONIC never does.
            env |= {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(self.faketime_file),
                    "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*imd_command(), "edge", "run", "--config", str(self.directory / "collector.toml")],
                stdout=subprocess.DEVNULL, stderr=log, env=env,
            )
        return self

    def outbox(self) -> tuple[int, int]:
        """(frames still queued, sequences assigned so far)."""
        if not self.outbox_db.exists():
            return 0, 0
        for _ in range(50):
            try:
                depth, next_seq = _outbox_state(self.outbox_db)
                return depth, next_seq - 1
            except Exception:
                time.sleep(0.1)
        raise AssertionError(f"cannot read {self.outbox_db}")

    def sent(self) -> set[FrameKey]:
        """Every sequence assigned (1..n) and no longer in the outbox (the broker acknowledged it):
        each must end up stored exactly once. What is still queued waits for the next start."""
        import sqlite3

        con = sqlite3.connect(self.outbox_db)
        try:
            queued = {int(r[0]) for r in con.execute("SELECT sequence FROM outbox")}
        finally:
            con.close()
        return {(self.collector_id, s) for s in range(1, self.outbox()[1] + 1) if s not in queued}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)


# --- what went over the wire ----------------------------------------------------------------------


class Wire:
    """Records every frames batch the broker carried (non-shared subscription), duplicates included."""

    def __init__(self, mqtt_url: str) -> None:
        from protocols.mqtturl import parse_mqtt_url

        broker = parse_mqtt_url(mqtt_url)
        self.lock = threading.Lock()
        self.copies: list[FrameKey] = []
        self.frames: dict[FrameKey, dict[str, Any]] = {}
        self.subscribed = threading.Event()
        self.on_copy: Callable[[int], None] | None = None  # called (network thread) with the count so far
        # A persistent session: what the broker accepts while we reconnect (after its restart) waits for us.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"imd-rel-wire-{uuid.uuid4().hex[:6]}",
                             clean_session=False)
        client.reconnect_delay_set(0.05, 0.5)
        client.on_connect = lambda c, *_: c.subscribe("imd/v1/+/frames", qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_disconnect = lambda *_: self.subscribed.clear()
        client.on_message = self._on_message
        self.client = client
        client.connect_async(broker.host, broker.port, keepalive=10)
        client.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError("wire observer could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        batch = json.loads(msg.payload)
        with self.lock:
            for frame in batch["frames"]:
                key = (batch["collector"], int(frame["sequence"]))
                self.copies.append(key)
                self.frames.setdefault(key, frame)
            count = len(self.copies)
        if self.on_copy is not None:
            self.on_copy(count)

    def count(self) -> int:
        with self.lock:
            return len(self.copies)

    def distinct(self) -> int:
        with self.lock:
            return len(self.frames)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FleetSource:
    """Simulated collectors (hwsim's fleet) published straight to the broker: volume for ingest faults.

    The messages are generated before publishing starts, so ``sent`` is known exactly and the
    publisher can be paced, paused, repeated and shuffled.
    """

    def __init__(self, seed: int, properties: int, apartments: int, rounds: int, start: datetime,
                 batch_size: int = 25) -> None:
        from hwsim.fleet import Fleet

        from protocols.messages import encode, frames_topic

        self.fleet = Fleet(seed=seed, properties=properties, apartments=apartments)
        self.messages: list[tuple[str, bytes]] = []
        self.keys: set[FrameKey] = set()
        for n in range(rounds):
            for collector, batch in self.fleet.batches(start + timedelta(hours=n), batch_size):
                self.messages.append((frames_topic(collector), encode(batch)))
                self.keys |= {(collector, f.sequence) for f in batch.frames}
        self.published = 0
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def sites(self) -> list[Any]:
        return [p.sim.site for p in self.fleet.properties]

    def publish(
        self, mqtt_url: str, rate: float = 0.0, messages: Iterable[tuple[str, bytes]] | None = None
    ) -> None:
        """Publish (QoS 1, each PUBACK awaited) at most ``rate`` messages/s; blocking."""
        from protocols.mqtturl import parse_mqtt_url

        url = parse_mqtt_url(mqtt_url)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"imd-rel-fleet-{uuid.uuid4().hex[:6]}")
        client.connect(url.host, url.port, keepalive=30)
        client.loop_start()
        began = time.monotonic()
        try:
            for n, (topic, payload) in enumerate(self.messages if messages is None else messages):
                client.publish(topic, payload, qos=1).wait_for_publish(30)
                self.published += 1
                if rate > 0 and (wait := began + (n + 1) / rate - time.monotonic()) > 0:
                    time.sleep(wait)
        finally:
            client.loop_stop()
            client.disconnect()

    def publish_in_background(self, mqtt_url: str, rate: float = 0.0,
                              messages: Iterable[tuple[str, bytes]] | None = None) -> None:
        def run() -> None:
            try:
                self.publish(mqtt_url, rate, messages)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, name="fleet-publisher", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 120) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError("fleet publisher did not finish")
        if self.error is not None:
            raise self.error

    def shuffled_twice(self, seed: int) -> list[tuple[str, bytes]]:
        """Every message again, twice: once shuffled, once in reverse order (redelivery and reordering)."""
        again = list(self.messages)
        random.Random(seed).shuffle(again)
        return again + list(reversed(self.messages))


# --- the tally ------------------------------------------------------------------------------------


@dataclass
class Stored:
    keys: set[FrameKey]
    rows: int  # raw frame rows (the schema makes (collector, sequence) unique)
    doubled_frames: int  # rows that repeat another row's collector, raw bytes and received_at
    readings: list[tuple[str, str, str, str]]  # (meter serial, register, read_at, value)
    doubled_readings: int
    url: str = ""


async def stored(database_url: str, collectors: set[str] | None = None) -> Stored:
    from sqlalchemy import func, select

    from central.db import Database
    from central.models import Meter, RawFrame, Reading

    db = await Database.open(database_url, migrate=False)
    try:
        async with db.sessions() as session:
            frames = (await session.execute(
                select(RawFrame.collector_id, RawFrame.sequence, RawFrame.raw, RawFrame.received_at)
            )).all()
            frames = [f for f in frames if collectors is None or f[0] in collectors]
            readings = (await session.execute(
                select(Meter.serial, Reading.register, Reading.read_at, Reading.value, RawFrame.collector_id)
                .join(Meter, Meter.id == Reading.meter_id)
                .join(RawFrame, RawFrame.id == Reading.raw_frame_id)
            )).all()
            doubled_readings = (await session.execute(
                select(func.count()).select_from(
                    select(Reading.meter_id).group_by(Reading.meter_id, Reading.register, Reading.read_at)
                    .having(func.count() > 1).subquery()
                )
            )).scalar_one()
    finally:
        await db.close()
    content = {(f[0], bytes(f[2]), f[3].isoformat()) for f in frames}
    return Stored(
        keys={(f[0], int(f[1])) for f in frames},
        rows=len(frames),
        doubled_frames=len(frames) - len(content),
        readings=sorted((r[0], r[1], r[2].isoformat(), format(r[3].normalize(), "f")) for r in readings
                        if collectors is None or r[4] in collectors),
        doubled_readings=int(doubled_readings),
        url=database_url,
    )


def stored_now(database_url: str, collectors: set[str] | None = None) -> Stored:
    return asyncio.run(stored(database_url, collectors))


def stored_count(database_url: str) -> int:
    """Raw frames stored so far (cheap: polled while waiting)."""
    async def count() -> int:
        from sqlalchemy import func, select

        from central.db import Database
        from central.models import RawFrame

        db = await Database.open(database_url, migrate=False)
        try:
            async with db.sessions() as session:
                return int((await session.execute(select(func.count()).select_from(RawFrame))).scalar_one())
        finally:
            await db.close()

    try:
        return asyncio.run(count())
    except Exception:
        return -1


async def _import_sites(database_url: str, data_dir: Path, sites: Iterable[Any]) -> None:
    from central.config import Settings
    from central.service import import_site_async

    settings = Settings(data_dir=data_dir, database_url=database_url)
    for site in sites:
        await import_site_async(settings, site, actor="reliability")


def import_sites(database_url: str, data_dir: Path, sites: Iterable[Any]) -> None:
    """Register the properties and meters (and migrate the schema) before any worker starts."""
    asyncio.run(_import_sites(database_url, data_dir, sites))


async def _clean_ingest(
    directory: Path, sites: Iterable[Any], frames: dict[FrameKey, dict[str, Any]]
) -> Stored:
    from central.db import Database
    from central.ingest import IngestProcessor
    from protocols.messages import FrameBatch

    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{directory / f'clean-{uuid.uuid4().hex[:6]}.sqlite'}"
    await _import_sites(url, directory, sites)
    db = await Database.open(url)
    try:
        processor = IngestProcessor(db)
        by_collector: dict[str, list[dict[str, Any]]] = {}
        for (collector, _seq), frame in sorted(frames.items()):
            by_collector.setdefault(collector, []).append(frame)
        for collector, items in by_collector.items():
            for i in range(0, len(items), 200):
                batch = FrameBatch.model_validate(
                    {"collector": collector, "sent_at": items[i]["received_at"], "frames": items[i:i + 200]})
                await processor.ingest_batch(batch)
    finally:
        await db.close()
    return await stored(url)


def clean_ingest(directory: Path, sites: Iterable[Any], frames: dict[FrameKey, dict[str, Any]]) -> Stored:
    """The oracle: the same distinct frames ingested once, in order, without any fault."""
    return asyncio.run(_clean_ingest(directory, sites, frames))


async def _consumption_totals(database_url: str, start: datetime, end: datetime) -> dict[str, Any]:
    from sqlalchemy import func, select

    from central.consumption import consumption
    from central.db import Database
    from central.models import Meter, Reading

    db = await Database.open(database_url, migrate=False)
    out: dict[str, Any] = {}
    try:
        async with db.sessions() as session:
            for meter in (await session.execute(select(Meter))).scalars().all():
                result = await consumption(session, meter, start, end)
                newest = (await session.execute(
                    select(func.max(Reading.read_at)).where(Reading.meter_id == meter.id))).scalar_one()
                out[meter.serial] = {
                    "consumption": result["consumption"],
                    "methods": (result["start"]["method"], result["end"]["method"]),
                    # order-sensitive state: ingest moves it forward only, whatever order batches come in
                    "last_reading_at": meter.last_reading_at.isoformat() if meter.last_reading_at else None,
                    "newest_reading": newest.isoformat() if newest else None,
                }
    finally:
        await db.close()
    return out


def consumption_totals(database_url: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Per meter: consumption over [start, end] by central's own query, and its last-reading time."""
    return asyncio.run(_consumption_totals(database_url, start, end))


@dataclass
class Figures:
    """One row of the reliability table."""

    scenario: str
    sent: int = 0  # distinct (collector, sequence) created by the sources
    copies: int = 0  # frame copies the broker carried, redeliveries and republications included
    stored: int = 0  # raw frames in the database
    doubled: int = 0  # raw frames or readings stored twice
    lost: int = 0  # sent but not stored
    readings: int = 0
    readings_match: bool = False  # readings identical to a clean ingest of the same frames
    recovery_s: float | None = None
    seconds: float = 0.0
    note: str = ""
    problems: list[str] = field(default_factory=list)
    reference_url: str = ""  # the clean ingest's database

    @property
    def ok(self) -> bool:
        nothing_wrong = (self.lost, self.doubled, self.problems) == (0, 0, [])
        return nothing_wrong and self.readings_match and self.sent > 0


def tally(
    figures: Figures,
    sent: set[FrameKey],
    database_url: str,
    wire: Wire,
    clean_dir: Path,
    sites: Iterable[Any],
    collectors: set[str] | None = None,
) -> Figures:
    time.sleep(0.5)  # a late duplicate would arrive now
    got = stored_now(database_url, collectors)
    figures.sent = len(sent)
    figures.copies = wire.count()
    figures.stored = got.rows
    figures.lost = len(sent - got.keys)
    figures.doubled = got.doubled_frames + got.doubled_readings
    figures.readings = len(got.readings)
    extra = got.keys - sent
    if extra:
        figures.problems.append(f"{len(extra)} stored frames that no source sent")
    with wire.lock:
        frames = dict(wire.frames)
    missing_on_wire = sent - set(frames)
    if missing_on_wire:
        figures.problems.append(f"{len(missing_on_wire)} sent frames never seen on the wire")
    reference = clean_ingest(clean_dir, sites, {k: v for k, v in frames.items() if k in sent})
    figures.reference_url = reference.url
    figures.readings_match = got.readings == reference.readings
    if not figures.readings_match:
        figures.problems.append(
            f"readings differ from a clean ingest: {len(got.readings)} stored, "
            f"{len(reference.readings)} expected")
    return figures
