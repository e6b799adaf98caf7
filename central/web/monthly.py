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
import functools
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from central.checks import MAIN_REGISTER
from central.models import Meter
from central.reading_months import month_rows
from central.web.data import DISPLAY_UNITS, DailySeries


@functools.cache
def _month_days(year: int, month: int) -> tuple[int, int]:
    """(ordinal of the 1st, ordinal of the last day) of a month."""
    first = date(year, month, 1).toordinal()
    return first, first + calendar.monthrange(year, month)[1] - 1


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


@functools.cache
def _year_month(text: str) -> tuple[int, int]:
    return int(text[:4]), int(text[5:7])


def series_from_months(rows: Sequence[tuple[Any, ...]], unit: str) -> DailySeries:
    """One register's consumption per month from its month rows (oldest first), tuples of
    :data:`central.reading_months.FIGURE_COLUMNS`."""
    display, divisor = DISPLAY_UNITS.get(unit, (unit, Decimal(1)))
    series = DailySeries(unit=display)
    if not rows:
        return series
    masks: dict[tuple[int, int], int] = {}
    totals: dict[tuple[int, int], Decimal] = {}
    previous: tuple[tuple[int, int], int, Decimal] | None = None  # the last reading day before
    first_day = 0
    for (
        _meter,
        _register,
        month,
        _q,
        _u,
        first_of_month,
        first_value,
        last_of_month,
        last_value,
        days,
    ) in rows:
        ym = _year_month(month)
        masks[ym] = days
        month_first = _month_days(*ym)[0]
        first = month_first + first_of_month - 1
        start_value, end_value = Decimal(first_value), Decimal(last_value)
        # Inside the month the daily differences add up to last - first.
        totals[ym] = end_value - start_value
        if previous is None:
            first_day = first
        else:
            _spread(totals, previous, (ym, first, start_value))
        previous = (ym, month_first + last_of_month - 1, end_value)
    assert previous is not None
    final_day = previous[1]
    for ym, total in totals.items():
        start = date(ym[0], ym[1], 1)
        series.days[start] = total / divisor
        if _estimated(ym, masks, first_day, final_day):
            series.estimated.add(start)
    return series


def _spread(
    totals: dict[tuple[int, int], Decimal],
    before: tuple[tuple[int, int], int, Decimal],
    after: tuple[tuple[int, int], int, Decimal],
) -> None:
    """Add the difference between two reading days (p, q] to the months of its days, evenly."""
    (ym, p, vp), (ym_q, q, vq) = before, after
    delta = vq - vp
    gap = q - p
    if gap == 1:  # the usual case: the next month's first reading follows the day after
        totals[ym_q] = totals.get(ym_q, Decimal(0)) + delta
        return
    while True:
        lo_day, hi_day = _month_days(*ym)
        lo, hi = max(p + 1, lo_day), min(q, hi_day)
        if hi >= lo:
            share = delta if hi - lo + 1 == gap else delta * (hi - lo + 1) / gap
            totals[ym] = totals.get(ym, Decimal(0)) + share
        if ym == ym_q:
            return
        ym = _next_month(*ym)


def _estimated(ym: tuple[int, int], masks: dict[tuple[int, int], int], first: int, final: int) -> bool:
    """Whether a day of the month in (first, final] (ordinals) has no reading or none the day before."""
    lo_day, hi_day = _month_days(*ym)
    mask = masks.get(ym, 0)
    if first < lo_day and final >= hi_day and mask == (1 << (hi_day - lo_day + 1)) - 1:
        # Every day of the month has a reading: only the 1st can follow a day without one.
        prev = (ym[0] - 1, 12) if ym[1] == 1 else (ym[0], ym[1] - 1)
        prev_first, prev_last = _month_days(*prev)
        return not (masks.get(prev, 0) >> (prev_last - prev_first)) & 1
    lo, hi = max(first + 1, lo_day) - lo_day + 1, min(final, hi_day) - lo_day + 1  # days of the month
    if hi < lo:
        return False
    covered = ((1 << hi) - 1) & ~((1 << (lo - 1)) - 1)  # bits lo-1 .. hi-1: the days with a figure
    if covered & ~mask or (covered >> 1) & ~mask:
        return True
    if covered & 1:  # the 1st has a figure: the day before is the previous month's last
        prev = (ym[0] - 1, 12) if ym[1] == 1 else (ym[0], ym[1] - 1)
        prev_first, prev_last = _month_days(*prev)
        return not (masks.get(prev, 0) >> (prev_last - prev_first)) & 1
    return False


async def month_series(session: AsyncSession, meters: list[Meter], since: datetime) -> dict[int, DailySeries]:
    """Each meter's billing-register consumption per month from the month of ``since`` on (meters
    without a billing register left out)."""
    wanted = {m.id: MAIN_REGISTER[m.medium] for m in meters if m.medium in MAIN_REGISTER}
    rows = await month_rows(session, list(wanted), f"{since.year:04d}-{since.month:02d}")
    out: dict[int, DailySeries] = {}
    for meter_id, summaries in rows.items():
        registers: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        main = wanted[meter_id]
        for row in summaries:
            if (row[3], row[4]) == main:
                registers[row[1]].append(row)
        if registers:
            # The plain register (shortest DIF/VIF) when a pulse input or similar shares the quantity.
            register = min(registers, key=lambda r: (len(r), r))
            out[meter_id] = series_from_months(registers[register], wanted[meter_id][1])
    return out
