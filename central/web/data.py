"""Read-side figures for the web pages: daily consumption per meter, buckets, property aggregates.

Consumption comes from each meter's billing register (``MAIN_REGISTER``): the last value of each
UTC day, differenced day to day. When readings are missing for some days, the difference across
the gap is spread evenly over the days it covers and those days are marked *estimated*. Each meter
is differenced on its own, so a meter replacement on a meter point never shows as a jump.
Figures stay exact (Decimal); energy is shown in kWh.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from central.checks import MAIN_REGISTER
from central.models import Meter, Reading

# Display unit per stored unit: (display unit, divisor).
DISPLAY_UNITS: dict[str, tuple[str, Decimal]] = {"Wh": ("kWh", Decimal(1000)), "m3": ("m³", Decimal(1))}
MEDIA_ORDER = ("heat", "hot_water", "cold_water", "electricity", "cooling", "gas")


@dataclass
class DailySeries:
    """Consumption per day (display unit) and which days are estimated."""

    unit: str = ""
    days: dict[date, Decimal] = field(default_factory=dict)
    estimated: set[date] = field(default_factory=set)

    def add(self, other: DailySeries) -> None:
        self.unit = self.unit or other.unit
        for day, value in other.days.items():
            self.days[day] = self.days.get(day, Decimal(0)) + value
        self.estimated |= other.estimated

    def total(self, start: date, end: date) -> tuple[Decimal | None, bool]:
        """Sum over [start, end); None when no day in the range has a figure."""
        values = [v for d, v in self.days.items() if start <= d < end]
        if not values:
            return None, False
        return sum(values, Decimal(0)), any(start <= d < end for d in self.estimated)

    def buckets(self, grain: str) -> list[tuple[str, Decimal, bool]]:
        """(label, consumption, estimated) per day, month or year, oldest first."""
        sums: dict[str, Decimal] = defaultdict(Decimal)
        est: dict[str, bool] = defaultdict(bool)
        for day in sorted(self.days):
            label = bucket_label(day, grain)
            sums[label] += self.days[day]
            est[label] = est[label] or day in self.estimated
        return [(label, sums[label], est[label]) for label in sums]


def bucket_label(day: date, grain: str) -> str:
    if grain == "year":
        return f"{day.year}"
    if grain == "month":
        return f"{day.year}-{day.month:02d}"
    return day.isoformat()


def month_start(day: date, back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def round_display(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "–"
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def _main_rows_query(meter_ids: list[int], since: datetime | None) -> Any:
    query = select(
        Reading.meter_id, Reading.register, Reading.read_at, Reading.value, Reading.quantity, Reading.unit
    ).where(
        Reading.meter_id.in_(meter_ids),
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
        Reading.quantity.in_(sorted({q for q, _u in MAIN_REGISTER.values()})),
    )
    if since is not None:
        query = query.where(Reading.read_at >= since)
    return query.order_by(Reading.meter_id, Reading.read_at)


def daily_from_readings(points: list[tuple[datetime, Decimal]], unit: str) -> DailySeries:
    """Daily consumption from (time, register value) pairs of one meter, oldest first."""
    display, divisor = DISPLAY_UNITS.get(unit, (unit, Decimal(1)))
    series = DailySeries(unit=display)
    end_of_day: dict[date, Decimal] = {}
    for at, value in points:
        end_of_day[at.astimezone(UTC).date()] = value
    days = sorted(end_of_day)
    for prev, day in itertools.pairwise(days):
        delta = (end_of_day[day] - end_of_day[prev]) / divisor
        gap = (day - prev).days
        if gap == 1:
            series.days[day] = delta
            continue
        share = delta / gap
        for n in range(1, gap + 1):
            d = prev + timedelta(days=n)
            series.days[d] = share
            series.estimated.add(d)
    return series


async def daily_series(
    session: AsyncSession, meters: list[Meter], since: datetime | None = None
) -> dict[int, DailySeries]:
    """Daily consumption of each meter's billing register; meters without one are left out."""
    wanted = {m.id: MAIN_REGISTER[m.medium] for m in meters if m.medium in MAIN_REGISTER}
    out: dict[int, DailySeries] = {}
    ids = list(wanted)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = (await session.execute(_main_rows_query(chunk, since))).all()
        per_meter: dict[int, dict[str, list[tuple[datetime, Decimal]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for meter_id, register, read_at, value, quantity, unit in rows:
            if (quantity, unit) == wanted[meter_id]:
                per_meter[meter_id][register].append((read_at, value))
        for meter_id, registers in per_meter.items():
            # The plain register (shortest DIF/VIF) when a pulse input or similar shares the quantity.
            register = min(registers, key=lambda r: (len(r), r))
            out[meter_id] = daily_from_readings(registers[register], wanted[meter_id][1])
    return out


async def register_points(
    session: AsyncSession, meter: Meter, since: datetime, until: datetime
) -> tuple[str, list[tuple[datetime, Decimal]]]:
    """The billing register's raw readings of one meter in a window (for the fault evidence chart)."""
    main = MAIN_REGISTER.get(meter.medium)
    if main is None:
        return "", []
    rows = (await session.execute(_main_rows_query([meter.id], since).where(Reading.read_at <= until))).all()
    registers: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for _mid, register, read_at, value, quantity, unit in rows:
        if (quantity, unit) == main:
            registers[register].append((read_at, value))
    if not registers:
        return DISPLAY_UNITS.get(main[1], (main[1], 1))[0], []
    register = min(registers, key=lambda r: (len(r), r))
    display, divisor = DISPLAY_UNITS.get(main[1], (main[1], Decimal(1)))
    return display, [(at, value / divisor) for at, value in registers[register]]


def period_windows(today: date) -> dict[str, tuple[date, date]]:
    """The last complete month, the month before it and the same month a year earlier."""
    this = month_start(today, 1)
    return {
        "this_period": (this, month_start(today, 0)),
        "last_period": (month_start(today, 2), this),
        "last_year": (month_start(today, 13), month_start(today, 12)),
    }


def change_percent(now: Decimal | None, before: Decimal | None) -> str:
    if now is None or before is None or before == 0:
        return "–"
    return f"{((now - before) / before * 100).quantize(Decimal(1)):+}%"
