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
from collections.abc import Iterable
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
    "AlignmentNeeds",
    "MeterSpan",
    "Missing",
    "PointConsumption",
    "alignment_needs",
    "consumption",
    "instants_with_move_days",
    "interpolate",
    "move_reading",
    "nearest_instants",
    "nearest_positions",
    "on_move_day",
    "period_readings",
    "point_instants",
    "usable_instants",
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


@dataclass(frozen=True, slots=True)
class AlignmentNeeds:
    """Where a run of the period may look at a meter point's registers: ``instants`` (UTC, sorted)
    it aligns to, and ``days``, its apartment's move days as UTC ``[lo, hi)`` windows whose first
    real reading becomes a cut (each reading in them is an instant too)."""

    instants: tuple[datetime, ...]
    days: tuple[tuple[datetime, datetime], ...]


def alignment_needs(inp: BillingInput) -> dict[str, AlignmentNeeds]:
    """Meter point id -> what a run of ``inp``'s period aligns it to (a superset, never less).

    The instants are the period's ends, the medium's price changes inside the period, and the
    installations and removals inside it (where a meter's span is clipped); the days are the moves
    of the point's apartment inside the period. Known before a single reading is loaded: the store
    fetches the readings around them and nothing else."""
    from .periods import boundary

    tz = inp.settings.timezone
    lo_d, hi_d = inp.period_from, inp.period_to
    start_u, end_u = _utc(boundary(lo_d, tz)), _utc(boundary(hi_d, tz))
    price_days: dict[str, set[date]] = {}
    for cfg in inp.media:
        price_days[str(cfg.medium)] = {
            d for e in cfg.prices for d in (e.valid_from, e.valid_to) if d is not None and lo_d < d < hi_d
        }
    move_days: dict[str, set[date]] = {}
    for stay in inp.tenants:
        for d in (stay.move_in, stay.move_out):
            if d is not None and lo_d < d < hi_d:
                move_days.setdefault(stay.apartment_id, set()).add(d)
    plain = AlignmentNeeds((start_u, end_u), ())
    out: dict[str, AlignmentNeeds] = {}
    for point in inp.meter_points:
        instants = {start_u, end_u}
        instants.update(_utc(boundary(d, tz)) for d in price_days.get(str(point.medium), ()))
        for inst in point.installations:
            for when in (inst.installed_at, inst.removed_at):
                if when is not None and start_u <= _utc(when) <= end_u:
                    instants.add(_utc(when))
        days = move_days.get(point.apartment_id or "", ()) if point.apartment_id is not None else ()
        windows = tuple(
            (_utc(boundary(d, tz)), _utc(boundary(d + timedelta(days=1), tz))) for d in sorted(days)
        )
        out[point.id] = (
            plain if len(instants) == 2 and not windows else AlignmentNeeds(tuple(sorted(instants)), windows)
        )
    return out


def on_move_day(t: datetime, needs: AlignmentNeeds) -> bool:
    """Whether the UTC instant ``t`` falls in one of ``needs``' move days."""
    return any(lo <= t < hi for lo, hi in needs.days)


def instants_with_move_days(needs: AlignmentNeeds, times: Iterable[datetime]) -> list[datetime]:
    """``needs.instants`` plus every one of the reading ``times`` (UTC) that falls in a move day:
    such a reading may be the cut, so alignment looks around it too. Sorted."""
    if not needs.days:
        return list(needs.instants)
    return sorted({*needs.instants, *(t for t in times if on_move_day(t, needs))})


def point_instants(point: MeterPoint, needs: AlignmentNeeds) -> list[datetime]:
    """``instants_with_move_days`` over the readings of every installation of ``point``."""
    return instants_with_move_days(needs, (_utc(r.at) for inst in point.installations for r in inst.readings))


def usable_instants(
    times: Iterable[datetime], installed_at: datetime, removed_at: datetime | None
) -> list[datetime]:
    """The distinct UTC instants of ``times`` inside the installation ``[installed_at, removed_at]``
    (what alignment can use), sorted."""
    lo = _utc(installed_at)
    hi = _utc(removed_at) if removed_at is not None else None
    return sorted({u for t in times if (u := _utc(t)) >= lo and (hi is None or u <= hi)})


def nearest_positions(
    usable: list[datetime], instants: Iterable[datetime], margin: timedelta | None = None
) -> set[int] | None:
    """Positions in the sorted, distinct ``usable`` instants of those alignment can look at for
    ``instants``: for each, the reading taken right then if there is one (``_value_at`` takes it and
    nothing else), else the nearest instant on each side (interpolation) or, with one side only, the
    two nearest there (extrapolation).

    With ``margin``: None unless, for every instant, there is a reading right then or the nearest on
    each side lies within ``margin`` of it. Then ``usable`` may be only the instants within
    ``margin`` of each instant (what a store fetched around them): nothing beyond it could be
    nearer, and any wider fetch gives the same instants. One side only is refused: a fetch around
    the instant cannot tell that nothing lies beyond it."""
    keep: set[int] = set()
    n = len(usable)
    for t in instants:
        i = bisect_left(usable, t)
        if i < n and usable[i] == t:
            keep.add(i)
        elif 0 < i < n:
            if margin is not None and (t - usable[i - 1] > margin or usable[i] - t > margin):
                return None
            keep.add(i - 1)
            keep.add(i)
        elif margin is not None:
            return None
        else:
            keep.update(range(max(0, n - 2), n) if i == n else range(min(n, 2)))
    return keep


def nearest_instants(
    usable: list[datetime], instants: Iterable[datetime], margin: timedelta | None = None
) -> set[datetime] | None:
    """``nearest_positions`` as the instants themselves."""
    keep = nearest_positions(usable, instants, margin)
    return None if keep is None else {usable[k] for k in keep}


def _kept(inst: MeterInstallation, instants: list[datetime]) -> set[datetime]:
    keep = nearest_instants(
        usable_instants((r.at for r in inst.readings), inst.installed_at, inst.removed_at), instants
    )
    assert keep is not None  # no margin, no refusal
    return keep


def period_readings(inp: BillingInput) -> BillingInput:
    """``inp`` with each meter's readings cut down to those a run of its period can look at; the run
    gives the same lines and summary (only the input digest differs, as the input does).

    Kept per installation: every reading taken on a move day of the point's apartment (whatever its
    source or installation: the cut is the first real reading of the day, on any meter of the
    point), and of the readings usable on the meter (inside its installation), for every instant
    of ``alignment_needs`` and every reading instant of a move day, what alignment looks at
    (``nearest_positions``): the reading of the instant if there is one, else the nearest usable
    instant on each side or, on one side only, the two nearest (extrapolation). Every reading of a
    kept instant is kept, in their stored order. A month of daily read-outs comes down to four
    readings per meter; weeks loaded on each side (so a gap can be bridged) do not reach the run or
    its digest.
    """
    needs = alignment_needs(inp)
    points = []
    for point in inp.meter_points:
        need = needs[point.id]
        instants = point_instants(point, need)
        installs = tuple(_period_installation(inst, instants, need) for inst in point.installations)
        if all(a is b for a, b in zip(installs, point.installations, strict=True)):
            points.append(point)
        else:
            points.append(replace(point, installations=installs))
    return replace(inp, meter_points=tuple(points))


def _period_installation(
    inst: MeterInstallation, instants: list[datetime], need: AlignmentNeeds
) -> MeterInstallation:
    keep = _kept(inst, instants)
    picked = tuple(r for r in inst.readings if (t := _utc(r.at)) in keep or on_move_day(t, need))
    return inst if len(picked) == len(inst.readings) else replace(inst, readings=picked)
