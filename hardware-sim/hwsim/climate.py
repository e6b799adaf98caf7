"""Deterministic weather and calendar for a Swedish site: outdoor temperature, holidays, local time.

Everything is a pure function of (seed, day), so a register computed for the same simulated moment
is the same whichever order the simulator is asked in.
"""

from __future__ import annotations

import math
import zlib
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

# Profiles and meter clocks run on Swedish standard time (CET, no summer time), as most meters do:
# with summer time the autumn hour would repeat and a register computed from local time would step back.
CET = timezone(timedelta(hours=1), "CET")
# Consumption is integrated from this day on; meters carry a seeded register value from before it.
EPOCH = date(2023, 1, 1)

_MASK64 = (1 << 64) - 1


def mix(*keys: int) -> int:
    """splitmix64 over the keys: a cheap, well-spread, platform-independent hash."""
    h = 0x9E3779B97F4A7C15
    for k in keys:
        h = ((h ^ (h >> 29)) + (k & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
    h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
    return h ^ (h >> 31)


def unit(*keys: int) -> float:
    """A deterministic number in [0, 1) for the keys."""
    return (mix(*keys) >> 11) / float(1 << 53)


def signed(*keys: int) -> float:
    """A deterministic number in [-1, 1)."""
    return unit(*keys) * 2.0 - 1.0


def text_key(text: str) -> int:
    return zlib.crc32(text.encode())


def day_index(day: date) -> int:
    return (day - EPOCH).days


def local(at: datetime) -> datetime:
    return at.astimezone(CET)


# Stockholm 1991-2020 normals: about -3 °C in late January/February, +18 °C in July.
_MEAN_C = 7.2
_AMPLITUDE_C = 10.4
_COLDEST_DOY = 28


def _value_noise(seed: int, day: int, period: int, salt: int) -> float:
    """Smooth noise: cosine interpolation between seeded knots every ``period`` days."""
    k, r = divmod(day, period)
    a = signed(seed, salt, k)
    b = signed(seed, salt, k + 1)
    w = (1 - math.cos(math.pi * r / period)) / 2
    return a * (1 - w) + b * w


@lru_cache(maxsize=65536)
def daily_mean_temperature(seed: int, day: int) -> float:
    """Outdoor daily mean (°C) for day index ``day``: season plus cold spells and mild spells."""
    doy = (EPOCH + timedelta(days=day)).timetuple().tm_yday
    season = _MEAN_C - _AMPLITUDE_C * math.cos(2 * math.pi * (doy - _COLDEST_DOY) / 365.25)
    # Winter weather swings more than summer weather in Sweden.
    spread = 3.0 + 2.5 * math.cos(2 * math.pi * (doy - _COLDEST_DOY) / 365.25)
    weather = spread * (_value_noise(seed, day, 6, 11) + 0.5 * _value_noise(seed, day, 2, 12))
    return season + weather


def outdoor_temperature(seed: int, at: datetime) -> float:
    """Outdoor temperature (°C) at a moment: daily mean plus a day/night swing peaking mid-afternoon."""
    loc = local(at)
    hour = loc.hour + loc.minute / 60
    return daily_mean_temperature(seed, day_index(loc.date())) + 3.0 * math.sin(2 * math.pi * (hour - 9) / 24)


def _easter(year: int) -> date:
    """Anonymous Gregorian algorithm."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def _weekday_between(year: int, month: int, first: int, last: int, weekday: int) -> date:
    for dd in range(first, last + 1):
        if date(year, month, dd).weekday() == weekday:
            return date(year, month, dd)
    raise AssertionError("no such weekday in range")


@lru_cache(maxsize=64)
def swedish_holidays(year: int) -> frozenset[date]:
    """Public holidays and the eves Swedes treat as holidays (midsommarafton, julafton, nyårsafton)."""
    easter = _easter(year)
    days = {
        date(year, 1, 1),
        date(year, 1, 6),
        easter - timedelta(days=2),
        easter + timedelta(days=1),
        date(year, 5, 1),
        easter + timedelta(days=39),
        date(year, 6, 6),
        _weekday_between(year, 6, 19, 25, 4),  # midsommarafton
        _weekday_between(year, 10, 31, 31, 5)
        if date(year, 10, 31).weekday() == 5
        else _weekday_between(year, 11, 1, 6, 5),  # alla helgons dag
        date(year, 12, 24),
        date(year, 12, 25),
        date(year, 12, 26),
        date(year, 12, 31),
    }
    return frozenset(days)


def is_free_day(day: date) -> bool:
    return day.weekday() >= 5 or day in swedish_holidays(day.year)
