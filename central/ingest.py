"""Ingest: MQTT frames from the collectors -> raw frames + readings in the database.

Two halves. :class:`IngestProcessor` is the database side: one MQTT message in, one transaction out,
idempotent on (collector, sequence) for raw frames and on (meter, register, read_at) for readings,
so a redelivered message inserts nothing. :class:`MqttIngest` is the broker side: paho's network
loop runs in its own thread and hands each message to asyncio; the message is acknowledged to the
broker only after its transaction committed (manual acknowledgement + persistent session), so a
crash between receipt and commit loses nothing - the broker delivers it again.

A payload that cannot be parsed is stored in ``rejected_message`` with the reason and acknowledged;
a frame that cannot be decoded is stored with status ``failed`` and the reason. Neither stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import Any

from sqlalchemy import bindparam, case, delete, insert, or_, select, update

from central.db import Database
from central.keys import KeyFileError, MeterKeyBox
from central.models import (
    Collector,
    CommandRecord,
    Meter,
    RawFrame,
    Reading,
    RejectedMessage,
    UTCDateTime,
    utcnow,
)
from central.reading_months import note_readings
from central.reading_months import rebuild as rebuild_months
from central.receipts import batches_of, publish_receipts
from protocols.errors import MessageError, ProtocolError
from protocols.mbus.application import Record as _Record
from protocols.messages import (
    COMMAND_RESULT_SUBSCRIPTION,
    FRAMES_SUBSCRIPTION,
    SHARED_FRAMES_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    CollectorStatus,
    Command,
    CommandResult,
    FrameBatch,
    FrameMessage,
    FrameStatus,
    LinkKind,
    collector_from_topic,
    command_result_topic,
    command_topic,
    encode,
    frames_topic,
    parse_command_result,
    parse_frame_batch,
    parse_status,
    status_topic,
)
from protocols.mqtturl import parse_mqtt_url

log = logging.getLogger(__name__)

MAX_REJECTED_PAYLOAD = 64 * 1024
MAX_REASON = 500

# M-Bus device type code (EN 13757-3 table) -> the domain's medium words used for meter points.
DEVICE_TYPE_MEDIUM: dict[int, str] = {
    0x02: "electricity",
    0x04: "heat",  # heat, return temperature
    0x0C: "heat",  # heat, flow temperature
    0x0D: "heat",  # heat / cooling
    0x0A: "cooling",
    0x0B: "cooling",
    0x06: "hot_water",
    0x15: "hot_water",
    0x07: "cold_water",
    0x16: "cold_water",
    0x03: "gas",
    0x08: "heat_cost_allocator",
    0x1B: "room_temperature",
}


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """What central made of one frame before it is stored."""

    status: str
    reason: str | None
    serial: str | None = None
    manufacturer: str | None = None
    version: int | None = None
    device_type: int | None = None
    telegram_status: int | None = None
    records: tuple[Any, ...] = ()


def _decoder() -> Callable[[bytes], Any] | None:
    try:
        from protocols.mbus.application import decode_long_frame
    except ImportError:
        return None
    return decode_long_frame


def _normalise_serial(value: object) -> str:
    text = str(value).strip()
    return text.zfill(8) if text.isdigit() else text


def decode_frame(raw: bytes, decoder: Callable[[bytes], Any] | None = None) -> DecodedFrame:
    """Decode one wired long frame; never raises - a failure comes back as status ``failed``."""
    decoder = decoder or _decoder()
    if decoder is None:
        return DecodedFrame("failed", "decoder unavailable (protocols.mbus.application missing)")
    try:
        telegram = decoder(raw)
    except ProtocolError as exc:
        return DecodedFrame("failed", f"{type(exc).__name__}: {exc}"[:MAX_REASON])
    except Exception as exc:  # a decoder bug must not stop ingest; the frame stays for re-decoding
        log.exception("decoder crashed on a frame")
        return DecodedFrame("failed", f"decoder crashed: {type(exc).__name__}: {exc}"[:MAX_REASON])
    status = telegram.status
    return DecodedFrame(
        "ok",
        None,
        serial=_normalise_serial(telegram.id),
        manufacturer=str(telegram.manufacturer),
        version=int(telegram.version),
        device_type=int(telegram.device_type),
        telegram_status=int(status) if isinstance(status, int) else None,
        records=tuple(telegram.records),
    )


def wmbus_identity(raw: bytes) -> tuple[str, str] | None:
    """(id, manufacturer) from a wM-Bus link header, which is never encrypted; None if unreadable."""
    from protocols.wmbus.link import parse_link

    try:
        link = parse_link(raw)
    except ProtocolError:
        return None
    return _normalise_serial(link.id), link.manufacturer


def decode_wmbus_frame(raw: bytes, keys: Mapping[str, bytes], formats: Any) -> DecodedFrame:
    """Decode (and decrypt with the meter's key) one wM-Bus telegram; never raises."""
    from protocols.wmbus.telegram import decode_wmbus_telegram

    try:
        telegram = decode_wmbus_telegram(raw, keys, formats)
    except ProtocolError as exc:
        # The link header still says whose frame it is: a frame that cannot be decrypted is
        # evidence against that meter (wrong or missing key).
        identity = wmbus_identity(raw)
        reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON]
        if identity is None:
            return DecodedFrame("failed", reason)
        return DecodedFrame("failed", reason, serial=identity[0], manufacturer=identity[1])
    except Exception as exc:
        log.exception("wM-Bus decoder crashed on a frame")
        return DecodedFrame("failed", f"decoder crashed: {type(exc).__name__}: {exc}"[:MAX_REASON])
    return DecodedFrame(
        "ok",
        None,
        serial=_normalise_serial(telegram.id),
        manufacturer=str(telegram.manufacturer),
        version=int(telegram.version),
        device_type=int(telegram.device_type),
        telegram_status=int(telegram.status),
        records=tuple(telegram.records),
    )


def numeric_value(value: object) -> Decimal | None:
    """The exact numeric value of a record, or None for dates, text, bytes and missing values."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    return None


def reading_rows(
    meter_id: int, raw_frame_id: int | None, read_at: datetime, records: Iterable[Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for record in records:
        value = numeric_value(record.value)
        if value is None:
            continue
        rows.append(
            {
                "meter_id": meter_id,
                "register": bytes(record.dif_vif).hex(),
                "read_at": read_at,
                "quantity": str(record.quantity)[:64],
                "unit": str(record.unit)[:32],
                "function": str(record.function)[:16],
                "storage": int(record.storage),
                "tariff": int(record.tariff),
                "subunit": int(record.subunit),
                "value": value,
                "raw_frame_id": raw_frame_id,
            }
        )
    return rows


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    batches: int = 0
    frames_new: int = 0
    frames_duplicate: int = 0
    frames_failed: int = 0
    readings: int = 0
    rejected: int = 0
    statuses: int = 0
    command_results: int = 0


@dataclass(slots=True)
class BatchResult:
    collector: str
    frames_new: int = 0
    frames_duplicate: int = 0
    frames_failed: int = 0
    readings: int = 0
    meter_ids: set[int] = field(default_factory=set)
    received_at: list[datetime] = field(default_factory=list)  # of the new frames: ingest lag metric


AfterBatch = Callable[[BatchResult], Awaitable[None]]


_METER: Any = Meter.__table__
_ADVANCE_METER = (
    update(_METER)
    .where(_METER.c.id == bindparam("b_id"))
    .where(or_(_METER.c.last_reading_at.is_(None), _METER.c.last_reading_at <= bindparam("b_at")))
    .values(
        last_reading_at=bindparam("b_at"),
        last_frame_at=bindparam("b_at"),
        last_raw_frame_id=bindparam("b_raw"),
        last_status=bindparam("b_status"),
    )
)


_COLLECTOR: Any = Collector.__table__
_ADVANCE_COLLECTOR = (
    update(_COLLECTOR)
    .where(_COLLECTOR.c.id == bindparam("b_cid"))
    .values(
        last_seen_at=case(
            (
                or_(_COLLECTOR.c.last_seen_at.is_(None), _COLLECTOR.c.last_seen_at < bindparam("b_seen")),
                bindparam("b_seen"),
            ),
            else_=_COLLECTOR.c.last_seen_at,
        ),
        last_sequence=case(
            (
                or_(_COLLECTOR.c.last_sequence.is_(None), _COLLECTOR.c.last_sequence < bindparam("b_seq")),
                bindparam("b_seq"),
            ),
            else_=_COLLECTOR.c.last_sequence,
        ),
    )
)

_FRAME_COLUMNS = (
    "collector_id, sequence, received_at, ingested_at, link, port, address, rssi, raw, "
    "collector_status, status, reason, meter_id, decoded_at"
)
# The ids first: the decoded part of a row (from the register on) is made before the transaction
# knows the ids, and a row is then ``(meter_id, raw_frame_id) + tail``.
_READING_COLUMNS = (
    "meter_id, raw_frame_id, register, read_at, quantity, unit, function, storage, tariff, subunit, value"
)
_SQLITE_FRAMES_PER_STATEMENT = 1000  # 14 parameters each, under SQLite's 32,766 limit

# PostgreSQL: one statement per table whatever the row count - columns travel as arrays and are
# unnested server-side, one round trip instead of one per row.
_PG_INSERT_FRAMES = (
    f"INSERT INTO raw_frame ({_FRAME_COLUMNS}) SELECT * FROM unnest("
    "$1::varchar[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::varchar[], $6::varchar[], "
    "$7::varchar[], $8::int[], $9::bytea[], $10::varchar[], $11::varchar[], $12::text[], $13::int[], "
    "$14::timestamptz[]) ON CONFLICT (collector_id, sequence) DO NOTHING RETURNING id, collector_id, sequence"
)
_PG_INSERT_READINGS = (
    f"INSERT INTO reading ({_READING_COLUMNS}) SELECT * FROM unnest("
    "$1::int[], $2::bigint[], $3::varchar[], $4::timestamptz[], $5::varchar[], $6::varchar[], "
    "$7::varchar[], $8::int[], $9::int[], $10::int[], $11::varchar[]) "
    "ON CONFLICT (meter_id, register, read_at) DO NOTHING"
)
_PG_ADVANCE_METERS = (
    "UPDATE meter AS m SET last_reading_at = u.at, last_frame_at = u.at, last_raw_frame_id = u.raw, "
    "last_status = u.st FROM unnest($1::int[], $2::timestamptz[], $3::bigint[], $4::int[]) "
    "AS u(id, at, raw, st) WHERE m.id = u.id AND (m.last_reading_at IS NULL OR m.last_reading_at <= u.at)"
)
# SQLite: many rows per statement, not executemany. Python's sqlite3 releases the GIL around each
# sqlite3_step, i.e. once per row with executemany; while the event loop's thread decodes the next
# group, getting the GIL back costs the database thread up to a switch interval (5 ms) per row. A
# multi-row statement is one step: SQLite does all its rows with the GIL released, in parallel with
# the decoding, and there is less per-row overhead in the driver as well.
_SQLITE_READINGS_PER_STATEMENT = 2048  # 11 parameters each, under SQLite's 32,766
_SQLITE_METERS_PER_STATEMENT = 4096  # 4 parameters each
_SQLITE_INSERT_READINGS = (f"INSERT INTO reading ({_READING_COLUMNS}) VALUES ", " ON CONFLICT DO NOTHING")
# Late and out-of-order frames are normal: "latest" only moves forwards.
_SQLITE_ADVANCE_METERS = (
    "WITH u(id, at, raw, st) AS (VALUES ",
    ") UPDATE meter SET last_reading_at = u.at, last_frame_at = u.at, last_raw_frame_id = u.raw, "
    "last_status = u.st FROM u WHERE meter.id = u.id "
    "AND (meter.last_reading_at IS NULL OR meter.last_reading_at <= u.at)",
)


@functools.cache
def _values_sql(head: str, tail: str, width: int, rows: int) -> str:
    row = "(" + ", ".join(["?"] * width) + ")"
    return head + ", ".join([row] * rows) + tail


def _sqlite_chunks(total: int, most: int) -> Iterator[tuple[int, int]]:
    """(start, size) over ``total`` rows: chunks of ``most``, then the rest in powers of two, so that
    a few distinct statements (each prepared once, then cached by the driver) serve any group."""
    start = 0
    while total - start >= most:
        yield start, most
        start += most
    size = most
    while start < total:
        size //= 2
        if total - start >= size:
            yield start, size
            start += size


async def _sqlite_many(
    connection: Any, sql: tuple[str, str], rows: Sequence[tuple[Any, ...]], width: int, most: int
) -> None:
    for start, size in _sqlite_chunks(len(rows), most):
        statement = _values_sql(sql[0], sql[1], width, size)
        await connection.exec_driver_sql(statement, tuple(chain.from_iterable(rows[start : start + size])))


class _RowWriter:
    """The hot path's statements as driver SQL with plain tuples: no per-row SQLAlchemy work.

    Values arrive bound exactly as the ORM types would bind them (see :func:`_time_binder` and
    :func:`_reading_tails`).
    """

    def __init__(self, db: Database, connection: Any) -> None:
        self.connection = connection
        self.sqlite = db.is_sqlite

    async def insert_frames(self, rows: Sequence[tuple[Any, ...]]) -> dict[tuple[str, int], int]:
        """Insert raw frames, skipping (collector, sequence) already stored; the new ids by key."""
        if not rows:
            return {}
        found: list[Any] = []
        if self.sqlite:
            for start in range(0, len(rows), _SQLITE_FRAMES_PER_STATEMENT):
                chunk = rows[start : start + _SQLITE_FRAMES_PER_STATEMENT]
                sql = (
                    f"INSERT INTO raw_frame ({_FRAME_COLUMNS}) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT DO NOTHING RETURNING id, collector_id, sequence"
                )
                result = await self.connection.exec_driver_sql(sql, tuple(v for row in chunk for v in row))
                found.extend(result.all())
        else:
            result = await self.connection.exec_driver_sql(_PG_INSERT_FRAMES, _columns(rows, 14))
            found = list(result.all())
        return {(collector, sequence): rid for rid, collector, sequence in found}

    async def insert_readings(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if self.sqlite:
            await _sqlite_many(
                self.connection, _SQLITE_INSERT_READINGS, rows, 11, _SQLITE_READINGS_PER_STATEMENT
            )
        else:
            await self.connection.exec_driver_sql(_PG_INSERT_READINGS, _columns(rows, 11))
        await note_readings(self.connection, rows, _READING_COLUMNS)  # month summaries, same transaction

    async def advance_meters(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if self.sqlite:
            await _sqlite_many(self.connection, _SQLITE_ADVANCE_METERS, rows, 4, _SQLITE_METERS_PER_STATEMENT)
        else:
            await self.connection.exec_driver_sql(_PG_ADVANCE_METERS, _columns(rows, 4))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    if not rows:
        return tuple([] for _ in range(width))
    return tuple(list(column) for column in zip(*rows, strict=True))


def _time_binder(db: Database) -> Callable[[datetime], Any]:
    """Timestamps bound as :class:`central.models.UTCDateTime` binds them, memoised: the frames of a
    readout share one time. One binder per group, so the memo never outgrows a group.

    The dialect's own implementation, not the bare decorator: on SQLite only that one renders the
    stored text (``2025-03-01 04:00:00.000000``); the bare decorator hands sqlite3 a naive datetime,
    which it writes without the microseconds, and a query for that exact instant then misses it."""
    dialect = db.engine.dialect
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    memo: dict[datetime, Any] = {}

    def stamp(value: datetime) -> Any:
        bound = memo.get(value)
        if bound is None:
            bound = memo[value] = bind(value)
        return bound

    return stamp


def _reading_tails(read_at: Any, records: Iterable[Any]) -> tuple[tuple[Any, ...], ...]:
    """The rows of one frame's numeric records from ``register`` on (``_READING_COLUMNS`` order);
    same values as :func:`reading_rows`, the ids are put in front once they are known."""
    tails: list[tuple[Any, ...]] = []
    for record in records:
        value = record.value
        kind = type(value)
        if kind is Decimal:
            if not value.is_finite():
                continue
        elif kind is not int:  # bool, dates, text, bytes, None - or an int/Decimal subclass
            value = numeric_value(value)
            if value is None:
                continue
        if type(record) is _Record:  # the decoder's own records: the types are right already
            tails.append(
                (
                    record.dif_vif.hex(),
                    read_at,
                    record.quantity[:64],
                    record.unit[:32],
                    record.function[:16],
                    record.storage,
                    record.tariff,
                    record.subunit,
                    str(value),  # what ExactDecimal stores; str(int) == str(Decimal(int))
                )
            )
            continue
        tails.append(
            (
                bytes(record.dif_vif).hex(),
                read_at,
                str(record.quantity)[:64],
                str(record.unit)[:32],
                str(record.function)[:16],
                int(record.storage),
                int(record.tariff),
                int(record.subunit),
                str(Decimal(value)),
            )
        )
    return tuple(tails)


_YIELD_EVERY = 16  # frames decoded between two turns of the event loop (~1-2 ms)


@dataclass(slots=True)
class PreparedGroup:
    """A run of messages parsed and decoded, ready for its one transaction.

    Everything here is CPU work that needs no transaction, so :class:`MqttIngest` prepares the next
    group while the previous one is being written and committed.
    """

    batches: list[FrameBatch]
    rejects: list[tuple[str, bytes, str]]
    results: list[BatchResult]
    # first occurrence of each (collector, sequence): (batch index, frame, raw bytes)
    frames: list[tuple[int, FrameMessage, bytes]]
    decoded: list[DecodedFrame]
    tails: list[tuple[tuple[Any, ...], ...]]  # per frame, see _reading_tails
    stamp: Callable[[datetime], Any]


def _reading_insert(db: Database) -> Any:
    # Core insert on the table: the ORM bulk path costs more than SQLite itself at this volume.
    return db.insert_ignore(Reading.__table__, ["meter_id", "register", "read_at"])


class IngestProcessor:
    """Turns one MQTT message into one committed transaction."""

    def __init__(
        self,
        db: Database,
        *,
        decoder: Callable[[bytes], Any] | None = None,
        keybox: MeterKeyBox | None = None,
    ) -> None:
        self.db = db
        # Resolved once: an import statement per frame costs more than a short frame's decoding.
        self._decoder = decoder or _decoder()
        self.keybox = keybox
        self._formats: Any = None
        self.stats = IngestStats()
        self.after_batch: list[AfterBatch] = []
        # (serial, manufacturer) -> meter id and the collectors known to exist; ids never change
        # while a row lives, and a failed transaction clears both (see ingest_batches).
        self._meter_ids: dict[tuple[str, str], int] = {}
        self._collectors: set[str] = set()

    async def handle(self, topic: str, payload: bytes) -> None:
        """Store whatever this message carries; a bad message is recorded, never raised."""
        await self.handle_many([(topic, payload)])

    async def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Store a run of messages: all frame batches and rejects in one transaction.

        Statuses and command results (rare, idempotent: the newest status wins, a result is an
        upsert) keep their own small transactions. Raises only when the database fails; then
        nothing of the frame batches was committed and the whole run may be retried.
        """
        prepared = await self.prepare(messages)
        if prepared is not None:
            await self.store(prepared)

    async def prepare(self, messages: Sequence[tuple[str, bytes]]) -> PreparedGroup | None:
        """First half of :meth:`handle_many`: parse, decode; None when there is nothing to store.

        Statuses and command results are stored here already (their own transactions).
        """
        batches: list[FrameBatch] = []
        rejects: list[tuple[str, bytes, str]] = []
        for topic, payload in messages:
            self.stats.messages += 1
            try:
                collector = collector_from_topic(topic)
                if topic == frames_topic(collector):
                    batch = parse_frame_batch(payload)
                    if batch.collector != collector:
                        raise MessageError(f"batch says collector {batch.collector!r} but came on {topic!r}")
                    batches.append(batch)
                elif topic == status_topic(collector):
                    await self.store_status(collector, parse_status(payload))
                elif topic == command_result_topic(collector):
                    await self.store_command_result(collector, parse_command_result(payload))
                else:
                    raise MessageError(f"no handler for topic {topic!r}")
            except MessageError as exc:
                log.warning("rejected message on %s: %s", topic[:200], str(exc)[:MAX_REASON])
                rejects.append((topic, payload, str(exc)))
        if not batches and not rejects:
            return None
        return await self.prepare_batches(batches, rejects)

    async def store(self, prepared: PreparedGroup) -> None:
        """Second half of :meth:`handle_many`: the transaction, then the after-batch hooks."""
        results = await self.commit(prepared)
        for result in results:
            for hook in self.after_batch:
                try:
                    await hook(result)
                except Exception:
                    log.exception("after-batch hook failed")

    async def reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.stats.rejected += 1
        log.warning("rejected message on %s: %s", topic[:200], reason[:MAX_REASON])
        async with self.db.sessions.begin() as session:
            session.add(
                RejectedMessage(
                    received_at=utcnow(),
                    topic=topic[:256],
                    reason=reason[:2000],
                    payload=payload[:MAX_REJECTED_PAYLOAD],
                )
            )

    async def _ensure_collector(self, session: Any, collector: str) -> None:
        await session.execute(self.db.insert_ignore(Collector, ["id"]).values(id=collector, state="unknown"))

    async def store_status(self, collector: str, status: CollectorStatus) -> None:
        if status.collector != collector:
            raise MessageError(
                f"status says collector {status.collector!r} but came on its topic for {collector!r}"
            )
        self.stats.statuses += 1
        async with self.db.sessions.begin() as session:
            await self._ensure_collector(session, collector)
            row = await session.get(Collector, collector)
            assert row is not None
            # Retained and redelivered statuses can arrive late: keep the newest.
            if row.last_status_at is None or status.at >= row.last_status_at:
                row.state = status.state.value
                row.last_status_at = status.at
                row.last_status = status.model_dump_json()
                row.version = status.version
                if row.last_seen_at is None or status.at > row.last_seen_at:
                    row.last_seen_at = status.at

    async def store_command_result(self, collector: str, result: CommandResult) -> None:
        if result.collector != collector:
            raise MessageError(f"result says collector {result.collector!r} but came for {collector!r}")
        self.stats.command_results += 1
        async with self.db.sessions.begin() as session:
            await self._ensure_collector(session, collector)
            record = await session.get(CommandRecord, result.id)
            if record is None:
                record = CommandRecord(
                    id=result.id,
                    collector_id=collector,
                    command="unknown",
                    args="{}",
                    issued_at=result.finished_at,
                )
                session.add(record)
            record.finished_at = result.finished_at
            record.ok = result.ok
            record.result = json.dumps(result.result, default=str)
            record.error = result.error

    async def _meters_for(self, session: Any, decoded: Sequence[DecodedFrame]) -> dict[tuple[str, str], Any]:
        known = {(d.serial, d.manufacturer) for d in decoded if d.serial and d.manufacturer}
        wanted = {
            (d.serial, d.manufacturer) for d in decoded if d.status == "ok" and d.serial and d.manufacturer
        }
        if not known:
            return {}
        found = await self._select_meters(session, known)
        missing = wanted - found.keys()
        if missing:
            # A meter the site import does not know yet: register it so its data is kept; it shows
            # up unassigned until someone maps it to an apartment.
            by_key = {(d.serial, d.manufacturer): d for d in decoded if d.status == "ok"}
            rows = []
            for key in sorted(missing):
                d = by_key[key]
                rows.append(
                    {
                        "serial": d.serial,
                        "manufacturer": d.manufacturer,
                        "version": d.version,
                        "device_type": d.device_type,
                        "medium": DEVICE_TYPE_MEDIUM.get(d.device_type or -1, "other"),
                        "model": "",
                        "link": "mbus",
                        "auto_registered": True,
                    }
                )
            await session.execute(self.db.insert_ignore(Meter, ["serial", "manufacturer"]), rows)
            found.update(await self._select_meters(session, missing))
        return found

    @staticmethod
    async def _select_meters(session: Any, keys: set[tuple[Any, Any]]) -> dict[tuple[str, str], Any]:
        # Plain rows, not ORM objects: nothing for the session to track on the hot path.
        serials = {k[0] for k in keys}
        result = await session.execute(
            select(Meter.id, Meter.serial, Meter.manufacturer).where(Meter.serial.in_(serials))
        )
        return {(m.serial, m.manufacturer): m for m in result.all() if (m.serial, m.manufacturer) in keys}

    async def ingest_batch(self, batch: FrameBatch) -> BatchResult:
        """Store one frame batch in its own transaction."""
        return (await self.ingest_batches([batch]))[0]

    async def ingest_batches(
        self, batches: Sequence[FrameBatch], rejects: Sequence[tuple[str, bytes, str]] = ()
    ) -> list[BatchResult]:
        """Store several frame batches (and rejected messages) in ONE transaction.

        One commit for many MQTT messages is what makes ingest fast: the commit (an fsync with
        ``synchronous=FULL``) and the per-statement overhead are paid once per group, and the rows
        go in as a few multi-row statements instead of one ORM object each. Everything stays
        idempotent: (collector, sequence) and (meter, register, read_at) are unique, conflicts are
        skipped, and a frame repeated inside the group is stored once.
        """
        return await self.commit(await self.prepare_batches(batches, rejects))

    async def prepare_batches(
        self, batches: Sequence[FrameBatch], rejects: Sequence[tuple[str, bytes, str]] = ()
    ) -> PreparedGroup:
        """Deduplicate the group's frames and decode them, outside any write transaction."""
        results = [BatchResult(b.collector) for b in batches]
        # Frames of the group, first occurrence of each (collector, sequence) only.
        frames: list[tuple[int, FrameMessage, bytes]] = []
        seen: set[tuple[str, int]] = set()
        for index, batch in enumerate(batches):
            for frame in batch.frames:
                key = (batch.collector, frame.sequence)
                if key in seen:
                    results[index].frames_duplicate += 1
                    continue
                seen.add(key)
                frames.append((index, frame, frame.raw_bytes))
        wireless = [raw for _, f, raw in frames if f.link is LinkKind.WMBUS and raw]
        keys: Mapping[str, bytes] = {}
        if wireless and self.keybox is not None:
            async with self.db.sessions() as session:
                keys = await self._keys_for(session, wireless)
        stamp = _time_binder(self.db)
        decoded: list[DecodedFrame] = []
        tails: list[tuple[tuple[Any, ...], ...]] = []
        for count, (_, frame, raw) in enumerate(frames, 1):
            d = self._decode(frame, keys, raw)
            decoded.append(d)
            tails.append(_reading_tails(stamp(frame.received_at), d.records) if d.status == "ok" else ())
            if not count % _YIELD_EVERY:
                # A large group takes a while: let the event loop serve HTTP requests (a combined
                # process), take in the broker's messages and, with MqttIngest's pipeline, send the
                # writing group's next statement.
                await asyncio.sleep(0)
        return PreparedGroup(list(batches), list(rejects), results, frames, decoded, tails, stamp)

    async def commit(self, prepared: PreparedGroup) -> list[BatchResult]:
        """Store a prepared group in ONE transaction; the group's results (also added to stats)."""
        try:
            return await self._ingest_group(prepared)
        except BaseException:
            # A cached id may be stale (a meter or collector deleted meanwhile): forget them all,
            # the retry looks them up again.
            self._meter_ids.clear()
            self._collectors.clear()
            raise

    async def _ingest_group(self, prepared: PreparedGroup) -> list[BatchResult]:
        batches, rejects = prepared.batches, prepared.rejects
        frames, decoded = prepared.frames, prepared.decoded
        # A retried group starts from the counts of its preparation, not of the failed attempt.
        results = [BatchResult(r.collector, frames_duplicate=r.frames_duplicate) for r in prepared.results]
        now = utcnow()
        stamp = prepared.stamp
        async with self.db.sessions.begin() as session:
            await self._ensure_collectors(session, {b.collector for b in batches})
            meter_ids = await self._meter_ids_for(session, decoded)
            writer = _RowWriter(self.db, await session.connection())
            now_bound = stamp(now)
            frame_rows: list[tuple[Any, ...]] = []
            for (index, frame, raw), d in zip(frames, decoded, strict=True):
                frame_rows.append(
                    (
                        batches[index].collector,
                        frame.sequence,
                        stamp(frame.received_at),
                        now_bound,
                        frame.link.value,
                        frame.port,
                        frame.address,
                        frame.rssi,
                        raw,
                        frame.status.value,
                        d.status,
                        d.reason,
                        meter_ids.get((d.serial or "", d.manufacturer or "")),
                        now_bound if d.status == "ok" else None,
                    )
                )
            inserted = await writer.insert_frames(frame_rows)
            reading_batch: list[tuple[Any, ...]] = []
            latest: dict[int, tuple[datetime, int, int | None]] = {}
            for (index, frame, _raw), d, tails in zip(frames, decoded, prepared.tails, strict=True):
                result = results[index]
                raw_id = inserted.get((result.collector, frame.sequence))
                if raw_id is None:
                    result.frames_duplicate += 1
                    continue  # redelivery: this frame and its readings are already stored
                result.frames_new += 1
                result.received_at.append(frame.received_at)
                if d.status != "ok":
                    result.frames_failed += 1
                    continue
                meter_id = meter_ids.get((d.serial or "", d.manufacturer or ""))
                if meter_id is None:
                    continue
                ids = (meter_id, raw_id)
                reading_batch.extend([ids + tail for tail in tails])
                result.readings += len(tails)
                result.meter_ids.add(meter_id)
                previous = latest.get(meter_id)
                if previous is None or frame.received_at >= previous[0]:
                    latest[meter_id] = (frame.received_at, raw_id, d.telegram_status)
            if reading_batch:
                await writer.insert_readings(reading_batch)
            if latest:
                # Late and out-of-order frames are normal: only move "latest" forwards.
                await writer.advance_meters(
                    [(mid, stamp(at), raw_id, status) for mid, (at, raw_id, status) in latest.items()]
                )
            seen_by_collector: dict[str, tuple[datetime, int]] = {}
            for batch in batches:
                newest = max(f.received_at for f in batch.frames)
                top = max(f.sequence for f in batch.frames)
                old = seen_by_collector.get(batch.collector)
                if old is not None:
                    newest, top = max(newest, old[0]), max(top, old[1])
                seen_by_collector[batch.collector] = (newest, top)
            if seen_by_collector:
                await session.execute(
                    _ADVANCE_COLLECTOR,
                    [
                        {"b_cid": cid, "b_seen": at, "b_seq": seq}
                        for cid, (at, seq) in seen_by_collector.items()
                    ],
                )
            if rejects:
                await session.execute(
                    insert(RejectedMessage),
                    [
                        {
                            "received_at": now,
                            "topic": topic[:256],
                            "reason": reason[:2000],
                            "payload": payload[:MAX_REJECTED_PAYLOAD],
                        }
                        for topic, payload, reason in rejects
                    ],
                )
        self.stats.rejected += len(rejects)
        for result in results:
            self.stats.batches += 1
            self.stats.frames_new += result.frames_new
            self.stats.frames_duplicate += result.frames_duplicate
            self.stats.frames_failed += result.frames_failed
            self.stats.readings += result.readings
        return results

    async def _ensure_collectors(self, session: Any, collectors: set[str]) -> None:
        missing = collectors - self._collectors
        if missing:
            await session.execute(
                self.db.insert_ignore(Collector, ["id"]),
                [{"id": c, "state": "unknown"} for c in sorted(missing)],
            )
            self._collectors.update(missing)

    async def _meter_ids_for(
        self, session: Any, decoded: Sequence[DecodedFrame]
    ) -> dict[tuple[str, str], int]:
        """Meter ids by (serial, manufacturer), from the cache or the database (auto-registering)."""
        cache = self._meter_ids
        unknown = [
            d for d in decoded if d.serial and d.manufacturer and (d.serial, d.manufacturer) not in cache
        ]
        if unknown:
            found = await self._meters_for(session, unknown)
            for key, row in found.items():
                cache[key] = row.id
        return cache

    async def _keys_for(self, session: Any, wireless: Sequence[bytes]) -> dict[str, bytes]:
        """The AES keys of the meters whose wM-Bus frames are at hand, decrypted from the database."""
        if not wireless or self.keybox is None:
            return {}
        serials = {ident[0] for raw in wireless if (ident := wmbus_identity(raw)) is not None}
        if not serials:
            return {}
        rows = await session.execute(
            select(Meter.serial, Meter.key_encrypted).where(
                Meter.serial.in_(serials), Meter.key_encrypted.is_not(None)
            )
        )
        keys: dict[str, bytes] = {}
        for serial, token in rows.all():
            try:
                keys[serial] = self.keybox.decrypt(token)
            except KeyFileError:
                log.error("meter %s: stored key cannot be decrypted with this key file", serial)
        return keys

    def decode_raw(self, link: str, raw: bytes, keys: Mapping[str, bytes]) -> DecodedFrame:
        if link == "wmbus":
            if self._formats is None:
                from protocols.wmbus.compact import FormatCache

                self._formats = FormatCache()
            return decode_wmbus_frame(raw, keys, self._formats)
        return decode_frame(raw, self._decoder)

    def _decode(self, frame: FrameMessage, keys: Mapping[str, bytes], raw: bytes) -> DecodedFrame:
        if frame.status is FrameStatus.NO_ANSWER:
            return DecodedFrame("no_answer", frame.reason or "no answer")
        if frame.status is FrameStatus.FAILED:
            return DecodedFrame("failed", f"collector: {frame.reason or 'invalid frame'}"[:MAX_REASON])
        if not raw:
            return DecodedFrame("failed", "empty frame")
        return self.decode_raw(frame.link.value, raw, keys)


async def redecode(
    db: Database, *, collector: str | None = None, batch_size: int = 500, keybox: MeterKeyBox | None = None
) -> dict[str, int]:
    """Decode stored raw frames again (after a decoder upgrade or a key fix); returns counts.

    Readings that came from a frame are replaced by what the current decoder makes of it; a frame
    that now fails keeps its raw bytes and gets the new reason.
    """
    counts = {"frames": 0, "ok": 0, "failed": 0, "readings": 0}
    processor = IngestProcessor(db, keybox=keybox)
    last_id = 0
    while True:
        async with db.sessions.begin() as session:
            query = (
                select(RawFrame)
                .where(RawFrame.id > last_id)
                .where(RawFrame.collector_status == "ok")
                .order_by(RawFrame.id)
                .limit(batch_size)
            )
            if collector is not None:
                query = query.where(RawFrame.collector_id == collector)
            frames = list((await session.execute(query)).scalars())
            if not frames:
                break
            last_id = frames[-1].id
            keys = await processor._keys_for(session, [f.raw for f in frames if f.link == "wmbus"])
            decoded = [processor.decode_raw(f.link, f.raw, keys) for f in frames]
            meters = await processor._meters_for(session, decoded)
            now = utcnow()
            touched = {f.meter_id for f in frames if f.meter_id is not None}
            for frame, d in zip(frames, decoded, strict=True):
                counts["frames"] += 1
                await session.execute(delete(Reading).where(Reading.raw_frame_id == frame.id))
                frame.status = d.status
                frame.reason = d.reason
                frame.decoded_at = now if d.status == "ok" else None
                meter = meters.get((d.serial or "", d.manufacturer or ""))
                frame.meter_id = meter.id if meter else frame.meter_id
                if d.status != "ok" or meter is None:
                    counts["failed" if d.status != "ok" else "ok"] += 1
                    continue
                counts["ok"] += 1
                touched.add(meter.id)
                rows = reading_rows(meter.id, frame.id, frame.received_at, d.records)
                if rows:
                    await session.execute(_reading_insert(db), rows)
                counts["readings"] += len(rows)
                await session.execute(
                    update(Meter)
                    .where(Meter.id == meter.id)
                    .where(or_(Meter.last_reading_at.is_(None), Meter.last_reading_at <= frame.received_at))
                    .values(
                        last_reading_at=frame.received_at,
                        last_frame_at=frame.received_at,
                        last_raw_frame_id=frame.id,
                    )
                )
            await rebuild_months(session, touched)  # readings were deleted and rewritten
    return counts


class MqttIngest:
    """The broker side: paho in its thread, database work in asyncio, ack after commit."""

    def __init__(
        self,
        processor: IngestProcessor,
        mqtt_url: str,
        *,
        client_id: str = "imd-central-ingest",
        shared_subscription: bool = True,
        collectors: Sequence[str] | None = None,
        persistent_session: bool = True,
        max_group: int = 64,
        subscribe: bool = True,
        pipeline: bool = False,
    ) -> None:
        self.processor = processor
        # Messages stored per transaction at most. The broker bounds it as well: it keeps at most
        # its in-flight window (Mosquitto's max_inflight_messages, default 20) unacknowledged.
        self.max_group = max(1, max_group)
        # Decode the next group while the previous one is written (see _work). Off by default: on
        # this 2-core machine, loaded, it gained nothing measurable with either database and made
        # the groups smaller (the broker's in-flight window bounds what is unacknowledged, and two
        # groups share it). SQLite's driver thread needs the GIL that decoding holds for every
        # statement; with PostgreSQL the server works in parallel, but one event loop still
        # serialises the decoding with the handling of its answers.
        self.pipeline = pipeline
        # Called after a group is committed and acknowledged, with its messages and the wall-clock
        # time of the commit (the ingest benchmark measures end-to-end latency with it).
        self.on_committed: Callable[[Sequence[tuple[str, bytes]], float], None] | None = None
        self.url = parse_mqtt_url(mqtt_url)
        self.client_id = client_id
        self.persistent_session = persistent_session
        # subscribe=False: a connection that only publishes commands to collectors (an API-only
        # process, ``imd central serve --no-ingest``); it receives nothing, so it stores nothing.
        self.subscriptions = self.topics(shared_subscription, collectors) if subscribe else []
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, int, str, bytes]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._worker: asyncio.Task[None] | None = None
        self._pending_subs: set[int] = set()
        self.acked = 0
        # End-to-end receipts to the collectors after each commit (central/receipts.py).
        self.send_receipts = True
        self.receipts_sent = 0

    @property
    def queue_depth(self) -> int:
        """Messages received from the broker and not yet committed (the metrics gauge)."""
        return self._queue.qsize()

    @staticmethod
    def topics(shared: bool, collectors: Sequence[str] | None) -> list[str]:
        if collectors:
            return [
                t for c in collectors for t in (frames_topic(c), status_topic(c), command_result_topic(c))
            ]
        frames = SHARED_FRAMES_SUBSCRIPTION if shared else FRAMES_SUBSCRIPTION
        return [frames, STATUS_SUBSCRIPTION, COMMAND_RESULT_SUBSCRIPTION]

    async def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self.persistent_session,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if self.url.username:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        if self.subscriptions:
            self._worker = asyncio.create_task(self._work(), name="ingest-worker")
        # connect_async + loop_start: a broker that is not up yet is retried by paho's thread.
        client.connect_async(self.url.host, self.url.port, keepalive=30)
        client.loop_start()
        log.info(
            "ingest connecting to %s as %s, topics %s",
            self.url.redacted(),
            self.client_id,
            self.subscriptions,
        )

    async def wait_ready(self, seconds: float = 10.0) -> None:
        await asyncio.wait_for(self.subscribed.wait(), seconds)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def publish_command(self, command: Command, collector: str) -> None:
        """Send a command to a collector (QoS 1); raises RuntimeError when not connected."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise RuntimeError("not connected to the broker")
        info = client.publish(command_topic(collector), encode(command), qos=1)
        if info.rc != 0:
            raise RuntimeError(f"publish failed (rc {info.rc})")

    # --- paho thread -------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop is closing during shutdown; unacked messages are redelivered.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused ingest connection: %s", reason_code)
            return
        if self.subscriptions:
            _result, mid = client.subscribe([(topic, 1) for topic in self.subscriptions])
            self._pending_subs.add(mid)
        self._call(self.connected.set)

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reason_codes: Any, _props: Any) -> None:
        failures = [rc for rc in reason_codes if rc.is_failure]
        if failures:
            log.error("subscription refused by broker: %s (topics %s)", failures, self.subscriptions)
            return
        self._call(self.subscribed.set)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("ingest disconnected from broker: %s (reconnecting)", reason_code)
        self._call(self.connected.clear)
        self._call(self.subscribed.clear)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self._call(self._queue.put_nowait, (message.mid, message.qos, message.topic, bytes(message.payload)))

    # --- asyncio side ------------------------------------------------------------------------
    # Two stages with at most one group between them: with ``pipeline``, while group N is written
    # and committed, group N+1 is parsed and decoded here; without, a group is prepared only once
    # the previous one is acknowledged. Groups are committed, and then acknowledged, in receipt order.
    async def _work(self) -> None:
        queue = self._queue
        handoff: asyncio.Queue[tuple[list[tuple[int, int, str, bytes]], PreparedGroup | None, bool]]
        handoff = asyncio.Queue(maxsize=1)
        written = asyncio.Event()
        writer = asyncio.create_task(self._write(handoff, written), name="ingest-writer")
        try:
            while True:
                group = [await queue.get()]
                # Whatever else has arrived meanwhile goes into the same transaction: under load the
                # groups grow by themselves, when idle a message is stored alone without waiting.
                while len(group) < self.max_group and not queue.empty():
                    group.append(queue.get_nowait())
                try:
                    prepared, ok = await self.processor.prepare([(t, p) for _m, _q, t, p in group]), True
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("preparing %d messages failed; storing them one by one", len(group))
                    prepared, ok = None, False
                written.clear()
                await handoff.put((group, prepared, ok))
                if not self.pipeline:
                    await written.wait()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(
        self,
        handoff: asyncio.Queue[tuple[list[tuple[int, int, str, bytes]], PreparedGroup | None, bool]],
        written: asyncio.Event,
    ) -> None:
        while True:
            group, prepared, ok = await handoff.get()
            await self._store(group, prepared, ok)
            committed = time.time()
            client = self._client
            # Only now, after the commit, does the broker hear that we have them; in receipt order.
            for mid, qos, _topic, _payload in group:
                if client is not None and qos > 0:
                    client.ack(mid, qos)
                    self.acked += 1
            if self.send_receipts:  # after the acks: a receipt never holds one back
                batches = prepared.batches if ok and prepared is not None else batches_of(
                    [(topic, payload) for _mid, _qos, topic, payload in group])
                self.receipts_sent += publish_receipts(client, batches, committed)
            if self.on_committed is not None:
                self.on_committed([(topic, payload) for _mid, _qos, topic, payload in group], committed)
            written.set()

    async def _store(
        self, group: Sequence[tuple[int, int, str, bytes]], prepared: PreparedGroup | None, ok: bool
    ) -> None:
        if ok:
            if prepared is None:
                return  # statuses and command results only: stored while preparing
            try:
                await self.processor.store(prepared)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # One message may be what fails (or the database is down): store them one by one
                # so that the others are not held back by it.
                log.exception("ingest of %d messages in one transaction failed; one by one now", len(group))
        for _mid, _qos, topic, payload in group:
            while True:
                try:
                    await self.processor.handle_many([(topic, payload)])
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database is unavailable or similar: do not ack, retry - the broker keeps
                    # the message until we do.
                    log.exception("ingest of a message on %s failed; retrying", topic[:200])
                    await asyncio.sleep(1.0)
