"""Month summaries of the billing registers, kept beside the readings (table ``reading_month``).

A page that shows fourteen months of consumption for a property's 200 meters would otherwise read
~85,000 daily readings. The daily figures of :mod:`central.web.data` (last value of each UTC day,
differenced day to day, a gap spread evenly over its days) telescope inside a month, so a month's
total needs only, per (meter, register, month):

* the month's first day with a reading and that day's last reading (``first_*``),
* the month's last reading (``last_*``),
* which days of the month have a reading (``days``, bit n-1 for day n) - for the *estimated* marks.

Candidates are the readings a billing register can be: storage 0, tariff 0, subunit 0,
instantaneous, with a (quantity, unit) pair of :data:`central.checks.MAIN_REGISTER`; which register
is the meter's billing register is decided when reading, exactly as for the daily figures.

Two summaries merge by taking the earlier first day (the later reading on a tie of days), the later
last reading and the union of the days - commutative, associative and idempotent, so late,
out-of-order and repeated readings fold to the same row. On equal timestamps the stored summary
wins, as the stored reading does (ingest is idempotent on (meter, register, timestamp)).

Writers keep it current in their own transaction: :func:`note_readings` after inserting readings
(ingest, manual readings), :func:`rebuild` for the meters whose readings were deleted and rewritten
(re-decode) or bulk-loaded behind the writers' back (benchmarks, migration 0004 on a database with
history). A writer that adds readings any other way must do one of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, delete, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from central.checks import MAIN_REGISTER
from central.models import Meter, Reading, ReadingMonth

CANDIDATES = frozenset(MAIN_REGISTER.values())
_QUANTITIES = sorted({q for q, _u in CANDIDATES})
_METERS_PER_QUERY = 500
_SUMMARY_COLUMNS = (
    "meter_id", "register", "month", "quantity", "unit", "first_day", "first_at", "first_value",
    "last_day", "last_at", "last_value", "days",
)  # fmt: skip


@dataclass(slots=True)
class Summary:
    meter_id: int
    register: str
    month: str
    quantity: str
    unit: str
    first_day: int
    first_at: datetime | str  # SQLite's stored text on ingest's path
    first_value: Decimal | str  # text when folded from stored readings, Decimal when read back
    last_day: int
    last_at: datetime | str
    last_value: Decimal | str
    days: int

    def merge(self, other: Summary) -> None:
        """Fold ``other`` into this one (this one wins ties: it was stored first)."""
        if other.first_day < self.first_day or (
            other.first_day == self.first_day and other.first_at > self.first_at
        ):
            self.first_day, self.first_at, self.first_value = (
                other.first_day,
                other.first_at,
                other.first_value,
            )
        if other.last_at > self.last_at:
            self.last_day, self.last_at, self.last_value = other.last_day, other.last_at, other.last_value
        self.days |= other.days

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SUMMARY_COLUMNS}


def summary_of(reading: tuple[Any, ...]) -> Summary:
    """The summary of one ``(meter_id, register, read_at, quantity, unit, value)`` reading;
    ``read_at`` an aware datetime or SQLite's stored text (naive UTC, as ingest binds it)."""
    meter_id, register, at, quantity, unit, value = reading
    if isinstance(at, str):
        month, day = at[:7], int(at[8:10])
    else:
        at = at.astimezone(UTC)
        month, day = f"{at.year:04d}-{at.month:02d}", at.day
    text = value if isinstance(value, str) else str(Decimal(value))  # the text ExactDecimal stores
    return Summary(meter_id, register, month, quantity, unit, day, at, text, day, at, text, 1 << (day - 1))


def fold(readings: Iterable[tuple[Any, ...]]) -> dict[tuple[int, str, str], Summary]:
    """Summaries of ``(meter_id, register, read_at, quantity, unit, value)`` rows (candidates only;
    the times all of one kind, datetimes or SQLite text)."""
    out: dict[tuple[int, str, str], Summary] = {}
    for reading in readings:
        s = summary_of(reading)
        key = (s.meter_id, s.register, s.month)
        known = out.get(key)
        if known is None:
            out[key] = s
        else:
            known.merge(s)
    return out


_EARLIER = (
    "excluded.first_day < reading_month.first_day OR (excluded.first_day = reading_month.first_day "
    "AND excluded.first_at > reading_month.first_at)"
)
_LATER = "excluded.last_at > reading_month.last_at"
_ON_CONFLICT = (
    " ON CONFLICT (meter_id, register, month) DO UPDATE SET "
    + ", ".join(
        f"{column} = CASE WHEN {rule} THEN excluded.{column} ELSE reading_month.{column} END"
        for rule, columns in (
            (_EARLIER, ("first_day", "first_at", "first_value")),
            (_LATER, ("last_day", "last_at", "last_value")),
        )
        for column in columns
    )
    + ", days = reading_month.days | excluded.days"
)
_COLUMNS_SQL = ", ".join(_SUMMARY_COLUMNS)
# Driver SQL with values already bound as ingest binds them: no per-row SQLAlchemy work.
_SQLITE_UPSERT = f"INSERT INTO reading_month ({_COLUMNS_SQL}) VALUES ({', '.join('?' * 12)})" + _ON_CONFLICT
_PG_UPSERT = (
    f"INSERT INTO reading_month ({_COLUMNS_SQL}) SELECT * FROM unnest($1::int[], $2::varchar[], "
    "$3::varchar[], $4::varchar[], $5::varchar[], $6::int[], $7::timestamptz[], $8::varchar[], $9::int[], "
    "$10::timestamptz[], $11::varchar[], $12::int[])" + _ON_CONFLICT
)


def _write(connection: Connection, summaries: Iterable[Summary]) -> None:
    # In key order: parallel ingest workers then lock shared rows in one order and cannot deadlock.
    rows = sorted(tuple(getattr(s, name) for name in _SUMMARY_COLUMNS) for s in summaries)
    if not rows:
        return
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(_SQLITE_UPSERT, rows)
    else:
        connection.exec_driver_sql(_PG_UPSERT, tuple(list(column) for column in zip(*rows, strict=True)))


READING_FIELDS = ("meter_id", "register", "read_at", "quantity", "unit", "function", "storage", "tariff",
                  "subunit", "value")  # fmt: skip


def note_sync(connection: Connection, rows: Sequence[Sequence[Any]], columns: str | Sequence[str]) -> None:
    """Fold newly written readings into their month rows. ``rows`` are reading tuples with the
    ``columns`` named (a list or ingest's comma-separated text; others than :data:`READING_FIELDS`
    are ignored); ``read_at`` an aware datetime or SQLite's stored text."""
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)
    meter, register, read_at, quantity, unit, function, storage, tariff, subunit, value = (
        names.index(field) for field in READING_FIELDS
    )
    sqlite_text = _sqlite_text(connection)
    wanted = (
        (r[meter], r[register], sqlite_text(r[read_at]), r[quantity], r[unit], r[value])
        for r in rows
        if r[storage] == 0
        and r[tariff] == 0
        and r[subunit] == 0
        and r[function] == "instantaneous"
        and (r[quantity], r[unit]) in CANDIDATES
    )
    _write(connection, fold(wanted).values())


def _sqlite_text(connection: Connection) -> Any:
    """On SQLite, times as the text SQLAlchemy stores for the column (ingest may hand over that text
    or a naive UTC datetime, as its driver binds them); elsewhere aware datetimes."""
    if connection.dialect.name != "sqlite":
        return lambda at: at.replace(tzinfo=UTC) if at.tzinfo is None else at

    def text(at: Any) -> str:
        if isinstance(at, str):
            return at
        aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        return aware.strftime("%Y-%m-%d %H:%M:%S.%f")

    return text


async def note_readings(
    connection: AsyncConnection | AsyncSession,
    rows: Sequence[Sequence[Any]],
    columns: str | Sequence[str] = READING_FIELDS,
) -> None:
    """:func:`note_sync` from async code, in the caller's transaction."""
    if isinstance(connection, AsyncSession):
        await connection.run_sync(lambda s: note_sync(s.connection(), rows, columns))
    else:
        await connection.run_sync(note_sync, rows, columns)


def _candidate_rows(connection: Connection, meter_ids: Sequence[int]) -> Iterable[tuple[Any, ...]]:
    query = (
        select(
            Reading.meter_id,
            Reading.register,
            Reading.read_at,
            Reading.quantity,
            Reading.unit,
            type_coerce(Reading.value, String),  # the stored text as it is: no Decimal round trip
        )
        .where(
            Reading.meter_id.in_(list(meter_ids)),
            Reading.storage == 0,
            Reading.tariff == 0,
            Reading.subunit == 0,
            Reading.function == "instantaneous",
            Reading.quantity.in_(_QUANTITIES),
        )
        .order_by(Reading.meter_id, Reading.register, Reading.read_at, Reading.id)
    )
    for row in connection.execute(query):
        if (row[3], row[4]) in CANDIDATES:
            yield tuple(row)


def rebuild_sync(connection: Connection, meter_ids: Iterable[int] | None = None) -> int:
    """Recompute the month rows of these meters (all meters: None) from their readings; row count."""
    if meter_ids is None:
        connection.execute(delete(ReadingMonth))
        ids = list(connection.execute(select(Meter.id).order_by(Meter.id)).scalars())
    else:
        ids = sorted(set(meter_ids))
    written = 0
    for start in range(0, len(ids), _METERS_PER_QUERY):
        chunk = ids[start : start + _METERS_PER_QUERY]
        if meter_ids is not None:
            connection.execute(delete(ReadingMonth).where(ReadingMonth.meter_id.in_(chunk)))
        rows = [s.row() for s in fold(_candidate_rows(connection, chunk)).values()]
        if rows:
            connection.execute(ReadingMonth.__table__.insert(), rows)
        written += len(rows)
    return written


async def rebuild(session: AsyncSession | AsyncConnection, meter_ids: Iterable[int] | None = None) -> int:
    """:func:`rebuild_sync` from async code, in the caller's transaction."""
    ids = None if meter_ids is None else list(meter_ids)
    if isinstance(session, AsyncSession):
        return await session.run_sync(lambda s: rebuild_sync(s.connection(), ids))
    return await session.run_sync(rebuild_sync, ids)


# What a page needs of a summary, as plain tuples in this order: not the timestamps (the days say
# enough), so nothing to convert but the values.
FIGURE_COLUMNS = ("meter_id", "register", "month", "quantity", "unit", "first_day", "first_value",
                  "last_day", "last_value", "days")  # fmt: skip


def figures(summary: Summary) -> tuple[Any, ...]:
    """A summary as :func:`month_rows` gives it."""
    return tuple(getattr(summary, name) for name in FIGURE_COLUMNS)


async def month_rows(
    session: AsyncSession, meter_ids: Sequence[int], first_month: str
) -> dict[int, list[tuple[Any, ...]]]:
    """Each meter's month rows from ``first_month`` (YYYY-MM) on, oldest first (all registers), as
    tuples of :data:`FIGURE_COLUMNS`."""
    out: dict[int, list[tuple[Any, ...]]] = {}
    table = ReadingMonth.__table__
    connection = await session.connection()  # Core rows: nothing for the ORM to do with them
    for start in range(0, len(meter_ids), _METERS_PER_QUERY):
        chunk = list(meter_ids[start : start + _METERS_PER_QUERY])
        result = await connection.execute(
            select(*(table.c[name] for name in FIGURE_COLUMNS))
            .where(table.c.meter_id.in_(chunk), table.c.month >= first_month)
            .order_by(table.c.meter_id, table.c.month)
        )
        for row in result.all():
            out.setdefault(row[0], []).append(tuple(row))
    return out
