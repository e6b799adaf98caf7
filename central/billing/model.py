"""The billing engine's inputs: frozen, slotted, serialisable dataclasses, independent of storage.

The storage adapter (central's models) builds these from the database; tests build them by hand.
Ids are the caller's stable strings (database ids rendered as text or external keys), so a run can
be re-computed from the same inputs and give the same bytes.

Times: readings, installations and removals are timezone-aware ``datetime``; periods, moves and
validity ranges are local ``date`` s, half-open ``[from, to)``: ``to`` is the first day *not*
included (a move-out on 2024-04-01 means the tenant lived there through 31 March).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from protocols.site import Medium

from .money import Rounding

__all__ = [
    "Apartment",
    "Approval",
    "BillingInput",
    "DifferenceRule",
    "FaultPolicy",
    "FixedCost",
    "FixedKey",
    "Frequency",
    "InvoiceLine",
    "InvoiceLineKind",
    "Medium",
    "MediumConfig",
    "MeterInstallation",
    "MeterPoint",
    "PriceEntry",
    "PriceModel",
    "PropertySettings",
    "Reading",
    "ReadingSource",
    "SupplierInvoice",
    "TenantPeriod",
    "VatRounding",
]


class Frequency(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


class PriceModel(StrEnum):
    DEBITERING = "debitering"  # a set price per unit from a price list
    FORDELNING = "fordelning"  # the property's real cost split by consumption (zero-sum)


class FixedKey(StrEnum):
    AREA = "area"
    COUNT = "count"  # equal per apartment
    SHARE = "share"  # andelstal


class DifferenceRule(StrEnum):
    """What happens to main meter minus Σ apartments in a fördelning pool."""

    CONSUMPTION = "consumption"  # spread in proportion to each apartment's own consumption
    AREA = "area"  # the difference's cost split by area
    ASSOCIATION = "association"  # carried by the property/association, on a line of its own


class FaultPolicy(StrEnum):
    HOLD = "hold"  # the line is computed but held back from the billing file
    ESTIMATE = "estimate"  # billed on the (estimated) readings, flagged with the fault as reason


class ReadingSource(StrEnum):
    REMOTE = "remote"
    MANUAL = "manual"
    ESTIMATED = "estimated"


class VatRounding(StrEnum):
    LINE = "line"  # VAT rounded to öre on every line
    TOTAL = "total"  # VAT rounded once per payer, split back onto the lines by largest remainder


class InvoiceLineKind(StrEnum):
    FIXED_FEE = "fixed_fee"
    ENERGY = "energy"
    POWER = "power"  # effektavgift
    FLOW = "flow"  # flödesavgift (district heating)
    TAX = "tax"  # energiskatt etc.
    VAT = "vat"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Reading:
    """One register value of one meter (cumulative: kWh, m³ ...), exact."""

    id: str
    at: datetime
    value: Decimal
    source: ReadingSource = ReadingSource.REMOTE
    method: str | None = None  # for estimated readings: how (e.g. "same period last year")
    reason: str | None = None  # and why (e.g. "no frames 12 days")
    raw_frame_id: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError(f"reading {self.id}: naive datetime")


@dataclass(frozen=True, slots=True)
class MeterInstallation:
    """A physical meter's life on a meter point; a replacement is a second installation."""

    meter_id: str
    installed_at: datetime
    removed_at: datetime | None
    readings: tuple[Reading, ...]  # should include the installation and removal readings


@dataclass(frozen=True, slots=True)
class MeterPoint:
    id: str
    medium: Medium
    unit: str  # "kWh", "m3"
    apartment_id: str | None  # None: the property's main meter for the medium
    installations: tuple[MeterInstallation, ...]
    blocking_faults: tuple[str, ...] = ()  # ids of open faults that block billing of this point


@dataclass(frozen=True, slots=True)
class Apartment:
    id: str
    object_number: str
    number: str  # lägenhetsnummer
    area_m2: Decimal
    share: Decimal | None = None  # andelstal
    address: str = ""
    rent_included: tuple[Medium, ...] = ()  # media paid as a flat amount in the rent (VAT exempt)


@dataclass(frozen=True, slots=True)
class TenantPeriod:
    apartment_id: str
    tenant_ref: str
    move_in: date
    move_out: date | None = None  # first day no longer occupied


@dataclass(frozen=True, slots=True)
class PriceEntry:
    valid_from: date
    valid_to: date | None  # exclusive
    unit_price: Decimal  # per unit, excl. VAT
    fixed_fee_per_month: Decimal = Decimal(0)  # per apartment and month, excl. VAT


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: InvoiceLineKind
    amount: Decimal  # excl. VAT (for a VAT line: the VAT amount)
    quantity: Decimal | None = None
    unit: str | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class SupplierInvoice:
    id: str
    supplier: str
    medium: Medium
    period_from: date
    period_to: date  # exclusive
    lines: tuple[InvoiceLine, ...]


@dataclass(frozen=True, slots=True)
class FixedCost:
    """A cost the association passes on (samfällighetsavgift, meter rent, service fee ...)."""

    id: str
    name: str
    amount_per_month: Decimal  # for the whole property, excl. VAT
    key: FixedKey
    taxable: bool = False  # a pass-through fee is usually outside VAT; a service fee may not be
    valid_from: date | None = None
    valid_to: date | None = None


@dataclass(frozen=True, slots=True)
class MediumConfig:
    medium: Medium
    model: PriceModel
    unit: str
    prices: tuple[PriceEntry, ...] = ()  # debitering
    fixed_key_share: Decimal = Decimal(0)  # fördelning: share of the cost split by fixed_key (0..1)
    fixed_key: FixedKey = FixedKey.AREA
    difference_rule: DifferenceRule = DifferenceRule.CONSUMPTION


@dataclass(frozen=True, slots=True)
class PropertySettings:
    property_id: str
    name: str
    frequency: Frequency = Frequency.MONTHLY
    lag_months: int = 1
    timezone: str = "Europe/Stockholm"
    vat_registered: bool = False
    vat_rate: Decimal = Decimal("0.25")
    vat_rounding: VatRounding = VatRounding.LINE
    rounding: Rounding = Rounding.HALF_UP
    reading_decimals: int = 3  # interpolated / split quantities are rounded to this
    max_extrapolation_days: int = 7
    fault_policy: FaultPolicy = FaultPolicy.HOLD
    estimated_share_limit: Decimal = Decimal("0.25")  # of the pool's area

    def __post_init__(self) -> None:
        if not 1 <= self.lag_months <= 5:
            raise ValueError("lag_months must be 1..5")
        if not Decimal(0) <= self.estimated_share_limit <= Decimal(1):
            raise ValueError("estimated_share_limit must be 0..1")


@dataclass(frozen=True, slots=True)
class Approval:
    """A person's go-ahead for a stop reason (e.g. an estimated share over the limit)."""

    code: str
    medium: Medium | None
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class BillingInput:
    settings: PropertySettings
    period_from: date
    period_to: date
    apartments: tuple[Apartment, ...]
    meter_points: tuple[MeterPoint, ...]
    media: tuple[MediumConfig, ...]
    tenants: tuple[TenantPeriod, ...] = ()
    invoices: tuple[SupplierInvoice, ...] = ()
    fixed_costs: tuple[FixedCost, ...] = ()
    approvals: tuple[Approval, ...] = field(default=())
