"""Consumption of meter points per period with estimates where readings are missing (VEE "E").

Estimates are computed on request and never written over readings: the stored readings stay the
only truth, and every figure this module returns says how it was obtained (``method``):

``measured``
    a reading at the boundary instant itself;
``interpolated``
    linear interpolation between the last reading before and the first after a boundary, when the
    two are at most ``max_interpolation_gap`` apart (short gap; also how readings are aligned to
    period boundaries);
``installation``
    at a meter's installation or removal inside the period, the nearest reading of that meter within
    ``max_boundary_offset`` on its own side (a replacement's removal/installation readings);
``same_period_last_year``
    a long gap: the point's own consumption over the same period one year earlier (only measured or
    interpolated figures count), pro rata to the part of the period that is missing;
``comparable_apartments``
    the median consumption per m² of apartments of the same property and medium whose area is within
    ``comparable_area_tolerance`` of this one (at least ``min_comparable`` of them), times the area;
``building_average``
    the mean consumption per m² of the building's other apartments of the same medium (at least
    ``min_building``), times the area;
``missing``
    none of the above could be made.

The whole period's figure carries the weakest method among its parts (in the order above). A meter
replaced inside the period contributes old meter (start -> removal) plus new meter (installation ->
end), so a meter point keeps its history across replacements. Values are exact Decimals, rounded to
the register's resolution.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.checks import MAIN_REGISTER
from central.consumption import interpolate, nearest_readings
from central.models import Apartment, Meter, MeterPoint, Reading

METHODS = (
    "measured",
    "interpolated",
    "installation",
    "same_period_last_year",
    "comparable_apartments",
    "building_average",
    "missing",
)
RANK = {m: n for n, m in enumerate(METHODS)}
MEASURED_METHODS = frozenset({"measured", "interpolated", "installation"})
FALLBACKS = ("same_period_last_year", "comparable_apartments", "building_average")


@dataclass(frozen=True, slots=True)
class EstimationLimits:
    """The configurable limits of estimation (API query parameters override them)."""

    max_interpolation_gap: timedelta = timedelta(days=10)
    max_boundary_offset: timedelta = timedelta(days=2)
    comparable_area_tolerance: Decimal = Decimal("0.25")
    min_comparable: int = 3
    min_building: int = 1
    fallbacks: tuple[str, ...] = FALLBACKS

    def describe(self) -> dict[str, Any]:
        return {
            "max_interpolation_gap_days": self.max_interpolation_gap.total_seconds() / 86400,
            "max_boundary_offset_days": self.max_boundary_offset.total_seconds() / 86400,
            "comparable_area_tolerance": str(self.comparable_area_tolerance),
            "min_comparable": self.min_comparable,
            "min_building": self.min_building,
            "fallbacks": list(self.fallbacks),
        }


DEFAULT_LIMITS = EstimationLimits()


@dataclass(slots=True)
class Prefetch:
    """What :func:`property_consumption` read for all its points at once (a few queries instead of
    several per point): the meters on each point and their nearest readings to each boundary, for
    one period and interpolation gap. Anything else is still read when asked for."""

    period: tuple[datetime, datetime]
    gap: timedelta
    meters: dict[int, list[Meter]] = field(default_factory=dict)
    apartments: dict[int, Apartment] = field(default_factory=dict)
    near: dict[tuple[int, datetime, bool], tuple[datetime, Decimal] | None] = field(default_factory=dict)


@dataclass(slots=True)
class Boundary:
    at: datetime
    value: Decimal | None
    method: str
    readings: list[datetime] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "value": None if self.value is None else format(self.value, "f"),
            "method": self.method,
            "readings": self.readings,
        }


@dataclass(slots=True)
class Segment:
    """One meter's share of a period on a meter point."""

    meter: Meter
    start: Boundary
    end: Boundary

    @property
    def consumption(self) -> Decimal | None:
        if self.start.value is None or self.end.value is None:
            return None
        return self.end.value - self.start.value

    @property
    def method(self) -> str:
        return max(self.start.method, self.end.method, key=RANK.__getitem__)

    def as_dict(self) -> dict[str, Any]:
        amount = self.consumption
        return {
            "meter": self.meter.serial,
            "manufacturer": self.meter.manufacturer,
            "start": self.start.as_dict(),
            "end": self.end.as_dict(),
            "consumption": None if amount is None else format(amount, "f"),
            "method": self.method if amount is not None else "missing",
        }


@dataclass(slots=True)
class PointConsumption:
    point: MeterPoint
    apartment: Apartment | None
    start: datetime
    end: datetime
    segments: list[Segment] = field(default_factory=list)
    consumption: Decimal | None = None
    method: str = "missing"
    missing_fraction: Decimal = Decimal(0)  # share of the period without a measured figure
    basis: dict[str, Any] = field(default_factory=dict)

    @property
    def estimated(self) -> bool:
        return self.method not in MEASURED_METHODS

    @property
    def measured_only(self) -> Decimal | None:
        """The figure when it needed no long-gap estimate (usable as a basis for others)."""
        return self.consumption if self.method in MEASURED_METHODS else None

    def as_dict(self) -> dict[str, Any]:
        main = MAIN_REGISTER.get(self.point.medium)
        return {
            "meter_point": self.point.id,
            "medium": self.point.medium,
            "apartment": self.apartment.object_number if self.apartment else None,
            "area_m2": str(self.apartment.area_m2) if self.apartment else None,
            "quantity": main[0] if main else None,
            "unit": main[1] if main else None,
            "start": self.start,
            "end": self.end,
            "consumption": None if self.consumption is None else format(self.consumption, "f"),
            "method": self.method,
            "estimated": self.estimated,
            "missing_fraction": str(self.missing_fraction.quantize(Decimal("0.0001"))),
            "segments": [s.as_dict() for s in self.segments],
            "basis": self.basis,
        }


def year_earlier(at: datetime) -> datetime:
    try:
        return at.replace(year=at.year - 1)
    except ValueError:  # 29 February
        return at.replace(year=at.year - 1, day=28)


# The resolution of an estimate when no reading of the point shows the register's own.
DEFAULT_RESOLUTION = {"Wh": Decimal(1), "m3": Decimal("0.001")}


def _resolution(*values: Decimal | None, unit: str | None = None) -> Decimal:
    exponents = [int(v.as_tuple().exponent) for v in values if v is not None]
    if exponents:
        return Decimal(1).scaleb(min(exponents))
    return DEFAULT_RESOLUTION.get(unit or "", Decimal("0.001"))


async def _near(
    session: AsyncSession,
    meter: Meter,
    at: datetime,
    *,
    after: bool,
    limit: timedelta,
    prefetch: Prefetch | None = None,
) -> tuple[datetime, Decimal] | None:
    if prefetch is not None and limit == prefetch.gap and (meter.id, at, after) in prefetch.near:
        return prefetch.near[meter.id, at, after]
    main = MAIN_REGISTER.get(meter.medium)
    if main is None:
        return None
    query = select(Reading.read_at, Reading.value, Reading.register).where(
        Reading.meter_id == meter.id,
        Reading.quantity == main[0],
        Reading.unit == main[1],
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
    )
    if after:
        query = query.where(Reading.read_at >= at, Reading.read_at <= at + limit).order_by(Reading.read_at)
    else:
        query = query.where(Reading.read_at <= at, Reading.read_at >= at - limit).order_by(
            Reading.read_at.desc()
        )
    rows = (await session.execute(query.limit(8))).all()
    if not rows:
        return None
    # The nearest in time; among equals the plain register (shortest DIF/VIF) over a pulse input.
    best = min(rows, key=lambda r: (abs((r[0] - at).total_seconds()), len(r[2]), r[2]))
    return best[0], best[1]


async def boundary_value(
    session: AsyncSession,
    meter: Meter,
    at: datetime,
    limits: EstimationLimits = DEFAULT_LIMITS,
    *,
    side: str | None = None,
    prefetch: Prefetch | None = None,
) -> Boundary:
    """The billing register's value at ``at``: measured, interpolated across a short gap, or - at an
    installation (``side="after"``) or removal (``side="before"``) instant - the meter's nearest
    reading on its own side within ``max_boundary_offset``."""
    gap = limits.max_interpolation_gap
    before = await _near(session, meter, at, after=False, limit=gap, prefetch=prefetch)
    if before is not None and before[0] == at:
        return Boundary(at, before[1], "measured", [before[0]])
    after = await _near(session, meter, at, after=True, limit=gap, prefetch=prefetch)
    return _boundary(before, after, at, limits, side)


def _boundary(
    before: tuple[datetime, Decimal] | None,
    after: tuple[datetime, Decimal] | None,
    at: datetime,
    limits: EstimationLimits,
    side: str | None,
) -> Boundary:
    """:func:`boundary_value` from the nearest readings on both sides."""
    if before is not None and before[0] == at:
        return Boundary(at, before[1], "measured", [before[0]])
    if after is not None and after[0] == at:
        return Boundary(at, after[1], "measured", [after[0]])
    if before is not None and after is not None and after[0] - before[0] <= limits.max_interpolation_gap:
        value = interpolate(before, after, at)
        return Boundary(at, value, "interpolated", [before[0], after[0]])
    own = after if side == "after" else before if side == "before" else None
    if own is not None and abs(own[0] - at) <= limits.max_boundary_offset:
        return Boundary(at, own[1], "installation", [own[0]])
    return Boundary(at, None, "missing")


def _prefetched(
    near: dict[tuple[int, datetime, bool], tuple[datetime, Decimal] | None],
    meter_id: int,
    at: datetime,
    limits: EstimationLimits,
    side: str | None,
) -> Boundary | None:
    """The boundary from prefetched readings, without a query or a coroutine; None when the prefetch
    does not hold both sides (then :func:`boundary_value` reads them)."""
    before, after = (meter_id, at, False), (meter_id, at, True)
    if before not in near or after not in near:
        return None
    return _boundary(near[before], near[after], at, limits, side)


def _segment(meter: Meter, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The part of [start, end) the meter was installed for."""
    seg_start = max(start, meter.installed_at) if meter.installed_at else start
    seg_end = min(end, meter.removed_at) if meter.removed_at else end
    return seg_start, seg_end


async def _meters_on(session: AsyncSession, point_id: int, start: datetime, end: datetime) -> list[Meter]:
    rows = await session.execute(
        select(Meter)
        .where(Meter.meter_point_id == point_id)
        .where(or_(Meter.installed_at.is_(None), Meter.installed_at < end))
        .where(or_(Meter.removed_at.is_(None), Meter.removed_at > start))
        .order_by(Meter.installed_at, Meter.id)
    )
    return list(rows.scalars())


async def measured_consumption(
    session: AsyncSession,
    point: MeterPoint,
    apartment: Apartment | None,
    start: datetime,
    end: datetime,
    *,
    limits: EstimationLimits = DEFAULT_LIMITS,
    prefetch: Prefetch | None = None,
) -> PointConsumption:
    """The point's consumption from its own readings only; ``missing_fraction`` says how much of the
    period it could not cover (no meter installed, or a gap longer than the limits)."""
    result = PointConsumption(point, apartment, start, end)
    total_s = Decimal(int((end - start).total_seconds()))
    covered = Decimal(0)
    known = Decimal(0)
    methods: list[str] = []
    if prefetch is not None and prefetch.period == (start, end) and point.id in prefetch.meters:
        meters = prefetch.meters[point.id]
    else:
        meters = await _meters_on(session, point.id, start, end)
    near = prefetch.near if prefetch is not None and prefetch.gap == limits.max_interpolation_gap else {}
    for meter in meters:
        seg_start, seg_end = _segment(meter, start, end)
        first_side = "after" if seg_start != start else None
        last_side = "before" if seg_end != end else None
        first = _prefetched(near, meter.id, seg_start, limits, first_side) or await boundary_value(
            session, meter, seg_start, limits, side=first_side, prefetch=prefetch
        )
        last = _prefetched(near, meter.id, seg_end, limits, last_side) or await boundary_value(
            session, meter, seg_end, limits, side=last_side, prefetch=prefetch
        )
        segment = Segment(meter, first, last)
        result.segments.append(segment)
        amount = segment.consumption
        if amount is not None:
            known += amount
            covered += Decimal(int((seg_end - seg_start).total_seconds()))
            methods.append(segment.method)
    result.missing_fraction = max(Decimal(0), (total_s - covered) / total_s) if total_s else Decimal(0)
    if methods and result.missing_fraction == 0:
        result.consumption = known
        result.method = max(methods, key=RANK.__getitem__)
    elif methods:
        result.consumption = known  # partial; the caller completes it with an estimate
    return result


async def _peers(
    session: AsyncSession,
    point: MeterPoint,
    start: datetime,
    end: datetime,
    *,
    limits: EstimationLimits,
    cache: dict[int, PointConsumption],
    prefetch: Prefetch | None = None,
) -> list[tuple[Apartment, Decimal]]:
    """(apartment, consumption per m²) of the other measured apartment points of the same medium."""
    rows = await session.execute(
        select(MeterPoint, Apartment)
        .join(Apartment, MeterPoint.apartment_id == Apartment.id)
        .where(MeterPoint.property_id == point.property_id, MeterPoint.medium == point.medium)
        .where(MeterPoint.id != point.id)
        .order_by(MeterPoint.id)
    )
    out = []
    for other, apt in rows.all():
        if other.id not in cache:
            cache[other.id] = await measured_consumption(
                session, other, apt, start, end, limits=limits, prefetch=prefetch
            )
        amount = cache[other.id].measured_only
        if amount is not None and apt.area_m2 > 0:
            out.append((apt, amount / apt.area_m2))
    return out


async def point_consumption(
    session: AsyncSession,
    point: MeterPoint,
    start: datetime,
    end: datetime,
    limits: EstimationLimits = DEFAULT_LIMITS,
    *,
    cache: dict[int, PointConsumption] | None = None,
    prefetch: Prefetch | None = None,
) -> PointConsumption:
    """The point's consumption over [start, end): measured where it can be, else estimated by the
    first of ``limits.fallbacks`` that works, for the missing part of the period only."""
    cache = {} if cache is None else cache
    if point.apartment_id is None:
        apartment = None
    elif prefetch is not None and point.apartment_id in prefetch.apartments:
        apartment = prefetch.apartments[point.apartment_id]
    else:
        apartment = await session.get(Apartment, point.apartment_id)
    if point.id not in cache:
        cache[point.id] = await measured_consumption(
            session, point, apartment, start, end, limits=limits, prefetch=prefetch
        )
    measured = cache[point.id]
    if measured.method in MEASURED_METHODS and measured.missing_fraction == 0:
        return measured  # complete: nothing below changes it, so no copy is needed
    result = replace(measured, segments=list(measured.segments), basis={})
    fraction = result.missing_fraction if result.consumption is not None else Decimal(1)
    known = result.consumption or Decimal(0)
    main = MAIN_REGISTER.get(point.medium)
    resolution = _resolution(
        *(v for s in result.segments for v in (s.start.value, s.end.value)), unit=main[1] if main else None
    )
    for method in limits.fallbacks:
        full, basis = await _fallback(
            session,
            method,
            point=point,
            apartment=apartment,
            start=start,
            end=end,
            limits=limits,
            cache=cache,
            prefetch=prefetch,
        )
        if full is None:
            continue
        basis.pop("_resolution", None)
        estimate = (full * fraction).quantize(resolution, rounding=ROUND_HALF_EVEN)
        result.consumption = known + estimate
        result.method = method
        result.basis = {**basis, "estimated_part": format(estimate, "f"), "missing_fraction": str(fraction)}
        return result
    result.consumption = None
    result.method = "missing"
    return result


async def _fallback(
    session: AsyncSession,
    method: str,
    *,
    point: MeterPoint,
    apartment: Apartment | None,
    start: datetime,
    end: datetime,
    limits: EstimationLimits,
    cache: dict[int, PointConsumption],
    prefetch: Prefetch | None = None,
) -> tuple[Decimal | None, dict[str, Any]]:
    """The whole period's figure by one long-gap method, and what it was based on."""
    if method == "same_period_last_year":
        s, e = year_earlier(start), year_earlier(end)
        last = await measured_consumption(session, point, apartment, s, e, limits=limits)
        amount = last.measured_only
        if amount is None:
            return None, {}
        # Scale by the periods' lengths (a leap day makes them differ).
        scaled = amount * Decimal(int((end - start).total_seconds())) / Decimal(int((e - s).total_seconds()))
        return scaled, {"period": [s, e], "consumption": format(amount, "f")}
    if apartment is None or apartment.area_m2 <= 0:
        return None, {}
    peers = await _peers(session, point, start, end, limits=limits, cache=cache, prefetch=prefetch)
    if method == "comparable_apartments":
        tolerance = limits.comparable_area_tolerance
        close = [
            per for apt, per in peers if abs(apt.area_m2 - apartment.area_m2) <= apartment.area_m2 * tolerance
        ]
        if len(close) < limits.min_comparable:
            return None, {}
        per_m2 = Decimal(statistics.median(close))
        return per_m2 * apartment.area_m2, {
            "apartments": len(close),
            "median_per_m2": format(per_m2.normalize(), "f"),
            "area_m2": str(apartment.area_m2),
        }
    if method == "building_average":
        same = [per for apt, per in peers if apt.building_id == apartment.building_id]
        if len(same) < limits.min_building:
            return None, {}
        per_m2 = sum(same, Decimal(0)) / len(same)
        return per_m2 * apartment.area_m2, {
            "apartments": len(same),
            "mean_per_m2": format(per_m2.normalize(), "f"),
            "area_m2": str(apartment.area_m2),
        }
    raise ValueError(f"unknown estimation method {method!r}; one of {', '.join(FALLBACKS)}")


async def property_consumption(
    session: AsyncSession,
    property_id: int,
    start: datetime,
    end: datetime,
    limits: EstimationLimits = DEFAULT_LIMITS,
    *,
    medium: str | None = None,
    apartment_id: int | None = None,
) -> list[PointConsumption]:
    """Every meter point of a property (optionally one medium or one apartment), estimated where needed."""
    query = select(MeterPoint).where(MeterPoint.property_id == property_id)
    if medium is not None:
        query = query.where(MeterPoint.medium == medium)
    if apartment_id is not None:
        query = query.where(MeterPoint.apartment_id == apartment_id)
    points = list((await session.execute(query.order_by(MeterPoint.id))).scalars())
    # Peers (estimates compare with the property's other apartments) span the whole property.
    everything = await property_prefetch(session, property_id, start, end, limits)
    cache: dict[int, PointConsumption] = {}
    return [
        await point_consumption(session, p, start, end, limits, cache=cache, prefetch=everything.prefetch)
        for p in points
    ]


@dataclass(slots=True)
class _Loaded:
    prefetch: Prefetch
    # Held so the session's identity map (weak references) keeps them for ``session.get``.
    apartments: list[Apartment]


async def property_prefetch(
    session: AsyncSession,
    property_id: int,
    start: datetime,
    end: datetime,
    limits: EstimationLimits = DEFAULT_LIMITS,
) -> _Loaded:
    """Everything the measured figures of a property's points need, in a few queries: apartments,
    the meters installed in [start, end) on each point, and each meter's nearest readings on both
    sides of its segment's boundaries."""
    apartments = list(
        (await session.execute(select(Apartment).where(Apartment.property_id == property_id))).scalars()
    )
    prefetch = Prefetch((start, end), limits.max_interpolation_gap, apartments={a.id: a for a in apartments})
    # Every point, with the meters installed in the period if any (one query for both).
    rows = await session.execute(
        select(MeterPoint.id, Meter)
        .outerjoin(
            Meter,
            and_(
                Meter.meter_point_id == MeterPoint.id,
                or_(Meter.installed_at.is_(None), Meter.installed_at < end),
                or_(Meter.removed_at.is_(None), Meter.removed_at > start),
            ),
        )
        .where(MeterPoint.property_id == property_id)
        .order_by(MeterPoint.id, Meter.installed_at, Meter.id)
    )
    at_instant: dict[datetime, list[Meter]] = {}
    for point_id, meter in rows.all():
        on_point = prefetch.meters.setdefault(point_id, [])
        if meter is None:
            continue
        on_point.append(meter)
        for instant in _segment(meter, start, end):
            at_instant.setdefault(instant, []).append(meter)
    found = await nearest_readings(session, at_instant, limit=prefetch.gap)
    for instant, meters in at_instant.items():
        for m in meters:
            for after in (False, True):
                hit = found.get((m.id, instant, after))
                prefetch.near[m.id, instant, after] = None if hit is None else (hit[0], hit[1])
    return _Loaded(prefetch, apartments)
