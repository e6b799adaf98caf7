"""Consumption compared with the meter's own history and with the building's apartments per m².

Both rules look at the billing register's growth over a window (``days``). A register is cumulative,
so a window's consumption is the last minus the first reading in it; windows with too few readings
or too little coverage are not judged (the communication rules report those).

High consumption is a warning (a leak, a wrong register or a swapped meter costs a tenant money);
low consumption is a note (``info``): people travel and flats stand empty, and a register that does
not move at all in an occupied flat is the ``stuck_register`` rule's finding.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from central.checks import MAIN_REGISTER, Finding, MeterContext, rule
from central.models import Apartment, Meter, MeterPoint, Reading

WATER_AND_POWER = ("hot_water", "cold_water", "electricity")


def _growth(
    series: list[tuple[datetime, Decimal, int | None]], start: datetime, end: datetime
) -> Decimal | None:
    inside = [(t, v) for t, v, _f in series if start <= t <= end]
    if len(inside) < 2:
        return None
    return inside[-1][1] - inside[0][1]


def _covered(
    series: list[tuple[datetime, Decimal, int | None]], start: datetime, end: datetime, coverage: float
) -> bool:
    inside = [t for t, _v, _f in series if start <= t <= end]
    return len(inside) >= 2 and (inside[-1] - inside[0]) >= (end - start) * coverage


@rule(
    "consumption_vs_history",
    severity="warning",
    media=WATER_AND_POWER,
    params={
        "days": 7.0,
        "history_windows": 8,
        "min_windows": 4,
        "high_factor": "4",
        "companion_factor": "2",
        "low_factor": "0.2",
        "coverage": 0.7,
        "min_baseline": {"hot_water": "0.05", "cold_water": "0.05", "electricity": "5000"},
        "min_excess": {"hot_water": "0.5", "cold_water": "0.5", "electricity": "20000"},
    },
)
async def consumption_vs_history(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Consumption over the last `days` far above (`high_factor` x, warning) or below (`low_factor` x,
    info) the median of the meter's own previous `history_windows` windows of the same length (at least
    `min_windows` of them with `coverage` of readings, and a median of at least `min_baseline` so that
    near-empty flats are not judged); a high finding also needs an excess over the median of at least
    `min_excess` (m³ or Wh), so that a tenant back from travelling is no fault. When another water or
    electricity meter of the apartment rose to `companion_factor` x its own median as well, people
    moved in or came home and the finding is a note. Heat is left out: its use follows the season,
    not the meter."""
    judged = await _vs_own_history(ctx, p)
    if judged is None:
        return None
    current, median, past = judged
    evidence = {
        "window_days": float(p["days"]),
        "consumption": str(current),
        "history_median": str(median),
        "history": [str(v) for v in past],
    }
    excess = current - median
    if current > median * Decimal(str(p["high_factor"])) and excess >= Decimal(
        str(p["min_excess"].get(ctx.meter.medium, "0"))
    ):
        companion = await _companion_rose(ctx, p)
        if companion is not None:
            evidence["companion_meter"] = companion
            return Finding(
                f"consumption {current} in {p['days']:g} days, {current / median:.1f}x own median, "
                f"and meter {companion} of the apartment rose alike: people moved in or came back",
                evidence,
                "info",
            )
        return Finding(
            f"consumption {current} in {p['days']:g} days, {current / median:.1f}x own median", evidence
        )
    if current < median * Decimal(str(p["low_factor"])):
        return Finding(
            f"consumption {current} in {p['days']:g} days, {current / median:.2f}x own median",
            evidence,
            "info",
        )
    return None


async def _vs_own_history(
    ctx: MeterContext, p: Mapping[str, Any]
) -> tuple[Decimal, Decimal, list[Decimal]] | None:
    """(current window's consumption, median of the past windows, the past windows) or None when the
    meter cannot be judged (too few readings, too little history, a near-empty baseline)."""
    window = timedelta(days=float(p["days"]))
    windows = int(p["history_windows"])
    series = await ctx.main_series(ctx.now - window * (windows + 1))
    coverage = float(p["coverage"])
    current_start = ctx.now - window
    if not _covered(series, current_start, ctx.now, coverage):
        return None
    current = _growth(series, current_start, ctx.now)
    past: list[Decimal] = []
    for n in range(1, windows + 1):
        s, e = ctx.now - window * (n + 1), ctx.now - window * n
        if _covered(series, s, e, coverage) and (g := _growth(series, s, e)) is not None and g >= 0:
            past.append(g)
    if current is None or current < 0 or len(past) < int(p["min_windows"]):
        return None
    median = Decimal(statistics.median(past))
    if median < Decimal(str(p["min_baseline"].get(ctx.meter.medium, "0"))):
        return None
    return current, median, past


async def _companion_rose(ctx: MeterContext, p: Mapping[str, Any]) -> str | None:
    """Serial of another water or electricity meter of the same apartment whose own consumption rose
    to at least `companion_factor` x its median too: a leak or a broken register concerns one meter,
    a household moving in or coming home all of them."""
    factor = Decimal(str(p.get("companion_factor") or 0))
    if ctx.apartment is None or factor <= 0:
        return None
    others = await ctx.session.execute(
        select(Meter)
        .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .where(MeterPoint.apartment_id == ctx.apartment.id, Meter.id != ctx.meter.id)
        .where(Meter.removed_at.is_(None), Meter.medium.in_(WATER_AND_POWER))
    )
    for other in others.scalars():
        judged = await _vs_own_history(
            MeterContext(ctx.session, other, ctx.apartment, ctx.now, chunk=ctx.chunk), p
        )
        if judged is not None and judged[0] >= judged[1] * factor:
            return other.serial
    return None


# A building's consumption per m² is cached in the session's ``info`` (one chunk of a check run):
# every meter of the building needs the same figures, and a run uses one ``now``.
_CACHE_KEY = "consumption_vs_building"


async def _building_per_m2(
    ctx: MeterContext, building_id: int, days: float, coverage: float
) -> dict[int, Decimal]:
    """meter id -> consumption per m² over the window, for the building's apartment meters of a medium."""
    cache: dict[Any, dict[int, Decimal]] = ctx.session.info.setdefault(_CACHE_KEY, {})
    key = (building_id, ctx.meter.medium, ctx.now, days, coverage)
    if key in cache:
        return cache[key]
    quantity, unit = MAIN_REGISTER[ctx.meter.medium]
    start = ctx.now - timedelta(days=days)
    # One query for the whole building's window (a few readings per meter); grouped here rather
    # than by SQL so that stored timestamps are never compared for equality across backends.
    rows = await ctx.session.execute(
        select(Reading.meter_id, Reading.register, Reading.read_at, Reading.value, Apartment.area_m2)
        .join(Meter, Reading.meter_id == Meter.id)
        .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .join(Apartment, MeterPoint.apartment_id == Apartment.id)
        .where(Apartment.building_id == building_id, Meter.medium == ctx.meter.medium)
        .where(Meter.removed_at.is_(None))
        .where(Reading.quantity == quantity, Reading.unit == unit, Reading.function == "instantaneous")
        .where(Reading.storage == 0, Reading.tariff == 0, Reading.subunit == 0)
        .where(Reading.read_at >= start, Reading.read_at <= ctx.now)
        .order_by(Reading.meter_id, Reading.read_at)
    )
    series: dict[tuple[int, str], list[tuple[datetime, Decimal]]] = {}
    areas: dict[int, Decimal] = {}
    for meter_id, register, read_at, value, area in rows.all():
        series.setdefault((meter_id, register), []).append((read_at, value))
        areas[meter_id] = area
    # The plain register of each meter (shortest DIF/VIF), as MeterContext.series does.
    chosen: dict[int, str] = {}
    for meter_id, register in series:
        if meter_id not in chosen or (len(register), register) < (len(chosen[meter_id]), chosen[meter_id]):
            chosen[meter_id] = register
    out: dict[int, Decimal] = {}
    window = timedelta(days=days)
    for meter_id, register in chosen.items():
        points = series[(meter_id, register)]
        (first, v0), (last, v1) = points[0], points[-1]
        if len(points) < 2 or last - first < window * coverage or areas[meter_id] <= 0 or v1 < v0:
            continue
        out[meter_id] = (v1 - v0) / areas[meter_id]
    cache[key] = out
    return out


def _quantile(values: list[Decimal], q: float) -> Decimal:
    """The ``q`` quantile of ``values`` (linear between the two nearest ranks)."""
    ordered = sorted(values)
    pos = Decimal(str(q)) * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@rule(
    "consumption_vs_building",
    severity="warning",
    media=("hot_water", "cold_water", "electricity", "heat"),
    params={
        "days": 14.0,
        "min_peers": 5,
        "high_quantile": 0.75,
        "exclude_idle_peers": True,
        "high_factor": "4",
        "low_factor": "0.1",
        "coverage": 0.8,
        "min_median_per_m2": {
            "hot_water": "0.002",
            "cold_water": "0.004",
            "electricity": "200",
            "heat": "500",
        },
    },
)
async def consumption_vs_building(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """An apartment meter's consumption per m² over the last `days` far above (`high_factor` x, warning)
    the building's upper quartile (`high_quantile`) or below (`low_factor` x, info) the median per m² of
    the building's apartment meters of the same medium (at least `min_peers` others with `coverage` of
    readings; a median below `min_median_per_m2`, e.g. heat in summer, is not judged). High use is
    measured against the upper quartile rather than the median, and flats that used nothing at all
    (`exclude_idle_peers`) are no peers, because in July and at Christmas half a building may be
    away: the median then falls to what empty flats use, and every household at home would look like
    a leak."""
    if ctx.apartment is None or ctx.apartment.area_m2 <= 0:
        return None
    per_m2 = await _building_per_m2(ctx, ctx.apartment.building_id, float(p["days"]), float(p["coverage"]))
    own = per_m2.get(ctx.meter.id)
    peers = [v for m, v in per_m2.items() if m != ctx.meter.id]
    if p.get("exclude_idle_peers", False):
        peers = [v for v in peers if v > 0]  # flats that used nothing stand empty: no yardstick
    if own is None or len(peers) < int(p["min_peers"]):
        return None
    median = Decimal(statistics.median(peers))
    if median <= 0 or median < Decimal(str(p["min_median_per_m2"].get(ctx.meter.medium, "0"))):
        return None
    evidence = {
        "window_days": float(p["days"]),
        "per_m2": format(own.normalize(), "f"),
        "building_median_per_m2": format(median.normalize(), "f"),
        "peers": len(peers),
        "area_m2": str(ctx.apartment.area_m2),
    }
    upper = _quantile(peers, float(p.get("high_quantile", 0.5)))
    evidence["building_upper_per_m2"] = format(upper.normalize(), "f")
    if upper > 0 and own / upper > Decimal(str(p["high_factor"])):
        return Finding(
            f"consumption per m² {own / upper:.1f}x the building's upper quartile "
            f"({own / median:.1f}x its median)",
            evidence,
        )
    ratio = own / median
    if ratio < Decimal(str(p["low_factor"])):
        return Finding(f"consumption per m² {ratio:.2f}x the building's median", evidence, "info")
    return None
