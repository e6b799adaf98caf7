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

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from math import gcd
from operator import itemgetter, lt

from .fastinit import builder
from .model import BillingInput, MeterInstallation, MeterPoint, Reading, ReadingSource
from .money import EXACT, ZERO

__all__ = [
    "AlignedValue",
    "MeterSpan",
    "Missing",
    "PointConsumption",
    "consumption",
    "interpolate",
    "move_reading",
    "period_readings",
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
    # Derived once (the engine asks for them per piece, line and flag):
    quantity: Decimal = field(init=False, compare=False)
    estimated: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        spans = self.spans
        if len(spans) == 1:
            qty = ZERO + (spans[0].end.value - spans[0].start.value)  # ZERO + keeps sum()'s exponent
        else:
            qty = sum((s.end.value - s.start.value for s in spans), ZERO)
        object.__setattr__(self, "quantity", qty)
        object.__setattr__(self, "estimated", any(s.start.estimated or s.end.estimated for s in spans))

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


_new_value = builder(AlignedValue)
_new_span = builder(MeterSpan)
_new_consumption = builder(PointConsumption)


def _consumption(point_id: str, spans: tuple[MeterSpan, ...]) -> PointConsumption:
    """``PointConsumption(point_id, spans)`` on the hot path: its derived fields set directly."""
    if len(spans) == 1:
        span = spans[0]
        start, end = span.start, span.end
        qty = ZERO + (end.value - start.value)  # as __post_init__: ZERO + keeps sum()'s exponent
        return _new_consumption(point_id, spans, qty, start.estimated or end.estimated)
    return PointConsumption(point_id, spans)


@dataclass(frozen=True, slots=True)
class Missing:
    point_id: str
    at: datetime | None
    reason: str


_MICROSECOND = timedelta(microseconds=1)
_NO_TIME = timedelta(0)


def _span_micros(delta: timedelta) -> int:
    return delta // _MICROSECOND  # exact: timedelta // timedelta is integer arithmetic


_BY_TIME_ID = itemgetter(0, 1)


class _Rows:
    """A meter's usable readings, sorted, with their instants in UTC: computed once per meter and
    interval, then every boundary of the interval is looked up in it (the run's hot path)."""

    __slots__ = ("rows", "times")

    def __init__(
        self, inst: MeterInstallation, lo: datetime | None = None, hi: datetime | None = None
    ) -> None:
        # ``lo``/``hi``: the installation and removal instants in UTC when the caller has them already.
        lo = lo or inst.installed_at.astimezone(UTC)
        hi = hi or (inst.removed_at.astimezone(UTC) if inst.removed_at is not None else None)
        rows: list[Reading] = []
        times: list[datetime] = []
        for r in inst.readings:
            t = r.at
            if t.tzinfo is not UTC:  # readings from the database are UTC already: no conversion
                t = t.astimezone(UTC)
            if t >= lo and (hi is None or t <= hi):
                rows.append(r)
                times.append(t)
        if not all(map(lt, times, islice(times, 1, None))):
            # Usually strictly in time order already (the adapter sorts): else by (instant, id), stably.
            keyed = sorted(zip(times, [r.id for r in rows], rows, strict=True), key=_BY_TIME_ID)
            rows = [k[2] for k in keyed]
            times = [k[0] for k in keyed]
        self.rows = rows
        self.times = times


def _usable(inst: MeterInstallation) -> list[Reading]:
    return _Rows(inst).rows


def _line(usable: _Rows, a: int, b: int, t: datetime, decimals: int) -> Decimal:
    """The straight line through readings ``a`` and ``b`` of ``usable`` at ``t``, rounded half-even
    to ``decimals``: ``interpolate`` on the readings' values and the microseconds between the instants."""
    t0 = usable.times[a]
    return interpolate(
        usable.rows[a].value, usable.rows[b].value,
        _span_micros(t - t0), _span_micros(usable.times[b] - t0), decimals,
    )  # fmt: skip


def interpolate(v0: Decimal, v1: Decimal, part: int, span: int, decimals: int) -> Decimal:
    """``v0 + (v1 - v0) × part / span`` rounded half-even to ``decimals`` places, exactly.

    Integer arithmetic on the values' exact ratios: the same figure as the Decimal computation
    quantized at the end, without a 60-digit division per boundary (the run's hot path).
    """
    n0, d0 = v0.as_integer_ratio()
    n1, d1 = v1.as_integer_ratio()
    d = d0 * d1 // gcd(d0, d1)
    a0, a1 = n0 * (d // d0), n1 * (d // d1)
    num = a0 * span + (a1 - a0) * part
    den = d * span
    if decimals >= 0:
        num *= 10**decimals
    else:
        den *= 10**-decimals
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    step = _STEPS.get(decimals)
    if step is None:
        return Decimal(q).scaleb(-decimals, context=EXACT)
    # q × 10^-decimals exactly (the coefficient and exponent scaleb gives), without its keywords.
    return EXACT.multiply(Decimal(q), step)


_STEPS = {d: Decimal(1).scaleb(-d) for d in range(-6, 10)}


def _derived(r0: Reading, r1: Reading, at: datetime, value: Decimal, kind: str) -> AlignedValue:
    est = r0 if r0.source is ReadingSource.ESTIMATED else r1 if r1.source is ReadingSource.ESTIMATED else None
    if est is None:
        return _new_value(at, value, kind, kind == "extrapolated", kind, None, (r0.id, r1.id))
    method = f"{kind} from estimated reading ({est.method or 'unspecified'})"
    return _new_value(at, value, kind, True, method, est.reason, (r0.id, r1.id))


def value_at(
    inst: MeterInstallation, at: datetime, decimals: int = 3, max_extrapolation_days: int = 7
) -> AlignedValue | None:
    """The meter's register at ``at`` (see the module's alignment rule); None when it cannot be known."""
    return _value_at(_Rows(inst), at, at.astimezone(UTC), decimals, max_extrapolation_days)


def _value_at(
    usable: _Rows, at: datetime, t: datetime, decimals: int, max_extrapolation_days: int
) -> AlignedValue | None:
    rows, times = usable.rows, usable.times
    if not rows:
        return None
    i = bisect_left(times, t)
    n = len(rows)
    if i < n and times[i] == t:
        r = rows[i]
        return AlignedValue(
            at, r.value, str(r.source), r.source is ReadingSource.ESTIMATED, r.method, r.reason, (r.id,)
        )
    if 0 < i < n:
        # ``_line(usable, i - 1, i, t, decimals)``, inlined: every boundary of a daily read-out is here.
        r0, r1, t0 = rows[i - 1], rows[i], times[i - 1]
        value = interpolate(
            r0.value, r1.value, (t - t0) // _MICROSECOND, (times[i] - t0) // _MICROSECOND, decimals
        )
        if r0.source is not ReadingSource.ESTIMATED and r1.source is not ReadingSource.ESTIMATED:
            # _derived's common case, inlined
            return _new_value(at, value, "interpolated", False, "interpolated", None, (r0.id, r1.id))
        return _derived(r0, r1, at, value, "interpolated")
    limit = timedelta(days=max_extrapolation_days)
    if n < 2:
        return None
    # The line runs through the nearest reading and the nearest one at another instant: two
    # readings of the same instant (an export read twice, a manual beside a remote one) give no slope.
    if i == n:
        b = n - 1
        if t - times[b] > limit:
            return None
        a = b - 1
        while a >= 0 and times[a] == times[b]:
            a -= 1
        if a < 0:
            return None
    else:
        a = 0
        if times[a] - t > limit:
            return None
        b = 1
        while b < n and times[b] == times[a]:
            b += 1
        if b == n:
            return None
    return _derived(rows[a], rows[b], at, _line(usable, a, b, t, decimals), "extrapolated")


def consumption(  # noqa: PLR0917 - the UTC instants are an optional shortcut
    point: MeterPoint,
    start: datetime,
    end: datetime,
    decimals: int = 3,
    max_extrapolation_days: int = 7,
    start_u: datetime | None = None,
    end_u: datetime | None = None,
) -> PointConsumption | Missing:
    """Σ over the meters installed on ``point`` during ``[start, end)`` of end value - start value.

    ``start_u``/``end_u``: ``start``/``end`` in UTC, when the caller converted them already (a run
    asks for the same boundaries on every meter point)."""
    spans: list[MeterSpan] = []
    start_u = start_u or start.astimezone(UTC)
    end_u = end_u or end.astimezone(UTC)
    installs = point.installations
    if len(installs) > 1:
        installs = tuple(sorted(installs, key=lambda m: (m.installed_at.astimezone(UTC), m.meter_id)))
    covered = _NO_TIME  # timedeltas add and compare exactly
    for inst in installs:
        inst_u = inst.installed_at.astimezone(UTC)
        lo, lo_u = (start, start_u) if start_u >= inst_u else (inst.installed_at, inst_u)
        hi, hi_u = end, end_u
        removed_u = None
        if inst.removed_at is not None:
            removed_u = inst.removed_at.astimezone(UTC)
            if removed_u < end_u:
                hi, hi_u = inst.removed_at, removed_u
        if hi_u <= lo_u:
            continue
        usable = _Rows(inst, inst_u, removed_u)
        v0 = _value_at(usable, lo, lo_u, decimals, max_extrapolation_days)
        v1 = _value_at(usable, hi, hi_u, decimals, max_extrapolation_days)
        if v0 is None or v1 is None:
            return Missing(point.id, lo if v0 is None else hi, f"no usable reading on meter {inst.meter_id}")
        if v1.value < v0.value:
            return Missing(point.id, hi, f"register of meter {inst.meter_id} went backwards")
        spans.append(_new_span(inst.meter_id, v0, v1))
        covered += hi_u - lo_u
    if not spans:
        return Missing(point.id, start, "no meter installed in the interval")
    if covered < end_u - start_u:
        return Missing(point.id, start, "no meter installed for part of the interval")
    return _consumption(point.id, tuple(spans))


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


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is UTC else t.astimezone(UTC)


def period_readings(inp: BillingInput) -> BillingInput:
    """``inp`` with each meter's readings cut down to those a run of its period can look at; the run
    gives the same lines and summary (only the input digest differs, as the input does).

    Kept per installation: every reading from the period's first boundary to its last, both
    included (whatever its source or installation: move dates look at the real readings of their
    day), and of the readings usable on the meter (inside its installation) the last two before the
    period and the first two after it, in (instant, id) order as alignment sorts them. Every instant
    a run aligns to lies inside the period (its ends, moves, price changes, installations and
    removals clipped to it), and alignment only looks at the nearest usable reading on each side,
    or, on one side only, the two nearest (extrapolation): all of them are kept, and the kept
    readings stay in their stored order. An adapter loading weeks around the period (so a gap in
    the read-outs can be bridged) thus hands the run, and its digest, a few readings per meter.
    """
    from .periods import boundary

    tz = inp.settings.timezone
    start_u = _utc(boundary(inp.period_from, tz))
    end_u = _utc(boundary(inp.period_to, tz))
    points = []
    for point in inp.meter_points:
        installs = tuple(_period_installation(inst, start_u, end_u) for inst in point.installations)
        if all(a is b for a, b in zip(installs, point.installations, strict=True)):
            points.append(point)
        else:
            points.append(replace(point, installations=installs))
    return replace(inp, meter_points=tuple(points))


def _period_installation(inst: MeterInstallation, start_u: datetime, end_u: datetime) -> MeterInstallation:
    lo = _utc(inst.installed_at)
    hi = _utc(inst.removed_at) if inst.removed_at is not None else None
    rows = inst.readings
    times = [r.at if r.at.tzinfo is UTC else r.at.astimezone(UTC) for r in rows]
    if all(map(lt, times, islice(times, 1, None))):
        # Strictly in time order (as the database gives them): the period is a slice, and the
        # nearest usable readings on each side are found walking out from it.
        i, j = bisect_left(times, start_u), bisect_right(times, end_u)
        before: list[int] = []
        for k in range(i - 1, -1, -1):
            if len(before) == 2:
                break
            if times[k] >= lo and (hi is None or times[k] <= hi):
                before.insert(0, k)
        after: list[int] = []
        for k in range(j, len(rows)):
            if len(after) == 2:
                break
            if times[k] >= lo and (hi is None or times[k] <= hi):
                after.append(k)
        kept = len(before) + (j - i) + len(after)
        if kept == len(rows):
            return inst
        picked = (*(rows[k] for k in before), *rows[i:j], *(rows[k] for k in after))
        return replace(inst, readings=picked)
    return _period_installation_any_order(inst, times, lo, hi, start_u, end_u)


def _period_installation_any_order(  # noqa: PLR0917 - the private slow path of the one above
    inst: MeterInstallation,
    times: list[datetime],
    lo: datetime,
    hi: datetime | None,
    start_u: datetime,
    end_u: datetime,
) -> MeterInstallation:
    """``_period_installation`` for readings in any order: nearest by (instant, id), as alignment
    sorts them."""
    keep: set[int] = set()
    early: list[tuple[datetime, str, int]] = []
    late: list[tuple[datetime, str, int]] = []
    for idx, (r, t) in enumerate(zip(inst.readings, times, strict=True)):
        if start_u <= t <= end_u:
            keep.add(idx)
        elif t >= lo and (hi is None or t <= hi):
            (early if t < start_u else late).append((t, r.id, idx))
    keep.update(k[2] for k in sorted(early)[-2:])
    keep.update(k[2] for k in sorted(late)[:2])
    if len(keep) == len(inst.readings):
        return inst
    return replace(inst, readings=tuple(r for idx, r in enumerate(inst.readings) if idx in keep))
