"""The seven reliability scenarios of issue 11: each breaks one real part and counts what survived.

Every scenario runs in its own directory with its own broker and database, so the figures are its
own. "Sent" is what the sources created (the collector's assigned sequence numbers read from its
outbox, the fleet's generated frames); "stored" is what the database holds; the readings are
compared with a clean ingest of the same frames (see :func:`tests.reliability.parts.tally`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwsim.building import SimBuilding, build_building
from hwsim.segment import MbusSegment

from tests.reliability.parts import (
    FAKETIME_LIB,
    PG_BIN,
    CollectorProcess,
    Figures,
    FleetSource,
    FrameKey,
    Mosquitto,
    NetworkPath,
    PrivatePostgres,
    Wire,
    Worker,
    import_sites,
    stored_count,
    tally,
    wait_for,
)

FLEET_START = datetime(2023, 1, 2, tzinfo=UTC)


@dataclass
class Sizes:
    """How much traffic a scenario makes; ``quick`` for development runs."""

    outage_s: float = 45.0
    fleet_properties: int = 2
    fleet_apartments: int = 4
    fleet_rounds: int = 12
    fleet_rate: float = 40.0  # messages/s
    workers: int = 3


QUICK = Sizes(outage_s=15.0, fleet_rounds=4)


class Lab:
    """One scenario's parts; everything started here is stopped by :meth:`close`."""

    def __init__(self, root: Path, name: str, pg: PrivatePostgres | None = None,
                 database_url: str | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.name = name
        self.pg = pg
        self._cleanups: list[Callable[[], object]] = []
        self.broker = self.add(Mosquitto(self.dir / "broker").start(), Mosquitto.stop)
        self.wire = self.add(Wire(self.broker.url), Wire.close)
        self.sites: list[Any] = []
        self.collectors: set[str] = set()
        if database_url is not None:
            self.database_url = database_url
        elif pg is None:
            self.database_url = f"sqlite+aiosqlite:///{self.dir / 'central.sqlite'}"
        else:
            database = f"imd_{re.sub(r'[^a-z0-9]', '_', name)}"
            subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                            database], check=True, capture_output=True, timeout=60)
            self.database_url = pg.url.rpartition("/")[0] + f"/{database}"
        self.central_dir = self.dir / "central"

    def add(self, part: Any, cleanup: Callable[[Any], object]) -> Any:
        self._cleanups.append(lambda: cleanup(part))
        return part

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()

    def building(self, seed: int) -> tuple[SimBuilding, MbusSegment]:
        building = build_building(seed=seed, apartments=2)  # 9 wired meters, 11 telegrams a poll
        segment = self.add(MbusSegment(building.meters).start(), MbusSegment.stop)
        self.sites.append(building.site)
        return building, segment

    def collector(self, building: SimBuilding, segment: MbusSegment, mqtt_url: str | None = None,
                  **kwargs: Any) -> CollectorProcess:
        collector_id = f"rel-{self.name}-{os.getpid()}"[:40].replace("_", "-")
        self.collectors.add(collector_id)
        return self.add(
            CollectorProcess(collector_id, mqtt_url or self.broker.url, segment.port,
                             [m.primary_address for m in building.meters], self.dir / "collector", **kwargs),
            CollectorProcess.kill,
        )

    def fleet(self, seed: int, sizes: Sizes, batch_size: int = 5) -> FleetSource:
        fleet = FleetSource(seed, sizes.fleet_properties, sizes.fleet_apartments, sizes.fleet_rounds,
                            FLEET_START, batch_size)
        self.sites += fleet.sites
        self.collectors |= {p.collector for p in fleet.fleet.properties}
        return fleet

    def workers(self, n: int) -> list[Worker]:
        """Register the sites (and migrate), then start ``n`` workers one after the other."""
        import_sites(self.database_url, self.central_dir, self.sites)
        return [self.add(Worker(f"w{i}", self.database_url, self.broker, self.central_dir).start(),
                         Worker.kill) for i in range(n)]

    def stored(self) -> int:
        return stored_count(self.database_url)

    def tally(self, figures: Figures, sent: set[FrameKey]) -> Figures:
        return tally(figures, sent, self.database_url, self.wire, self.dir / "clean", self.sites,
                     self.collectors)


@contextlib.contextmanager
def lab(
    root: Path, name: str, pg: PrivatePostgres | None = None, database_url: str | None = None
) -> Iterator[Lab]:
    the_lab = Lab(root, name, pg, database_url)
    try:
        yield the_lab
    finally:
        the_lab.close()


def _drain(collector: CollectorProcess, lab_: Lab, timeout: float, what: str) -> float:
    """Seconds until the outbox is empty and every sequence assigned so far is stored."""
    def done() -> bool:
        depth, assigned = collector.outbox()
        return depth == 0 and assigned > 0 and lab_.stored() >= assigned
    return wait_for(done, timeout, what, step=0.2)


def _finish(collector: CollectorProcess, lab_: Lab) -> set[FrameKey]:
    """Stop the collector (SIGTERM), let the last frames through, return every sequence it assigned."""
    collector.stop()
    sent = collector.sent()
    with contextlib.suppress(AssertionError):  # the tally says what is missing
        wait_for(lambda: lab_.stored() >= len(sent), 30, "the collector's last frames to be stored", step=0.2)
    return sent


# --- (1) broker down for a long outage ------------------------------------------------------------


def _outage(lab_: Lab, collector: CollectorProcess, seconds: float) -> tuple[int, int]:
    """Let the collector poll into its outbox for ``seconds``: (deepest outbox, sequences assigned)."""
    began = time.monotonic()
    max_depth = 0
    while time.monotonic() - began < seconds:
        max_depth = max(max_depth, collector.outbox()[0])
        time.sleep(0.5)
    assert collector.alive(), "the collector died during the outage: " + collector.log.read_text()[-2000:]
    return max_depth, collector.outbox()[1]


def broker_unreachable(root: Path, sizes: Sizes) -> Figures:
    """The broker is gone for the collector (network path cut, reconnections refused); it stays up."""
    figures = Figures("broker unreachable (long outage)")
    with lab(root, "broker-unreachable") as lab_:
        building, segment = lab_.building(31)
        lab_.workers(1)
        path = lab_.add(NetworkPath(lab_.broker.port), NetworkPath.close)
        collector = lab_.collector(building, segment, mqtt_url=path.url).start()
        _drain(collector, lab_, 60, "the first poll to be stored")
        path.down()
        max_depth, assigned = _outage(lab_, collector, sizes.outage_s)
        path.up()
        figures.recovery_s = _drain(collector, lab_, 120, "the backlog to drain")
        sent = _finish(collector, lab_)
        figures.note = (f"{sizes.outage_s:.0f} s without a path to the broker, a poll every 5 s: up to "
                        f"{max_depth} frames waited in the outbox; {assigned} assigned by the end of it")
        lab_.tally(figures, sent)
    return figures


def broker_restart(root: Path, sizes: Sizes) -> Figures:
    """The broker process itself is down (SIGTERM: it saves sessions and queues) and comes back.

    Mosquitto 2.0.11 does not restore `$share/` subscriptions: what the collector publishes after
    the restart and before a worker has resubscribed is acknowledged and dropped. Nothing may be
    lost: the collector keeps those frames until central's receipt and publishes them again after
    its receipt timeout (shortened here from 300 s so that the scenario does not wait 5 minutes)."""
    figures = Figures("broker process down and restarted")
    timeout_s = 20.0
    with lab(root, "broker-restart") as lab_:
        building, segment = lab_.building(38)
        lab_.workers(1)
        collector = lab_.collector(building, segment, receipt_timeout_s=timeout_s).start()
        _drain(collector, lab_, 60, "the first poll to be stored")
        lab_.broker.stop()
        max_depth, _assigned = _outage(lab_, collector, sizes.outage_s / 3)
        lab_.broker.start()
        began = time.monotonic()
        _drain(collector, lab_, 60 + 3 * timeout_s, "the backlog to drain")
        figures.recovery_s = time.monotonic() - began
        sent = _finish(collector, lab_)
        again = collector.log.read_text(errors="replace").count("not receipted by central")
        figures.note = (f"{sizes.outage_s / 3:.0f} s broker outage, up to {max_depth} frames in the outbox; "
                        "frames the restarted broker acknowledged and dropped (no `$share/` member yet) "
                        f"were published again after the {timeout_s:.0f} s receipt timeout "
                        f"({again} time(s)); recovery includes that timeout")
        lab_.tally(figures, sent)
    return figures


def broker_restart_held(root: Path, sizes: Sizes) -> Figures:
    """The same restart done the way docs/OPERATIONS.md says: collectors kept off the broker until
    every ingest worker has subscribed again (here the network path; in production a firewall rule)."""
    figures = Figures("broker restarted, collectors held off until ingest resubscribed")
    with lab(root, "broker-restart-held") as lab_:
        building, segment = lab_.building(39)
        workers = lab_.workers(1)
        path = lab_.add(NetworkPath(lab_.broker.port), NetworkPath.close)
        collector = lab_.collector(building, segment, mqtt_url=path.url).start()
        _drain(collector, lab_, 60, "the first poll to be stored")
        subscribes = [lab_.broker.count(f"Received SUBSCRIBE from {w.client_id}") for w in workers]
        path.down()
        lab_.broker.stop()
        max_depth, _assigned = _outage(lab_, collector, sizes.outage_s / 3)
        lab_.broker.start()
        wait_for(lambda: all(lab_.broker.count(f"Received SUBSCRIBE from {w.client_id}") > n
                             for w, n in zip(workers, subscribes, strict=True)), 60,
                 "the workers to subscribe again", step=0.2)
        path.up()
        began = time.monotonic()
        _drain(collector, lab_, 120, "the backlog to drain")
        figures.recovery_s = time.monotonic() - began
        sent = _finish(collector, lab_)
        figures.note = (f"{sizes.outage_s / 3:.0f} s broker outage, up to {max_depth} frames in the "
                        "outbox; the collectors' path opened only after the workers' SUBSCRIBE was in "
                        "the broker log; recovery includes the collector's reconnect backoff")
        lab_.tally(figures, sent)
    return figures


# --- (2) kill -9 of the collector mid-publication -------------------------------------------------


def collector_kill(root: Path, sizes: Sizes) -> Figures:
    figures = Figures("kill -9 collector mid-publication")
    with lab(root, "collector-kill") as lab_:
        building, segment = lab_.building(32)
        lab_.workers(1)
        # one frame per message, one message in flight: publication is slow enough to be hit
        collector = lab_.collector(building, segment, batch_max_frames=1, max_inflight=1)
        killed = threading.Event()

        def kill(count: int) -> None:  # from the observer's network thread: mid-stream, mid-poll
            if count >= 3 and not killed.is_set():
                killed.set()
                collector.kill()

        lab_.wire.on_copy = kill
        collector.start()
        assert killed.wait(60), "the collector never published"
        lab_.wire.on_copy = None
        queued, assigned = collector.outbox()
        if queued == 0:
            figures.problems.append("the kill came after publication finished: nothing was tested")
        collector.start()
        began = time.monotonic()
        wait_for(lambda: lab_.stored() >= assigned and collector.outbox()[0] == 0, 120,
                 "the frames queued at the kill to be stored", step=0.2)
        figures.recovery_s = time.monotonic() - began
        # and the restarted collector goes on: one full poll of its own stored as well
        wait_for(lambda: collector.outbox()[1] >= assigned + 11, 60, "a poll after the restart", step=0.2)
        _drain(collector, lab_, 60, "the poll after the restart to be stored")
        sent = _finish(collector, lab_)
        figures.note = (f"killed (from the observer's network thread at the 3rd frame on the wire, mid-poll) "
                        f"with {queued} of {assigned} frames still in the outbox; restarted; recovery = "
                        "restart to those stored")
        lab_.tally(figures, sent)
    return figures


# --- (3) kill -9 of an ingest worker mid-commit ---------------------------------------------------


def worker_kill(root: Path, sizes: Sizes) -> Figures:
    figures = Figures("kill -9 ingest worker mid-commit")
    with lab(root, "worker-kill") as lab_:
        building, segment = lab_.building(33)
        fleet = lab_.fleet(33, sizes)
        (worker,) = lab_.workers(1)
        collector = lab_.collector(building, segment).start()
        fleet.publish_in_background(lab_.broker.url, sizes.fleet_rate)
        target = len(fleet.keys) // 3
        wait_for(lambda: lab_.stored() >= target, 120, "ingest to be under way")
        worker.kill()  # while it works through a stream of messages: some received, not committed
        at_kill = lab_.stored()
        seen_at_kill = lab_.wire.distinct()
        fleet.join()  # the broker queues the rest for the dead worker's session
        time.sleep(5)  # a restart takes time in production too; the collector keeps publishing
        backlog = lab_.wire.distinct() - lab_.stored()
        began = time.monotonic()
        worker.start()
        wait_for(lambda: lab_.stored() >= len(fleet.keys) + collector.outbox()[1] - collector.outbox()[0]
                 and collector.outbox()[0] == 0, 120, "the backlog to be stored", step=0.2)
        figures.recovery_s = time.monotonic() - began
        sent = fleet.keys | _finish(collector, lab_)
        figures.note = (f"killed with {seen_at_kill - at_kill} frames on the wire not yet stored (in the "
                        f"worker's hands or queued for it); {backlog} waiting at restart (same client id); "
                        "recovery includes the worker's start-up")
        lab_.tally(figures, sent)
    return figures


# --- (4) database restart during ingest -----------------------------------------------------------


def database_restart(root: Path, sizes: Sizes, pg: PrivatePostgres | None) -> Figures:
    figures = Figures("database restart during ingest")
    if pg is None:
        figures.note = f"not run: {PrivatePostgres.available() or 'no private PostgreSQL'}"
        figures.problems.append("not run")
        return figures
    with lab(root, "db-restart", pg) as lab_:
        building, segment = lab_.building(34)
        fleet = lab_.fleet(34, sizes)
        lab_.workers(2)
        collector = lab_.collector(building, segment).start()
        fleet.publish_in_background(lab_.broker.url, sizes.fleet_rate)
        wait_for(lambda: lab_.stored() >= len(fleet.keys) // 3, 120, "ingest to be under way")
        t0 = time.monotonic()
        pg.restart("immediate")  # a crash: no checkpoint, crash recovery on start
        down_s = time.monotonic() - t0
        after = lab_.stored()
        resumed = wait_for(lambda: lab_.stored() > after, 60, "ingest to resume", step=0.2)
        fleet.join()
        began = time.monotonic()
        wait_for(lambda: lab_.stored() >= len(fleet.keys) + collector.outbox()[1] - collector.outbox()[0]
                 and collector.outbox()[0] == 0, 120, "everything to be stored", step=0.2)
        figures.recovery_s = resumed
        sent = fleet.keys | _finish(collector, lab_)
        figures.note = (f"PostgreSQL 15 `pg_ctl restart -m immediate` took {down_s:.1f} s; first commit "
                        f"{resumed:.1f} s after it was back; backlog stored {time.monotonic() - began:.1f} s "
                        f"after publishing ended; 2 workers")
        lab_.tally(figures, sent)
    return figures


# --- (5) disk full on the collector ---------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> str | None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "needs root to mount a size-limited tmpfs"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    return None if result.returncode == 0 else f"mount failed: {result.stderr.strip()}"


def disk_full(root: Path, sizes: Sizes) -> Figures:
    figures = Figures("disk full on the collector")
    with lab(root, "disk-full") as lab_:
        disk = lab_.dir / "disk"
        reason = _mount_tmpfs(disk, "2m")
        if reason is not None:
            figures.note = f"not run: {reason}"
            figures.problems.append("not run")
            return figures
        lab_.add(disk, lambda d: subprocess.run(["umount", "-l", str(d)], check=False))
        building, segment = lab_.building(35)
        lab_.workers(1)
        # the network path, not the broker, goes away (a broker restart loses frames by itself)
        path = lab_.add(NetworkPath(lab_.broker.port), NetworkPath.close)
        collector = lab_.collector(building, segment, mqtt_url=path.url, data_dir=disk / "data").start()
        _drain(collector, lab_, 60, "the first poll to be stored")
        path.down()  # nothing can leave: the outbox must hold everything...
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):  # ...on a full disk
            while True:
                fh.write(b"\0" * 4096)
        free = shutil.disk_usage(disk).free
        _depth, before = collector.outbox()
        log_size = collector.log.stat().st_size
        time.sleep(max(15.0, sizes.outage_s / 3))  # three polls or more against a full disk
        assert collector.alive(), "the collector died on the full disk: " + collector.log.read_text()[-2000:]
        _depth, during = collector.outbox()
        complaints = collector.log.read_text(errors="replace")[log_size:]
        failed_polls = len(re.findall(r'Job "Collector.poll_all.*raised an exception', complaints))
        disk_full_errors = complaints.count("database or disk is full")
        filler.unlink()
        path.up()
        began = time.monotonic()
        # recovered = a poll after the space came back is on disk, published and stored
        wait_for(lambda: collector.outbox()[1] >= during + 11 and collector.outbox()[0] == 0
                 and lab_.stored() >= during + 11, 120, "a poll to be stored after space came back", step=0.2)
        figures.recovery_s = time.monotonic() - began
        sent = _finish(collector, lab_)
        figures.note = (f"2 MB tmpfs filled ({free} bytes left) with the broker unreachable: "
                        f"{during - before} frames queued on the full disk, {failed_polls} polls failed "
                        f"({disk_full_errors} 'database or disk is full' errors in the log, the collector "
                        "kept running); their readouts were "
                        "never sequenced, so they count neither as sent nor as lost; recovery = space back "
                        "to the next poll stored")
        lab_.tally(figures, sent)
    return figures


# --- (6) clock jumps ------------------------------------------------------------------------------


def clock_jumps(root: Path, sizes: Sizes, steps: tuple[str, ...] = ("+0", "+2d", "-3d", "+0")) -> Figures:
    figures = Figures(f"collector clock steps ({', '.join(steps[1:])})")
    if not FAKETIME_LIB.exists():
        figures.note = f"not run: libfaketime not installed ({FAKETIME_LIB}; apt-get install libfaketime)"
        figures.problems.append("not run")
        return figures
    with lab(root, "clock-jumps") as lab_:
        building, segment = lab_.building(36)
        lab_.workers(1)
        offset = lab_.dir / "faketime"
        offset.write_text("+0\n")
        collector = lab_.collector(building, segment, faketime_file=offset).start()
        polls: list[tuple[str, int]] = []
        for step in steps:
            offset.write_text(f"{step}\n")
            _d, before = collector.outbox()
            # Two polls' worth of frames under each clock: a stalled schedule times out here.
            wait_for(lambda b=before: collector.outbox()[1] >= b + 22, 60,
                     f"two polls with the clock at {step}", step=0.2)
            polls.append((step, collector.outbox()[1] - before))
        figures.recovery_s = _drain(collector, lab_, 60, "the outbox to drain")
        sent = _finish(collector, lab_)
        figures.note = ("libfaketime steps the collector's wall clock (monotonic untouched): "
                        + ", ".join(f"{s}: {n} frames" for s, n in polls)
                        + "; readings keep the collector's time stamps")
        lab_.tally(figures, sent)
    return figures


# --- (7) duplicate and reordered delivery ---------------------------------------------------------


def duplicates_reordered(root: Path, sizes: Sizes, pg: PrivatePostgres | None) -> Figures:
    workers_n = sizes.workers if pg is not None else 1
    figures = Figures(f"duplicates + reordering, {workers_n} workers")
    with lab(root, "dup-reorder", pg) as lab_:
        fleet = lab_.fleet(37, sizes)
        workers = lab_.workers(workers_n)
        fleet.publish(lab_.broker.url)
        wait_for(lambda: lab_.stored() >= len(fleet.keys), 120, "the first delivery to be stored", step=0.2)
        acked = sum(w.acknowledged() for w in workers)
        again = fleet.shuffled_twice(seed=7)
        began = time.monotonic()
        fleet.publish(lab_.broker.url, messages=again)
        wait_for(lambda: sum(w.acknowledged() for w in workers) >= acked + len(again), 120,
                 "every republished message to be acknowledged", step=0.2)
        figures.recovery_s = time.monotonic() - began
        shares = [w.delivered() for w in workers]
        figures.note = (f"every batch published 3 times (in order, shuffled, reversed) on "
                        f"{'PostgreSQL' if pg else 'SQLite'}; messages per worker {shares}; "
                        "recovery = time to acknowledge all republished copies")
        lab_.tally(figures, fleet.keys)
    return figures
