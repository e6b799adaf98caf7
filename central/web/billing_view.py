"""What the web pages show of billing: prices for kronor figures, the archive, and the billing bases
that used a meter's readings.

Money stays ``Decimal``: a consumption in kWh or m³ times the unit price (plus VAT when the property
is VAT-registered) is rounded to öre once, for display. The unit price is the price list's entry
valid on the day (debitering); for a medium without one (fördelning) it is the last run's average,
Σ net ÷ Σ quantity over its consumption lines, so the figure says what that consumption cost then.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.models import (
    Apartment,
    BillingDocument,
    BillingLineReading,
    BillingLineRecord,
    BillingPrice,
    BillingRunRecord,
    BillingSettings,
    BillingSupplierInvoice,
    BillingSupplierInvoiceLine,
    Reading,
    Tenancy,
)
from central.web.common import Table, cell

__all__ = [
    "DOCUMENT_KINDS",
    "ArchiveEntry",
    "BillingBasis",
    "UnitPrice",
    "archive_entries",
    "archive_table",
    "bases_for_meters",
    "bases_table",
    "invoice_csv",
    "kronor",
    "unit_prices",
]

ORE = Decimal("0.01")
DOCUMENT_KINDS = ("underlag", "summary", "debiteringsfil", "invoices", "ubl")
ARCHIVE_KINDS = (*DOCUMENT_KINDS, "supplier_invoice")
BILLED_STATES = ("draft", "approved", "exported", "locked")
# The web shows m³; billing writes m3. Same quantity.
_UNITS = {"m3": "m³"}


@dataclass(frozen=True, slots=True)
class UnitPrice:
    price: Decimal  # per kWh / m³, excl. VAT
    vat_rate: Decimal  # 0 when the property is not VAT-registered (or the supply is exempt)
    source: str  # "price_list" (debitering) or "run_average" (the last run's Σ net ÷ Σ quantity)
    detail: str  # the price entry's first day, or the run's id

    @property
    def with_vat(self) -> Decimal:
        return self.price * (1 + self.vat_rate)


def kronor(quantity: Decimal | None, price: UnitPrice | None) -> Decimal | None:
    """``quantity`` × the price incl. VAT, rounded half up to öre (display only; the bill is the run)."""
    if quantity is None or price is None:
        return None
    return (quantity * price.with_vat).quantize(ORE, rounding=ROUND_HALF_UP)


async def unit_prices(
    session: AsyncSession, property_id: int, media: Iterable[str], day: date
) -> dict[str, UnitPrice]:
    settings = await session.get(BillingSettings, property_id)
    vat = settings.vat_rate if settings is not None and settings.vat_registered else Decimal(0)
    wanted = list(media)
    out: dict[str, UnitPrice] = {}
    prices = (
        await session.execute(
            select(BillingPrice)
            .where(BillingPrice.property_id == property_id, BillingPrice.medium.in_(wanted))
            .order_by(BillingPrice.valid_from.desc(), BillingPrice.id.desc())
        )
    ).scalars()
    for row in prices:
        if row.medium not in out and row.valid_from <= day and (row.valid_to is None or day < row.valid_to):
            out[row.medium] = UnitPrice(row.unit_price, vat, "price_list", row.valid_from.isoformat())
    rest = [m for m in wanted if m not in out]
    if rest:
        sums = await session.execute(
            select(
                BillingLineRecord.medium,
                BillingRunRecord.id,
                BillingRunRecord.period_from,
                BillingLineRecord.net,
                BillingLineRecord.quantity,
            )
            .join(BillingRunRecord, BillingRunRecord.id == BillingLineRecord.run_id)
            .where(
                BillingRunRecord.property_id == property_id,
                BillingRunRecord.state.in_(BILLED_STATES),
                BillingRunRecord.kind == "regular",
                BillingLineRecord.medium.in_(rest),
                BillingLineRecord.kind == "consumption",
                BillingLineRecord.payer == "tenant",
                BillingLineRecord.quantity.is_not(None),
            )
        )
        latest: dict[str, tuple[date, str]] = {}
        totals: dict[tuple[str, str], list[Decimal]] = {}
        for medium, run_id, period_from, net, qty in sums.all():
            if medium is None or qty is None:
                continue  # excluded by the query; here for the type checker
            key = (medium, run_id)
            acc = totals.setdefault(key, [Decimal(0), Decimal(0)])
            acc[0] += net
            acc[1] += qty
            if medium not in latest or (period_from, run_id) > latest[medium]:
                latest[medium] = (period_from, run_id)
        for medium, (_start, run_id) in latest.items():
            net, qty = totals[(medium, run_id)]
            if qty > 0:
                out[medium] = UnitPrice((net / qty).quantize(Decimal("0.0001")), vat, "run_average", run_id)
    return out


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    kind: str
    name: str
    period: str  # "2025-03-01 – 2025-03-31"
    apartment: str  # lägenhetsnummer (object number), or ""
    tenant: str
    size: int
    sha256: str
    href: str
    created: Any


def _period_text(lo: date, hi: date) -> str:
    return f"{lo.isoformat()} – {date.fromordinal(hi.toordinal() - 1).isoformat()}"


def _month(text: str) -> date | None:
    try:
        year, month = (int(x) for x in text.split("-")[:2])
        return date(year, month, 1)
    except ValueError:
        return None


async def archive_entries(
    session: AsyncSession,
    property_id: int,
    property_key: str,
    *,
    q: str = "",
    period: str = "",
    kind: str = "",
) -> list[ArchiveEntry]:
    """Every archived document of the property and its supplier invoices, newest period first;
    ``q`` matches apartment number, object number, tenant reference or name, a file name, supplier or
    invoice number; ``period`` (YYYY-MM) a period containing that month; ``kind`` one kind."""
    month = _month(period) if period else None
    needle = f"%{q.strip().lower()}%" if q.strip() else None
    out: list[ArchiveEntry] = []
    if kind in ("", *DOCUMENT_KINDS):
        query = (
            select(
                BillingDocument.id,
                BillingDocument.kind,
                BillingDocument.name,
                BillingDocument.tenant_ref,
                BillingDocument.size,
                BillingDocument.sha256,
                BillingDocument.created_at,
                BillingRunRecord.period_from,
                BillingRunRecord.period_to,
                Apartment.number,
                Apartment.object_number,
            )
            .join(BillingRunRecord, BillingRunRecord.id == BillingDocument.run_id)
            .outerjoin(Apartment, Apartment.id == BillingDocument.apartment_id)
            .where(BillingDocument.property_id == property_id)
        )
        if kind:
            query = query.where(BillingDocument.kind == kind)
        if month is not None:
            query = query.where(BillingRunRecord.period_from <= month, BillingRunRecord.period_to > month)
        if needle is not None:
            named = select(Tenancy.tenant_ref).where(func.lower(Tenancy.name).like(needle))
            query = query.where(
                or_(
                    func.lower(Apartment.number).like(needle),
                    func.lower(Apartment.object_number).like(needle),
                    func.lower(BillingDocument.tenant_ref).like(needle),
                    func.lower(BillingDocument.name).like(needle),
                    BillingDocument.tenant_ref.in_(named),
                )
            )
        query = query.order_by(
            BillingRunRecord.period_from.desc(), BillingDocument.kind, Apartment.number, BillingDocument.id
        )
        out.extend(
            ArchiveEntry(
                kind=row.kind,
                name=row.name,
                period=_period_text(row.period_from, row.period_to),
                apartment=f"{row.number} ({row.object_number})" if row.number else "",
                tenant=row.tenant_ref or "",
                size=row.size,
                sha256=row.sha256,
                href=f"/portal/documents/{row.id}",
                created=row.created_at,
            )
            for row in (await session.execute(query)).all()
        )
    if kind in ("", "supplier_invoice"):
        inv_query = select(BillingSupplierInvoice).where(BillingSupplierInvoice.property_id == property_id)
        if month is not None:
            inv_query = inv_query.where(
                BillingSupplierInvoice.period_from <= month, BillingSupplierInvoice.period_to > month
            )
        if needle is not None:
            inv_query = inv_query.where(
                or_(
                    func.lower(BillingSupplierInvoice.supplier).like(needle),
                    func.lower(BillingSupplierInvoice.reference).like(needle),
                    func.lower(BillingSupplierInvoice.medium).like(needle),
                )
            )
        invoices = list(
            (
                await session.execute(
                    inv_query.order_by(BillingSupplierInvoice.period_from.desc(), BillingSupplierInvoice.id)
                )
            )
            .scalars()
            .all()
        )
        for inv in invoices:
            data = await invoice_csv(session, inv)
            out.append(
                ArchiveEntry(
                    kind="supplier_invoice",
                    name=f"{inv.supplier} {inv.reference}".strip(),
                    period=_period_text(inv.period_from, inv.period_to),
                    apartment="",
                    tenant="",
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    href=f"/portal/p/{property_key}/archive/invoices/{inv.id}.csv",
                    created=inv.created_at,
                )
            )
    return out


async def invoice_csv(session: AsyncSession, inv: BillingSupplierInvoice) -> bytes:
    """A supplier invoice's lines as semicolon CSV (UTF-8 with BOM, as Excel wants): deterministic, so
    its checksum is the same every time it is listed or fetched."""
    lines = (
        await session.execute(
            select(BillingSupplierInvoiceLine)
            .where(BillingSupplierInvoiceLine.invoice_id == inv.id)
            .order_by(BillingSupplierInvoiceLine.position, BillingSupplierInvoiceLine.id)
        )
    ).scalars()
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    w.writerow(
        [
            "supplier",
            "reference",
            "medium",
            "period_from",
            "period_to",
            "kind",
            "amount",
            "quantity",
            "unit",
            "text",
        ]
    )
    for ln in lines:
        w.writerow(
            [
                inv.supplier,
                inv.reference,
                inv.medium,
                inv.period_from.isoformat(),
                inv.period_to.isoformat(),
                ln.kind,
                str(ln.amount),
                "" if ln.quantity is None else str(ln.quantity),
                ln.unit or "",
                ln.text,
            ]
        )
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


@dataclass(slots=True)
class BillingBasis:
    """One billed line and the readings of the meters shown that it was computed from."""

    run_id: str
    state: str
    period: str
    charge: str
    object_number: str
    tenant_ref: str
    quantity: Decimal | None
    unit: str
    net: Decimal
    document_href: str | None
    readings: list[tuple[Any, Decimal, str]] = field(default_factory=list)  # (read at, value, unit)

    @property
    def unit_display(self) -> str:
        return _UNITS.get(self.unit, self.unit)


async def bases_for_meters(
    session: AsyncSession, meter_ids: Sequence[int], limit: int = 200
) -> list[BillingBasis]:
    """The billing lines whose figures came from readings of ``meter_ids`` (the run's line-to-reading
    links), newest period first, each with those readings and a link to its billing basis PDF."""
    if not meter_ids:
        return []
    rows = (
        await session.execute(
            select(
                BillingLineRecord.line_id,
                BillingLineRecord.run_id,
                BillingLineRecord.charge,
                BillingLineRecord.object_number,
                BillingLineRecord.tenant_ref,
                BillingLineRecord.apartment_id,
                BillingLineRecord.quantity,
                BillingLineRecord.unit,
                BillingLineRecord.net,
                BillingRunRecord.state,
                BillingRunRecord.period_from,
                BillingRunRecord.period_to,
                Reading.read_at,
                Reading.value,
                Reading.unit.label("reading_unit"),
            )
            .join(BillingLineReading, BillingLineReading.line_id == BillingLineRecord.line_id)
            .join(Reading, Reading.id == BillingLineReading.reading_id)
            .join(BillingRunRecord, BillingRunRecord.id == BillingLineRecord.run_id)
            .where(Reading.meter_id.in_(list(meter_ids)))
            .order_by(
                BillingRunRecord.period_from.desc(),
                BillingRunRecord.id.desc(),
                BillingLineRecord.object_number,
                BillingLineRecord.line_id,
                Reading.read_at,
            )
        )
    ).all()
    bases: dict[str, BillingBasis] = {}
    wanted: set[tuple[str, int | None, str | None]] = set()
    for r in rows:
        basis = bases.get(r.line_id)
        if basis is None:
            if len(bases) >= limit:
                continue
            basis = bases[r.line_id] = BillingBasis(
                run_id=r.run_id,
                state=r.state,
                period=_period_text(r.period_from, r.period_to),
                charge=r.charge,
                object_number=r.object_number,
                tenant_ref=r.tenant_ref or "",
                quantity=r.quantity,
                unit=r.unit,
                net=r.net,
                document_href=None,
            )
            wanted.add((r.run_id, r.apartment_id, r.tenant_ref))
        basis.readings.append((r.read_at, r.value, r.reading_unit))
    if wanted:
        docs = (
            await session.execute(
                select(
                    BillingDocument.id,
                    BillingDocument.run_id,
                    BillingDocument.apartment_id,
                    BillingDocument.tenant_ref,
                ).where(
                    BillingDocument.kind == "underlag",
                    BillingDocument.run_id.in_(sorted({w[0] for w in wanted})),
                )
            )
        ).all()
        by_key = {(d.run_id, d.apartment_id, d.tenant_ref): d.id for d in docs}
        line_keys = {r.line_id: (r.run_id, r.apartment_id, r.tenant_ref) for r in rows if r.line_id in bases}
        for line_id, basis in bases.items():
            doc_id = by_key.get(line_keys[line_id])
            basis.document_href = f"/portal/documents/{doc_id}" if doc_id is not None else None
    return list(bases.values())


def bases_table(t: Any, name: str, bases: Sequence[BillingBasis]) -> Table:
    """The billing bases that used the readings shown, with those readings and the PDF."""
    table = Table(
        name,
        [
            t("run"),
            t("period"),
            t("charge"),
            t("apartment"),
            t("tenant_ref"),
            t("consumption"),
            t("net"),
            t("readings_used"),
            t("document"),
        ],
    )
    for b in bases:
        used = ", ".join(
            f"{at:%Y-%m-%d %H:%M} = {value} {unit or ''}".strip() for at, value, unit in b.readings
        )
        table.rows.append(
            [
                f"{b.run_id} ({t(b.state)})",
                b.period,
                t(b.charge),
                b.object_number,
                b.tenant_ref or t("vacant_short"),
                "–" if b.quantity is None else f"{b.quantity} {b.unit_display}",
                f"{b.net:.2f} kr",
                used,
                cell(t("billing_basis"), b.document_href) if b.document_href else "–",
            ]
        )
    return table


def archive_table(t: Any, entries: Sequence[ArchiveEntry]) -> Table:
    table = Table(
        "archive",
        [
            t("kind_of_document"),
            t("name"),
            t("period"),
            t("apartment"),
            t("tenant_ref"),
            t("size"),
            "SHA-256",
        ],
    )
    for e in entries:
        table.rows.append(
            [
                t(f"doc_{e.kind}"),
                cell(e.name, e.href),
                e.period,
                e.apartment or "–",
                e.tenant or "–",
                f"{e.size} B",
                cell(e.sha256, cls="mono"),
            ]
        )
    return table
