"""Consumption of a meter's billing register over a period, with boundary values measured or interpolated.

Readings rarely fall exactly on a period boundary. The register value at a boundary is taken from a
reading at that instant when there is one, else interpolated linearly between the last reading
before and the first after (exact Decimal arithmetic; the result is rounded to the register's own
resolution). Each boundary says which method gave it, so a billing basis can show it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import String, and_, bindparam, or_, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import NullType, TypeDecorator

from central.checks import MAIN_REGISTER
from central.models import Meter, Reading, UTCDateTime


def interpolate(before: tuple[datetime, Decimal], after: tuple[datetime, Decimal], at: datetime) -> Decimal:
    (t0, v0), (t1, v1) = before, after
    if t1 == t0:
        return v0
    fraction = Decimal(int((at - t0).total_seconds() * 1_000_000)) / Decimal(
        int((t1 - t0).total_seconds() * 1_000_000)
    )
    exponent = min(int(v0.as_tuple().exponent), int(v1.as_tuple().exponent))
    return (v0 + (v1 - v0) * fraction).quantize(Decimal(1).scaleb(int(exponent)))


async def _nearest(
    session: AsyncSession,
    meter: Meter,
    quantity: str,
    unit: str,
    at: datetime,
    *,
    after: bool,
    limit: timedelta,
) -> tuple[datetime, Decimal, str] | None:
    query = select(Reading.read_at, Reading.value, Reading.register).where(
        Reading.meter_id == meter.id,
        Reading.quantity == quantity,
        Reading.unit == unit,
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
    )
    if after:
        query = query.where(Reading.read_at >= at, Reading.read_at <= at + limit).order_by(
            Reading.read_at, Reading.register
        )
    else:
        query = query.where(Reading.read_at <= at, Reading.read_at >= at - limit).order_by(
            Reading.read_at.desc(), Reading.register
        )
    rows = (await session.execute(query.limit(8))).all()
    if not rows:
        return None
    # The plain register (shortest DIF/VIF) when a pulse input or similar shares the quantity.
    best = min(rows, key=lambda r: (abs((r[0] - at).total_seconds()), len(r[2]), r[2]))
    return best[0], best[1], best[2]


# Most meters read daily: a window of a day and a bit on each side of an instant holds the nearest
# readings of nearly every meter (a row or two a side; collectors' schedules drift by minutes), and
# only the meters it misses are looked for again across the whole allowed gap.
FIRST_WINDOW = timedelta(hours=26)
_CHUNK = 500  # meter ids per query
_WINDOWS = 8  # time windows per query


@dataclass(frozen=True, slots=True)
class _Search:
    at: Any  # the instant, and the window's ends, as the database stores times
    lo: Any
    hi: Any
    sides: tuple[bool, ...]  # after?
    instant: datetime
    ids: frozenset[int]


async def nearest_readings(
    session: AsyncSession, instants: Mapping[datetime, Sequence[Meter]], *, limit: timedelta
) -> dict[tuple[int, datetime, bool], tuple[datetime, Decimal, str]]:
    """:func:`_nearest` for many meters and instants at once: by (meter id, instant, after) the
    meter's reading of its billing register nearest to the instant within ``limit`` (the plain
    register on a tie); a reading at the instant itself is on both sides."""
    main = {
        m.id: reg
        for meters in instants.values()
        for m in meters
        if (reg := MAIN_REGISTER.get(m.medium)) is not None
    }
    wanted = {at: frozenset(m.id for m in meters if m.id in main) for at, meters in instants.items()}
    dialect = session.get_bind().dialect
    stored = _stored_time(dialect)
    first = min(limit, FIRST_WINDOW)
    best: dict[tuple[int, datetime, bool], tuple[Any, str, str]] = {}
    searches = [
        _Search(stored(at), stored(at - first), stored(at + first), (False, True), at, ids)
        for at, ids in wanted.items()
        if ids
    ]
    await _search(session, searches, main, best)
    if limit > first:
        searches = []
        for at, ids in wanted.items():
            for after in (False, True):
                missing = frozenset(m for m in ids if (m, at, after) not in best)
                if missing:
                    lo, hi = (at, at + limit) if after else (at - limit, at)
                    searches.append(_Search(stored(at), stored(lo), stored(hi), (after,), at, missing))
        await _search(session, searches, main, best)
    read_time = _read_time(dialect)
    return {
        key: (read_time(read_at), Decimal(value), register)
        for key, (read_at, value, register) in best.items()
    }


async def _search(
    session: AsyncSession,
    searches: list[_Search],
    main: dict[int, tuple[str, str]],
    best: dict[tuple[int, datetime, bool], tuple[Any, str, str]],
) -> None:
    """Keep in ``best`` the nearest candidate per (meter, instant, side) of each search: plain rows of
    several windows at once, ranked here rather than by a row_number window in SQL (that ranking
    cost several times the query itself). Times and values stay as the database gives them (SQLite:
    text, which is also how its SQL compares them) until they win; only the winners are converted."""
    for group in (searches[n : n + _WINDOWS] for n in range(0, len(searches), _WINDOWS)):
        ids = sorted(set().union(*(s.ids for s in group)))
        statement = _candidates(tuple(sorted({main[m] for m in ids})), len(group))
        windows = {f"lo{n}": s.lo for n, s in enumerate(group)} | {
            f"hi{n}": s.hi for n, s in enumerate(group)
        }
        for start in range(0, len(ids), _CHUNK):
            rows = await session.execute(statement, {"ids": ids[start : start + _CHUNK], **windows})
            for meter_id, quantity, unit, read_at, value, register in rows:
                if main[meter_id] != (quantity, unit):
                    continue
                for s in group:
                    if meter_id not in s.ids or not s.lo <= read_at <= s.hi:
                        continue
                    for after in s.sides:
                        if (read_at < s.at) if after else (read_at > s.at):
                            continue
                        key = (meter_id, s.instant, after)
                        held = best.get(key)
                        if held is not None:
                            if read_at == held[0]:
                                if (len(register), register) >= (len(held[2]), held[2]):
                                    continue
                            elif (read_at > held[0]) if after else (read_at < held[0]):
                                continue
                        best[key] = (read_at, value, register)


class _AsStored(TypeDecorator[Any]):
    """A column or parameter exactly as the driver gives or takes it: no conversion either way."""

    impl = NullType
    cache_ok = True


@functools.cache
def _stored_time(dialect: Dialect) -> Callable[[datetime], Any]:
    """A time as the database stores it (the bind conversion of ``reading.read_at``)."""
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return bind if bind is not None else lambda at: at


@functools.cache
def _read_time(dialect: Dialect) -> Callable[[Any], Any]:
    """A stored time as ``reading.read_at`` reads it (aware UTC)."""
    result = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    return result if result is not None else lambda at: at


@functools.cache
def _candidates(pairs: tuple[tuple[str, str], ...], windows: int) -> Any:
    """The billing-register candidates of some meters in any of ``windows`` time windows (lo0..hi0,
    ...), times and values as stored; built once per shape (its construction and cache key cost more
    than running it)."""
    return select(
        Reading.meter_id,
        Reading.quantity,
        Reading.unit,
        type_coerce(Reading.read_at, _AsStored()),
        type_coerce(Reading.value, String),
        Reading.register,
    ).where(
        Reading.meter_id.in_(bindparam("ids", expanding=True)),
        or_(*(and_(Reading.quantity == q, Reading.unit == u) for q, u in pairs)),
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
        or_(
            *(
                and_(
                    Reading.read_at >= bindparam(f"lo{n}", type_=_AsStored()),
                    Reading.read_at <= bindparam(f"hi{n}", type_=_AsStored()),
                )
                for n in range(windows)
            )
        ),
    )


async def value_at(
    session: AsyncSession, meter: Meter, at: datetime, *, max_gap: timedelta
) -> dict[str, Any]:
    main = MAIN_REGISTER.get(meter.medium)
    if main is None:
        return {"at": at, "value": None, "method": "no_billing_register"}
    before = await _nearest(session, meter, *main, at, after=False, limit=max_gap)
    if before is not None and before[0] == at:
        return {"at": at, "value": format(before[1], "f"), "method": "measured", "readings": [before[0]]}
    after = await _nearest(session, meter, *main, at, after=True, limit=max_gap)
    if before is None or after is None:
        return {"at": at, "value": None, "method": "missing"}
    value = interpolate((before[0], before[1]), (after[0], after[1]), at)
    return {
        "at": at,
        "value": format(value, "f"),
        "method": "interpolated",
        "readings": [before[0], after[0]],
    }


async def consumption(
    session: AsyncSession, meter: Meter, start: datetime, end: datetime, *, max_gap_days: float = 45.0
) -> dict[str, Any]:
    gap = timedelta(days=max_gap_days)
    first = await value_at(session, meter, start, max_gap=gap)
    last = await value_at(session, meter, end, max_gap=gap)
    main = MAIN_REGISTER.get(meter.medium)
    amount = None
    if first["value"] is not None and last["value"] is not None:
        amount = format(Decimal(last["value"]) - Decimal(first["value"]), "f")
    return {
        "meter": meter.serial,
        "quantity": main[0] if main else None,
        "unit": main[1] if main else None,
        "start": first,
        "end": last,
        "consumption": amount,
        "estimated": "interpolated" in (first["method"], last["method"]),
    }
