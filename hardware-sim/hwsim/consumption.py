"""Consumption that looks real: households, day shapes, seasons, holidays, vacancies.

A cumulative register is the integral of a rate that is constant within each local hour:
``rate(day, hour) = daily_level(day) * shape(day)[hour]`` with each day's shape summing to one.
Daily levels are summed once from :data:`~hwsim.climate.EPOCH` and cached, so a register at any
simulated moment is a pure function of (seed, moment) and never runs backwards.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from hwsim import climate


def _normalised(weights: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    total = sum(weights)
    shares = tuple(w / total for w in weights)
    cum = [0.0]
    for s in shares:
        cum.append(cum[-1] + s)
    cum[-1] = 1.0
    return shares, tuple(cum)


# Relative use per local hour 0..23 (Swedish household habits: showers before work, dinner at 17-19).
SHAPES: dict[str, tuple[float, ...]] = {
    "water_workday": (
        0.3,
        0.2,
        0.1,
        0.1,
        0.2,
        1.0,
        4.0,
        6.0,
        4.0,
        1.5,
        1.0,
        1.0,
        1.5,
        1.0,
        1.0,
        1.5,
        2.5,
        4.0,
        4.5,
        4.0,
        3.5,
        3.0,
        2.0,
        0.8,
    ),
    "water_free_day": (
        0.5,
        0.3,
        0.2,
        0.1,
        0.1,
        0.2,
        0.5,
        1.5,
        3.5,
        5.0,
        4.5,
        3.5,
        3.0,
        2.5,
        2.0,
        2.0,
        2.5,
        3.5,
        4.0,
        3.5,
        3.0,
        2.5,
        2.0,
        1.0,
    ),
    "electricity_workday": (
        0.45,
        0.4,
        0.4,
        0.4,
        0.4,
        0.5,
        0.9,
        1.2,
        0.9,
        0.6,
        0.55,
        0.6,
        0.65,
        0.6,
        0.6,
        0.7,
        1.0,
        1.5,
        1.8,
        1.8,
        1.6,
        1.4,
        1.0,
        0.7,
    ),
    "electricity_free_day": (
        0.5,
        0.45,
        0.4,
        0.4,
        0.4,
        0.45,
        0.5,
        0.7,
        1.0,
        1.2,
        1.2,
        1.2,
        1.2,
        1.1,
        1.0,
        1.0,
        1.2,
        1.5,
        1.7,
        1.7,
        1.5,
        1.3,
        1.0,
        0.7,
    ),
    # Radiator heat: a little more at night and before dawn (coldest hours, night setback recovery).
    "heat": tuple(1.0 + 0.15 * math.cos(2 * math.pi * (h - 4) / 24) for h in range(24)),
    "flat": (1.0,) * 24,
}
# Electricity tariff 1 (high) is workdays 06-22; tariff 2 (low) the rest. These masked shapes split a
# day's use exactly between the two registers.
T1_HOURS = range(6, 22)
SHAPES["electricity_workday_t1"] = tuple(
    w if h in T1_HOURS else 0.0 for h, w in enumerate(SHAPES["electricity_workday"])
)
T1_SHARE_WORKDAY = sum(SHAPES["electricity_workday_t1"]) / sum(SHAPES["electricity_workday"])

_SHAPES = {name: _normalised(weights) for name, weights in SHAPES.items()}


def shape(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(hourly shares, cumulative shares with 25 entries) of a named day shape."""
    return _SHAPES[name]


def day_date(day: int) -> date:
    return climate.EPOCH + timedelta(days=day)


class Series:
    """A cumulative quantity: pure function of time built from daily levels and day shapes."""

    def __init__(
        self,
        daily_level: Callable[[int], float],
        day_shape: Callable[[int], str],
    ) -> None:
        self._level = daily_level
        self._shape = day_shape
        self._prefix: list[float] = [0.0]  # _prefix[d] = total of days 0..d-1
        self._lock = threading.Lock()

    def _until(self, day: int) -> float:
        if day <= 0:
            return 0.0
        with self._lock:
            prefix = self._prefix
            while len(prefix) <= day:
                d = len(prefix) - 1
                prefix.append(prefix[-1] + max(0.0, self._level(d)))
            return prefix[day]

    def _position(self, at: datetime) -> tuple[int, int, float]:
        loc = climate.local(at)
        frac = (loc.minute * 60 + loc.second + loc.microsecond / 1e6) / 3600
        return climate.day_index(loc.date()), loc.hour, frac

    def cumulative(self, at: datetime) -> float:
        """Total since the epoch up to ``at`` (units of the daily level)."""
        day, hour, frac = self._position(at)
        if day < 0:
            return 0.0
        shares, cum = shape(self._shape(day))
        within = min(1.0, cum[hour] + frac * shares[hour])
        return self._until(day) + max(0.0, self._level(day)) * within

    def rate(self, at: datetime) -> float:
        """Units per hour at ``at``."""
        day, hour, _ = self._position(at)
        if day < 0:
            return 0.0
        shares, _cum = shape(self._shape(day))
        return max(0.0, self._level(day)) * shares[hour]

    def daily(self, day: int) -> float:
        return max(0.0, self._level(day))


@dataclass(frozen=True, slots=True)
class Household:
    """Who lives in an apartment and how they behave; every answer is a pure function of the day."""

    seed: int
    key: int
    area_m2: float
    occupants: int  # 0 = the apartment stands empty all the time
    habit: float  # personal factor for water and electricity (0.6 .. 1.6)
    warmth: float  # preferred indoor temperature factor for heat (0.85 .. 1.2)
    vacant_from: int | None = None  # day index from which the apartment stands empty (between tenants)
    vacant_until: int | None = None

    def vacant(self, day: int) -> bool:
        if self.occupants == 0:
            return True
        if self.vacant_from is None or self.vacant_until is None:
            return False
        return self.vacant_from <= day < self.vacant_until

    def away(self, day: int) -> bool:
        """Away from home: summer holiday (semester), Christmas, sports holiday week (sportlov)."""
        return any(a <= day < b for a, b in _away_periods(self.seed, self.key, day_date(day).year))

    def present(self, day: int) -> bool:
        return not self.vacant(day) and not self.away(day)

    def day_shape(self, day: int) -> str:
        return "free_day" if _free_day(day) else "workday"

    def noise(self, day: int, what: int) -> float:
        """Day-to-day variation, 0.7 .. 1.3."""
        return 1.0 + 0.3 * climate.signed(self.seed, self.key, day, what)

    # -- daily levels ----------------------------------------------------------------------------

    def hot_water_litres(self, day: int) -> float:
        if not self.present(day):
            return 0.0
        doy = _doy(day)
        season = 1.0 + 0.1 * math.cos(2 * math.pi * (doy - 20) / 365.25)
        return self.occupants * 45.0 * self.habit * season * self.noise(day, 1)

    def cold_water_litres(self, day: int) -> float:
        if not self.present(day):
            return 0.0
        doy = _doy(day)
        season = 1.0 + 0.08 * math.cos(2 * math.pi * (doy - 200) / 365.25)  # watering, more showers in summer
        return self.occupants * 95.0 * self.habit * season * self.noise(day, 2)

    def electricity_kwh(self, day: int) -> float:
        if self.vacant(day):
            return 0.5  # fridge left on, stairwell-side sockets
        if self.away(day):
            return 1.2
        doy = _doy(day)
        season = 1.0 + 0.25 * math.cos(2 * math.pi * (doy - 355) / 365.25)  # lighting in the dark months
        return (1.8 + 1.9 * self.occupants) * self.habit * season * self.noise(day, 3)

    def heat_kwh(self, day: int) -> float:
        """Radiator heat: degree days below the Swedish heating limit of 17 °C, scaled by area."""
        outdoor = climate.daily_mean_temperature(self.seed, day)
        demand = max(0.0, 17.0 - outdoor)
        factor = self.warmth * (0.8 if self.vacant(day) else 1.0)
        # ~100 kWh/m² a year in a Stockholm climate of ~3800 degree days
        return (
            self.area_m2
            * 0.026
            * demand
            * factor
            * (1.0 + 0.05 * climate.signed(self.seed, self.key, day, 4))
        )


@lru_cache(maxsize=16384)
def _away_periods(seed: int, key: int, year: int) -> tuple[tuple[int, int], ...]:
    periods = []
    # Most Swedish households leave for 2-4 weeks in July.
    if climate.unit(seed, key, year, 1) < 0.6:
        start = date(year, 7, 1) + timedelta(days=int(climate.unit(seed, key, year, 2) * 24))
        weeks = 2 + int(climate.unit(seed, key, year, 3) * 3)
        periods.append((climate.day_index(start), climate.day_index(start + timedelta(weeks=weeks))))
    if climate.unit(seed, key, year, 4) < 0.3:
        periods.append((climate.day_index(date(year, 12, 23)), climate.day_index(date(year + 1, 1, 1))))
    if climate.unit(seed, key, year, 5) < 0.15:
        monday = date.fromisocalendar(year, 9, 1)
        periods.append((climate.day_index(monday), climate.day_index(monday) + 7))
    return tuple(periods)


@lru_cache(maxsize=8192)
def _free_day(day: int) -> bool:
    return climate.is_free_day(day_date(day))


@lru_cache(maxsize=8192)
def _doy(day: int) -> int:
    return day_date(day).timetuple().tm_yday


def make_household(seed: int, key: int, area_m2: float, vacant: bool = False) -> Household:
    u = climate.unit(seed, key, 100)
    occupants = 0 if vacant else max(1, min(5, int(area_m2 / 28 + u * 1.6)))
    move_out = None
    move_in = None
    if not vacant and climate.unit(seed, key, 101) < 0.1:
        # a tenant change: the apartment stands empty for 1-3 months some time in 2024-2026
        move_out = climate.day_index(date(2024, 1, 1)) + int(climate.unit(seed, key, 102) * 900)
        move_in = move_out + 30 + int(climate.unit(seed, key, 103) * 60)
    return Household(
        seed=seed,
        key=key,
        area_m2=area_m2,
        occupants=occupants,
        habit=0.6 + climate.unit(seed, key, 104),
        warmth=0.85 + 0.35 * climate.unit(seed, key, 105),
        vacant_from=move_out,
        vacant_until=move_in,
    )
