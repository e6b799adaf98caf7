"""Durable outbox: every frame is committed to SQLite before it is published, and deleted only when
central's receipt (``imd/v1/<collector>/receipt``) says it is committed in central's database.

A row is *pending* until the broker's PUBACK for the message that carried it, then *published,
awaiting receipt*. The PUBACK alone is not enough: a broker can acknowledge a frame and still drop
it (Mosquitto 2.0.11 does not restore ``$share/`` subscriptions after a restart, so frames published
before the ingest workers resubscribe were lost). A row that waits too long for its receipt is made
pending again and published once more (see edge/uplink.py). With ``delete_after = "puback"`` (a
central without receipts) the PUBACK deletes the row, as before.

Why SQLite with WAL and ``synchronous=FULL``: a committed row survives kill -9 and power loss, which
is the whole promise ("never lose a reading"). Sequence numbers are assigned in the same transaction
that stores the frame, from a counter kept in the same database, so they are strictly increasing per
collector across restarts and central can de-duplicate redeliveries on ``(collector, sequence)``.

When full (``max_frames`` or ``max_bytes``), the policy is: drop the lowest priority first, oldest
first within a priority - diagnostics (failed / no-answer records) before non-billing data
(on-demand reads) before billing data (the scheduled poll and our radio meters' forwarded
telegrams, which are a radio meter's only readings). Every drop is counted in the
database, logged as a warning and raised as a status alarm; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import aiosqlite

from protocols.messages import FrameMessage, FrameStatus

log = logging.getLogger(__name__)


class Priority(IntEnum):
    """What to give up first when the outbox is full (lowest first)."""

    DIAGNOSTIC = 0
    BULK = 1
    BILLING = 2


@dataclass(frozen=True, slots=True)
class OutboxItem:
    sequence: int
    payload: bytes  # the FrameMessage as JSON, sequence included
    created_at: float

    def message(self) -> FrameMessage:
        return FrameMessage.model_validate_json(self.payload)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    size_bytes: int
    oldest_age_s: float | None
    dropped_total: int
    dropped_billing_total: int
    next_sequence: int
    full: bool
    awaiting_receipt: int = 0  # of depth: published and acknowledged by the broker, not yet receipted
    write_error: str | None = None  # the last add failed (disk full, I/O error) and none has succeeded since
    unstored_frames: int = 0  # frames read from a meter that could not be stored, since the collector started

    def alarms(self) -> list[str]:
        out = []
        if self.write_error is not None:
            out.append(
                f"outbox cannot store frames: {self.write_error}"
                f" ({self.unstored_frames} frames not stored since start)"
            )
        if self.dropped_total:
            out.append(
                f"outbox overflowed: {self.dropped_total} frames dropped"
                f" ({self.dropped_billing_total} billing)"
            )
        if self.full:
            out.append("outbox full")
        return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    state INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (priority, sequence);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (sequence) WHERE state = 0;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Row states: waiting to be published (or published, PUBACK not yet in), and acknowledged by the
# broker but not yet receipted by central.
PENDING = 0
AWAITING_RECEIPT = 1

# Above this share of the limits the outbox reports itself "full" (an early alarm, before drops).
_FULL_RATIO = 0.9


async def _migrate(db: aiosqlite.Connection) -> None:
    """An outbox written before receipts existed: add the state column (every row pending)."""
    async with db.execute("PRAGMA table_info(outbox)") as cur:
        columns = {str(r[1]) for r in await cur.fetchall()}
    if columns and "state" not in columns:
        await db.execute("ALTER TABLE outbox ADD COLUMN state INTEGER NOT NULL DEFAULT 0")
        log.info("outbox migrated: rows now wait for central's receipt after the broker's PUBACK")


def priority_for(message: FrameMessage, billing: bool) -> Priority:
    if message.status is not FrameStatus.OK:
        return Priority.DIAGNOSTIC
    return Priority.BILLING if billing else Priority.BULK


class Outbox:
    """Async, single-writer outbox on one aiosqlite connection. Use :meth:`open`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, max_frames: int, max_bytes: int) -> None:
        self._db = db
        self.path = path
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._depth = 0
        self._bytes = 0
        self._awaiting = 0
        self._evicted_awaiting = 0  # inside an add transaction, applied once it commits
        # A failed add loses the frames it carried (they were never committed): say so in the status
        # until an add succeeds again, so a full SD card is an alarm at central, not a silent gap.
        self._write_error: str | None = None
        self._unstored = 0
        # One connection, several tasks (poll, publisher, heartbeat): transactions must not interleave.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, max_frames: int = 500_000, max_bytes: int = 256 << 20) -> Outbox:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await _migrate(db)
            await db.executescript(_SCHEMA)
            box = cls(db, path, max_frames, max_bytes)
            await box._recount()
        except BaseException:
            await db.close()
            raise
        return box

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _recount(self) -> None:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(size), 0),"
            f" COALESCE(SUM(state = {AWAITING_RECEIPT}), 0) FROM outbox"
        )
        async with self._db.execute(sql) as cur:
            row = await cur.fetchone()
        assert row is not None
        self._depth, self._bytes, self._awaiting = int(row[0]), int(row[1]), int(row[2])

    async def _meta_int(self, key: str, default: int = 0) -> int:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else default

    async def _set_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def get_meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self._lock:
            await self._set_meta(key, value)  # autocommit: durable on return

    async def add(self, messages: Sequence[FrameMessage], *, billing: bool = True) -> list[FrameMessage]:
        """Assign sequence numbers, commit, and return the stored messages (with their sequence).

        The sequence in the given messages is ignored. On return the frames are on disk.
        """
        if not messages:
            return []
        async with self._lock:
            return await self._add(messages, billing)

    async def _add(self, messages: Sequence[FrameMessage], billing: bool) -> list[FrameMessage]:
        now = time.time()
        stored: list[FrameMessage] = []
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            seq = await self._meta_int("next_sequence", 1)
            rows = []
            for message in messages:
                msg = message.model_copy(update={"sequence": seq})
                payload = msg.model_dump_json().encode()
                rows.append((seq, int(priority_for(msg, billing)), now, len(payload), payload))
                stored.append(msg)
                seq += 1
            await self._db.executemany(
                "INSERT INTO outbox (sequence, priority, created_at, size, payload) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            await self._set_meta("next_sequence", str(seq))
            depth = self._depth + len(rows)
            size = self._bytes + sum(r[3] for r in rows)
            self._evicted_awaiting = 0
            depth, size = await self._evict(depth, size)
            await self._db.execute("COMMIT")
        except BaseException as exc:
            # A full disk makes SQLite roll back by itself; a second ROLLBACK would raise and
            # hide the disk-full error behind "no transaction is active".
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error | OSError):
                self._write_error = str(exc) or type(exc).__name__
                self._unstored += len(messages)
            raise
        self._write_error = None
        self._depth, self._bytes = depth, size
        self._awaiting -= self._evicted_awaiting
        return stored

    async def _evict(self, depth: int, size: int) -> tuple[int, int]:
        """Inside the add transaction: drop by policy until within the limits."""
        if depth <= self.max_frames and size <= self.max_bytes:
            return depth, size
        dropped = dropped_billing = 0
        while depth > self.max_frames or size > self.max_bytes:
            want = max(depth - self.max_frames, 1)
            async with self._db.execute(
                "SELECT sequence, priority, size, state FROM outbox ORDER BY priority, sequence LIMIT ?",
                (max(want, 64),),
            ) as cur:
                candidates = await cur.fetchall()
            if not candidates:
                break
            victims = []
            for seq, prio, sz, state in candidates:
                if depth <= self.max_frames and size <= self.max_bytes:
                    break
                victims.append((seq,))
                self._evicted_awaiting += state == AWAITING_RECEIPT
                depth -= 1
                size -= sz
                dropped += 1
                dropped_billing += prio == Priority.BILLING
            await self._db.executemany("DELETE FROM outbox WHERE sequence = ?", victims)
        total = await self._meta_int("dropped_total") + dropped
        total_billing = await self._meta_int("dropped_billing_total") + dropped_billing
        await self._set_meta("dropped_total", str(total))
        await self._set_meta("dropped_billing_total", str(total_billing))
        log.warning(
            "outbox full (limits %d frames / %d bytes): dropped %d oldest low-priority frames (%d billing)",
            self.max_frames,
            self.max_bytes,
            dropped,
            dropped_billing,
        )
        return depth, size

    async def peek(self, limit: int, exclude: Iterable[int] = ()) -> list[OutboxItem]:
        """The oldest ``limit`` pending items not in ``exclude`` (those already in flight)."""
        skip = set(exclude)
        out: list[OutboxItem] = []
        after = 0
        while len(out) < limit:
            async with self._db.execute(
                "SELECT sequence, payload, created_at FROM outbox"
                " WHERE state = 0 AND sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit + len(skip)),
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                break
            for seq, payload, created in rows:
                after = seq
                if seq in skip:
                    continue
                out.append(OutboxItem(int(seq), bytes(payload), float(created)))
                if len(out) >= limit:
                    break
        return out

    async def delete(self, sequences: Iterable[int]) -> int:
        """Remove acknowledged items; returns how many were still there."""
        seqs = [(s,) for s in sequences]
        if not seqs:
            return 0
        async with self._lock:
            return await self._delete(seqs)

    async def _delete(self, seqs: list[tuple[int]]) -> int:
        return await self._delete_ranges([(seq, seq) for (seq,) in seqs])

    async def delete_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Remove the rows a receipt names (inclusive ranges), in whatever state; how many were there.

        A pending row counts as well: it may be a copy published again after a timeout, or one whose
        PUBACK is still on its way, and central has it either way.
        """
        spans = list(ranges)
        if not spans:
            return 0
        async with self._lock:
            return await self._delete_ranges(spans)

    async def _delete_ranges(self, spans: list[tuple[int, int]]) -> int:
        removed = removed_bytes = removed_awaiting = 0
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            for lo, hi in spans:
                sql = "DELETE FROM outbox WHERE sequence BETWEEN ? AND ? RETURNING size, state"
                async with self._db.execute(sql, (lo, hi)) as cur:
                    rows = list(await cur.fetchall())
                removed += len(rows)
                removed_bytes += sum(int(r[0]) for r in rows)
                removed_awaiting += sum(int(r[1]) == AWAITING_RECEIPT for r in rows)
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        self._depth -= removed
        self._bytes -= removed_bytes
        self._awaiting -= removed_awaiting
        return removed

    async def mark_published(self, sequences: Iterable[int]) -> int:
        """PUBACK received: these pending rows now wait for central's receipt; how many changed."""
        return await self._set_state([(s,) for s in sequences], PENDING, AWAITING_RECEIPT)

    async def mark_pending(self, sequences: Iterable[int]) -> int:
        """No receipt in time: publish these rows again; how many were still awaiting one."""
        return await self._set_state([(s,) for s in sequences], AWAITING_RECEIPT, PENDING)

    async def _set_state(self, seqs: list[tuple[int]], old: int, new: int) -> int:
        if not seqs:
            return 0
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                await self._db.executemany(
                    f"UPDATE outbox SET state = {new} WHERE sequence = ? AND state = {old}", seqs
                )
                changed = self._db.total_changes - before
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        self._awaiting += changed if new == AWAITING_RECEIPT else -changed
        return changed

    async def requeue_awaiting(self) -> int:
        """At start: every row left awaiting a receipt by an earlier run is pending again.

        Central's receipt for them went to the earlier connection (a clean session: the broker
        keeps nothing for it), so it will never come; central de-duplicates the copies.
        """
        async with self._lock:
            before = self._db.total_changes
            await self._db.execute(f"UPDATE outbox SET state = {PENDING} WHERE state = {AWAITING_RECEIPT}")
            changed = self._db.total_changes - before
        self._awaiting -= changed
        return changed

    async def awaiting_receipt(self) -> list[int]:
        """Sequences published and acknowledged by the broker but not yet receipted (after a restart)."""
        async with self._db.execute(
            f"SELECT sequence FROM outbox WHERE state = {AWAITING_RECEIPT} ORDER BY sequence"
        ) as cur:
            return [int(r[0]) for r in await cur.fetchall()]

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def awaiting(self) -> int:
        return self._awaiting

    async def stats(self) -> OutboxStats:
        async with self._db.execute("SELECT created_at FROM outbox ORDER BY sequence LIMIT 1") as cur:
            row = await cur.fetchone()
        oldest = row[0] if row else None
        return OutboxStats(
            depth=self._depth,
            size_bytes=self._bytes,
            oldest_age_s=(max(time.time() - float(oldest), 0.0) if oldest is not None else None),
            dropped_total=await self._meta_int("dropped_total"),
            dropped_billing_total=await self._meta_int("dropped_billing_total"),
            next_sequence=await self._meta_int("next_sequence", 1),
            awaiting_receipt=self._awaiting,
            write_error=self._write_error,
            unstored_frames=self._unstored,
            full=self._depth >= _FULL_RATIO * self.max_frames or self._bytes >= _FULL_RATIO * self.max_bytes,
        )
