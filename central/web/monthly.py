"""The pages' consumption per month from the month summaries (``central.reading_months``).

:func:`central.web.data.daily_series` makes a figure per day from every reading (the last value of
each UTC day, differenced day to day, a gap spread evenly over its days). Summed over a month those
figures telescope: what is left are the month's first reading day and last reading, and the
neighbouring months' for the days before the first and after the last. So the same month totals,
and the same *estimated* marks (a day without a reading, or whose reading ends a gap), come from one
summary row per meter and month. The series returned holds one figure per month, dated the 1st:
right for month and year buckets and for totals over whole months, not for a day grain (use
``daily_series`` there). Figures stay exact (Decimal).
"""

from __future__ import annotations

import calendar
import itertools
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from central.checks import MAIN_REGISTER
from central.models import Meter
from central.reading_months import Summary, month_rows
from central.web.data import DISPLAY_UNITS, DailySeries


def _month_of(day: date) -> tuple[int, int]:
    return day.year, day.month


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def series_from_months(rows: list[Summary], unit: str) -> DailySeries:
    """One register's consumption per month from its month rows (oldest first)."""
    display, divisor = DISPLAY_UNITS.get(unit, (unit, Decimal(1)))
    series = DailySeries(unit=display)
    if not rows:
        return series
    masks = {(int(s.month[:4]), int(s.month[5:7])): s.days for s in rows}
    # The register's value at the end of its first and last reading day of each month, in order.
    points: list[tuple[date, Decimal]] = []
    for s in rows:
        points.append((s.first_at.date(), Decimal(s.first_value)))
        if s.last_at.date() != s.first_at.date():
            points.append((s.last_at.date(), Decimal(s.last_value)))
    totals: dict[tuple[int, int], Decimal] = {}
    # Each pair's difference covers the days (p, q], evenly: a month gets its days' share.
    for (p, vp), (q, vq) in itertools.pairwise(points):
        delta = (vq - vp) / divisor
        gap = (q - p).days
        ym = _month_of(p)
        while True:
            last = date(ym[0], ym[1], calendar.monthrange(*ym)[1])
            lo = max(p.toordinal() + 1, date(ym[0], ym[1], 1).toordinal())
            hi = min(q.toordinal(), last.toordinal())
            if hi >= lo:
                share = delta if hi - lo + 1 == gap else delta * (hi - lo + 1) / gap
                totals[ym] = totals.get(ym, Decimal(0)) + share
            if last >= q:
                break
            ym = _next_month(*ym)
    first, final = points[0][0], points[-1][0]
    for ym, total in totals.items():
        start = date(ym[0], ym[1], 1)
        series.days[start] = total
        if _estimated(ym, masks, first, final):
            series.estimated.add(start)
    return series


def _estimated(ym: tuple[int, int], masks: dict[tuple[int, int], int], first: date, final: date) -> bool:
    """Whether a day of the month in (first, final] has no reading or no reading the day before."""
    n_days = calendar.monthrange(*ym)[1]
    lo = first.day + 1 if _month_of(first) == ym else 1
    hi = final.day if _month_of(final) == ym else n_days
    covered = ((1 << hi) - 1) & ~((1 << (lo - 1)) - 1)  # bits lo-1 .. hi-1: the days with a figure
    mask = masks.get(ym, 0)
    if covered & ~mask or (covered >> 1) & ~mask:
        return True
    if covered & 1:  # the 1st has a figure: the day before is the previous month's last
        prev = (ym[0] - 1, 12) if ym[1] == 1 else (ym[0], ym[1] - 1)
        return not (masks.get(prev, 0) >> (calendar.monthrange(*prev)[1] - 1)) & 1
    return False


async def month_series(session: AsyncSession, meters: list[Meter], since: datetime) -> dict[int, DailySeries]:
    """Each meter's billing-register consumption per month from the month of ``since`` on (meters
    without a billing register left out)."""
    wanted = {m.id: MAIN_REGISTER[m.medium] for m in meters if m.medium in MAIN_REGISTER}
    rows = await month_rows(session, list(wanted), f"{since.year:04d}-{since.month:02d}")
    out: dict[int, DailySeries] = {}
    for meter_id, summaries in rows.items():
        registers: dict[str, list[Summary]] = defaultdict(list)
        for s in summaries:
            if (s.quantity, s.unit) == wanted[meter_id]:
                registers[s.register].append(s)
        if registers:
            # The plain register (shortest DIF/VIF) when a pulse input or similar shares the quantity.
            register = min(registers, key=lambda r: (len(r), r))
            out[meter_id] = series_from_months(registers[register], wanted[meter_id][1])
    return out
