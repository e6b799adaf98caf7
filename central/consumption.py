"""Consumption of a meter's billing register over a period, with boundary values measured or interpolated.

Readings rarely fall exactly on a period boundary. The register value at a boundary is taken from a
reading at that instant when there is one, else interpolated linearly between the last reading
before and the first after (exact Decimal arithmetic; the result is rounded to the register's own
resolution). Each boundary says which method gave it, so a billing basis can show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, and_, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from central.checks import MAIN_REGISTER
from central.models import Meter, Reading


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


async def nearest_readings(
    session: AsyncSession, meters: Sequence[Meter], at: datetime, *, limit: timedelta
) -> dict[tuple[int, bool], tuple[datetime, Decimal, str]]:
    """:func:`_nearest` for many meters at once, both sides in one query: by (meter id, after) each
    meter's reading of its billing register nearest to ``at`` within ``limit`` (the plain register on
    a tie); a reading at ``at`` itself is on both sides."""
    main = {m.id: reg for m in meters if (reg := MAIN_REGISTER.get(m.medium)) is not None}
    pairs = sorted(set(main.values()))
    out: dict[tuple[int, bool], tuple[datetime, Decimal, str]] = {}
    missing = {side: sorted(main) for side in (False, True)}
    for width in sorted({min(limit, FIRST_WINDOW), limit}):
        for start in range(0, max(len(ids) for ids in missing.values()), 500):
            sides = [
                _ranked(ids[start : start + 500], pairs, at, width, after=side)
                for side, ids in missing.items()
                if ids[start : start + 500]
            ]
            if not sides:
                continue
            ranked = (union_all(*sides) if len(sides) > 1 else sides[0]).subquery()
            columns = ("after", "meter_id", "quantity", "unit", "read_at", "value", "register")
            rows = await session.execute(
                select(*(ranked.c[name] for name in columns)).where(ranked.c.rank == 1)
            )
            for after, meter_id, quantity, unit, read_at, value, register in rows:
                if main[meter_id] == (quantity, unit):
                    out[meter_id, bool(after)] = (read_at, value, register)
        missing = {side: [m for m in ids if (m, side) not in out] for side, ids in missing.items()}
    return out


def _ranked(
    ids: list[int], pairs: list[tuple[str, str]], at: datetime, limit: timedelta, *, after: bool
) -> Any:
    """Billing-register candidates on one side of ``at``, ranked nearest first per meter and register."""
    window = (
        and_(Reading.read_at >= at, Reading.read_at <= at + limit)
        if after
        else and_(Reading.read_at <= at, Reading.read_at >= at - limit)
    )
    order = Reading.read_at.asc() if after else Reading.read_at.desc()
    return select(
        literal(int(after), Integer).label("after"),
        Reading.meter_id,
        Reading.quantity,
        Reading.unit,
        Reading.read_at,
        Reading.value,
        Reading.register,
        func.row_number()
        .over(
            partition_by=(Reading.meter_id, Reading.quantity, Reading.unit),
            order_by=(order, func.length(Reading.register), Reading.register),
        )
        .label("rank"),
    ).where(
        Reading.meter_id.in_(ids),
        or_(*(and_(Reading.quantity == q, Reading.unit == u) for q, u in pairs)),
        Reading.storage == 0,
        Reading.tariff == 0,
        Reading.subunit == 0,
        Reading.function == "instantaneous",
        window,
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
