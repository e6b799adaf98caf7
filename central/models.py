"""Central's domain model (SQLAlchemy 2 ORM), the same schema on SQLite and PostgreSQL.

Register values are exact: they are stored as decimal text (``ExactDecimal``) rather than a binary
float, because SQLite has no exact numeric type and a float would change figures that feed billing.
Timestamps are stored as UTC and always come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations can refer to them on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal kept as its exact decimal text on every backend."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("binary floats are not accepted for exact values")
        return str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        aware: datetime = value.astimezone(UTC)
        return aware.replace(tzinfo=None) if dialect.name == "sqlite" else aware

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Property(Base):
    __tablename__ = "property"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, doc="stable external id (fastighetsbeteckning)")
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(200), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    buildings: Mapped[list[Building]] = relationship(back_populates="property", lazy="raise")


class Building(Base):
    __tablename__ = "building"
    __table_args__ = (UniqueConstraint("property_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(200), default="")
    property: Mapped[Property] = relationship(back_populates="buildings", lazy="raise")


class Apartment(Base):
    __tablename__ = "apartment"
    __table_args__ = (UniqueConstraint("property_id", "object_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), index=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("building.id"), index=True)
    object_number: Mapped[str] = mapped_column(String(64), doc="the rental admin system's object number")
    number: Mapped[str] = mapped_column(String(16), doc="lägenhetsnummer")
    area_m2: Mapped[Decimal] = mapped_column(ExactDecimal())
    share: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    address: Mapped[str] = mapped_column(String(200), default="")
    tenant_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MeterPoint(Base):
    """What is measured where; outlives the physical meters installed on it."""

    __tablename__ = "meter_point"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), index=True)
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("apartment.id"), nullable=True, index=True)
    medium: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100), default="")


class Meter(Base):
    """The physical device, identified on the bus by its 8-digit id and manufacturer."""

    __tablename__ = "meter"
    __table_args__ = (UniqueConstraint("serial", "manufacturer", name="uq_meter_serial_manufacturer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(16), doc="identification number as printed (8 digits)")
    manufacturer: Mapped[str] = mapped_column(String(3))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device_type: Mapped[int | None] = mapped_column(Integer, nullable=True)
    medium: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100), default="")
    link: Mapped[str] = mapped_column(String(8), default="mbus")
    bus: Mapped[str | None] = mapped_column(String(64), nullable=True)
    primary_address: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meter_point_id: Mapped[int | None] = mapped_column(
        ForeignKey("meter_point.id"), nullable=True, index=True
    )
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, doc="Fernet token")
    auto_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    last_frame_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_reading_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_raw_frame_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True, doc="telegram status byte")


class Collector(Base):
    __tablename__ = "collector"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    property_id: Mapped[int | None] = mapped_column(ForeignKey("property.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status: Mapped[str | None] = mapped_column(Text, nullable=True, doc="last status payload (JSON)")
    last_sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RawFrame(Base):
    """Every frame exactly as received, kept forever next to what was decoded from it."""

    __tablename__ = "raw_frame"
    __table_args__ = (
        UniqueConstraint("collector_id", "sequence", name="uq_raw_frame_collector_sequence"),
        Index("ix_raw_frame_meter_received", "meter_id", "received_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    collector_id: Mapped[str] = mapped_column(ForeignKey("collector.id"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    link: Mapped[str] = mapped_column(String(8))
    port: Mapped[str] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rssi: Mapped[int | None] = mapped_column(Integer, nullable=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    collector_status: Mapped[str] = mapped_column(String(16), doc="the collector's word: ok/failed/no_answer")
    status: Mapped[str] = mapped_column(String(16), doc="ok, failed (reason says why) or no_answer")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meter.id"), nullable=True)
    decoded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Reading(Base):
    __tablename__ = "reading"
    __table_args__ = (
        UniqueConstraint("meter_id", "register", "read_at", name="uq_reading_meter_register_read_at"),
        Index("ix_reading_meter_read_at", "meter_id", "read_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meter.id"))
    register: Mapped[str] = mapped_column(String(64), doc="DIF/DIFE/VIF/VIFE bytes as hex: the register")
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
    quantity: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    function: Mapped[str] = mapped_column(String(16), default="instantaneous")
    storage: Mapped[int] = mapped_column(Integer, default=0)
    tariff: Mapped[int] = mapped_column(Integer, default=0)
    subunit: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[Decimal] = mapped_column(ExactDecimal())
    raw_frame_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("raw_frame.id"), nullable=True, index=True
    )


class ReadingMonth(Base):
    """A month of one billing-register candidate in a nutshell (``central.reading_months``): derived
    from the readings, kept beside them so a page needs a row per month instead of a row per day."""

    __tablename__ = "reading_month"
    # No foreign key: the rows are derived, rebuilt or dropped with the readings they summarise.
    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    register: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True, doc="YYYY-MM (UTC)")
    quantity: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    first_day: Mapped[int] = mapped_column(Integer, doc="the month's first day with a reading")
    first_at: Mapped[datetime] = mapped_column(UTCDateTime(), doc="that day's last reading")
    first_value: Mapped[Decimal] = mapped_column(ExactDecimal())
    last_day: Mapped[int] = mapped_column(Integer, doc="the month's last day with a reading")
    last_at: Mapped[datetime] = mapped_column(UTCDateTime(), doc="the month's last reading")
    last_value: Mapped[Decimal] = mapped_column(ExactDecimal())
    days: Mapped[int] = mapped_column(Integer, doc="bit n-1 set: a reading on day n")


class Fault(Base):
    """One open fault per (meter, rule); a repeat updates it and counts."""

    __tablename__ = "fault"
    __table_args__ = (Index("ix_fault_meter_rule_state", "meter_id", "rule", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meter.id"), nullable=True, index=True)
    collector_id: Mapped[str | None] = mapped_column(ForeignKey("collector.id"), nullable=True)
    rule: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="open", doc="open, acknowledged, resolved")
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    message: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True, doc="JSON: readings, frames")
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer, default=1)
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    blocks_billing: Mapped[bool] = mapped_column(Boolean, default=False)


class FaultEvent(Base):
    """History and comments of a fault."""

    __tablename__ = "fault_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fault_id: Mapped[int] = mapped_column(ForeignKey("fault.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(32), doc="opened, repeated, acknowledged, resolved, comment...")
    text: Mapped[str] = mapped_column(Text, default="")


class User(Base):
    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), doc="admin, staff, technician, board, resident")
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("apartment.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserProperty(Base):
    """The properties a board member or manager may see."""

    __tablename__ = "user_property"
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), primary_key=True)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="", doc="never contains keys or passwords")


class RejectedMessage(Base):
    """An MQTT message that could not be parsed, kept so that it is visible, not silently dropped."""

    __tablename__ = "rejected_message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    topic: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary, doc="first 64 KiB of the payload")


class CommandRecord(Base):
    __tablename__ = "command"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collector_id: Mapped[str] = mapped_column(ForeignKey("collector.id"), index=True)
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[str] = mapped_column(Text, default="{}")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    issued_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


__all__ = [
    "Apartment",
    "AuditLog",
    "Base",
    "Building",
    "Collector",
    "CommandRecord",
    "Fault",
    "FaultEvent",
    "Meter",
    "MeterPoint",
    "Property",
    "RawFrame",
    "Reading",
    "RejectedMessage",
    "User",
    "UserProperty",
    "utcnow",
]


# --- Billing (revision 0002) -------------------------------------------------------------------------
# Settings, prices and costs are what a run reads besides the readings; runs, lines, their reading
# links and the document archive are what it leaves. A run is stored whole (canonical JSON of the
# engine's value) so that exporting an approved run needs no recomputation; the line rows and the
# reading links beside it are for queries and traceability.


class BillingSettings(Base):
    """A property's billing settings: period kind, lag, VAT, rounding and the price model per medium."""

    __tablename__ = "billing_settings"
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), primary_key=True)
    frequency: Mapped[str] = mapped_column(String(16), default="monthly")
    lag_months: Mapped[int] = mapped_column(Integer, default=1)
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Stockholm")
    vat_registered: Mapped[bool] = mapped_column(Boolean, default=False)
    vat_rate: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal("0.25"))
    vat_rounding: Mapped[str] = mapped_column(String(16), default="line")
    rounding: Mapped[str] = mapped_column(String(16), default="half_up")
    reading_decimals: Mapped[int] = mapped_column(Integer, default=3)
    max_extrapolation_days: Mapped[int] = mapped_column(Integer, default=7)
    fault_policy: Mapped[str] = mapped_column(String(16), default="hold")
    estimated_share_limit: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal("0.25"))
    media: Mapped[str] = mapped_column(Text, default="{}", doc="JSON: medium -> model, unit, key, rule")
    invoicing: Mapped[str | None] = mapped_column(Text, nullable=True, doc="JSON: seller for partner/UBL")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BillingPrice(Base):
    """One entry of a debitering price list, valid ``[valid_from, valid_to)``."""

    __tablename__ = "billing_price"
    __table_args__ = (Index("ix_billing_price_property_medium", "property_id", "medium"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"))
    medium: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal(), doc="per unit, excl. VAT")
    fixed_fee_per_month: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))


class BillingSupplierInvoice(Base):
    __tablename__ = "billing_supplier_invoice"
    __table_args__ = (Index("ix_billing_supplier_invoice_property_medium", "property_id", "medium"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"))
    supplier: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str] = mapped_column(String(64), default="", doc="the supplier's invoice number")
    medium: Mapped[str] = mapped_column(String(32))
    period_from: Mapped[date] = mapped_column(Date)
    period_to: Mapped[date] = mapped_column(Date, doc="exclusive")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BillingSupplierInvoiceLine(Base):
    __tablename__ = "billing_supplier_invoice_line"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("billing_supplier_invoice.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), doc="fixed_fee, energy, power, flow, tax, vat, other")
    amount: Mapped[Decimal] = mapped_column(ExactDecimal(), doc="excl. VAT (a VAT line: the VAT)")
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    text: Mapped[str] = mapped_column(String(200), default="")


class BillingFixedCost(Base):
    """A cost the association passes on (samfällighetsavgift, meter rent ...), per month."""

    __tablename__ = "billing_fixed_cost"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    amount_per_month: Mapped[Decimal] = mapped_column(ExactDecimal())
    key: Mapped[str] = mapped_column(String(16), doc="area, count or share")
    taxable: Mapped[bool] = mapped_column(Boolean, default=False)
    valid_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)


class BillingRunRecord(Base):
    """A run (or a stopped attempt) as the engine returned it, plus its life in ``state``."""

    __tablename__ = "billing_run"
    __table_args__ = (Index("ix_billing_run_property_period", "property_id", "period_from"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, doc="the engine's run id")
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"))
    period_from: Mapped[date] = mapped_column(Date)
    period_to: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(16), default="regular", doc="regular or correction")
    corrects_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), doc="stopped, draft, approved, exported, locked")
    input_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    net: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    vat: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    stop_reasons: Mapped[str] = mapped_column(Text, default="[]", doc="JSON list of the stop reasons")
    result: Mapped[str] = mapped_column(Text, doc="canonical JSON of the BillingRun or RunStopped")


class BillingLineRecord(Base):
    __tablename__ = "billing_line"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_run.id"), index=True)
    line_id: Mapped[str] = mapped_column(String(96), unique=True)
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("apartment.id"), nullable=True, index=True)
    object_number: Mapped[str] = mapped_column(String(64))
    tenant_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    charge: Mapped[str] = mapped_column(String(96))
    medium: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payer: Mapped[str] = mapped_column(String(16))
    period_from: Mapped[date] = mapped_column(Date)
    period_to: Mapped[date] = mapped_column(Date)
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    unit: Mapped[str] = mapped_column(String(16), default="")
    unit_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    net: Mapped[Decimal] = mapped_column(ExactDecimal())
    vat_rate: Mapped[Decimal] = mapped_column(ExactDecimal())
    vat: Mapped[Decimal] = mapped_column(ExactDecimal())
    source: Mapped[str] = mapped_column(String(16), default="")
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    corrects: Mapped[str | None] = mapped_column(String(96), nullable=True)


class BillingLineReading(Base):
    """Traceability: the readings (and through them the raw frames) a line's figures came from."""

    __tablename__ = "billing_line_reading"
    line_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    reading_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("reading.id"), primary_key=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_run.id"), index=True)
    raw_frame_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), nullable=True
    )


class BillingDocument(Base):
    """The archive: every document a run produced, with its checksum; bytes here or a file path."""

    __tablename__ = "billing_document"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_billing_document_run_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("billing_run.id"), index=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("property.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), doc="underlag, summary, debiteringsfil, invoices, ubl")
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("apartment.id"), nullable=True)
    tenant_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    path: Mapped[str | None] = mapped_column(String(500), nullable=True, doc="relative to the data dir")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- Tenancies (revision 0003) -----------------------------------------------------------------------
# The rental administration's register of who lived where when; billing splits an apartment's period
# at a move so that each tenant or member gets their own lines. ``move_out`` is the first day no
# longer occupied (half-open, like every period in billing); None while the tenancy runs.


class Tenancy(Base):
    __tablename__ = "tenancy"
    __table_args__ = (UniqueConstraint("apartment_id", "move_in", name="uq_tenancy_apartment_move_in"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    apartment_id: Mapped[int] = mapped_column(ForeignKey("apartment.id"), index=True)
    tenant_ref: Mapped[str] = mapped_column(String(64), index=True, doc="the rental admin's customer number")
    name: Mapped[str] = mapped_column(String(200), default="", doc="as printed on the notice")
    move_in: Mapped[date] = mapped_column(Date)
    move_out: Mapped[date | None] = mapped_column(Date, nullable=True, doc="first day not occupied")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


__all__ += [
    "BillingDocument",
    "BillingFixedCost",
    "BillingLineReading",
    "BillingLineRecord",
    "BillingPrice",
    "BillingRunRecord",
    "BillingSettings",
    "BillingSupplierInvoice",
    "BillingSupplierInvoiceLine",
    "ReadingMonth",
    "Tenancy",
]
