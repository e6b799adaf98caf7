"""Meter-function checks: a registry of small, documented rules that turn readings into faults.

Each rule (``central.checks.rules``) has a name, a description, a default severity, parameters and
an ``evaluate`` coroutine that returns a :class:`Finding` (with the evidence it found) or ``None``
when the condition is clear. The runner raises or counts the fault for a finding and resolves it
when the condition has cleared. Checks run for the meters of each ingested batch (shortly after the
commit, never delaying the broker acknowledgement) and in a periodic sweep over everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.db import Database
from central.faults import OPEN_STATES, SEVERITIES, clear_fault, raise_fault
from central.models import (
    Apartment,
    Collector,
    Fault,
    FaultEvent,
    Meter,
    MeterPoint,
    RawFrame,
    Reading,
    utcnow,
)

log = logging.getLogger(__name__)

# The billing register of each medium and its canonical unit.
MAIN_REGISTER: dict[str, tuple[str, str]] = {
    "heat": ("energy", "Wh"),
    "cooling": ("energy", "Wh"),
    "electricity": ("energy", "Wh"),
    "hot_water": ("volume", "m3"),
    "cold_water": ("volume", "m3"),
    "gas": ("volume", "m3"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    message: str
    evidence: dict[str, Any]
    severity: str | None = None  # None: the rule's default


READOUT_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class _FlagRecord:
    """The parts of a decoded record ``meter_flags`` reads, rebuilt from a stored reading."""

    dif_vif: bytes
    value: int
    storage: int


# A check run reads, for a chunk of meters at once, what nearly every rule looks at: the billing
# registers over the longest usual window (nine weeks for the media the own-history rule judges,
# eight days for the others), flow over two days, the latest read-outs and the last day's frames.
# One query per chunk instead of a dozen per meter; a rule whose window reaches further back
# (parameter overrides) falls back to its own query.
PREFETCH_SERIES = timedelta(days=64)
PREFETCH_SERIES_SHORT = timedelta(days=8)
PREFETCH_FLOW = timedelta(days=2)
LONG_HISTORY_MEDIA = frozenset({"hot_water", "cold_water", "electricity"})
PREFETCH_READOUT = timedelta(days=2)
PREFETCH_FRAMES = timedelta(hours=24)
READOUT_COLUMNS = (
    Reading.meter_id,
    Reading.register,
    Reading.read_at,
    Reading.quantity,
    Reading.function,
    Reading.storage,
    Reading.tariff,
    Reading.subunit,
    Reading.value,
)

_SeriesRow = tuple[str, str, str, datetime, Decimal, int | None]  # quantity, unit, register, at, value, frame


@dataclass(slots=True)
class ChunkData:
    """Rows of a chunk of meters fetched together; each meter's part is read by its MeterContext."""

    readout_since: datetime
    frames_since: datetime
    series_since: dict[tuple[int, str], datetime] = field(default_factory=dict)  # (meter, quantity)
    series: dict[int, list[_SeriesRow]] = field(default_factory=dict)  # oldest first
    readings: dict[int, list[Any]] = field(default_factory=dict)  # READOUT_COLUMNS, newest first
    reading_spans: dict[int, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    related: dict[Any, list[tuple[Meter, MeterPoint]]] = field(default_factory=dict)  # by serial / point
    telegrams: dict[int, list[tuple[datetime, bytes]]] = field(default_factory=dict)  # newest first
    frames: dict[int, list[RawFrame]] = field(default_factory=dict)  # oldest first, own and unmatched
    meters: frozenset[int] = frozenset()

    @classmethod
    async def fetch(cls, session: AsyncSession, meters: list[Meter], now: datetime) -> ChunkData:
        ids = [m.id for m in meters]
        data = cls(
            readout_since=now - PREFETCH_READOUT,
            frames_since=now - PREFETCH_FRAMES,
            meters=frozenset(ids),
        )
        long_ids = [m.id for m in meters if m.medium in LONG_HISTORY_MEDIA]
        short_ids = [m.id for m in meters if m.medium not in LONG_HISTORY_MEDIA]
        parts = [
            (long_ids, ("energy", "volume"), now - PREFETCH_SERIES),
            (short_ids, ("energy", "volume"), now - PREFETCH_SERIES_SHORT),
            (ids, ("flow",), now - PREFETCH_FLOW),
        ]
        conditions = []
        for part_ids, quantities, since in parts:
            if not part_ids:
                continue
            for meter_id in part_ids:
                for quantity in quantities:
                    data.series_since[(meter_id, quantity)] = since
            conditions.append(
                Reading.meter_id.in_(part_ids) & Reading.quantity.in_(quantities) & (Reading.read_at >= since)
            )
        rows = await session.execute(
            select(
                Reading.meter_id,
                Reading.quantity,
                Reading.unit,
                Reading.register,
                Reading.read_at,
                Reading.value,
                Reading.raw_frame_id,
            )
            .where(or_(*conditions))
            .where(Reading.function == "instantaneous")
            .where(Reading.storage == 0, Reading.tariff == 0, Reading.subunit == 0)
            .order_by(Reading.meter_id, Reading.read_at)
        )
        for meter_id, *row in rows.all():
            data.series.setdefault(meter_id, []).append(tuple(row))  # type: ignore[arg-type]
        # Only as far back as the oldest recent read-out of the chunk (a meter silent for longer
        # reads its own); in a fleet read out together that is one read-out's rows.
        recent = [
            m.last_reading_at - READOUT_WINDOW
            for m in meters
            if m.last_reading_at is not None and m.last_reading_at - READOUT_WINDOW >= data.readout_since
        ]
        data.readout_since = min(recent, default=now)
        readings = await session.execute(
            select(*READOUT_COLUMNS)
            .where(Reading.meter_id.in_(ids), Reading.storage == 0, Reading.read_at >= data.readout_since)
            .order_by(Reading.read_at.desc(), Reading.id)
        )
        for r in readings.all():
            data.readings.setdefault(r.meter_id, []).append(r)
        spans = await session.execute(
            select(
                Meter.id,
                select(func.min(Reading.read_at)).where(Reading.meter_id == Meter.id).scalar_subquery(),
                select(func.max(Reading.read_at)).where(Reading.meter_id == Meter.id).scalar_subquery(),
            ).where(Meter.id.in_(ids))
        )
        data.reading_spans = {meter_id: (first, last) for meter_id, first, last in spans.all()}
        serials = {m.serial for m in meters}
        points = {m.meter_point_id for m in meters if m.meter_point_id is not None}
        related = await session.execute(
            select(Meter, MeterPoint)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(or_(Meter.serial.in_(serials), Meter.meter_point_id.in_(points)))
        )
        for other, point in related.all():
            data.related.setdefault(("serial", other.serial), []).append((other, point))
            data.related.setdefault(("point", other.meter_point_id), []).append((other, point))
        telegrams = await session.execute(
            select(RawFrame.meter_id, RawFrame.received_at, RawFrame.raw)
            .where(RawFrame.meter_id.in_(ids), RawFrame.status == "ok", RawFrame.link == "mbus")
            .where(RawFrame.received_at >= data.readout_since)
            .order_by(RawFrame.received_at.desc())
        )
        for meter_id, received_at, raw in telegrams.all():
            data.telegrams.setdefault(meter_id, []).append((received_at, raw))
        by_address: dict[tuple[str, str], list[int]] = {}
        for m in meters:
            if m.bus and m.primary_address is not None:
                by_address.setdefault((m.bus, str(m.primary_address)), []).append(m.id)
        frames = await session.execute(
            select(RawFrame)
            .where(or_(RawFrame.meter_id.in_(ids), RawFrame.meter_id.is_(None)))
            .where(RawFrame.received_at >= data.frames_since)
            .order_by(RawFrame.received_at)
        )
        for f in frames.scalars():
            owners = [f.meter_id] if f.meter_id is not None else by_address.get((f.port, f.address or ""), [])
            for owner in owners:
                data.frames.setdefault(owner, []).append(f)
        return data

    def related_to(self, meter: Meter) -> list[tuple[Meter, MeterPoint]]:
        """Other meters with the meter's serial or on its meter point, each once."""
        found = self.related.get(("serial", meter.serial), []) + self.related.get(
            ("point", meter.meter_point_id), []
        )
        unique = {other.id: (other, point) for other, point in found if other.id != meter.id}
        return list(unique.values())


@dataclass(slots=True)
class MeterContext:
    """What a meter rule may look at; queries are made on demand and cached."""

    session: AsyncSession
    meter: Meter
    apartment: Apartment | None
    now: datetime
    _cache: dict[Any, Any] = field(default_factory=dict)
    chunk: ChunkData | None = None

    def _chunk_has(self, since: datetime, fetched_since: datetime) -> bool:
        return self.chunk is not None and self.meter.id in self.chunk.meters and since >= fetched_since

    async def series(
        self,
        quantity: str,
        unit: str | None,
        since: datetime,
        *,
        function: str = "instantaneous",
        limit: int = 5000,
    ) -> list[tuple[datetime, Decimal, int | None]]:
        """(read_at, value, raw frame id) of one current register (storage/tariff/subunit 0), oldest first."""
        key = ("series", quantity, unit, since, function)
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        fetched = self.chunk.series_since.get((self.meter.id, quantity)) if self.chunk is not None else None
        if (
            self.chunk is not None
            and function == "instantaneous"
            and fetched is not None
            and since >= fetched
        ):
            window = [
                (reg, at, value, frame)
                for q, u, reg, at, value, frame in self.chunk.series.get(self.meter.id, ())
                if q == quantity and (unit is None or u == unit) and at >= since
            ][-limit:]
            shortest = min(({r[0] for r in window}), key=lambda reg: (len(reg), reg), default=None)
            picked = [(at, value, frame) for reg, at, value, frame in window if reg == shortest]
            self._cache[key] = picked
            self._cache[("register", *key[1:])] = shortest
            return picked
        query = select(Reading.register, Reading.read_at, Reading.value, Reading.raw_frame_id).where(
            Reading.meter_id == self.meter.id,
            Reading.quantity == quantity,
            Reading.function == function,
            Reading.storage == 0,
            Reading.tariff == 0,
            Reading.subunit == 0,
            Reading.read_at >= since,
        )
        if unit is not None:
            query = query.where(Reading.unit == unit)
        rows = (await self.session.execute(query.order_by(Reading.read_at.desc()).limit(limit))).all()
        # Several registers can match (e.g. a pulse input beside the main volume): take the one with
        # the shortest DIF/VIF, which is the plain register.
        registers = sorted({r[0] for r in rows}, key=lambda reg: (len(reg), reg))
        chosen = registers[0] if registers else None
        series = [(r[1], r[2], r[3]) for r in reversed(rows) if r[0] == chosen]
        self._cache[key] = series
        self._cache[("register", *key[1:])] = chosen
        return series

    async def main_register(self, since: datetime) -> str | None:
        """DIF/VIF (hex) of the register ``main_series(since)`` reads."""
        main = MAIN_REGISTER.get(self.meter.medium)
        if main is None:
            return None
        await self.series(main[0], main[1], since)
        return self._cache.get(("register", main[0], main[1], since, "instantaneous"))  # type: ignore[no-any-return]

    async def main_series(self, since: datetime) -> list[tuple[datetime, Decimal, int | None]]:
        main = MAIN_REGISTER.get(self.meter.medium)
        if main is None:
            return []
        return await self.series(main[0], main[1], since)

    async def readout(self) -> list[Any]:
        """Current registers (storage 0) of the latest read-out, newest per register (rows of
        ``READOUT_COLUMNS``); a read-out may span several telegrams received within a few minutes."""
        if "readout" not in self._cache:
            latest: dict[str, Any] = {}
            last = self.meter.last_reading_at
            if (
                last is not None
                and self.chunk is not None
                and self._chunk_has(last - READOUT_WINDOW, self.chunk.readout_since)
            ):
                for r in self.chunk.readings.get(self.meter.id, ()):
                    if r.read_at >= last - READOUT_WINDOW:
                        latest.setdefault(r.register, r)
            elif last is not None:
                rows = await self.session.execute(
                    select(*READOUT_COLUMNS)
                    .where(Reading.meter_id == self.meter.id, Reading.storage == 0)
                    .where(Reading.read_at >= last - READOUT_WINDOW)
                    .order_by(Reading.read_at.desc(), Reading.id)
                )
                for r in rows.all():
                    latest.setdefault(r.register, r)
            self._cache["readout"] = sorted(latest.values(), key=lambda r: (len(r.register), r.register))
        return self._cache["readout"]  # type: ignore[no-any-return]

    async def latest_values(self) -> dict[str, Decimal]:
        """quantity -> value of the current plain registers of the latest read-out."""
        values: dict[str, Decimal] = {}
        for r in await self.readout():
            if r.tariff == 0 and r.subunit == 0 and r.function == "instantaneous":
                values.setdefault(r.quantity, r.value)
        return values

    async def flags(self) -> tuple[str, ...]:
        """Named flags of the latest read-out: status byte and the manufacturer's status registers."""
        from protocols.wmbus.status import meter_flags

        records = [
            _FlagRecord(bytes.fromhex(r.register), int(r.value), r.storage)
            for r in await self.readout()
            if r.value == r.value.to_integral_value()
        ]
        return meter_flags(
            self.meter.manufacturer,
            self.meter.device_type or 0,
            self.meter.last_status or 0,
            records,  # type: ignore[arg-type]
        )

    async def readout_telegrams(self) -> list[Any]:
        """The wired telegrams of the latest read-out decoded again (dates are not stored as readings)."""
        if "telegrams" not in self._cache:
            telegrams: list[Any] = []
            last = self.meter.last_frame_at
            if last is not None:
                from protocols.mbus.application import decode_long_frame

                raws: list[bytes]
                chunk = self.chunk
                if chunk is not None and self._chunk_has(last - READOUT_WINDOW, chunk.readout_since):
                    raws = [
                        raw
                        for at, raw in chunk.telegrams.get(self.meter.id, ())
                        if at >= last - READOUT_WINDOW
                    ][:8]
                else:
                    rows = await self.session.execute(
                        select(RawFrame.raw)
                        .where(
                            RawFrame.meter_id == self.meter.id,
                            RawFrame.status == "ok",
                            RawFrame.link == "mbus",
                        )
                        .where(RawFrame.received_at >= last - READOUT_WINDOW)
                        .order_by(RawFrame.received_at.desc())
                        .limit(8)
                    )
                    raws = list(rows.scalars())
                for raw in raws:
                    try:
                        telegrams.append(decode_long_frame(raw))
                    except Exception:  # decoded fine at ingest; after a decoder change a rule sees less
                        log.debug("frame of meter %s no longer decodes", self.meter.serial, exc_info=True)
            self._cache["telegrams"] = telegrams
        return self._cache["telegrams"]  # type: ignore[no-any-return]

    async def frames_since(self, since: datetime) -> list[RawFrame]:
        """Frames of this meter, also failed ones matched by its bus and primary address."""
        key = ("frames", since)
        if key not in self._cache:
            chunk = self.chunk
            if chunk is not None and self._chunk_has(since, chunk.frames_since):
                own = chunk.frames.get(self.meter.id, ())
                self._cache[key] = [f for f in own if f.received_at >= since]
            else:
                self._cache[key] = await self._frames_since(since)
        return self._cache[key]  # type: ignore[no-any-return]

    async def _frames_since(self, since: datetime) -> list[RawFrame]:
        matches = [RawFrame.meter_id == self.meter.id]
        if self.meter.bus and self.meter.primary_address is not None:
            matches.append(
                (RawFrame.meter_id.is_(None))
                & (RawFrame.port == self.meter.bus)
                & (RawFrame.address == str(self.meter.primary_address))
            )
        from sqlalchemy import or_

        rows = await self.session.execute(
            select(RawFrame)
            .where(or_(*matches))
            .where(RawFrame.received_at >= since)
            .order_by(RawFrame.received_at)
        )
        return list(rows.scalars())


@dataclass(slots=True)
class CollectorContext:
    session: AsyncSession
    collector: Collector
    now: datetime


MeterEvaluate = Callable[[MeterContext, Mapping[str, Any]], Awaitable[Finding | None]]
CollectorEvaluate = Callable[[CollectorContext, Mapping[str, Any]], Awaitable[Finding | None]]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    description: str
    severity: str
    scope: Literal["meter", "collector"]
    params: Mapping[str, Any]
    evaluate: Any  # MeterEvaluate or CollectorEvaluate by scope
    blocks_billing: bool = False
    media: frozenset[str] | None = None  # None: every medium

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "severity": self.severity,
            "scope": self.scope,
            "params": dict(self.params),
            "blocks_billing": self.blocks_billing,
            "media": sorted(self.media) if self.media else None,
        }


REGISTRY: dict[str, Rule] = {}


def rule(
    name: str,
    *,
    severity: str,
    scope: Literal["meter", "collector"] = "meter",
    params: Mapping[str, Any] | None = None,
    blocks_billing: bool = False,
    media: Iterable[str] | None = None,
) -> Callable[[Any], Any]:
    """Register a rule; its docstring is its description."""

    def register(fn: Any) -> Any:
        REGISTRY[name] = Rule(
            name=name,
            description=" ".join((fn.__doc__ or "").split()),
            severity=severity,
            scope=scope,
            params=dict(params or {}),
            evaluate=fn,
            blocks_billing=blocks_billing,
            media=frozenset(media) if media else None,
        )
        return fn

    return register


@dataclass(slots=True)
class CheckReport:
    meters: int = 0
    collectors: int = 0
    opened: int = 0
    repeated: int = 0
    resolved: int = 0
    errors: int = 0


async def _apply(
    session: AsyncSession,
    r: Rule,
    finding: Finding | None,
    report: CheckReport,
    now: datetime,
    *,
    meter_id: int | None = None,
    collector_id: str | None = None,
    current: Fault | bool | None = True,
) -> None:
    if finding is None:
        if current is None:
            return  # nothing open, nothing to resolve: the common case costs no query
        if await clear_fault(
            session, r.name, at=now, meter_id=meter_id, collector_id=collector_id, current=current
        ):
            report.resolved += 1
        return
    severity = finding.severity or r.severity
    before = current.severity if isinstance(current, Fault) else None
    fault, new = await raise_fault(
        session,
        r.name,
        at=now,
        severity=severity,
        message=finding.message,
        evidence=finding.evidence,
        meter_id=meter_id,
        collector_id=collector_id,
        blocks_billing=r.blocks_billing,
        current=current,
    )
    if new:
        report.opened += 1
    else:
        report.repeated += 1
    if before is not None and SEVERITIES.index(severity) > SEVERITIES.index(before):
        # A note that became a warning (low use, then a leak): the history says when, since the
        # fault's first_seen_at is still the note's.
        session.add(
            FaultEvent(
                fault_id=fault.id, at=now, kind="escalated", text=f"{before} -> {severity}: {finding.message}"
            )
        )


def _selected(names: Iterable[str] | None, scope: str) -> list[Rule]:
    rules = [REGISTRY[n] for n in names] if names is not None else list(REGISTRY.values())
    return [r for r in rules if r.scope == scope]


async def run_meter_checks(
    db: Database,
    meter_ids: Iterable[int] | None = None,
    *,
    now: datetime | None = None,
    rules: Iterable[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    chunk: int = 100,
) -> CheckReport:
    """Evaluate the meter rules for the given meters (all installed meters when None)."""
    from central.checks import rules as _builtin  # noqa: F401 - registers the rules

    now = now or utcnow()
    report = CheckReport()
    selected = _selected(rules, "meter")
    async with db.sessions() as session:
        query = select(Meter.id).order_by(Meter.id)
        if meter_ids is not None:
            query = query.where(Meter.id.in_(list(meter_ids)))
        else:
            # Removed meters stay under watch for a while: frames after removal are a finding.
            query = query.where(or_(Meter.removed_at.is_(None), Meter.removed_at > now - timedelta(days=90)))
        ids = list((await session.execute(query)).scalars())
    for start in range(0, len(ids), chunk):
        async with db.sessions.begin() as session:
            rows = await session.execute(
                select(Meter, Apartment)
                .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
                .where(Meter.id.in_(ids[start : start + chunk]))
            )
            open_faults = {
                (f.meter_id, f.rule): f
                for f in (
                    await session.execute(
                        select(Fault).where(
                            Fault.meter_id.in_(ids[start : start + chunk]), Fault.state.in_(OPEN_STATES)
                        )
                    )
                ).scalars()
            }
            pairs = rows.all()
            data = await ChunkData.fetch(session, [m for m, _a in pairs], now)
            for meter, apartment in pairs:
                report.meters += 1
                ctx = MeterContext(session, meter, apartment, now, chunk=data)
                for r in selected:
                    if r.media is not None and meter.medium not in r.media:
                        continue
                    params = {**r.params, **((overrides or {}).get(r.name, {}))}
                    if params.get("enabled", True) is False:
                        continue
                    try:
                        finding = await r.evaluate(ctx, params)
                    except Exception:
                        report.errors += 1
                        log.exception("check %s failed for meter %s", r.name, meter.serial)
                        continue
                    await _apply(
                        session,
                        r,
                        finding,
                        report,
                        now,
                        meter_id=meter.id,
                        current=open_faults.get((meter.id, r.name)),
                    )
    return report


async def run_collector_checks(
    db: Database,
    *,
    now: datetime | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CheckReport:
    from central.checks import rules as _builtin  # noqa: F401

    now = now or utcnow()
    report = CheckReport()
    async with db.sessions.begin() as session:
        for collector in (await session.execute(select(Collector).order_by(Collector.id))).scalars():
            report.collectors += 1
            ctx = CollectorContext(session, collector, now)
            for r in _selected(None, "collector"):
                params = {**r.params, **((overrides or {}).get(r.name, {}))}
                if params.get("enabled", True) is False:
                    continue
                await _apply(
                    session, r, await r.evaluate(ctx, params), report, now, collector_id=collector.id
                )
    return report


class CheckScheduler:
    """Runs the checks for freshly ingested meters (debounced) and a periodic sweep over everything."""

    def __init__(
        self,
        db: Database,
        *,
        sweep_interval_s: float = 3600.0,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.db = db
        self.sweep_interval_s = sweep_interval_s
        self.overrides = overrides
        self._pending: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_report: CheckReport | None = None
        self.last_sweep: CheckReport | None = None

    async def note_batch(self, result: Any) -> None:
        if result.meter_ids:
            self._pending.update(result.meter_ids)
            self._wake.set()

    def start(self, *, sweeps: bool = True) -> None:
        self._tasks = [asyncio.create_task(self._after_ingest(), name="checks-after-ingest")]
        if sweeps:
            self._tasks.append(asyncio.create_task(self._sweeps(), name="checks-sweep"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _after_ingest(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(1.0)  # let a burst of batches gather
            self._wake.clear()
            ids, self._pending = self._pending, set()
            try:
                self.last_report = await run_meter_checks(self.db, ids, overrides=self.overrides)
            except Exception:
                log.exception("checks after ingest failed")

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                report = await run_meter_checks(self.db, overrides=self.overrides)
                collectors = await run_collector_checks(self.db, overrides=self.overrides)
                report.collectors = collectors.collectors
                report.opened += collectors.opened
                report.resolved += collectors.resolved
                self.last_sweep = report
            except Exception:
                log.exception("periodic checks failed")


def attach(state: Any) -> None:
    """Wire the checks into a running central (called from the app's lifespan)."""
    interval = 60.0 if state.settings.demo else 3600.0
    overrides = DEMO_OVERRIDES if state.settings.demo else None
    scheduler = CheckScheduler(state.db, sweep_interval_s=interval, overrides=overrides)
    state.processor.after_batch.append(scheduler.note_batch)
    state.extras["checks"] = scheduler
    # The sweep covers every meter: with several central processes, one runs it (the others are
    # started with --no-scheduler); the checks after ingest run wherever the ingest ran.
    scheduler.start(sweeps=state.settings.scheduler)


# Demo mode polls every minute and the simulator runs its meters faster than real time: gaps are
# minutes, and the meters' clocks and consumption rates are not comparable with wall-clock time.
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "communication_gap": {"hours": 0.1},
    "collector_offline": {"hours": 0.1},
    "wrong_clock": {"enabled": False},
    "spike": {"enabled": False},
}


def _ago(now: datetime, **kwargs: float) -> datetime:
    return now - timedelta(**kwargs)
