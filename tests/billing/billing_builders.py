"""Small builders for billing inputs in tests: readings at local midnight, one meter per point."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from central.billing.model import (
    Apartment,
    BillingInput,
    InvoiceLine,
    InvoiceLineKind,
    Medium,
    MediumConfig,
    MeterInstallation,
    MeterPoint,
    PriceEntry,
    PriceModel,
    PropertySettings,
    Reading,
    ReadingSource,
    SupplierInvoice,
)

TZ = ZoneInfo("Europe/Stockholm")
D = Decimal
MARCH = (date(2024, 3, 1), date(2024, 4, 1))
CREATED = datetime(2024, 4, 5, 8, 0, tzinfo=ZoneInfo("UTC"))


def at(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def reading(rid: str, day: date, value: str, source: ReadingSource = ReadingSource.REMOTE,
            hour: int = 0, **kw: str) -> Reading:
    return Reading(rid, at(day, hour), D(value), source, **kw)


def point(pid: str, apt: str | None, readings: list[Reading], medium: Medium = Medium.HEAT,
          unit: str = "kWh", faults: tuple[str, ...] = ()) -> MeterPoint:
    inst = MeterInstallation(f"m-{pid}", at(date(2020, 1, 1)), None, tuple(readings))
    return MeterPoint(pid, medium, unit, apt, (inst,), faults)


def simple_point(pid: str, apt: str | None, start: str, end: str, medium: Medium = Medium.HEAT,
                 unit: str = "kWh", faults: tuple[str, ...] = ()) -> MeterPoint:
    """Readings exactly at 1 March and 1 April 00:00."""
    return point(pid, apt, [reading(f"{pid}-s", MARCH[0], start), reading(f"{pid}-e", MARCH[1], end)],
                 medium, unit, faults)


def apartment(aid: str, area: str, share: str | None = None) -> Apartment:
    return Apartment(aid, f"OBJ-{aid}", f"1{aid[-3:]:0>3}", D(area), D(share) if share else None)


def debitering(price: str = "1.25", fee: str = "0", medium: Medium = Medium.HEAT,
               unit: str = "kWh") -> MediumConfig:
    return MediumConfig(medium, PriceModel.DEBITERING, unit,
                        prices=(PriceEntry(date(2020, 1, 1), None, D(price), D(fee)),))


def invoice(amount: str, medium: Medium = Medium.HEAT, vat: str = "0",
            qty: str | None = None) -> SupplierInvoice:
    lines = [InvoiceLine(InvoiceLineKind.ENERGY, D(amount), D(qty) if qty else None, "kWh")]
    if vat != "0":
        lines.append(InvoiceLine(InvoiceLineKind.VAT, D(vat)))
    return SupplierInvoice("INV-1", "Fjärrvärme AB", medium, MARCH[0], MARCH[1], tuple(lines))


def settings(**kw: object) -> PropertySettings:
    return PropertySettings("P1", "Brf Exempel", **kw)  # type: ignore[arg-type]


def make_input(**kw: object) -> BillingInput:
    base: dict[str, object] = {
        "settings": settings(),
        "period_from": MARCH[0],
        "period_to": MARCH[1],
        "apartments": (),
        "meter_points": (),
        "media": (),
    }
    base.update(kw)
    return BillingInput(**base)  # type: ignore[arg-type]
