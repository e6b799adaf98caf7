"""The collector daemon: schedule polls, keep the outbox flowing, report health, answer commands.

One asyncio loop. Serial conversations run in worker threads (one lock per bus, so a command and the
schedule never talk on the same wire at once); MQTT runs in paho's network thread behind
:class:`edge.uplink.MqttConnection`. Every frame read goes to the durable outbox first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from edge import systemd
from edge.bus import BusError, SerialBus
from edge.config import BusConfig, CollectorConfig, ConfigError, load_config
from edge.outbox import Outbox
from edge.radio import KeysFileError, RadioService, load_meter_keys
from edge.uplink import Backoff, MqttConnection, OutboxPublisher, TlsFiles
from protocols.mbus.master import ReadFrame, ReadoutResult
from protocols.messages import (
    BusPollResult,
    CollectorState,
    CollectorStatus,
    Command,
    CommandName,
    CommandResult,
    FrameMessage,
    LinkKind,
    command_result_topic,
    encode,
    status_topic,
)

log = logging.getLogger("edge")

LAST_POLL_KEY = "last_scheduled_poll_at"


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("imd-gateway")
    except Exception:  # running from a source tree without package metadata
        return "0+unknown"


def cpu_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The CPU (or first) thermal zone in °C, where the board has one (a Raspberry Pi does)."""
    zones = sorted(root.glob("thermal_zone*"))
    preferred = [z for z in zones if "cpu" in _read(z / "type").lower()] or zones
    for zone in preferred:
        raw = _read(zone / "temp")
        with contextlib.suppress(ValueError):
            return round(int(raw) / 1000, 1)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class JitteredCron(BaseTrigger):  # type: ignore[misc]
    """A cron schedule shifted by a fixed per-collector offset (see ``poll_jitter_offset_s``)."""

    def __init__(self, expr: str, offset_s: int, timezone: Any = None) -> None:
        self.cron = CronTrigger.from_crontab(expr, timezone=timezone)
        self.offset = timedelta(seconds=offset_s)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        prev = previous_fire_time - self.offset if previous_fire_time is not None else None
        nxt = self.cron.get_next_fire_time(prev, now - self.offset)
        return nxt + self.offset if nxt is not None else None

    def previous_fire_time(self, now: datetime, horizon: timedelta = timedelta(days=8)) -> datetime | None:
        """The latest fire time at or before ``now`` within ``horizon`` (for the missed-run check)."""
        last = None
        t = self.get_next_fire_time(None, now - horizon)
        while t is not None and t <= now:
            last = t
            t = self.get_next_fire_time(t, t + timedelta(seconds=1))
        return last

    def __str__(self) -> str:
        return f"cron[{self.cron}] + {int(self.offset.total_seconds())} s"


def frame_messages(bus: BusConfig, result: ReadoutResult) -> list[FrameMessage]:
    """ReadFrames of one readout as outbox-ready messages (sequence is assigned by the outbox)."""
    now = datetime.now(UTC)
    return [
        FrameMessage(
            sequence=0,
            received_at=now,
            link=LinkKind.MBUS,
            port=bus.name,
            address=result.address,
            status=frame.status,
            reason=frame.reason[:500] if frame.reason else None,
            raw=frame.raw.hex(),
            decoded=_summary(frame),
        )
        for frame in result.frames
    ]


def _summary(frame: ReadFrame) -> dict[str, Any] | None:
    t = frame.telegram
    if t is None:
        return None
    return {
        "id": t.id,
        "manufacturer": t.manufacturer,
        "version": t.version,
        "medium": t.medium,
        "access_number": t.access_number,
        "records": len(t.records),
        "more_records_follow": t.more_records_follow,
    }


class BusWorker:
    """One wired bus: its serial driver, its lock and its last poll result."""

    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self.serial = SerialBus(
            config.port,
            config.baud,
            retries=config.retries,
            send_nke=config.snd_nke,
            max_telegrams=config.max_telegrams,
        )
        self.lock = asyncio.Lock()
        self.last_poll: BusPollResult | None = None
        self.error: str | None = None
        # While the port is gone (USB unplugged): the meters a poll could not reach, read on return.
        self.missed: dict[str, bool] = {}  # address -> billing
        self.recovery: asyncio.Task[None] | None = None

    async def read(self, address: int | str) -> ReadoutResult:
        result: ReadoutResult = await asyncio.to_thread(self.serial.read_meter, address)
        return result

    def close(self) -> None:
        self.serial.close()


class Collector:
    def __init__(self, config: CollectorConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.started = time.monotonic()
        self.version = software_version()
        self.buses: dict[str, BusWorker] = {b.name: BusWorker(b) for b in config.buses}
        self.outbox: Outbox | None = None
        self.connection: MqttConnection | None = None
        self.publisher: OutboxPublisher | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.polls_done = 0
        self.radio: RadioService | None = None  # radio listener (edge/radio.py)
        self.radio_options: dict[str, Any] = {}  # RadioService keyword arguments (tests tune timings)
        # How often a vanished serial port is looked for again (first, then backing off to the max).
        self.port_retry_s: tuple[float, float] = (2.0, 60.0)
        self.thermal_root = Path("/sys/class/thermal")  # where the board reports its CPU temperature

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.outbox = await Outbox.open(cfg.outbox_path, max_frames=cfg.outbox.max_frames,
                                        max_bytes=cfg.outbox.max_bytes)
        self.connection = MqttConnection(
            cfg.collector_id,
            cfg.mqtt.broker(),
            loop,
            tls=TlsFiles(cfg.mqtt.ca_file, cfg.mqtt.client_cert, cfg.mqtt.client_key),
            keepalive_s=cfg.mqtt.keepalive_s,
        )
        self.publisher = OutboxPublisher(
            cfg.collector_id,
            self.outbox,
            self.connection,
            batch_max_frames=cfg.mqtt.batch_max_frames,
            max_inflight=cfg.mqtt.max_inflight_batches,
            delete_after=cfg.mqtt.delete_after,
            receipt_timeout_s=cfg.mqtt.receipt_timeout_s,
        )
        self.connection.on_command = self._on_command
        previous_connected = self.connection.on_connected

        def connected() -> None:
            if previous_connected is not None:
                previous_connected()
            self._spawn(self.publish_status())

        self.connection.on_connected = connected
        self.connection.start()
        self._tasks.append(asyncio.create_task(self.publisher.run(), name="outbox-publisher"))
        if cfg.radios:
            await self.start_radio()
        interval = systemd.watchdog_interval_s()
        if interval is not None:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        log.info(
            "collector %s started: broker %s, %d bus(es), outbox %s (%d queued)",
            cfg.collector_id, cfg.mqtt.broker().redacted(), len(self.buses), cfg.outbox_path,
            self.outbox.depth,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def schedule(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        scheduler = AsyncIOScheduler(event_loop=loop)
        job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        if cfg.schedule.interval_s is not None:
            scheduler.add_job(self.poll_all, IntervalTrigger(seconds=cfg.schedule.interval_s), id="poll",
                              next_run_time=datetime.now(UTC), kwargs={"scheduled": True}, **job_defaults)
            log.info("demo mode: polling every %d s", cfg.schedule.interval_s)
        else:
            trigger = JitteredCron(cfg.schedule.poll_cron, self.config.poll_jitter_offset_s())
            scheduler.add_job(self.poll_all, trigger, id="poll", kwargs={"scheduled": True}, **job_defaults)
            log.info("polling on %s", trigger)
            if cfg.schedule.run_missed_at_start and await self._missed_poll(trigger):
                log.info("the last scheduled poll was missed (collector was off): polling now")
                scheduler.add_job(self.poll_all, id="missed-poll", kwargs={"scheduled": True})
        heartbeat = IntervalTrigger(seconds=cfg.schedule.heartbeat_s)
        scheduler.add_job(self.publish_status, heartbeat, id="heartbeat", **job_defaults)
        scheduler.start()
        self.scheduler = scheduler
        self._tasks.append(asyncio.create_task(self._clock_guard(), name="clock-guard"))

    async def _clock_guard(self, every_s: float = 10.0, tolerance_s: float = 30.0) -> None:
        """APScheduler waits by the wall clock: after a backward step (NTP, a Pi without an RTC) it
        would hold every poll and heartbeat until the clock had caught up - days, possibly. The
        monotonic clock never steps, so a difference between the two is a step: schedule anew."""
        wall, mono = time.time(), time.monotonic()
        while True:
            await asyncio.sleep(every_s)
            step = (time.time() - wall) - (time.monotonic() - mono)
            wall, mono = time.time(), time.monotonic()
            if abs(step) <= tolerance_s or self.scheduler is None:
                continue
            log.warning("wall clock stepped by %+.0f s: polls and heartbeats scheduled anew", step)
            now = datetime.now(UTC)
            for job in self.scheduler.get_jobs():
                if isinstance(job.trigger, IntervalTrigger):
                    job.reschedule(IntervalTrigger(seconds=job.trigger.interval.total_seconds()))
                else:
                    job.modify(next_run_time=job.trigger.get_next_fire_time(None, now))

    async def _missed_poll(self, trigger: JitteredCron) -> bool:
        assert self.outbox is not None
        now = datetime.now(UTC).astimezone()
        due = trigger.previous_fire_time(now)
        if due is None:
            return False
        last = await self.outbox.get_meta(LAST_POLL_KEY)
        return last is None or datetime.fromisoformat(last) < due

    async def stop(self) -> None:
        log.info("collector %s stopping", self.config.collector_id)
        systemd.notify("STOPPING=1")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            # bounded: a task that ignores its cancellation must not keep the collector from stopping
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=10)
            for task in stuck:
                log.error("task %s did not stop within 10 s of cancellation", task.get_name())
        if self.radio is not None:
            await self.radio.stop()
        for worker in self.buses.values():
            async with worker.lock:
                worker.close()
        if self.connection is not None:
            await self.connection.stop(offline=True)
        if self.outbox is not None:
            await self.outbox.close()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def start_radio(self) -> None:
        """The radio listener (edge/radio.py): forwards our meters' telegrams to the outbox.

        They are billing data: for a radio meter the rate-limited forward is its only reading.
        """
        keys: dict[str, bytes] = {}
        problem = None
        if self.config.meter_keys_file is not None:
            try:
                keys = load_meter_keys(self.config.meter_keys_file)
            except KeysFileError as exc:
                problem = str(exc)
                log.error("%s: radio telegrams are forwarded undecrypted", exc)

        async def store(messages: list[FrameMessage]) -> None:
            assert self.outbox is not None
            await self.outbox.add(messages, billing=True)
            if self.publisher is not None:
                self.publisher.wake()

        self.radio = RadioService(self.config.radios, store, keys=keys, **self.radio_options)
        if problem is not None:
            self.radio.problems.append(problem)
        await self.radio.start()

    async def _watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- polling ---------------------------------------------------------------------------------

    async def poll_all(self, scheduled: bool = False) -> list[BusPollResult]:
        results = await asyncio.gather(*(self.poll_bus(w, billing=scheduled) for w in self.buses.values()))
        if scheduled and self.outbox is not None:
            await self.outbox.set_meta(LAST_POLL_KEY, datetime.now(UTC).isoformat())
        self.polls_done += 1
        return list(results)

    async def poll_bus(
        self, worker: BusWorker, *, billing: bool = True, addresses: Sequence[str] | None = None
    ) -> BusPollResult:
        assert self.outbox is not None
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        read = failed = 0
        meters = [m for m in worker.config.meters if addresses is None or m.address in addresses]
        async with worker.lock:
            for index, meter in enumerate(meters):
                try:
                    result = await worker.read(meter.primary if meter.primary is not None else meter.address)
                except BusError as exc:
                    failed += len(meters) - read - failed
                    self._port_lost(worker, exc, [m.address for m in meters[index:]], billing)
                    break
                worker.missed.pop(meter.address, None)
                if worker.error is not None:
                    log.info("bus %s: port %s is back", worker.config.name, worker.config.port)
                    worker.error = None
                    self._spawn(self.publish_status())
                # Commit what this meter gave before talking to the next one: a crash loses nothing.
                await self.outbox.add(frame_messages(worker.config, result), billing=billing)
                if self.publisher is not None:
                    self.publisher.wake()
                if result.answered:
                    read += 1
                else:
                    failed += 1
                    log.warning("bus %s meter %s: %s", worker.config.name, result.address,
                                "; ".join(f.reason or f.status for f in result.frames))
        poll = BusPollResult(
            bus=worker.config.name,
            started_at=started_at,
            duration_s=round(time.monotonic() - t0, 3),
            meters_read=read,
            meters_failed=failed,
        )
        worker.last_poll = poll
        log.info("bus %s: %d meter(s) read, %d failed in %.1f s", poll.bus, read, failed, poll.duration_s)
        return poll

    def _port_lost(self, worker: BusWorker, exc: BusError, missed: list[str], billing: bool) -> None:
        """The serial port failed: raise the alarm now, and look for the port until it is back."""
        if worker.error is None:
            log.error("bus %s: %s", worker.config.name, exc)
            self._spawn(self.publish_status())  # central hears of it now, not at the next heartbeat
        worker.error = str(exc)
        for address in missed:
            worker.missed[address] = worker.missed.get(address, False) or billing
        if worker.recovery is None or worker.recovery.done():
            worker.recovery = asyncio.create_task(self._recover_port(worker),
                                                  name=f"recover {worker.config.name}")
            self._tasks.append(worker.recovery)
            worker.recovery.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _recover_port(self, worker: BusWorker) -> None:
        """Reopen a vanished port with backoff; once it is back, read the meters the poll missed."""
        backoff = Backoff(initial_s=self.port_retry_s[0], maximum_s=self.port_retry_s[1])
        while True:
            await asyncio.sleep(backoff.next())
            async with worker.lock:
                try:
                    await asyncio.to_thread(worker.serial.open)
                except BusError as exc:
                    worker.error = str(exc)
                    continue
            break
        log.info("bus %s: port %s is back; reading %d missed meter(s)", worker.config.name,
                 worker.config.port, len(worker.missed))
        worker.error = None
        worker.recovery = None
        missed = dict(worker.missed)
        if missed:
            for billing in (True, False):
                addresses = [a for a, b in missed.items() if b is billing]
                if addresses:
                    await self.poll_bus(worker, billing=billing, addresses=addresses)
        await self.publish_status()

    # -- health ----------------------------------------------------------------------------------

    async def status(self) -> CollectorStatus:
        assert self.outbox is not None
        stats = await self.outbox.stats()
        try:
            disk_free: int | None = shutil.disk_usage(self.config.outbox_path.parent).free
        except OSError:
            disk_free = None
        alarms = stats.alarms() + [f"bus {w.config.name}: {w.error}" for w in self.buses.values() if w.error]
        return CollectorStatus(
            collector=self.config.collector_id,
            state=CollectorState.ONLINE,
            at=datetime.now(UTC),
            uptime_s=round(time.monotonic() - self.started, 1),
            outbox_depth=stats.depth,
            outbox_awaiting_receipt=stats.awaiting_receipt,
            outbox_oldest_age_s=round(stats.oldest_age_s, 1) if stats.oldest_age_s is not None else None,
            last_polls=[w.last_poll for w in self.buses.values() if w.last_poll is not None],
            disk_free_bytes=disk_free,
            cpu_temp_c=cpu_temperature_c(self.thermal_root),
            version=self.version,
            alarms=alarms + (self.radio.alarms() if self.radio is not None else []),
            radio_telegrams_per_min=self.radio.telegrams_per_min() if self.radio is not None else None,
            radio_not_ours=self.radio.not_ours() if self.radio is not None else [],
        )

    async def publish_status(self) -> None:
        if self.connection is None or not self.connection.connected.is_set():
            return
        status = await self.status()
        self.connection.publish(status_topic(self.config.collector_id), encode(status), qos=1, retain=True)

    # -- remote commands ---------------------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        self._spawn(self.run_command(command))

    async def run_command(self, command: Command) -> CommandResult:
        log.info("command %s (%s)", command.id, command.command)
        try:
            result = await self._execute(command)
            answer = CommandResult(id=command.id, collector=self.config.collector_id, ok=True, result=result,
                                   finished_at=datetime.now(UTC))
        except (ValueError, KeyError, BusError, ConfigError) as exc:
            answer = CommandResult(id=command.id, collector=self.config.collector_id, ok=False,
                                   error=str(exc)[:1000], finished_at=datetime.now(UTC))
        if self.connection is not None:
            self.connection.publish(command_result_topic(self.config.collector_id), encode(answer), qos=1)
        return answer

    def _worker(self, name: str | None) -> BusWorker:
        if name is None:
            if len(self.buses) != 1:
                raise ValueError(f"say which bus: one of {', '.join(self.buses) or '(none configured)'}")
            return next(iter(self.buses.values()))
        try:
            return self.buses[name]
        except KeyError:
            raise ValueError(f"no bus {name!r}; configured: {', '.join(self.buses)}") from None

    async def _execute(self, command: Command) -> dict[str, Any]:
        args = command.args
        if command.command is CommandName.READ_METER:
            worker = self._worker(args.get("bus"))
            address = str(args["address"]).strip().upper()
            assert self.outbox is not None
            async with worker.lock:
                primary = address.isdigit() and len(address) <= 3
                result = await worker.read(int(address) if primary else address)
            stored = await self.outbox.add(frame_messages(worker.config, result), billing=False)
            if self.publisher is not None:
                self.publisher.wake()
            return {
                "bus": worker.config.name,
                "address": result.address,
                "frames": [
                    {"sequence": m.sequence, "status": m.status.value, "reason": m.reason} for m in stored
                ],
            }
        if command.command is CommandName.READ_ALL:
            polls = await self.poll_all(scheduled=False)
            return {"polls": [p.model_dump(mode="json") for p in polls]}
        if command.command is CommandName.SCAN:
            worker = self._worker(args.get("bus"))
            mode = args.get("mode", "primary")
            async with worker.lock:
                if mode == "secondary":
                    found: list[str] = await asyncio.to_thread(worker.serial.secondary_search)
                elif mode == "primary":
                    found = [str(a) for a in await asyncio.to_thread(worker.serial.primary_scan)]
                else:
                    raise ValueError(f"scan mode must be 'primary' or 'secondary', got {mode!r}")
            return {"bus": worker.config.name, "mode": mode, "found": found}
        if command.command is CommandName.REPORT:
            return await self.report()
        if command.command is CommandName.RELOAD_CONFIG:
            return await self.reload_config()
        raise ValueError(f"unknown command {command.command}")

    async def report(self) -> dict[str, Any]:
        assert self.outbox is not None
        cfg = self.config
        stats = await self.outbox.stats()
        return {
            "collector": cfg.collector_id,
            "version": self.version,
            "broker": cfg.mqtt.broker().redacted(),
            "schedule": cfg.schedule.model_dump(mode="json"),
            "poll_offset_s": cfg.poll_jitter_offset_s(),
            "buses": [
                {"name": b.name, "port": b.port, "baud": b.baud, "meters": [m.address for m in b.meters],
                 "error": self.buses[b.name].error if b.name in self.buses else None}
                for b in cfg.buses
            ],
            "radios": [r.model_dump(mode="json") for r in cfg.radios],
            "radio_listener": self.radio.report() if self.radio is not None else None,
            "outbox": {"depth": stats.depth, "awaiting_receipt": stats.awaiting_receipt,
                       "bytes": stats.size_bytes, "dropped": stats.dropped_total,
                       "next_sequence": stats.next_sequence},
        }

    async def reload_config(self) -> dict[str, Any]:
        if self.config_path is None:
            raise ValueError("started without a configuration file")
        new = load_config(self.config_path)
        old = self.config
        if new.collector_id != old.collector_id or new.mqtt != old.mqtt or new.outbox_path != old.outbox_path:
            raise ValueError("collector id, MQTT or outbox settings changed: restart the service to apply")
        for name in list(self.buses):
            worker = self.buses[name]
            if worker.recovery is not None:
                worker.recovery.cancel()
            async with worker.lock:
                worker.close()
        self.buses = {b.name: BusWorker(b) for b in new.buses}
        self.config = new
        # The radio listener is restarted, not patched: sticks, meter list and keys file may all have
        # changed, and stopping stores what the sticks already delivered.
        if self.radio is not None:
            await self.radio.stop()
            self.radio = None
        if new.radios:
            await self.start_radio()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
            await self.schedule()
        log.info("configuration reloaded: %d bus(es), %d radio stick(s)", len(self.buses), len(new.radios))
        return {
            "buses": [b.name for b in new.buses],
            "meters": sum(len(b.meters) for b in new.buses),
            "radios": [r.name for r in new.radios],
            "radio_meters": len({m for r in new.radios for m in r.meters}),
            "meter_keys": len(self.radio.filter.keys) if self.radio is not None else 0,
        }


def setup_logging(level: str) -> None:
    # Under systemd, journald adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else (
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=getattr(logging, level), format=fmt, force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


async def run_collector(
    config: CollectorConfig, config_path: Path | None = None, *, once: bool = False
) -> int:
    collector = Collector(config, config_path)
    await collector.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, collector.request_stop)
    try:
        if once:
            await collector.poll_all(scheduled=True)
            assert collector.publisher is not None
            drained = await collector.publisher.drain(30)
            if not drained:
                log.warning("outbox not drained: %d frame(s) stay queued for the next run",
                            collector.outbox.depth if collector.outbox else -1)
        else:
            await collector.schedule()
            systemd.notify("READY=1")
            await collector.wait_stopped()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await collector.stop()
    return 0


def run_daemon(config: CollectorConfig, config_path: Path | None = None, *, once: bool = False) -> int:
    setup_logging(config.log_level)
    return asyncio.run(run_collector(config, config_path, once=once))
