"""A billing run's result, its life (draft -> approved -> exported -> locked) and corrections.

Runs are values: a transition returns a new run with one more audit entry, so the stored history is
never rewritten. A correction never edits an old run either: the next run carries a credit of the
old line (negated, pointing at it) and the re-billed line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from .model import Medium
from .money import ZERO, fmt

__all__ = [
    "AuditEntry",
    "BillingLine",
    "BillingRun",
    "LineKind",
    "MediumSummary",
    "Payer",
    "PropertySummary",
    "RunState",
    "RunStateError",
    "RunStopped",
    "SpanView",
    "StopReason",
    "approve",
    "correction_lines",
    "lock",
    "make_line_id",
    "mark_exported",
]


class RunState(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    EXPORTED = "exported"
    LOCKED = "locked"


class LineKind(StrEnum):
    CONSUMPTION = "consumption"
    FIXED_FEE = "fixed_fee"  # debitering: the price list's fee per apartment
    FIXED_COST = "fixed_cost"  # other costs passed on (samfällighetsavgift ...)
    COMMON = "common"  # fördelning: main-meter difference carried by the property
    CREDIT = "credit"
    REBILL = "rebill"
    ACONTO = "aconto"  # a fixed advance per month, settled by the yearly reconciliation
    RECONCILIATION = "reconciliation"  # the year's actual charge minus the advances paid


class Payer(StrEnum):
    TENANT = "tenant"  # the tenant or member: goes on the notice
    PROPERTY = "property"  # vacant apartment, common losses: carried by the owner/association
    RENT = "rent"  # the medium is a flat amount in the rent: shown, not charged, VAT exempt


class RunStateError(Exception):
    """A transition the run's state does not allow."""


@dataclass(frozen=True, slots=True)
class SpanView:
    """One meter's part of a line: start and end register with date and source."""

    point_id: str
    meter_id: str
    start_at: datetime
    start_value: Decimal
    start_source: str
    end_at: datetime
    end_value: Decimal
    end_source: str
    reading_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BillingLine:
    line_id: str
    run_id: str
    kind: LineKind
    charge: str  # canonical charge: "heat", "cold_water", "fee.heat", "cost.<id>", "common.heat"
    medium: Medium | None
    apartment_id: str | None
    object_number: str
    apartment_number: str
    tenant_ref: str | None
    payer: Payer
    period_from: date
    period_to: date  # exclusive
    quantity: Decimal | None
    unit: str
    unit_price: Decimal | None
    net: Decimal
    vat_class: str  # "vat25" style, "exempt", or "outside" (not a supply: property-carried)
    vat_rate: Decimal
    vat: Decimal
    spans: tuple[SpanView, ...]
    source: str  # remote / manual / interpolated / estimated ... the weakest of the line's values
    estimated: bool
    estimate_method: str | None
    estimate_reason: str | None
    held: bool  # computed but held back from the billing file (open fault, missing reading)
    hold_reason: str | None
    text: str
    arithmetic: str
    corrects: str | None = None  # line id of the line this credits or re-bills
    point_id: str | None = None

    @property
    def gross(self) -> Decimal:
        return self.net + self.vat

    def match_key(self) -> tuple[str, ...]:
        """What identifies 'the same charge' across runs (for corrections)."""
        return (
            self.charge,
            self.apartment_id or "",
            self.tenant_ref or "",
            self.period_from.isoformat(),
            self.period_to.isoformat(),
            self.point_id or "",
            fmt(self.unit_price) if self.unit_price is not None else "",
        )


@dataclass(frozen=True, slots=True)
class StopReason:
    code: str  # estimated_share_over_limit, missing_readings, missing_cost, missing_price, missing_share
    medium: Medium | None
    detail: str
    approvable: bool


@dataclass(frozen=True, slots=True)
class MediumSummary:
    medium: Medium
    model: str
    unit: str
    cost: Decimal | None  # the property's real cost (the pool for a fördelning)
    cost_arithmetic: tuple[str, ...]
    main_quantity: Decimal | None
    apartments_quantity: Decimal
    difference_quantity: Decimal | None
    difference_percent: Decimal | None
    difference_rule: str | None
    charged_tenants: Decimal  # net on tenant lines, held lines included
    carried_by_property: Decimal  # vacant, common, rent-included
    held: Decimal
    total_lines: Decimal  # Σ net of every line of the medium
    cost_minus_lines: Decimal | None  # fördelning: always 0; debitering: the reported difference
    estimated_share: Decimal  # of the metered area, 0..1
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PropertySummary:
    property_id: str
    media: tuple[MediumSummary, ...]
    fixed_costs: tuple[tuple[str, Decimal], ...]
    net: Decimal
    vat: Decimal
    gross: Decimal
    held: Decimal
    line_count: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    by: str
    action: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class BillingRun:
    run_id: str
    property_id: str
    period_from: date
    period_to: date
    input_digest: str
    lines: tuple[BillingLine, ...]
    summary: PropertySummary
    state: RunState
    audit: tuple[AuditEntry, ...]
    approvals: tuple[str, ...] = ()  # stop reasons lifted by approval, "code:medium by who"

    def exportable(self) -> tuple[BillingLine, ...]:
        return tuple(line for line in self.lines if line.payer is Payer.TENANT and not line.held)


@dataclass(frozen=True, slots=True)
class RunStopped:
    """The run did not produce a bill: each reason says why; approvable ones can be approved."""

    run_id: str
    property_id: str
    period_from: date
    period_to: date
    input_digest: str
    reasons: tuple[StopReason, ...]
    preview: BillingRun | None = None  # the would-be draft, when every reason is approvable

    @property
    def needs_approval(self) -> bool:
        return all(r.approvable for r in self.reasons)


_NEXT = {
    RunState.DRAFT: (RunState.APPROVED, "approved"),
    RunState.APPROVED: (RunState.EXPORTED, "exported"),
    RunState.EXPORTED: (RunState.LOCKED, "locked"),
}


def _step(run: BillingRun, want: RunState, by: str, at: datetime, note: str) -> BillingRun:
    allowed = _NEXT.get(run.state)
    if allowed is None or allowed[0] is not want:
        raise RunStateError(f"run {run.run_id}: cannot go from {run.state} to {want}")
    return replace(run, state=want, audit=(*run.audit, AuditEntry(at, by, allowed[1], note)))


def approve(run: BillingRun, by: str, at: datetime, note: str = "") -> BillingRun:
    return _step(run, RunState.APPROVED, by, at, note)


def mark_exported(run: BillingRun, by: str, at: datetime, file_sha256: str) -> BillingRun:
    return _step(run, RunState.EXPORTED, by, at, f"sha256={file_sha256}")


def lock(run: BillingRun, by: str, at: datetime, note: str = "") -> BillingRun:
    return _step(run, RunState.LOCKED, by, at, note)


_SHA256 = hashlib.sha256()


def make_line_id(run_id: str, *parts: str) -> str:
    """A stable id: the same charge in the same run always gets the same id (idempotent import)."""
    sha = _SHA256.copy()  # a copy of an empty hash skips OpenSSL's per-constructor digest fetch
    sha.update("\x1f".join((run_id, *parts)).encode("utf-8"))
    return f"{run_id}-{sha.digest()[:8].hex()}"  # = the first 16 hex digits of the SHA-256


def correction_lines(
    original: BillingRun | Sequence[BillingRun], recomputed: BillingRun, run_id: str
) -> tuple[BillingLine, ...]:
    """Credit + re-bill for every billed charge of the recomputed period that ``recomputed`` changes.

    ``original`` is the run (or every run, earlier corrections included) that billed the period;
    only lines that went out (exportable) and whose period starts inside ``recomputed``'s period
    count. Per charge (``match_key``) what was billed so far is summed: if it differs from the
    recomputed line, one credit of that sum (negated, pointing at the last billed line) and the
    re-billed line are produced. Held or new charges are simply billed; unchanged ones produce
    nothing. The result goes into the *next* run (``compute_run(..., corrections=...)``); the old
    runs are not touched, and the same inputs give the same line ids (an import can be idempotent).
    """
    runs = [original] if isinstance(original, BillingRun) else list(original)
    for run in runs:
        if run.state not in (RunState.EXPORTED, RunState.LOCKED):
            raise RunStateError(f"run {run.run_id} has not gone out; recompute the draft instead")
    lo, hi = recomputed.period_from, recomputed.period_to
    billed: dict[tuple[str, ...], list[BillingLine]] = {}
    for run in runs:
        for line in run.exportable():
            if lo <= line.period_from < hi:
                billed.setdefault(line.match_key(), []).append(line)
    fresh = {line.match_key(): line for line in recomputed.exportable()}
    out: list[BillingLine] = []
    for key in sorted(billed.keys() | fresh.keys()):
        old_lines, new = billed.get(key, []), fresh.get(key)
        qty = _sum_optional(ln.quantity for ln in old_lines)
        net = sum((ln.net for ln in old_lines), ZERO)
        vat = sum((ln.vat for ln in old_lines), ZERO)
        if new is not None and (qty, net, vat) == (new.quantity, new.net, new.vat):
            continue
        last = old_lines[-1] if old_lines else None
        if last is not None and (net or vat):
            out.append(
                replace(
                    last,
                    line_id=make_line_id(run_id, "credit", last.line_id),
                    run_id=run_id,
                    kind=LineKind.CREDIT,
                    quantity=-qty if qty is not None else None,
                    net=-net,
                    vat=-vat,
                    text=f"Kreditering av {last.line_id}: {last.text}",
                    corrects=last.line_id,
                )
            )
        if new is not None:
            out.append(
                replace(
                    new,
                    line_id=make_line_id(run_id, "rebill", new.line_id),
                    run_id=run_id,
                    kind=LineKind.REBILL,
                    text=f"Rättelse: {new.text}",
                    corrects=last.line_id if last is not None else None,
                )
            )
    return tuple(out)


def _sum_optional(values: Iterable[Decimal | None]) -> Decimal | None:
    present = [v for v in values if v is not None]
    return sum(present, ZERO) if present else None


def sum_net(lines: tuple[BillingLine, ...]) -> Decimal:
    return sum((line.net for line in lines), ZERO)
