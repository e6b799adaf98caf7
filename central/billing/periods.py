"""Billing periods: monthly or quarterly, billed ``lag`` months in arrears, half-open ``[start, end)``.

The notice (*månadsavi*) of month N carries the period that ended ``lag - 1`` months before N
began: monthly with lag 1, the May notice bills April; quarterly with lag 2, the May notice bills
January-March and the notices of June and July bill nothing for that medium.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from .model import Frequency

__all__ = [
    "BillingPeriod",
    "add_months",
    "boundary",
    "notice_month",
    "period_containing",
    "period_for_notice",
]

_MONTHS = {Frequency.MONTHLY: 1, Frequency.QUARTERLY: 3}


def add_months(day: date, months: int) -> date:
    """The first of the month ``months`` after ``day``'s month (``day`` must be a first)."""
    if day.day != 1:
        raise ValueError(f"{day} is not the first of a month")
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True, slots=True, order=True)
class BillingPeriod:
    start: date
    end: date  # exclusive

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("empty period")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def months(self) -> int:
        """Whole calendar months in the period (a billing period always is some)."""
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month

    def label(self) -> str:
        return f"{self.start.isoformat()}--{self.end.isoformat()}"


def period_containing(day: date, frequency: Frequency) -> BillingPeriod:
    step = _MONTHS[frequency]
    first_month = (day.month - 1) // step * step + 1
    start = date(day.year, first_month, 1)
    return BillingPeriod(start, add_months(start, step))


def notice_month(period: BillingPeriod, lag_months: int) -> date:
    """The first day of the month whose notice carries ``period``."""
    return add_months(period.end, lag_months - 1)


def period_for_notice(notice: date, frequency: Frequency, lag_months: int) -> BillingPeriod | None:
    """The period billed on the notice of ``notice``'s month, or None (quarterly: 2 months of 3)."""
    end = add_months(date(notice.year, notice.month, 1), -(lag_months - 1))
    period = period_containing(add_months(end, -1), frequency)
    return period if period.end == end else None


def boundary(day: date, timezone: str) -> datetime:
    """Local midnight at the start of ``day``: where readings are aligned to."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone))
