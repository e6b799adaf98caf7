"""Tenancies: who lived in an apartment when, as the rental administration's register says.

Billing splits an apartment's period at a move so that each tenant or member gets their own lines
(``central.billing.engine`` cuts at the move dates; a reading on the move day splits by readings,
otherwise by days). Dates are local days, half-open like every period in billing: ``move_out`` is
the first day the apartment is no longer occupied by that tenant (moving out on 1 April means living
there through 31 March); ``None`` while the tenancy runs.

An apartment with stored tenancies is occupied exactly by them (a gap is vacant: the property pays);
an apartment without any keeps the old rule, its ``tenant_ref`` (or object number) for the whole
period, so properties whose register has not been imported bill as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from central.billing.model import TenantPeriod
from central.models import Apartment, Tenancy

__all__ = [
    "MOVE_IN_ALWAYS",
    "TenancyError",
    "TenancySpan",
    "check_dates",
    "describe",
    "first_overlap",
    "occupancy",
    "tenancy_dict",
]

MOVE_IN_ALWAYS = date(1900, 1, 1)  # the fallback tenant's move-in: before any billing period


class TenancyError(ValueError):
    """Two tenancies of one apartment overlap, or a tenancy's dates are out of order."""


@dataclass(frozen=True, slots=True)
class TenancySpan:
    """The part of a tenancy the overlap rule looks at (stored rows and rows being written alike)."""

    tenant_ref: str
    move_in: date
    move_out: date | None
    ident: Any = None  # the row id (or the file's row number): to leave a row out when it is replaced


def check_dates(move_in: date, move_out: date | None) -> None:
    if move_out is not None and move_out <= move_in:
        raise TenancyError(
            f"move_out: {move_out.isoformat()} must be after move_in {move_in.isoformat()} "
            "(move_out is the first day no longer occupied)"
        )


def _overlaps(a: TenancySpan, b: TenancySpan) -> bool:
    a_end = a.move_out or date.max
    b_end = b.move_out or date.max
    return a.move_in < b_end and b.move_in < a_end


def first_overlap(new: TenancySpan, others: Iterable[TenancySpan]) -> TenancySpan | None:
    """The earliest other tenancy (by move-in) that shares a day with ``new``, if any."""
    hits = [o for o in others if o.ident != new.ident and _overlaps(new, o)]
    return min(hits, key=lambda o: (o.move_in, o.tenant_ref)) if hits else None


def describe(span: TenancySpan) -> str:
    out = span.move_out.isoformat() if span.move_out else "open"
    return f"{span.tenant_ref} {span.move_in.isoformat()}..{out}"


def occupancy(apartments: Sequence[Apartment], tenancies: Iterable[Tenancy]) -> tuple[TenantPeriod, ...]:
    """The engine's tenant periods for ``apartments`` (engine apartment id = object number).

    Sorted by (object number, move-in) so that the run's input, and so its digest, does not depend
    on the order rows came back from the database."""
    by_apartment: dict[int, list[Tenancy]] = {}
    for t in tenancies:
        by_apartment.setdefault(t.apartment_id, []).append(t)
    out: list[TenantPeriod] = []
    for a in apartments:
        stored = by_apartment.get(a.id)
        if stored:
            out.extend(TenantPeriod(a.object_number, t.tenant_ref, t.move_in, t.move_out) for t in stored)
        else:
            out.append(TenantPeriod(a.object_number, a.tenant_ref or a.object_number, MOVE_IN_ALWAYS))
    return tuple(sorted(out, key=lambda t: (t.apartment_id, t.move_in, t.tenant_ref)))


def tenancy_dict(t: Tenancy, apartment: Apartment) -> dict[str, Any]:
    return {
        "id": t.id,
        "apartment": apartment.id,
        "object_number": apartment.object_number,
        "number": apartment.number,
        "tenant_ref": t.tenant_ref,
        "name": t.name,
        "move_in": t.move_in.isoformat(),
        "move_out": t.move_out.isoformat() if t.move_out else None,
    }
