"""Consumption of a meter's billing register over a period, with boundary values measured or interpolated.

Readings rarely fall exactly on a period boundary. The register value at a boundary is taken from a
reading at that instant when there is one, else interpolated linearly between the last reading
before and the first after (exact Decimal arithmetic; the result is rounded to the register's own
resolution). Each boundary says which method gave it, so a billing basis can show it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import String, and_, bindparam, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

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


# Most meters read daily: a narrow window finds nearly every nearest reading with a few rows a meter,
# and only the meters it misses are looked for again across the whole allowed gap.
FIRST_WINDOW = timedelta(days=2)


_CHUNK = 500


async def nearest_readings(
    session: AsyncSession, meters: Sequence[Meter], at: datetime, *, limit: timedelta
) -> dict[tuple[int, bool], tuple[datetime, Decimal, str]]:
    """:func:`_nearest` for many meters at once: by (meter id, after) each meter's reading of its
    billing register nearest to ``at`` within ``limit`` (the plain register on a tie); a reading at
    ``at`` itself is on both sides."""
    main = {m.id: reg for m in meters if (reg := MAIN_REGISTER.get(m.medium)) is not None}
    if not main:
        return {}
    statement = _candidates(tuple(sorted(set(main.values()))))
    best: dict[tuple[int, bool], tuple[datetime, str, str]] = {}
    ids = sorted(main)
    first = min(limit, FIRST_WINDOW)
    both = (at - first, at + first)
    await _scan(session, statement, ids, main=main, best=best, at=at, window=both, sides=(False, True))
    if limit > first:
        for after in (False, True):
            missing = [m for m in ids if (m, after) not in best]
            if missing:
                window = (at, at + limit) if after else (at - limit, at)
                await _scan(
                    session, statement, missing, main=main, best=best, at=at, window=window, sides=(after,)
                )
    return {key: (read_at, Decimal(value), register) for key, (read_at, value, register) in best.items()}


async def _scan(
    session: AsyncSession,
    statement: Any,
    ids: list[int],
    *,
    main: dict[int, tuple[str, str]],
    best: dict[tuple[int, bool], tuple[datetime, str, str]],
    at: datetime,
    window: tuple[datetime, datetime],
    sides: tuple[bool, ...],
) -> None:
    """Keep in ``best`` the nearest candidate in ``window`` per (meter, side): plain rows ranked here,
    not by a row_number window in SQL (that ranking cost several times the query itself). A value
    stays text until it wins; only the winners become Decimals."""
    for start in range(0, len(ids), _CHUNK):
        rows = await session.execute(
            statement, {"ids": ids[start : start + _CHUNK], "lo": window[0], "hi": window[1]}
        )
        for meter_id, quantity, unit, read_at, value, register in rows:
            if main[meter_id] != (quantity, unit):
                continue
            for after in sides:
                if (read_at < at) if after else (read_at > at):
                    continue
                held = best.get((meter_id, after))
                if held is not None:
                    if read_at == held[0]:
                        if (len(register), register) >= (len(held[2]), held[2]):
                            continue
                    elif (read_at > held[0]) if after else (read_at < held[0]):
                        continue
                best[meter_id, after] = (read_at, value, register)


@functools.cache
def _candidates(pairs: tuple[tuple[str, str], ...]) -> Any:
    """The billing-register candidates of some meters in [lo, hi]; built once per set of registers
    (the statement's construction and cache key cost more than its execution)."""
    return select(
        Reading.meter_id,
        Reading.quantity,
        Reading.unit,
        Reading.read_at,
        type_coerce(Reading.value, String),
        Reading.register,
    ).where(
        Reading.meter_id.in_(bindparam("ids", expanding=True)),
        or_(*(and_(Reading.quantity == q, Reading.unit == u) for q, u in pairs)),
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
        Reading.read_at >= bindparam("lo", type_=UTCDateTime()),
        Reading.read_at <= bindparam("hi", type_=UTCDateTime()),
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
