"""Yearly reconciliation: a-conto (fixed monthly advances) with a true-up once a year.

A property may bill a medium a conto: every month each tenant pays a planned advance (e.g. a
twelfth of last year's cost) instead of the month's measured charge. Once a year the actual charge
is computed by the same engine over the reconciliation year (``compute_run`` with the year as the
period: same readings alignment, prices, fördelning, fixed fees, VAT rules), and each tenant gets
one line per medium: actual charge minus the advances billed in that year, a debit or a credit. The
VAT of the true-up is the actual VAT minus the advances' VAT, so over the year the tenant has paid
exactly the VAT on the actual charge.

The year run is the calculation basis (its documents show the arithmetic); its lines are *not*
exported themselves. What goes to the rental administration system is the advances every month
(``aconto_lines``) and the true-up once (``reconciliation_run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from .engine import MEDIUM_TEXT
from .model import Medium
from .money import EXACT, ZERO, Rounding, fmt, mul, to_ore
from .periods import add_months
from .runs import (
    AuditEntry,
    BillingLine,
    BillingRun,
    LineKind,
    Payer,
    PropertySummary,
    RunState,
    make_line_id,
)

__all__ = ["AcontoPlan", "aconto_lines", "reconciliation_lines", "reconciliation_run"]


@dataclass(frozen=True, slots=True)
class AcontoPlan:
    """A tenant's planned advance for one medium, per month, excl. VAT, over ``[valid_from, valid_to)``."""

    apartment_id: str
    object_number: str
    apartment_number: str
    tenant_ref: str
    medium: Medium
    amount_per_month: Decimal
    valid_from: date
    valid_to: date | None = None


def aconto_lines(
    plans: Sequence[AcontoPlan],
    month: date,
    run_id: str,
    *,
    vat_rate: Decimal = ZERO,
    rounding: Rounding = Rounding.HALF_UP,
) -> tuple[BillingLine, ...]:
    """The advances of calendar ``month`` (its first day): a part month (move) pro rata by days."""
    start, end = month, add_months(month, 1)
    days_in_month = (end - start).days
    vat_class = f"vat{fmt((vat_rate * 100).normalize())}" if vat_rate else "exempt"
    out = []
    for plan in sorted(plans, key=lambda p: (p.object_number, p.tenant_ref, str(p.medium), p.valid_from)):
        lo, hi = max(plan.valid_from, start), min(plan.valid_to or end, end)
        if hi <= lo:
            continue
        days = (hi - lo).days
        net = plan.amount_per_month
        arith = f"{fmt(plan.amount_per_month)} per mån"
        if days != days_in_month:
            net = to_ore(EXACT.divide(mul(net, Decimal(days)), Decimal(days_in_month)), rounding)
            arith += f" × {days}/{days_in_month} dagar = {fmt(net)}"
        name = MEDIUM_TEXT[plan.medium]
        out.append(
            BillingLine(
                line_id=make_line_id(
                    run_id, "aconto", str(plan.medium), plan.apartment_id, plan.tenant_ref, lo.isoformat()
                ),
                run_id=run_id,
                kind=LineKind.ACONTO,
                charge=f"aconto.{plan.medium}",
                medium=plan.medium,
                apartment_id=plan.apartment_id,
                object_number=plan.object_number,
                apartment_number=plan.apartment_number,
                tenant_ref=plan.tenant_ref,
                payer=Payer.TENANT,
                period_from=lo,
                period_to=hi,
                quantity=None,
                unit="",
                unit_price=None,
                net=net,
                vat_class=vat_class,
                vat_rate=vat_rate,
                vat=to_ore(mul(net, vat_rate), rounding),
                spans=(),
                source="",
                estimated=False,
                estimate_method=None,
                estimate_reason=None,
                held=False,
                hold_reason=None,
                text=f"{name} a conto {lo:%Y-%m}",
                arithmetic=arith,
            )
        )
    return tuple(out)


_Key = tuple[str, str, str]  # apartment id, tenant ref, medium


def reconciliation_lines(
    actual: BillingRun, advances: Sequence[BillingLine], run_id: str
) -> tuple[BillingLine, ...]:
    """One true-up line per tenant and medium: the year's actual charge minus the advances billed.

    ``actual`` is the run over the reconciliation year; ``advances`` every a-conto line billed for
    it (lines whose period starts outside the year are ignored). Media without advances are not
    reconciled (they were billed monthly as measured); a zero difference gives no line.
    """
    lo, hi = actual.period_from, actual.period_to
    sums: dict[_Key, list[Decimal]] = {}  # [actual net, actual vat, paid net, paid vat]
    info: dict[_Key, BillingLine] = {}
    for line in advances:
        if line.kind is not LineKind.ACONTO or line.medium is None or not lo <= line.period_from < hi:
            continue
        key = (line.apartment_id or "", line.tenant_ref or "", str(line.medium))
        acc = sums.setdefault(key, [ZERO, ZERO, ZERO, ZERO])
        acc[2] += line.net
        acc[3] += line.vat
        info.setdefault(key, line)
    planned = {k[2] for k in sums}
    for line in actual.exportable():
        if line.medium is None or str(line.medium) not in planned:
            continue
        key = (line.apartment_id or "", line.tenant_ref or "", str(line.medium))
        acc = sums.setdefault(key, [ZERO, ZERO, ZERO, ZERO])
        acc[0] += line.net
        acc[1] += line.vat
        if key not in info or info[key].kind is LineKind.ACONTO:
            info[key] = line  # an actual line says best how the charge is classed (VAT)
    year = f"{lo.isoformat()}--{(hi - timedelta(days=1)).isoformat()}"
    out = []
    for key in sorted(sums, key=lambda k: (info[k].object_number, k[1], k[2])):
        real_net, real_vat, paid_net, paid_vat = sums[key]
        net, vat = real_net - paid_net, real_vat - paid_vat
        if not net and not vat:
            continue
        src = info[key]
        medium = src.medium
        assert medium is not None
        name = MEDIUM_TEXT[medium]
        out.append(
            BillingLine(
                line_id=make_line_id(run_id, "reconciliation", key[2], key[0], key[1], lo.isoformat()),
                run_id=run_id,
                kind=LineKind.RECONCILIATION,
                charge=f"trueup.{medium}",
                medium=medium,
                apartment_id=key[0],
                object_number=src.object_number,
                apartment_number=src.apartment_number,
                tenant_ref=key[1],
                payer=Payer.TENANT,
                period_from=lo,
                period_to=hi,
                quantity=None,
                unit="",
                unit_price=None,
                net=net,
                vat_class=src.vat_class,
                vat_rate=src.vat_rate,
                vat=vat,
                spans=(),
                source="",
                estimated=False,
                estimate_method=None,
                estimate_reason=None,
                held=False,
                hold_reason=None,
                text=f"{name} avräkning {year}",
                arithmetic=(
                    f"faktisk {fmt(real_net)} (moms {fmt(real_vat)}) - a conto {fmt(paid_net)} "
                    f"(moms {fmt(paid_vat)}) = {fmt(net)} (moms {fmt(vat)})"
                ),
            )
        )
    return tuple(out)


def reconciliation_run(
    actual: BillingRun, advances: Sequence[BillingLine], run_id: str, created_at: datetime, created_by: str
) -> BillingRun:
    """A draft run carrying the true-up lines (it goes through approve/export/lock like any run)."""
    lines = reconciliation_lines(actual, advances, run_id)
    net = sum((ln.net for ln in lines), ZERO)
    vat = sum((ln.vat for ln in lines), ZERO)
    summary = PropertySummary(
        property_id=actual.property_id,
        media=actual.summary.media,
        fixed_costs=(),
        net=net,
        vat=vat,
        gross=net + vat,
        held=ZERO,
        line_count=len(lines),
    )
    return BillingRun(
        run_id=run_id,
        property_id=actual.property_id,
        period_from=actual.period_from,
        period_to=actual.period_to,
        input_digest=actual.input_digest,
        lines=lines,
        summary=summary,
        state=RunState.DRAFT,
        audit=(AuditEntry(created_at, created_by, "reconciled", f"year run {actual.run_id}"),),
    )
