"""Fault tests of the collector (issue 6, point 8) with the simulator and a real broker.

- a broker outage of (simulated) days while the collector keeps polling, with a batch in flight
  when the link went down: every frame arrives, none twice;
- ``imd edge run`` killed with SIGKILL while it publishes, then restarted: nothing is lost and a
  redelivered frame carries the same sequence number and the same content;
- the serial port vanishing (USB unplug) and coming back: the collector says so in its status
  alarms, finds the port again by itself and reads the meters it missed;
- a meter that stops answering costs its retry budget, not the poll.

Central is stood in for by a small paho subscriber that records every (collector, sequence) and the
frame it carried. Outages use an embedded broker started and stopped inside the test, reached
through a small TCP proxy that plays the network path (it can drop the collector's traffic, which
is how a batch ends up "in flight" when the broker goes away, and it keeps the collector out until
the stand-in central has subscribed again: amqtt keeps no sessions across a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hwsim.building import SimBuilding, build_building
from hwsim.segment import MbusSegment
from paho.mqtt.enums import CallbackAPIVersion

from central.embedded_broker import EmbeddedBroker, free_port
from edge.config import parse_config
from edge.daemon import Collector
from edge.uplink import Backoff
from protocols.mbus.master import Timing
from protocols.messages import encode, frames_topic, parse_status, receipt_topic, receipts_for, status_topic
from protocols.mqtturl import parse_mqtt_url

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
DAY_S = 86_400.0


class Central:
    """Stands in for central ingest: records every frame that arrives, keyed by (collector, sequence)."""

    def __init__(self, url: str, collector: str) -> None:
        broker = parse_mqtt_url(url)
        self.collector = collector
        self.arrivals: list[tuple[str, int, dict[str, Any]]] = []
        self.statuses: list[bytes] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.on_frames: Callable[[int], None] | None = None  # called with the count so far
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-{uuid.uuid4().hex[:8]}")
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        client.reconnect_delay_set(0.05, 0.2)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.subscribed.clear()
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        self.client = client
        client.connect_async(broker.host, broker.port, keepalive=10)
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(frames_topic(self.collector), 1), (status_topic(self.collector), 1)])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == status_topic(self.collector):
            with self.lock:
                self.statuses.append(bytes(msg.payload))
            return
        # Raw JSON, not the pydantic model: "identical content" must mean identical bytes' meaning.
        batch = json.loads(msg.payload)
        with self.lock:
            self.arrivals += [(batch["collector"], f["sequence"], f) for f in batch["frames"]]
            count = len(self.arrivals)
        # Like central after its commit: the receipt is what frees the collector's outbox rows.
        sequences = [f["sequence"] for f in batch["frames"]]
        for receipt in receipts_for(batch["collector"], sequences, datetime.now(UTC)):
            self.client.publish(receipt_topic(batch["collector"]), encode(receipt), qos=1)
        if self.on_frames is not None:
            self.on_frames(count)

    def sequences(self) -> list[int]:
        with self.lock:
            return [s for c, s, _ in self.arrivals if c == self.collector]

    def by_sequence(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        with self.lock:
            for _c, seq, frame in self.arrivals:
                out.setdefault(seq, []).append(frame)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.publish(status_topic(self.collector), b"", qos=1, retain=True).wait_for_publish(3)
        self.client.disconnect()
        self.client.loop_stop()


class LinkProxy:
    """The network path collector -> broker: refuse new connections, swallow traffic, cut links."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.accepting = True
        self.frozen = False  # drop what the collector sends (it then waits for PUBACKs in vain)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst, from_collector in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(src, dst, from_collector))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_collector: bool) -> None:
        try:
            while data := await src.read(65536):
                if from_collector and self.frozen:
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class FakeClock:
    """Monotonic time that the test can move forward by days."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


async def until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def building() -> SimBuilding:
    return build_building(seed=11, apartments=2)  # 9 meters, primary addresses 1..9


@pytest.fixture
def segment(building: SimBuilding) -> Iterator[MbusSegment]:
    seg = MbusSegment(building.meters)
    seg.start()
    yield seg
    seg.stop()


def _config(collector_id: str, url: str, data: Path, port: str, building: SimBuilding, **bus: Any) -> Any:
    return parse_config({
        "collector_id": collector_id,
        "data_dir": str(data),
        "mqtt": {"url": url, "keepalive_s": 5, "batch_max_frames": 4, "max_inflight_batches": 2},
        "buses": [{"name": "mbus0", "port": port, "retries": 1,
                   "meters": [{"primary": m.primary_address} for m in building.meters], **bus}],
        "schedule": {"interval_s": 3600, "heartbeat_s": 3600},
        "log_level": "WARNING",
    })


def _expected_frames(building: SimBuilding) -> int:
    return sum(len(m.layout) for m in building.meters)


# -- (a) broker down for days, several polls, then back -------------------------------------------


async def test_broker_outage_of_days_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, building: SimBuilding, segment: MbusSegment
) -> None:
    collector_id = f"fault-a-{uuid.uuid4().hex[:6]}"
    users = {"central": "c-pw", f"collector-{collector_id}": "e-pw"}
    broker_port = free_port()
    broker = EmbeddedBroker("127.0.0.1", broker_port, users)
    await broker.start()
    proxy = LinkProxy(broker_port)
    await proxy.start()
    central = Central(f"mqtt://central:c-pw@127.0.0.1:{broker_port}", collector_id)
    url = f"mqtt://collector-{collector_id}:e-pw@127.0.0.1:{proxy.port}"
    collector = Collector(_config(collector_id, url, tmp_path, segment.port, building))
    clock = FakeClock()
    per_poll = _expected_frames(building)
    try:
        await collector.start()
        assert collector.connection is not None
        assert collector.publisher is not None
        assert collector.outbox is not None
        collector.connection.backoff = Backoff(initial_s=0.05, maximum_s=0.3)
        collector.publisher.clock = clock
        publisher, outbox, connection = collector.publisher, collector.outbox, collector.connection
        await until(connection.connected.is_set, what="collector connected")
        await until(central.subscribed.is_set, what="central subscribed")

        await collector.poll_all(scheduled=True)
        await until(lambda: len(central.sequences()) == per_poll and outbox.depth == 0, what="first poll")

        # The network path starts swallowing the collector's packets: the next poll's batches go out
        # and are never acknowledged (in flight when the broker dies).
        proxy.frozen = True
        await collector.poll_all(scheduled=True)
        await until(lambda: publisher.inflight_frames > 0, what="a batch in flight")
        in_flight_at_outage = publisher.inflight_frames
        proxy.accepting = False
        await broker.stop()
        proxy.cut()
        await until(lambda: not connection.connected.is_set(), what="collector noticed the outage")

        # Three more nightly polls while the broker is away; days pass between them.
        for _ in range(3):
            clock.offset += DAY_S
            await collector.poll_all(scheduled=True)
            publisher.wake()
            await asyncio.sleep(0.05)
        assert outbox.depth == 4 * per_poll  # everything since the freeze is still on disk
        assert len(central.sequences()) == per_poll
        status = await collector.status()
        assert status.outbox_depth == 4 * per_poll

        broker = EmbeddedBroker("127.0.0.1", broker_port, users)
        await broker.start()
        await until(central.subscribed.is_set, what="central subscribed again")
        proxy.frozen = False
        proxy.accepting = True
        total = 5 * per_poll
        await until(lambda: outbox.depth == 0 and len(set(central.sequences())) == total, timeout=15,
                    what="the backlog to drain")
        await asyncio.sleep(0.3)  # a late duplicate would arrive now
        seqs = central.sequences()
        assert sorted(set(seqs)) == list(range(1, total + 1)), "a frame was lost"
        assert len(seqs) == total, f"duplicates: {sorted(s for s in set(seqs) if seqs.count(s) > 1)}"
        assert in_flight_at_outage > 0
        assert publisher.acked_frames == total
    finally:
        await collector.stop()
        central.close()
        await proxy.stop()
        await broker.stop()


# -- (c) the serial port vanishes and comes back ------------------------------------------------


async def test_serial_port_vanishing_is_reported_and_recovered(
    tmp_path: Path, mqtt_url: str, building: SimBuilding
) -> None:
    collector_id = f"fault-c-{uuid.uuid4().hex[:6]}"
    # A udev rule gives the adapter a stable name; the pty behind it changes on every "plug".
    stable = tmp_path / "imd-mbus0"
    first = MbusSegment(building.meters).start()
    stable.symlink_to(first.port)
    second: MbusSegment | None = None
    central = Central(mqtt_url, collector_id)
    collector = Collector(_config(collector_id, mqtt_url, tmp_path / "data", str(stable), building))
    collector.port_retry_s = (0.1, 0.5)
    n = len(building.meters)
    try:
        await collector.start()
        (poll,) = await collector.poll_all(scheduled=True)
        assert (poll.meters_read, poll.meters_failed) == (n, 0)
        worker = collector.buses["mbus0"]

        # Unplug: the device node disappears while the collector holds the port open.
        first.stop()
        stable.unlink()
        (poll,) = await collector.poll_all(scheduled=True)
        assert poll.meters_read == 0
        assert poll.meters_failed == n
        assert worker.error is not None
        status = await collector.status()
        assert any(a.startswith("bus mbus0:") for a in status.alarms), status.alarms
        # ... and central hears it without waiting for the next heartbeat
        await until(lambda: any(parse_status(p).alarms for p in central.statuses if p), what="alarm status")
        before = len(central.sequences())

        # Plug back in: a new device node under the same stable name.
        second = MbusSegment(building.meters).start()
        stable.symlink_to(second.port)
        await until(lambda: worker.error is None, timeout=5, what="the port to come back")
        # the meters the failed poll missed are read as soon as the port is back
        await until(lambda: len(central.sequences()) >= before + _expected_frames(building), timeout=10,
                    what="the missed meters to be read")
        assert worker.last_poll is not None
        assert worker.last_poll.meters_read == n
        status = await collector.status()
        assert not any(a.startswith("bus mbus0:") for a in status.alarms)
        await until(lambda: any(
            p and not parse_status(p).alarms and parse_status(p).last_polls for p in central.statuses[-1:]
        ), what="all-clear status")
        (poll,) = await collector.poll_all(scheduled=True)
        assert (poll.meters_read, poll.meters_failed) == (n, 0)
    finally:
        await collector.stop()
        central.close()
        first.stop()
        if second is not None:
            second.stop()


# -- (d) a meter that stops answering ------------------------------------------------------------


async def test_silent_meter_costs_at_most_its_retry_budget(
    tmp_path: Path, mqtt_url: str, building: SimBuilding, segment: MbusSegment
) -> None:
    retries = 2
    collector = Collector(_config(f"fault-d-{uuid.uuid4().hex[:6]}", mqtt_url, tmp_path, segment.port,
                                  building, retries=retries))
    n = len(building.meters)
    try:
        await collector.start()
        healthy = []
        for _ in range(2):
            (poll,) = await collector.poll_all()
            assert (poll.meters_read, poll.meters_failed) == (n, 0)
            healthy.append(poll.duration_s)
        victim = building.meters[n // 2]  # in the middle: the meters after it must still be read
        assert victim.faults is not None
        victim.faults.inject(victim, "silent", LONG_AGO)
        (poll,) = await collector.poll_all()
        assert (poll.meters_read, poll.meters_failed) == (n - 1, 1)
        # The retry budget: (retries + 1) SND_NKE attempts, each waiting the EN 13757-2 answer window
        # (request wire time + 330 bit times + 50 ms + the adapter margin), about 0.22 s at 2400 baud.
        budget = (retries + 1) * Timing(2400).answer_window(5)
        extra = poll.duration_s - min(healthy)
        print(f"\npoll of {n} meters: healthy {min(healthy):.3f} s, with one silent meter "
              f"{poll.duration_s:.3f} s; extra {extra:.3f} s, retry budget {budget:.3f} s")
        # Upper bound with 1 s of slack: on a shared 2-core CI machine one scheduling hiccup of the
        # simulator thread costs a retry of a healthy meter (seen: +0.7 s). A master that waited
        # for the whole poll or a fixed per-meter sleep would still be far outside it.
        assert extra <= budget + 1.0
        assert extra >= budget - 0.05  # it did wait its windows (no early give-up)
    finally:
        await collector.stop()


# -- (b) the collector process killed with SIGKILL while it publishes -------------------------------


def _outbox_state(db: Path) -> tuple[int, int]:
    """(rows still queued, next sequence) straight from the collector's SQLite file."""
    con = sqlite3.connect(db)
    try:
        depth = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        row = con.execute("SELECT value FROM meta WHERE key = 'next_sequence'").fetchone()
    finally:
        con.close()
    return int(depth), int(row[0]) if row else 1


def _write_config(path: Path, collector_id: str, url: str, port: str, building: SimBuilding) -> None:
    meters = ", ".join(f"{{ primary = {m.primary_address} }}" for m in building.meters)
    path.write_text(
        f'collector_id = "{collector_id}"\n'
        f'data_dir = "{path.parent / "data"}"\n'
        'log_level = "WARNING"\n'
        f'[mqtt]\nurl = "{url}"\nkeepalive_s = 5\n'
        # one frame per message, one message in flight: publication takes long enough to be hit
        "batch_max_frames = 1\nmax_inflight_batches = 1\n"
        "[schedule]\ninterval_s = 3600\nheartbeat_s = 3600\n"
        f'[[buses]]\nname = "mbus0"\nport = "{port}"\nretries = 0\nmeters = [{meters}]\n'
    )


def test_sigkill_during_publication_loses_nothing(
    tmp_path: Path, mqtt_url: str, segment: MbusSegment
) -> None:
    building = build_building(seed=11, apartments=2)
    collector_id = f"fault-b-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "collector.toml"
    _write_config(config, collector_id, mqtt_url, segment.port, building)
    db = tmp_path / "data" / "outbox.sqlite"
    imd = [sys.executable, "-m", "imd"] if not Path(sys.executable).with_name("imd").exists() else [
        str(Path(sys.executable).with_name("imd"))]
    central = Central(mqtt_url, collector_id)
    assert central.subscribed.wait(10)
    proc = subprocess.Popen([*imd, "edge", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = threading.Event()

    def kill(count: int) -> None:  # from central's network thread, mid-stream
        if count >= 5 and not killed.is_set():
            os.kill(proc.pid, signal.SIGKILL)
            killed.set()

    central.on_frames = kill
    try:
        assert killed.wait(20), "the collector never published"
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        proc.stderr.close()  # type: ignore[union-attr]
        queued, next_seq = _outbox_state(db)
        assert queued > 0, "the kill came after publication finished: nothing was tested"
        print(f"\nkilled with {queued} of {next_seq - 1} frame(s) still queued; "
              f"{len(set(central.sequences()))} had arrived")

        # Restart: it re-publishes what was queued (same sequence numbers), polls once more, drains.
        again = subprocess.run([*imd, "edge", "run", "--config", str(config), "--once"],
                               capture_output=True, timeout=60, check=False)
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        queued, next_seq = _outbox_state(db)
        assert queued == 0
        expected = set(range(1, next_seq))
        # the first run was killed somewhere in its poll; the second one polled everything
        assert len(expected) >= _expected_frames(building) + 1

        deadline = time.monotonic() + 10
        while set(central.sequences()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = central.by_sequence()
        assert set(arrived) == expected, f"lost: {sorted(expected - set(arrived))}"
        for seq, copies in arrived.items():
            assert all(c == copies[0] for c in copies), f"sequence {seq} redelivered with other content"
        print(f"{len(expected)} frames, {sum(len(c) - 1 for c in arrived.values())} redelivered duplicate(s)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None and not proc.stderr.closed:
            proc.stderr.close()
        central.close()
