"""Database access: one async engine (SQLite via aiosqlite or PostgreSQL via asyncpg), migrations at start.

The schema is owned by Alembic (``central/migrations``); :func:`Database.open` upgrades to head before
anything else touches the tables, so every start-up runs against the schema the code expects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.dml import Insert

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseConfigError(ValueError):
    """The database URL cannot be used; the message names the field."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'central.sqlite').resolve()}"


def check_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseConfigError(f"database_url: not a database URL ({exc})") from exc
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise DatabaseConfigError(
            f"database_url: driver {parsed.drivername!r} is not supported; "
            "use sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db"
        )
    return url


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while ingest writes; foreign keys are off by default in SQLite.
    # synchronous=FULL, not NORMAL: in WAL mode NORMAL survives a crash of the process but not of
    # the machine (power loss can drop the last commits), and ingest acknowledges a message to the
    # broker right after its commit - the broker then forgets it, so a lost commit would be data
    # lost for good. FULL syncs the WAL on every commit; ingest commits many messages at once, so
    # that fsync is paid per group, not per reading. A larger page cache keeps the reading
    # indexes' hot pages in memory as the table grows. Memory-mapped reads (up to 1 GiB of the
    # file): a page already in the OS cache is then read without a pread() call each; that call was
    # a fifth of the driver thread's time in a billing run (0.74 -> 0.67 ms CPU per apartment).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA mmap_size=1073741824")
    cursor.close()


class Database:
    """The engine and session factory of one database."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = check_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def redacted_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)
        log.info("database schema at head (%s)", self.redacted_url)

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Database:
        db = cls(url)
        try:
            if migrate:
                await db.migrate()
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        await self.engine.dispose()

    def insert(self, table: Any) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` on both backends."""
        return sqlite.insert(table) if self.is_sqlite else postgresql.insert(table)

    def insert_ignore(self, table: Any, index_elements: Sequence[str]) -> Insert:
        return self.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))  # type: ignore[no-any-return]
