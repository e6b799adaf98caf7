"""Storage on SQLite and PostgreSQL: migrations, exact values, site import, idempotent ingest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from central_testdata import CORPUS_METERS, corpus_frame, site_export
from sqlalchemy import func, select, text

from central.auth import Principal
from central.checks import run_meter_checks
from central.db import Database
from central.ingest import IngestProcessor, redecode
from central.keys import MeterKeyBox
from central.models import (
    Apartment,
    Collector,
    Fault,
    Meter,
    MeterPoint,
    Property,
    RawFrame,
    Reading,
    RejectedMessage,
)
from central.queries import list_meters
from central.site_import import import_site
from protocols.errors import UnsupportedError
from protocols.mbus.encode import data_record, rsp_ud_frame
from protocols.mbus.manufacturers import manufacturer_code
from protocols.messages import FrameBatch, FrameMessage, FrameStatus, encode, frames_topic
from protocols.site import SiteExport
from protocols.wmbus.security import cbc_encrypt, mode5_iv

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
    from alembic.script import ScriptDirectory

    from central.db import alembic_config

    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()  # 0002: billing
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


def wmbus_frame(ident: str, key: bytes, liters: int, access: int = 0x2A) -> bytes:
    """A wM-Bus SND_NR with a short TPL header, encrypted in security mode 5 (AES-128-CBC)."""
    address = manufacturer_code("KAM").to_bytes(2, "little") + bytes.fromhex(ident)[::-1] + bytes((1, 0x07))
    plain = b"\x2f\x2f" + data_record(0x04, 0x13, liters)
    plain += b"\x2f" * (-len(plain) % 16)
    config = (0x05 << 8) | ((len(plain) // 16) << 4)
    tpl = bytes((0x7A, access, 0x00)) + config.to_bytes(2, "little")
    body = bytes((0x44,)) + address + tpl + cbc_encrypt(key, mode5_iv(address, access), plain)
    return bytes((len(body),)) + body


async def test_wmbus_frames_are_decrypted_with_the_meters_key(db: Database, keybox: MeterKeyBox) -> None:
    key = bytes(range(1, 17))
    site = site_export().model_dump()
    site["meters"].append(
        {"id": "12345678", "manufacturer": "KAM", "version": 1, "device_type": 7, "medium": "cold_water",
         "apartment": "OBJ-1002", "link": "wmbus", "bus": "radio0", "key": key.hex()}
    )  # fmt: skip
    await import_site(db, SiteExport.model_validate(site), keybox)
    processor = IngestProcessor(db, keybox=keybox)
    radio = FrameBatch(
        collector="store-w1",
        sent_at=T0,
        frames=[
            FrameMessage(sequence=1, received_at=T0, link="wmbus", port="radio0",
                         raw=wmbus_frame("12345678", key, 4242).hex()),
            FrameMessage(sequence=2, received_at=T0 + timedelta(minutes=1), link="wmbus", port="radio0",
                         raw=wmbus_frame("12345678", bytes(16), 4243).hex()),
        ],
    )  # fmt: skip
    await processor.handle(frames_topic("store-w1"), encode(radio))
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "12345678"))).scalar_one()
        frames = list((await session.execute(select(RawFrame).order_by(RawFrame.sequence))).scalars())
        volume = (await session.execute(select(Reading).where(Reading.meter_id == meter.id))).scalar_one()
    assert volume.value == Decimal("4.242")
    assert frames[0].status == "ok"
    assert frames[1].status == "failed"
    assert frames[1].reason.startswith("SecurityError")
    assert frames[1].meter_id == meter.id  # the clear-text link header names the meter
    await run_meter_checks(db, [meter.id], now=T0 + timedelta(minutes=2), rules=["decryption_failure"])
    async with db.sessions() as session:
        fault = (await session.execute(select(Fault).where(Fault.rule == "decryption_failure"))).scalar_one()
    assert fault.severity == "critical"
    assert fault.meter_id == meter.id
    assert key.hex() not in (fault.evidence or "") + fault.message


async def test_latest_values_gather_a_readout_split_over_two_telegrams(
    db: Database, keybox: MeterKeyBox
) -> None:
    site = site_export().model_dump()
    site["meters"].append(
        {"id": "36372033", "manufacturer": "ABB", "version": 1, "device_type": 2, "medium": "electricity",
         "apartment": "OBJ-2001", "primary_address": 30}
    )  # fmt: skip
    await import_site(db, SiteExport.model_validate(site), keybox)
    first = rsp_ud_frame(
        30, "36372033", "ABB", 1, 2, 1, 0, [data_record(0x04, 0x03, 123456)], more_follow=True
    )
    second = rsp_ud_frame(30, "36372033", "ABB", 1, 2, 2, 0, [data_record(0x04, 0x2B, 470)])
    await IngestProcessor(db).handle(
        frames_topic("store-c6"), encode(batch("store-c6", [(1, first), (2, second)]))
    )
    admin = Principal(0, "admin", "admin", frozenset(), None)
    async with db.sessions() as session:
        meters, _total = await list_meters(session, admin, apartment="OBJ-2001")
    electricity = next(m for m in meters if m["id"] == "36372033")
    assert [(v["quantity"], v["value"], v["unit"]) for v in electricity["values"]] == [
        ("energy", "123456", "Wh"),
        ("power", "470", "W"),
    ]
