"""The durable outbox: committed before publication, deleted only on ack, bounded by policy."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.outbox import Outbox, Priority
from protocols.messages import FrameMessage, FrameStatus


def _frame(raw: str = "e5", status: FrameStatus = FrameStatus.OK) -> FrameMessage:
    return FrameMessage(
        sequence=0, received_at=datetime.now(UTC), port="mbus0", address="1", status=status, raw=raw,
        reason=None if status is FrameStatus.OK else "test",
    )


async def test_survives_reopen_and_deletes_only_acked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path)
    stored = await box.add([_frame("e5"), _frame("10"), _frame("68")])
    assert [m.sequence for m in stored] == [1, 2, 3]
    # Committed before anything is published: another connection sees the rows right away.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 3
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await box.close()

    box = await Outbox.open(path)
    try:
        items = await box.peek(10)
        assert [i.sequence for i in items] == [1, 2, 3]
        assert items[1].message().raw == "10"
        assert [i.sequence for i in await box.peek(10, exclude={1, 3})] == [2]
        assert await box.delete([2]) == 1
        assert await box.delete([2]) == 0  # a second ack for the same frame is harmless
        # Sequence numbers continue after a restart, never reused.
        more = await box.add([_frame("e5")])
        assert more[0].sequence == 4
        stats = await box.stats()
        assert stats.depth == 3
        assert stats.next_sequence == 5
        assert stats.oldest_age_s is not None
        assert stats.oldest_age_s >= 0
    finally:
        await box.close()

    box = await Outbox.open(path)
    try:
        assert [i.sequence for i in await box.peek(10)] == [1, 3, 4]
        await box.delete([1, 3, 4])
        assert (await box.stats()).depth == 0
        assert (await box.add([_frame()]))[0].sequence == 5
    finally:
        await box.close()


async def test_full_outbox_drops_lowest_priority_oldest_first_and_says_so(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", max_frames=10)
    try:
        await box.add([_frame()] * 4, billing=True)  # 1-4 billing
        await box.add([_frame(status=FrameStatus.NO_ANSWER)] * 2)  # 5-6 diagnostic
        await box.add([_frame()] * 4, billing=False)  # 7-10 bulk
        assert (await box.stats()).dropped_total == 0
        await box.add([_frame()] * 3, billing=True)  # 11-13: three must go
        remaining = [i.sequence for i in await box.peek(100)]
        # Both diagnostics go first, then the oldest bulk frame; billing data is untouched.
        assert remaining == [1, 2, 3, 4, 8, 9, 10, 11, 12, 13]
        stats = await box.stats()
        assert (stats.depth, stats.dropped_total, stats.dropped_billing_total) == (10, 3, 0)
        assert stats.full
        assert any("3 frames dropped" in a for a in stats.alarms())
        # Only when nothing else is left, billing frames go too (counted separately).
        await box.add([_frame()] * 4, billing=True)
        stats = await box.stats()
        assert stats.dropped_total == 7
        assert stats.dropped_billing_total == 1
        assert (await box.peek(1))[0].sequence == 2
    finally:
        await box.close()
    box = await Outbox.open(tmp_path / "o.sqlite", max_frames=10)
    try:
        assert (await box.stats()).dropped_total == 7  # the alarm survives a restart
    finally:
        await box.close()


def test_priority_values_order() -> None:
    assert Priority.DIAGNOSTIC < Priority.BULK < Priority.BILLING


async def test_published_rows_await_their_receipt_and_are_published_again_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, max_frames=100)
    try:
        await box.add([_frame() for _ in range(6)])
        # PUBACK for 1..4: no longer offered for publication, still stored and counted.
        assert await box.mark_published([1, 2, 3, 4]) == 4
        assert await box.mark_published([4]) == 0  # a second PUBACK changes nothing
        assert [i.sequence for i in await box.peek(10)] == [5, 6]
        stats = await box.stats()
        assert (stats.depth, stats.awaiting_receipt) == (6, 4)
        # A receipt names ranges and deletes in whatever state: 2..3 awaiting, 6 still pending
        # (its PUBACK overtaken by the receipt), 9 never existed.
        assert await box.delete_ranges([(2, 3), (6, 6), (9, 9)]) == 3
        assert (box.depth, box.awaiting) == (3, 2)
        # No receipt in time: pending again, offered for publication once more.
        assert await box.mark_pending([1, 2]) == 1
        assert [i.sequence for i in await box.peek(10)] == [1, 5]
        assert await box.awaiting_receipt() == [4]
    finally:
        await box.close()
    box = await Outbox.open(path, max_frames=100)  # the state survives a restart
    try:
        assert await box.awaiting_receipt() == [4]
        assert (box.depth, box.awaiting) == (3, 1)
        assert (await box.stats()).awaiting_receipt == 1
        # The receipt went to the earlier run's connection: the publisher sends such rows again.
        assert await box.requeue_awaiting() == 1
        assert [i.sequence for i in await box.peek(10)] == [1, 4, 5]
        assert box.awaiting == 0
    finally:
        await box.close()


async def test_full_outbox_counts_rows_awaiting_receipt(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "outbox.sqlite", max_frames=10)
    try:
        await box.add([_frame() for _ in range(8)])
        await box.mark_published(range(1, 9))
        await box.add([_frame() for _ in range(4)])  # 12 > 10: the two oldest go, both awaiting
        stats = await box.stats()
        assert (stats.depth, stats.awaiting_receipt, stats.dropped_total) == (10, 6, 2)
        assert stats.full
    finally:
        await box.close()


async def test_an_outbox_from_before_receipts_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:  # the schema as shipped before receipts
        db.executescript(
            "CREATE TABLE outbox (sequence INTEGER PRIMARY KEY, priority INTEGER NOT NULL,"
            " created_at REAL NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);"
            "CREATE INDEX outbox_evict ON outbox (priority, sequence);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('next_sequence', '3');"
        )
        payload = _frame().model_copy(update={"sequence": 1}).model_dump_json().encode()
        db.execute("INSERT INTO outbox VALUES (1, 2, 0, ?, ?)", (len(payload), payload))
        db.execute("INSERT INTO outbox VALUES (2, 2, 0, ?, ?)", (len(payload), payload))
    box = await Outbox.open(path)
    try:
        # Every old row is pending: it was not deleted, so it had no PUBACK, or had one and must
        # now wait for a receipt it can only get by being published again.
        assert [i.sequence for i in await box.peek(10)] == [1, 2]
        assert (box.depth, box.awaiting) == (2, 0)
        assert (await box.add([_frame()]))[0].sequence == 3
    finally:
        await box.close()


async def test_a_full_disk_is_an_alarm_until_frames_can_be_stored_again(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "outbox.sqlite")
    try:
        await box.add([_frame("e5")])
        # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full SD card: the file may
        # not grow past the pages it has now.
        async with box._db.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await box._db.execute(f"PRAGMA max_page_count = {int(row[0])}")
        big = _frame("68" + "ab" * 500)

        async def fill() -> None:
            for _ in range(500):
                await box.add([big, big])

        with pytest.raises(sqlite3.Error, match="full"):
            await fill()
        stats = await box.stats()
        assert stats.write_error is not None
        assert stats.unstored_frames == 2
        assert any("outbox cannot store frames" in a and "2 frames not stored" in a for a in stats.alarms())
        # Room again (the ops team cleared the card): the next add succeeds and the alarm clears;
        # the count of what was lost stays, so the status still says how much is missing.
        await box._db.execute("PRAGMA max_page_count = 1073741823")
        await box.add([_frame("e5")])
        stats = await box.stats()
        assert stats.write_error is None
        assert not any("cannot store" in a for a in stats.alarms())
        assert stats.unstored_frames == 2
    finally:
        await box.close()
