"""Read statements a billing run executes per property, prepared once and run in one driver call.

Through SQLAlchemy's asyncio adaptation an aiosqlite statement costs four thread hand-offs (open a
cursor, execute, fetch, close) and a result processor call per value: about 0.4 ms of CPU for a
statement that returns nothing, and a fleet billing run executes a dozen per property. A
``Prepared`` select is compiled once per dialect; on SQLite it runs as one ``execute_fetchall``
on the driver with the bind and result processors of its own columns (what the Core execution
applies, looked up once instead of per row); elsewhere it runs through Core. Either way the rows
are named tuples of the selected columns.

Only scalar bind parameters (no expanding IN lists): the statements select by property, joining
instead of passing id lists. ``prepare_insert`` + ``execute_insert`` are the same for the rows a
run writes.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Prepared", "PreparedInsert", "driver_errors", "execute_insert", "prepare_insert"]

_Compiled = tuple[str, list[str], list[Any], list[Any], list[Any]]  # sql, names, defaults, processors


@contextmanager
def driver_errors(sql: str, dialect: Dialect) -> Iterator[None]:
    """sqlite3's errors from a call on the driver as SQLAlchemy's (``IntegrityError``,
    ``OperationalError`` ...), as the same statement through Core would raise them: callers catch
    those."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, dialect=dialect) from exc


class Prepared:
    def __init__(self, stmt: Select[*tuple[Any, ...]]) -> None:
        self.stmt = stmt
        names = [str(c.key) for c in stmt.selected_columns]
        self.row: Any = namedtuple("Row", names)  # type: ignore[misc]
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect)
            order = list(compiled.positiontup or [])
            binds = [compiled.binds[name] for name in order]
            defaults = [b.effective_value for b in binds]
            bind_procs = [b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds]
            columns = self.stmt.selected_columns
            result_procs = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
            found = (compiled.string, order, defaults, bind_procs, result_procs)
            self._compiled[dialect.name] = found
        return found

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Sequence[Any]:
        if conn.dialect.name != "sqlite":
            return [self.row(*r) for r in (await conn.execute(self.stmt, dict(params))).all()]
        sql, order, defaults, bind_procs, result_procs = self._for(conn.dialect)
        values = []
        for name, default, proc in zip(order, defaults, bind_procs, strict=True):
            value = params.get(name, default)
            values.append(value if proc is None or value is None else proc(value))
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        make = self.row._make
        with driver_errors(sql, conn.dialect):
            rows = await driver.execute_fetchall(sql, values)
        if not any(result_procs):
            return [make(r) for r in rows]
        return [make(v if p is None else p(v) for p, v in zip(result_procs, r, strict=True)) for r in rows]


@dataclass(frozen=True, slots=True)
class PreparedInsert:
    """An insert of many rows with its values already converted for the connection's dialect."""

    table: Table
    sql: str | None  # the driver's statement on SQLite; None: through Core
    params: Sequence[Any]


def prepare_insert(
    dialect: Dialect, table: Table, names: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> PreparedInsert:
    """``rows`` (tuples in ``names``' order) ready for ``execute_insert``: on SQLite converted by the
    columns' own bind processors (what the Core insert applies), a column at a time and only the
    columns that have a processor (a dict and a generator per row were most of the Python side of
    writing the lines); elsewhere the dicts Core takes. Done before the first write, so a
    transaction holds SQLite's write lock only for the statements themselves."""
    if dialect.name != "sqlite":
        return PreparedInsert(table, None, [dict(zip(names, row, strict=True)) for row in rows])
    procs = _bind_processors(table, tuple(names), dialect)
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    params: Sequence[tuple[Any, ...]] = rows
    if rows and any(procs):
        columns: list[Any] = list(zip(*rows, strict=True))
        for i, proc in enumerate(procs):
            if proc is not None:
                columns[i] = [None if v is None else proc(v) for v in columns[i]]
        params = list(zip(*columns, strict=True))
    return PreparedInsert(table, sql, params)


async def execute_insert(conn: AsyncConnection, prepared: PreparedInsert) -> None:
    """One ``executemany`` through the driver on SQLite (one thread hand-off instead of four, no
    compiled parameter set per row: a fleet run writes ~6 lines and ~16 reading links per
    apartment); ``conn.execute(insert(table), rows)`` elsewhere. A test compares what both store."""
    if not prepared.params:
        return
    if prepared.sql is None:
        await conn.execute(insert(prepared.table), list(prepared.params))
        return
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    with driver_errors(prepared.sql, conn.dialect):
        await driver.executemany(prepared.sql, prepared.params)


_PROCESSORS: dict[tuple[str, tuple[str, ...], str], list[Any]] = {}


def _bind_processors(table: Table, names: tuple[str, ...], dialect: Dialect) -> list[Any]:
    key = (table.name, names, dialect.name)
    procs = _PROCESSORS.get(key)
    if procs is None:
        procs = _PROCESSORS[key] = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        ]
    return procs
