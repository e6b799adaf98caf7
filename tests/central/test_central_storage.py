"""Storage on SQLite and PostgreSQL: migrations, exact values, site import, idempotent ingest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from central_testdata import CORPUS_METERS, corpus_frame, site_export
from sqlalchemy import func, select, text

from central.db import Database
from central.ingest import IngestProcessor, redecode
from central.keys import MeterKeyBox
from central.models import (
    Apartment,
    Collector,
    Meter,
    MeterPoint,
    Property,
    RawFrame,
    Reading,
    RejectedMessage,
)
from central.site_import import import_site
from protocols.errors import UnsupportedError
from protocols.messages import FrameBatch, FrameMessage, FrameStatus, encode, frames_topic

T0 = datetime(2025, 1, 15, 6, 0, tzinfo=UTC)


def batch(
    collector: str, frames: list[tuple[int, bytes | None]], at: datetime = T0, **extra: object
) -> FrameBatch:
    return FrameBatch(
        collector=collector,
        sent_at=at,
        frames=[
            FrameMessage(
                sequence=seq,
                received_at=at + timedelta(seconds=seq),
                port="mbus0",
                raw=(raw or b"").hex(),
                status=FrameStatus.OK if raw is not None else FrameStatus.NO_ANSWER,
                **extra,  # type: ignore[arg-type]
            )
            for seq, raw in frames
        ],
    )


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_migrations_create_schema_and_are_repeatable(db: Database) -> None:
    await db.migrate()  # second upgrade is a no-op
    async with db.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == "0001"
    assert await count(db, Meter) == 0


async def test_site_import_is_idempotent_and_encrypts_keys(db: Database, keybox: MeterKeyBox) -> None:
    key = "00112233445566778899AABBCCDDEEFF"
    site = site_export(key=key)
    first = await import_site(db, site, keybox)
    assert (first.apartments_created, first.meters_created, first.keys_set) == (3, 4, 1)
    second = await import_site(db, site, keybox)
    assert (second.apartments_created, second.meters_created, second.meters_updated, second.keys_set) == (
        0,
        0,
        0,
        0,
    )
    assert await count(db, Property) == 1
    assert await count(db, Apartment) == 3
    assert await count(db, MeterPoint) == 4
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        apt = (
            await session.execute(select(Apartment).where(Apartment.object_number == "OBJ-1002"))
        ).scalar_one()
    assert meter.key_encrypted is not None
    assert bytes.fromhex(key) not in meter.key_encrypted
    assert key.encode() not in meter.key_encrypted
    assert keybox.decrypt(meter.key_encrypted) == bytes.fromhex(key)
    assert apt.area_m2 == Decimal("74.0")
    assert apt.share == Decimal("0.0312")


async def test_ingest_stores_exact_readings_and_redelivery_inserts_nothing(
    db: Database, keybox: MeterKeyBox
) -> None:
    await import_site(db, site_export(), keybox)
    processor = IngestProcessor(db)
    frames = [(seq, corpus_frame(name)) for seq, name in enumerate(CORPUS_METERS, start=1)]
    payload = encode(batch("store-c1", frames))

    await processor.handle(frames_topic("store-c1"), payload)
    readings = await count(db, Reading)
    assert await count(db, RawFrame) == 4
    assert readings > 10

    await processor.handle(frames_topic("store-c1"), payload)  # the broker delivers it again
    assert await count(db, RawFrame) == 4
    assert await count(db, Reading) == readings
    assert processor.stats.frames_duplicate == 4

    async with db.sessions() as session:
        heat = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        energy = (
            await session.execute(
                select(Reading).where(Reading.meter_id == heat.id, Reading.register == "0406")
            )
        ).scalar_one()
        collector = await session.get(Collector, "store-c1")
    # Kamstrup Multical 601 from the libmbus corpus: 37351 kWh, exact.
    assert energy.value == Decimal("37351000")
    assert energy.unit == "Wh"
    assert heat.last_reading_at == T0 + timedelta(seconds=1)
    assert collector is not None
    assert collector.last_sequence == 4


async def test_corrupt_frame_is_stored_failed_with_reason(db: Database) -> None:
    processor = IngestProcessor(db)
    good = corpus_frame("EFE_Engelmann-WaterStar")
    broken = bytearray(good)
    broken[-2] ^= 0xFF  # checksum no longer matches
    await processor.handle(
        frames_topic("store-c2"), encode(batch("store-c2", [(10, bytes(broken)), (11, good), (12, None)]))
    )
    async with db.sessions() as session:
        frames = {f.sequence: f for f in (await session.execute(select(RawFrame))).scalars()}
    assert frames[10].status == "failed"
    assert frames[10].reason
    assert frames[10].raw == bytes(broken)
    assert frames[11].status == "ok"
    assert frames[11].meter_id is not None  # unknown meter auto-registered
    assert frames[12].status == "no_answer"
    assert await count(db, Reading) > 0


async def test_malformed_payload_is_kept_with_reason(db: Database) -> None:
    processor = IngestProcessor(db)
    await processor.handle(frames_topic("store-c3"), b"{not json")
    await processor.handle(frames_topic("store-c3"), encode(batch("someone-else", [(1, b"\x68")])))
    async with db.sessions() as session:
        rejected = list(
            (await session.execute(select(RejectedMessage).order_by(RejectedMessage.id))).scalars()
        )
    assert len(rejected) == 2
    assert "invalid FrameBatch" in rejected[0].reason
    assert rejected[0].payload == b"{not json"
    assert "someone-else" in rejected[1].reason
    assert await count(db, RawFrame) == 0


async def test_late_frame_does_not_move_latest_backwards(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export(), keybox)
    processor = IngestProcessor(db)
    frame = corpus_frame("EFE_Engelmann-WaterStar")
    await processor.handle(
        frames_topic("store-c4"), encode(batch("store-c4", [(5, frame)], at=T0 + timedelta(days=1)))
    )
    await processor.handle(frames_topic("store-c4"), encode(batch("store-c4", [(4, frame)], at=T0)))
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "04990254"))).scalar_one()
        n = (
            await session.execute(
                select(func.count()).select_from(Reading).where(Reading.meter_id == meter.id)
            )
        ).scalar_one()
    assert meter.last_reading_at == T0 + timedelta(days=1, seconds=5)
    assert n > 0
    assert n % 2 == 0  # both frames' readings are kept (different timestamps)


async def test_redecode_rebuilds_readings_from_raw_frames(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export(), keybox)

    def broken_decoder(raw: bytes) -> object:
        raise UnsupportedError("decoder too old for this meter")

    old = IngestProcessor(db, decoder=broken_decoder)
    await old.handle(
        frames_topic("store-c5"), encode(batch("store-c5", [(1, corpus_frame("kamstrup_multical_601"))]))
    )
    async with db.sessions() as session:
        frame = (await session.execute(select(RawFrame))).scalar_one()
    assert frame.status == "failed"
    assert frame.reason == "UnsupportedError: decoder too old for this meter"
    assert await count(db, Reading) == 0

    counts = await redecode(db)
    assert counts == {"frames": 1, "ok": 1, "failed": 0, "readings": 25}
    assert await redecode(db) == counts  # repeatable: replaces, never doubles
    assert await count(db, Reading) == 25
    async with db.sessions() as session:
        frame = (await session.execute(select(RawFrame))).scalar_one()
        meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
    assert frame.status == "ok"
    assert frame.reason is None
    assert meter.last_reading_at == frame.received_at
