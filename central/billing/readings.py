"""Consumption of a meter point between two instants, from its meters' cumulative registers.

Alignment rule: the value at a period boundary is the reading taken exactly then if there is one;
otherwise linear interpolation in time between the nearest real readings before and after (method
``interpolated``); with readings on one side only, linear extrapolation from the last two readings
for at most ``max_extrapolation_days`` (method ``extrapolated``, counted as an estimate). Derived
values are rounded half-even to ``reading_decimals``. A value derived from an estimated reading is
an estimate and carries that reading's method and reason.

A meter replaced inside the interval contributes old meter (start -> removal reading) plus new meter
(installation reading -> end); each meter's readings are only used inside its own installation.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from .model import MeterInstallation, MeterPoint, Reading, ReadingSource
from .money import EXACT, ZERO, quantize_step

__all__ = [
    "AlignedValue",
    "MeterSpan",
    "Missing",
    "PointConsumption",
    "consumption",
    "move_reading",
    "value_at",
]


@dataclass(frozen=True, slots=True)
class AlignedValue:
    at: datetime
    value: Decimal
    source: str  # remote, manual, estimated (as read) or interpolated / extrapolated (derived)
    estimated: bool
    method: str | None
    reason: str | None
    reading_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MeterSpan:
    meter_id: str
    start: AlignedValue
    end: AlignedValue

    @property
    def quantity(self) -> Decimal:
        return self.end.value - self.start.value


@dataclass(frozen=True, slots=True)
class PointConsumption:
    point_id: str
    spans: tuple[MeterSpan, ...]

    @property
    def quantity(self) -> Decimal:
        return sum((s.quantity for s in self.spans), ZERO)

    @property
    def estimated(self) -> bool:
        return any(v.estimated for s in self.spans for v in (s.start, s.end))

    @property
    def interpolated(self) -> bool:
        return any(v.source == "interpolated" for s in self.spans for v in (s.start, s.end))

    @property
    def replaced(self) -> bool:
        return len(self.spans) > 1

    def estimate_note(self) -> tuple[str | None, str | None]:
        for span in self.spans:
            for value in (span.start, span.end):
                if value.estimated:
                    return value.method, value.reason
        return None, None


@dataclass(frozen=True, slots=True)
class Missing:
    point_id: str
    at: datetime | None
    reason: str


def _micros(a: datetime, b: datetime) -> int:
    delta = b.astimezone(UTC) - a.astimezone(UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _usable(inst: MeterInstallation) -> list[Reading]:
    lo = inst.installed_at
    hi = inst.removed_at
    rows = [r for r in inst.readings if r.at >= lo and (hi is None or r.at <= hi)]
    rows.sort(key=lambda r: (r.at.astimezone(UTC), r.id))
    return rows


def _line(r0: Reading, r1: Reading, at: datetime, step: Decimal) -> Decimal:
    span = _micros(r0.at, r1.at)
    part = _micros(r0.at, at)
    rise = EXACT.subtract(r1.value, r0.value)
    value = EXACT.add(r0.value, EXACT.divide(EXACT.multiply(rise, Decimal(part)), Decimal(span)))
    return value.quantize(step, rounding=ROUND_HALF_EVEN, context=EXACT)


def _derived(rows: tuple[Reading, ...], at: datetime, value: Decimal, kind: str) -> AlignedValue:
    est = [r for r in rows if r.source is ReadingSource.ESTIMATED]
    estimated = kind == "extrapolated" or bool(est)
    method = kind if not est else f"{kind} from estimated reading ({est[0].method or 'unspecified'})"
    reason = est[0].reason if est else None
    return AlignedValue(at, value, kind, estimated, method, reason, tuple(r.id for r in rows))


def value_at(
    inst: MeterInstallation, at: datetime, decimals: int = 3, max_extrapolation_days: int = 7
) -> AlignedValue | None:
    """The meter's register at ``at`` (see the module's alignment rule); None when it cannot be known."""
    rows = _usable(inst)
    if not rows:
        return None
    step = quantize_step(decimals)
    times = [r.at.astimezone(UTC) for r in rows]
    t = at.astimezone(UTC)
    i = bisect_left(times, t)
    if i < len(rows) and times[i] == t:
        r = rows[i]
        return AlignedValue(
            at, r.value, str(r.source), r.source is ReadingSource.ESTIMATED, r.method, r.reason, (r.id,)
        )
    if 0 < i < len(rows):
        r0, r1 = rows[i - 1], rows[i]
        return _derived((r0, r1), at, _line(r0, r1, at, step), "interpolated")
    limit = timedelta(days=max_extrapolation_days)
    if len(rows) < 2:
        return None
    if i == len(rows):
        r0, r1 = rows[-2], rows[-1]
        if t - times[-1] > limit:
            return None
    else:
        r0, r1 = rows[0], rows[1]
        if times[0] - t > limit:
            return None
    return _derived((r0, r1), at, _line(r0, r1, at, step), "extrapolated")


def consumption(
    point: MeterPoint, start: datetime, end: datetime, decimals: int = 3, max_extrapolation_days: int = 7
) -> PointConsumption | Missing:
    """Σ over the meters installed on ``point`` during ``[start, end)`` of end value - start value."""
    spans: list[MeterSpan] = []
    installs = sorted(point.installations, key=lambda m: (m.installed_at.astimezone(UTC), m.meter_id))
    for inst in installs:
        lo = max(start, inst.installed_at, key=lambda d: d.astimezone(UTC))
        hi = end if inst.removed_at is None else min(end, inst.removed_at, key=lambda d: d.astimezone(UTC))
        if _micros(lo, hi) <= 0:
            continue
        v0 = value_at(inst, lo, decimals, max_extrapolation_days)
        v1 = value_at(inst, hi, decimals, max_extrapolation_days)
        if v0 is None or v1 is None:
            return Missing(point.id, lo if v0 is None else hi, f"no usable reading on meter {inst.meter_id}")
        if v1.value < v0.value:
            return Missing(point.id, hi, f"register of meter {inst.meter_id} went backwards")
        spans.append(MeterSpan(inst.meter_id, v0, v1))
    if not spans:
        return Missing(point.id, start, "no meter installed in the interval")
    covered = sum(_micros(s.start.at, s.end.at) for s in spans)
    if covered < _micros(start, end):
        return Missing(point.id, start, "no meter installed for part of the interval")
    return PointConsumption(point.id, tuple(spans))


def move_reading(point: MeterPoint, day: date, timezone: str) -> datetime | None:
    """The instant of the first real (remote or manual) reading taken on local ``day``, if any."""
    from .periods import boundary

    lo = boundary(day, timezone).astimezone(UTC)
    hi = boundary(day + timedelta(days=1), timezone).astimezone(UTC)
    found = [
        r.at
        for inst in point.installations
        for r in inst.readings
        if r.source is not ReadingSource.ESTIMATED and lo <= r.at.astimezone(UTC) < hi
    ]
    return min(found, key=lambda d: d.astimezone(UTC)) if found else None
