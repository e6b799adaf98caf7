"""Supplier-invoice interpretation: what the medium really cost the property in a billing period.

An invoice wholly inside the period counts in full; one that straddles a boundary counts pro rata
by days (each line rounded to öre on its own, so the shown per-kind figures add up to the total).
The pool for a fördelning is the net cost when the property is VAT-registered (its input VAT is
deductible) and the gross cost otherwise. Every step is written out in ``arithmetic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .model import InvoiceLineKind, Medium, SupplierInvoice
from .money import EXACT, ZERO, Rounding, fmt, to_ore
from .periods import BillingPeriod

__all__ = ["CostAnalysis", "InvoiceShare", "analyse_costs", "main_meter_difference"]


@dataclass(frozen=True, slots=True)
class InvoiceShare:
    invoice_id: str
    supplier: str
    days_in_period: int
    days_invoiced: int
    by_kind: tuple[tuple[InvoiceLineKind, Decimal], ...]  # excl. VAT line; prorated, öre
    vat: Decimal
    energy_quantity: Decimal | None  # Σ ENERGY line quantities, only when wholly inside the period

    @property
    def net(self) -> Decimal:
        return sum((a for _, a in self.by_kind), ZERO)


@dataclass(frozen=True, slots=True)
class CostAnalysis:
    medium: Medium
    invoices: tuple[InvoiceShare, ...]
    by_kind: tuple[tuple[InvoiceLineKind, Decimal], ...]
    net: Decimal
    vat: Decimal
    gross: Decimal
    pool: Decimal
    main_quantity: Decimal | None
    unit: str
    unit_price: Decimal | None  # pool ÷ main quantity, 4 decimals, for display
    arithmetic: tuple[str, ...]


def analyse_costs(
    invoices: tuple[SupplierInvoice, ...],
    medium: Medium,
    period: BillingPeriod,
    *,
    vat_registered: bool,
    main_quantity: Decimal | None,
    unit: str,
    rounding: Rounding = Rounding.HALF_UP,
) -> CostAnalysis | None:
    """The period's cost of ``medium`` from the invoices that overlap it; None when there are none."""
    shares: list[InvoiceShare] = []
    notes: list[str] = []
    for inv in sorted(invoices, key=lambda i: (i.period_from, i.id)):
        if inv.medium != medium:
            continue
        lo, hi = max(inv.period_from, period.start), min(inv.period_to, period.end)
        overlap = (hi - lo).days
        if overlap <= 0:
            continue
        days = (inv.period_to - inv.period_from).days
        kinds: dict[InvoiceLineKind, Decimal] = {}
        vat = ZERO
        qty = ZERO
        has_qty = False
        for line in inv.lines:
            amount = (
                line.amount
                if overlap == days
                else to_ore(
                    EXACT.divide(EXACT.multiply(line.amount, Decimal(overlap)), Decimal(days)), rounding
                )
            )
            if line.kind is InvoiceLineKind.VAT:
                vat += amount
                continue
            kinds[line.kind] = kinds.get(line.kind, ZERO) + amount
            if line.kind is InvoiceLineKind.ENERGY and line.quantity is not None:
                qty += line.quantity
                has_qty = True
        by_kind = tuple(sorted(kinds.items()))
        share = InvoiceShare(
            inv.id, inv.supplier, overlap, days, by_kind, vat, qty if has_qty and overlap == days else None
        )
        shares.append(share)
        parts = " + ".join(f"{k} {fmt(a)}" for k, a in by_kind)
        notes.append(
            f"invoice {inv.id} ({inv.supplier}) {inv.period_from}--{inv.period_to}: {overlap}/{days} days; "
            f"{parts} = net {fmt(share.net)}; VAT {fmt(vat)}"
        )
    if not shares:
        return None
    totals: dict[InvoiceLineKind, Decimal] = {}
    for s in shares:
        for kind, amount in s.by_kind:
            totals[kind] = totals.get(kind, ZERO) + amount
    net = sum((s.net for s in shares), ZERO)
    vat = sum((s.vat for s in shares), ZERO)
    gross = net + vat
    pool = net if vat_registered else gross
    notes.append(f"net {fmt(net)} + VAT {fmt(vat)} = gross {fmt(gross)}")
    basis = "net (VAT-registered: input VAT deducted)" if vat_registered else "gross"
    notes.append(f"pool = {basis} = {fmt(pool)}")
    if main_quantity is None:
        qtys = [s.energy_quantity for s in shares]
        if all(q is not None for q in qtys):
            main_quantity = sum((q for q in qtys if q is not None), ZERO)
            notes.append(f"consumption from the invoices' energy lines: {fmt(main_quantity)} {unit}")
    unit_price = None
    if main_quantity:
        unit_price = EXACT.divide(pool, main_quantity).quantize(Decimal("0.0001"), context=EXACT)
        notes.append(f"price per {unit} = {fmt(pool)} / {fmt(main_quantity)} = {fmt(unit_price)}")
    return CostAnalysis(
        medium,
        tuple(shares),
        tuple(sorted(totals.items())),
        net,
        vat,
        gross,
        pool,
        main_quantity,
        unit,
        unit_price,
        tuple(notes),
    )


def main_meter_difference(main: Decimal | None, apartments: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """(main - Σ apartments, that difference in % of main to 2 decimals); None without a main figure."""
    if main is None:
        return None, None
    diff = main - apartments
    if main == 0:
        return diff, None
    pct = EXACT.divide(EXACT.multiply(diff, Decimal(100)), main).quantize(Decimal("0.01"), context=EXACT)
    return diff, pct
