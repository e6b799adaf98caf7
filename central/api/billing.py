"""Billing REST API under ``/api/billing``: settings, price lists, supplier invoices, fixed costs, runs.

Admin and staff manage; board members (and managers) read the properties linked to them; anyone else
gets 403, and a property outside a board member's scope is 404 (its existence is not disclosed).

A run's life: ``POST .../runs`` computes a draft (or a *stopped* run whose reasons are returned and
which waits for approval), ``approve``, ``export`` (debiteringsfil in a chosen profile, the
invoicing-partner file and Peppol UBL when invoicing is configured, and the PDFs, all into the
archive with SHA-256), ``lock``. An exported run never changes; ``correct`` recomputes the period
and creates a new run with credit and re-bill lines. Every step writes the audit log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from central.api.deps import PrincipalDep, SessionDep, StateDep
from central.auth import Principal
from central.billing import (
    EXCEL_CSV,
    FIXED_WIDTH_CP1252,
    GENERIC_CSV,
    compute_run,
    load_profile,
    render,
)
from central.billing.documents import apartment_documents, property_summary_document
from central.billing.export import ExportError
from central.billing.invoicing import (
    Customer,
    InvoicingSettings,
    invoices_csv,
    invoices_from_run,
    ubl_invoices,
)
from central.billing.model import Approval, Frequency, Medium
from central.billing.periods import BillingPeriod, period_containing
from central.billing.runs import (
    BillingRun,
    RunState,
    RunStateError,
    RunStopped,
    approve,
    correction_lines,
    lock,
    mark_exported,
)
from central.billing.serial import to_jsonable
from central.billing.store import (
    UNITS,
    BillingSetupError,
    archive_documents,
    comparisons_for,
    document_context,
    document_items,
    load_input,
    load_run,
    next_run_id,
    raw_frames_of,
    save_run,
    update_run,
)
from central.csv_import import CsvImportError, csv_text, import_tenancies_csv
from central.models import (
    Apartment,
    AuditLog,
    BillingDocument,
    BillingFixedCost,
    BillingLineReading,
    BillingPrice,
    BillingRunRecord,
    BillingSettings,
    BillingSupplierInvoice,
    BillingSupplierInvoiceLine,
    Property,
    RawFrame,
    Tenancy,
)
from central.models import Reading as ReadingRow
from central.tenancies import TenancyError, TenancySpan, check_dates, describe, first_overlap, tenancy_dict

router = APIRouter(prefix="/api/billing", tags=["billing"])

PROFILES = {"generic_csv": GENERIC_CSV, "excel": EXCEL_CSV, "fixed_width_cp1252": FIXED_WIDTH_CP1252}
READ_ROLES = frozenset({"admin", "staff", "technician", "board"})


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _exact(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("give amounts as strings or integers (exact), not binary floats")
    return value


class MediumSettings(_In):
    model: Literal["debitering", "fordelning"] = "debitering"
    fixed_key_share: Decimal = Field(default=Decimal(0), ge=0, le=1)
    fixed_key: Literal["area", "count", "share"] = "area"
    difference_rule: Literal["consumption", "area", "association"] = "consumption"

    _no_float = field_validator("fixed_key_share", mode="before")(_exact)


class InvoicingIn(_In):
    seller_name: str
    seller_org_number: str = Field(pattern=r"^[0-9]{6}-?[0-9]{4}$")
    seller_street: str
    seller_postal_code: str
    seller_city: str
    bankgiro: str
    next_invoice_number: int = Field(default=1, ge=1)
    seller_vat_number: str | None = None
    payment_terms_days: int = Field(default=30, ge=0, le=365)


class SettingsIn(_In):
    frequency: Literal["monthly", "quarterly"] = "monthly"
    lag_months: int = Field(default=1, ge=1, le=5)
    timezone: str = "Europe/Stockholm"
    vat_registered: bool = False
    vat_rate: Decimal = Field(default=Decimal("0.25"), ge=0, le=1)
    vat_rounding: Literal["line", "total"] = "line"
    rounding: Literal["half_up", "half_even", "down", "up"] = "half_up"
    reading_decimals: int = Field(default=3, ge=0, le=6)
    max_extrapolation_days: int = Field(default=7, ge=0, le=62)
    fault_policy: Literal["hold", "estimate"] = "hold"
    estimated_share_limit: Decimal = Field(default=Decimal("0.25"), ge=0, le=1)
    media: dict[Medium, MediumSettings] = Field(default_factory=dict)
    invoicing: InvoicingIn | None = None

    _no_float = field_validator("vat_rate", "estimated_share_limit", mode="before")(_exact)

    @field_validator("media")
    @classmethod
    def _billable(cls, media: dict[Medium, MediumSettings]) -> dict[Medium, MediumSettings]:
        for medium in media:
            if str(medium) not in UNITS:
                raise ValueError(f"medium {medium} has no billing register")
        return media


class PriceIn(_In):
    medium: Medium
    valid_from: date
    valid_to: date | None = None
    unit_price: Decimal = Field(ge=0)
    fixed_fee_per_month: Decimal = Field(default=Decimal(0), ge=0)

    _no_float = field_validator("unit_price", "fixed_fee_per_month", mode="before")(_exact)


class InvoiceLineIn(_In):
    kind: Literal["fixed_fee", "energy", "power", "flow", "tax", "vat", "other"]
    amount: Decimal
    quantity: Decimal | None = None
    unit: str | None = Field(default=None, max_length=16)
    text: str = Field(default="", max_length=200)

    _no_float = field_validator("amount", "quantity", mode="before")(_exact)


class SupplierInvoiceIn(_In):
    supplier: str = Field(min_length=1, max_length=200)
    reference: str = Field(default="", max_length=64)
    medium: Medium
    period_from: date
    period_to: date
    lines: list[InvoiceLineIn] = Field(min_length=1)


class FixedCostIn(_In):
    name: str = Field(min_length=1, max_length=200)
    amount_per_month: Decimal
    key: Literal["area", "count", "share"] = "area"
    taxable: bool = False
    valid_from: date | None = None
    valid_to: date | None = None

    _no_float = field_validator("amount_per_month", mode="before")(_exact)


class RunIn(_In):
    period_from: date = Field(description="the first day of the billing period")


class NoteIn(_In):
    note: str = Field(default="", max_length=500)


class ExportIn(_In):
    profile: str = Field(
        default="generic_csv", description="generic_csv, excel, fixed_width_cp1252 or custom"
    )
    profile_toml: str | None = Field(
        default=None, description="a custom profile (TOML) instead of a named one"
    )
    language: Literal["sv", "en"] = "sv"
    issue_date: date | None = None
    invoicing: bool = True


# --- helpers ----------------------------------------------------------------------------------------


def _require_reader(who: Principal) -> None:
    if who.role not in READ_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {who.role} may not see billing")


def _require_editor(who: Principal) -> None:
    if not who.can_edit:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {who.role} may not change billing")


async def _property(session: AsyncSession, who: Principal, key: str, *, edit: bool = False) -> Property:
    (_require_editor if edit else _require_reader)(who)
    prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one_or_none()
    if prop is None or not (who.sees_all or prop.id in who.property_ids):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no property {key} visible to you")
    return prop


async def _property_by_id(session: AsyncSession, who: Principal, property_id: int, *, edit: bool) -> Property:
    (_require_editor if edit else _require_reader)(who)
    prop = await session.get(Property, property_id)
    if prop is None or not (who.sees_all or prop.id in who.property_ids):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
    return prop


def _audit(  # noqa: PLR0917 - reads as the audit row it writes
    session: AsyncSession, who: Principal, action: str, entity: str, entity_id: Any, detail: str
) -> None:
    session.add(
        AuditLog(
            at=datetime.now(UTC),
            actor=who.username,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            detail=detail,
        )
    )


def _plain(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: to_jsonable(getattr(obj, n)) for n in names}


_PRICE_FIELDS = ("id", "medium", "valid_from", "valid_to", "unit_price", "fixed_fee_per_month")
_COST_FIELDS = ("id", "name", "amount_per_month", "key", "taxable", "valid_from", "valid_to")
_INVOICE_FIELDS = ("id", "supplier", "reference", "medium", "period_from", "period_to")
_LINE_FIELDS = ("position", "kind", "amount", "quantity", "unit", "text")


def _settings_dict(prop: Property, row: BillingSettings) -> dict[str, Any]:
    out = _plain(
        row,
        (
            "frequency",
            "lag_months",
            "timezone",
            "vat_registered",
            "vat_rate",
            "vat_rounding",
            "rounding",
            "reading_decimals",
            "max_extrapolation_days",
            "fault_policy",
            "estimated_share_limit",
            "updated_at",
            "updated_by",
        ),
    )
    out["property"] = prop.key
    out["media"] = json.loads(row.media)
    out["invoicing"] = json.loads(row.invoicing) if row.invoicing else None
    return out


# --- settings ---------------------------------------------------------------------------------------


@router.get("/properties/{key}/settings")
async def get_settings(key: str, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    prop = await _property(session, who, key)
    row = await session.get(BillingSettings, prop.id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"property {key} has no billing settings yet")
    return _settings_dict(prop, row)


@router.put("/properties/{key}/settings")
async def put_settings(key: str, body: SettingsIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    prop = await _property(session, who, key, edit=True)
    row = await session.get(BillingSettings, prop.id)
    if row is None:
        row = BillingSettings(property_id=prop.id)
        session.add(row)
    values = body.model_dump(exclude={"media", "invoicing"})
    for name, value in values.items():
        setattr(row, name, value)
    row.media = json.dumps(
        {str(m): to_jsonable(cfg.model_dump()) for m, cfg in sorted(body.media.items())}, sort_keys=True
    )
    row.invoicing = json.dumps(body.invoicing.model_dump(), sort_keys=True) if body.invoicing else None
    row.updated_at, row.updated_by = datetime.now(UTC), who.username
    _audit(session, who, "billing.settings.put", "property", prop.key, body.model_dump_json())
    await session.commit()
    return _settings_dict(prop, row)


# --- price lists ------------------------------------------------------------------------------------


def _check_range(lo: date | None, hi: date | None) -> None:
    if lo is not None and hi is not None and hi <= lo:
        raise HTTPException(422, detail="valid_to/period_to must be after valid_from/period_from")


@router.get("/properties/{key}/prices")
async def list_prices(key: str, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    prop = await _property(session, who, key)
    rows = await session.execute(
        select(BillingPrice)
        .where(BillingPrice.property_id == prop.id)
        .order_by(BillingPrice.medium, BillingPrice.valid_from, BillingPrice.id)
    )
    return [_plain(r, _PRICE_FIELDS) for r in rows.scalars()]


async def _no_overlap(session: AsyncSession, prop: Property, body: PriceIn, skip: int | None = None) -> None:
    rows = await session.execute(
        select(BillingPrice).where(
            BillingPrice.property_id == prop.id, BillingPrice.medium == str(body.medium)
        )
    )
    for other in rows.scalars():
        if other.id == skip:
            continue
        if (other.valid_to is None or body.valid_from < other.valid_to) and (
            body.valid_to is None or other.valid_from < body.valid_to
        ):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"overlaps price {other.id} ({other.valid_from} - {other.valid_to or 'open'})",
            )


@router.post("/properties/{key}/prices", status_code=201)
async def create_price(key: str, body: PriceIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    prop = await _property(session, who, key, edit=True)
    _check_range(body.valid_from, body.valid_to)
    await _no_overlap(session, prop, body)
    row = BillingPrice(property_id=prop.id, **{**body.model_dump(), "medium": str(body.medium)})
    session.add(row)
    await session.flush()
    _audit(session, who, "billing.price.create", "billing_price", row.id, body.model_dump_json())
    await session.commit()
    return _plain(row, _PRICE_FIELDS)


@router.put("/prices/{price_id}")
async def update_price(
    price_id: int, body: PriceIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    row = await session.get(BillingPrice, price_id)
    if row is None:
        raise HTTPException(404, detail=f"no price {price_id}")
    prop = await _property_by_id(session, who, row.property_id, edit=True)
    _check_range(body.valid_from, body.valid_to)
    await _no_overlap(session, prop, body, skip=row.id)
    for name, value in body.model_dump().items():
        setattr(row, name, str(value) if name == "medium" else value)
    _audit(session, who, "billing.price.update", "billing_price", row.id, body.model_dump_json())
    await session.commit()
    return _plain(row, _PRICE_FIELDS)


@router.delete("/prices/{price_id}", status_code=204)
async def delete_price(price_id: int, who: PrincipalDep, session: SessionDep) -> Response:
    row = await session.get(BillingPrice, price_id)
    if row is None:
        raise HTTPException(404, detail=f"no price {price_id}")
    await _property_by_id(session, who, row.property_id, edit=True)
    await session.delete(row)
    _audit(session, who, "billing.price.delete", "billing_price", price_id, "")
    await session.commit()
    return Response(status_code=204)


# --- supplier invoices ------------------------------------------------------------------------------


async def _invoice_dict(session: AsyncSession, row: BillingSupplierInvoice) -> dict[str, Any]:
    lines = await session.execute(
        select(BillingSupplierInvoiceLine)
        .where(BillingSupplierInvoiceLine.invoice_id == row.id)
        .order_by(BillingSupplierInvoiceLine.position)
    )
    return {**_plain(row, _INVOICE_FIELDS), "lines": [_plain(ln, _LINE_FIELDS) for ln in lines.scalars()]}


@router.get("/properties/{key}/invoices")
async def list_invoices(key: str, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    prop = await _property(session, who, key)
    rows = await session.execute(
        select(BillingSupplierInvoice)
        .where(BillingSupplierInvoice.property_id == prop.id)
        .order_by(BillingSupplierInvoice.period_from, BillingSupplierInvoice.id)
    )
    return [await _invoice_dict(session, r) for r in rows.scalars().all()]


async def _write_invoice_lines(session: AsyncSession, invoice_id: int, body: SupplierInvoiceIn) -> None:
    await session.execute(
        delete(BillingSupplierInvoiceLine).where(BillingSupplierInvoiceLine.invoice_id == invoice_id)
    )
    for n, ln in enumerate(body.lines, start=1):
        session.add(BillingSupplierInvoiceLine(invoice_id=invoice_id, position=n, **ln.model_dump()))
    await session.flush()


@router.post("/properties/{key}/invoices", status_code=201)
async def create_invoice(
    key: str, body: SupplierInvoiceIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    prop = await _property(session, who, key, edit=True)
    _check_range(body.period_from, body.period_to)
    row = BillingSupplierInvoice(
        property_id=prop.id,
        supplier=body.supplier,
        reference=body.reference,
        medium=str(body.medium),
        period_from=body.period_from,
        period_to=body.period_to,
        created_at=datetime.now(UTC),
        created_by=who.username,
    )
    session.add(row)
    await session.flush()
    await _write_invoice_lines(session, row.id, body)
    _audit(session, who, "billing.invoice.create", "billing_supplier_invoice", row.id, body.model_dump_json())
    await session.commit()
    return await _invoice_dict(session, row)


@router.put("/invoices/{invoice_id}")
async def update_invoice(
    invoice_id: int, body: SupplierInvoiceIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    row = await session.get(BillingSupplierInvoice, invoice_id)
    if row is None:
        raise HTTPException(404, detail=f"no invoice {invoice_id}")
    await _property_by_id(session, who, row.property_id, edit=True)
    _check_range(body.period_from, body.period_to)
    row.supplier, row.reference, row.medium = body.supplier, body.reference, str(body.medium)
    row.period_from, row.period_to = body.period_from, body.period_to
    await _write_invoice_lines(session, row.id, body)
    _audit(session, who, "billing.invoice.update", "billing_supplier_invoice", row.id, body.model_dump_json())
    await session.commit()
    return await _invoice_dict(session, row)


@router.delete("/invoices/{invoice_id}", status_code=204)
async def delete_invoice(invoice_id: int, who: PrincipalDep, session: SessionDep) -> Response:
    row = await session.get(BillingSupplierInvoice, invoice_id)
    if row is None:
        raise HTTPException(404, detail=f"no invoice {invoice_id}")
    await _property_by_id(session, who, row.property_id, edit=True)
    await session.execute(
        delete(BillingSupplierInvoiceLine).where(BillingSupplierInvoiceLine.invoice_id == invoice_id)
    )
    await session.delete(row)
    _audit(session, who, "billing.invoice.delete", "billing_supplier_invoice", invoice_id, "")
    await session.commit()
    return Response(status_code=204)


# --- fixed costs ------------------------------------------------------------------------------------


@router.get("/properties/{key}/fixed-costs")
async def list_fixed_costs(key: str, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    prop = await _property(session, who, key)
    rows = await session.execute(
        select(BillingFixedCost).where(BillingFixedCost.property_id == prop.id).order_by(BillingFixedCost.id)
    )
    return [_plain(r, _COST_FIELDS) for r in rows.scalars()]


@router.post("/properties/{key}/fixed-costs", status_code=201)
async def create_fixed_cost(
    key: str, body: FixedCostIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    prop = await _property(session, who, key, edit=True)
    _check_range(body.valid_from, body.valid_to)
    row = BillingFixedCost(property_id=prop.id, **body.model_dump())
    session.add(row)
    await session.flush()
    _audit(session, who, "billing.fixed_cost.create", "billing_fixed_cost", row.id, body.model_dump_json())
    await session.commit()
    return _plain(row, _COST_FIELDS)


@router.put("/fixed-costs/{cost_id}")
async def update_fixed_cost(
    cost_id: int, body: FixedCostIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    row = await session.get(BillingFixedCost, cost_id)
    if row is None:
        raise HTTPException(404, detail=f"no fixed cost {cost_id}")
    await _property_by_id(session, who, row.property_id, edit=True)
    _check_range(body.valid_from, body.valid_to)
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    _audit(session, who, "billing.fixed_cost.update", "billing_fixed_cost", row.id, body.model_dump_json())
    await session.commit()
    return _plain(row, _COST_FIELDS)


@router.delete("/fixed-costs/{cost_id}", status_code=204)
async def delete_fixed_cost(cost_id: int, who: PrincipalDep, session: SessionDep) -> Response:
    row = await session.get(BillingFixedCost, cost_id)
    if row is None:
        raise HTTPException(404, detail=f"no fixed cost {cost_id}")
    await _property_by_id(session, who, row.property_id, edit=True)
    await session.delete(row)
    _audit(session, who, "billing.fixed_cost.delete", "billing_fixed_cost", cost_id, "")
    await session.commit()
    return Response(status_code=204)


# --- runs -------------------------------------------------------------------------------------------


def _run_view(record: BillingRunRecord, result: BillingRun | RunStopped, *, lines: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": record.id,
        "property_id": record.property_id,
        "period_from": record.period_from.isoformat(),
        "period_to": record.period_to.isoformat(),
        "kind": record.kind,
        "corrects_run_id": record.corrects_run_id,
        "state": record.state,
        "input_digest": record.input_digest,
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
    }
    run: BillingRun | None = result if isinstance(result, BillingRun) else result.preview
    if isinstance(result, RunStopped):
        out["stop_reasons"] = to_jsonable(result.reasons)
        out["needs_approval"] = result.needs_approval
    if run is not None:
        out["summary"] = to_jsonable(run.summary)
        out["audit"] = to_jsonable(run.audit)
        out["approvals"] = list(run.approvals)
        if lines:
            out["lines"] = [{**to_jsonable(ln), "gross": to_jsonable(ln.gross)} for ln in run.lines]
    return out


async def _run_for(session: AsyncSession, who: Principal, run_id: str, *, edit: bool) -> tuple[Any, Property]:
    stored = await load_run(session, run_id)
    if stored is None:
        raise HTTPException(404, detail=f"no run {run_id}")
    try:
        prop = await _property_by_id(session, who, stored.record.property_id, edit=edit)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(404, detail=f"no run {run_id}") from None
        raise
    return stored, prop


def _period(settings: BillingSettings, start: date) -> BillingPeriod:
    period = period_containing(start, Frequency(settings.frequency))
    if period.start != start:
        raise HTTPException(
            422,
            detail=f"period_from {start} is not the start of a {settings.frequency} period ({period.start})",
        )
    return period


async def _compute(  # noqa: PLR0917 - private, called twice
    session: AsyncSession,
    prop: Property,
    who: Principal,
    period: BillingPeriod,
    run_id: str,
    corrections: tuple[Any, ...] = (),
) -> tuple[BillingRun | RunStopped, dict[str, int], dict[str, str | None]]:
    try:
        inp, apartment_ids = await load_input(session, prop, period.start, period.end)
    except BillingSetupError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail={"reasons": exc.reasons}) from None
    result = compute_run(inp, run_id, datetime.now(UTC), who.username, corrections=corrections)
    return result, apartment_ids, raw_frames_of(inp)


@router.get("/properties/{key}/runs")
async def list_runs(key: str, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    prop = await _property(session, who, key)
    rows = await session.execute(
        select(BillingRunRecord)
        .where(BillingRunRecord.property_id == prop.id)
        .order_by(BillingRunRecord.period_from.desc(), BillingRunRecord.id.desc())
    )
    return [
        {
            **_plain(r, ("id", "period_from", "period_to", "kind", "state", "input_digest", "net", "vat")),
            "line_count": r.line_count,
            "corrects_run_id": r.corrects_run_id,
        }
        for r in rows.scalars()
    ]


@asynccontextmanager
async def _run_id_taken_is_a_conflict(session: AsyncSession) -> AsyncIterator[None]:
    """Saving a new run: its id is a count of the period's runs, so a run saved meanwhile by another
    request has it already, which the insert (or, where it waited for the other's lock, the commit)
    refuses. That is a 409 to retry, with nothing of this request stored."""
    try:
        yield
    except IntegrityError:
        await session.rollback()
        raise HTTPException(
            409, detail="another run for this period was created at the same time; retry"
        ) from None


@router.post("/properties/{key}/runs", status_code=201)
async def create_run(
    key: str, body: RunIn, who: PrincipalDep, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Compute a draft for the period. A run stopped for approval is stored too (state ``stopped``)
    and answered with 202 and its reasons; one that cannot be billed at all is 409 with the reasons."""
    prop = await _property(session, who, key, edit=True)
    settings = await session.get(BillingSettings, prop.id)
    if settings is None:
        raise HTTPException(409, detail={"reasons": [f"property {key}: no billing settings"]})
    period = _period(settings, body.period_from)
    run_id = await next_run_id(session, prop, period.start)
    result, apartment_ids, frames = await _compute(session, prop, who, period, run_id)
    if isinstance(result, RunStopped) and not result.needs_approval:
        _audit(
            session,
            who,
            "billing.run.refused",
            "billing_run",
            run_id,
            json.dumps(to_jsonable(result.reasons)),
        )
        await session.commit()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={"reasons": to_jsonable(result.reasons), "input_digest": result.input_digest},
        )
    async with _run_id_taken_is_a_conflict(session):
        record = await save_run(
            session, prop, result, apartment_ids, created_by=who.username, raw_frames=frames
        )
        _audit(
            session,
            who,
            "billing.run.create",
            "billing_run",
            run_id,
            f"state={record.state} input={result.input_digest}",
        )
        await session.commit()
    if isinstance(result, RunStopped):
        response.status_code = status.HTTP_202_ACCEPTED
    return _run_view(record, result, lines=False)


@router.get("/runs/{run_id}")
async def get_run(run_id: str, who: PrincipalDep, session: SessionDep, lines: bool = True) -> dict[str, Any]:
    stored, _prop = await _run_for(session, who, run_id, edit=False)
    return _run_view(stored.record, stored.result, lines=lines)


@router.post("/runs/{run_id}/approve")
async def approve_run(run_id: str, body: NoteIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Approve a draft; or a stopped run: its approvable reasons are lifted by this approval (recorded
    on the run) and the figures that were shown are approved as they are."""
    stored, prop = await _run_for(session, who, run_id, edit=True)
    now = datetime.now(UTC)
    result = stored.result
    if isinstance(result, RunStopped):
        if not result.needs_approval or result.preview is None:
            raise HTTPException(409, detail={"reasons": to_jsonable(result.reasons)})
        lifted = tuple(
            f"{Approval(r.code, r.medium, who.username, now).code}:{r.medium or '*'} by {who.username} "
            f"at {now.isoformat()}"
            for r in result.reasons
        )
        run = replace(result.preview, approvals=(*result.preview.approvals, *lifted))
        inp, apartment_ids = await load_input(session, prop, run.period_from, run.period_to)
        frames = raw_frames_of(inp)
    else:
        run, apartment_ids, frames = result, None, None
    try:
        approved = approve(run, who.username, now, body.note)
    except RunStateError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    await update_run(session, stored.record, approved, apartment_ids, frames)
    _audit(session, who, "billing.run.approve", "billing_run", run_id, body.note)
    await session.commit()
    return _run_view(stored.record, approved, lines=False)


def _customers(
    run: BillingRun, apts: dict[str, Apartment], prop: Property, names: Mapping[str, str]
) -> dict[str, Customer]:
    out: dict[str, Customer] = {}
    for line in run.exportable():
        ref = line.tenant_ref or ""
        if ref in out:
            continue
        apt = apts.get(line.object_number)
        out[ref] = Customer(
            ref=ref,
            name=names.get(ref) or ref,  # the tenancy register's name when it has one
            street=(apt.address if apt is not None and apt.address else prop.address) or prop.name,
            postal_code="",
            city=prop.city,
        )
    return out


@router.post("/runs/{run_id}/export")
async def export_run(run_id: str, body: ExportIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """The debiteringsfil (chosen profile), the invoicing-partner file and Peppol UBL (when invoicing is
    configured), the debiteringsunderlag PDFs and the property summary, into the archive; the run is
    then ``exported`` and never changes again."""
    stored, prop = await _run_for(session, who, run_id, edit=True)
    if not isinstance(stored.result, BillingRun) or stored.result.state is not RunState.APPROVED:
        raise HTTPException(
            409, detail=f"run {run_id} is {stored.record.state}: only an approved run is exported"
        )
    run = stored.result
    try:
        profile = load_profile(body.profile_toml) if body.profile_toml else PROFILES[body.profile]
    except KeyError:
        raise HTTPException(
            422, detail=f"unknown profile {body.profile}; one of {sorted(PROFILES)}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, detail=f"profile: {exc}") from None
    try:
        billing_file = render(run, profile)
    except ExportError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    ext = ".txt" if profile.fixed_width else ".csv"
    items: list[tuple[str, str, str | None, str | None, bytes]] = [
        ("debiteringsfil", f"debiteringsfil_{run_id}_{profile.name}{ext}", None, None, billing_file)
    ]
    settings = await session.get(BillingSettings, prop.id)
    apt_rows = {
        a.object_number: a
        for a in (await session.execute(select(Apartment).where(Apartment.property_id == prop.id))).scalars()
    }
    apartment_ids = {k: a.id for k, a in apt_rows.items()}
    ctx = await document_context(session, prop, body.language)
    invoicing_note = "not configured"
    if body.invoicing and settings is not None and settings.invoicing:
        cfg = json.loads(settings.invoicing)
        inv_settings = InvoicingSettings(
            seller_name=cfg["seller_name"],
            seller_org_number=cfg["seller_org_number"].replace("-", ""),
            seller_street=cfg["seller_street"],
            seller_postal_code=cfg["seller_postal_code"],
            seller_city=cfg["seller_city"],
            bankgiro=cfg["bankgiro"],
            issue_date=body.issue_date or datetime.now(UTC).date(),
            first_invoice_number=int(cfg.get("next_invoice_number", 1)),
            seller_vat_number=cfg.get("seller_vat_number"),
            payment_terms_days=int(cfg.get("payment_terms_days", 30)),
        )
        invoices = invoices_from_run(run, _customers(run, apt_rows, prop, ctx.tenant_names), inv_settings)
        items.append(("invoices", f"fakturor_{run_id}.csv", None, None, invoices_csv(invoices, inv_settings)))
        for number, xml in sorted(ubl_invoices(invoices, inv_settings).items()):
            items.append(("ubl", f"peppol_{run_id}_{number}.xml", None, None, xml))
        cfg["next_invoice_number"] = inv_settings.first_invoice_number + len(invoices)
        settings.invoicing = json.dumps(cfg, sort_keys=True)
        invoicing_note = f"{len(invoices)} invoices"
    ctx = replace(ctx, comparisons=await comparisons_for(session, prop, run))
    docs = [*apartment_documents(run, ctx), property_summary_document(run, ctx)]
    items += document_items(docs)
    archived = await archive_documents(session, prop, run_id, items, apartment_ids)
    exported = mark_exported(run, who.username, datetime.now(UTC), archived[0].sha256)
    await update_run(session, stored.record, exported)
    _audit(
        session,
        who,
        "billing.run.export",
        "billing_run",
        run_id,
        f"profile={profile.name} documents={len(archived)} invoicing={invoicing_note} "
        f"sha256={archived[0].sha256}",
    )
    await session.commit()
    return {
        **_run_view(stored.record, exported, lines=False),
        "documents": [_doc_dict(d) for d in archived],
    }


def _doc_dict(d: BillingDocument) -> dict[str, Any]:
    return {
        "id": d.id,
        "kind": d.kind,
        "name": d.name,
        "content_type": d.content_type,
        "size": d.size,
        "sha256": d.sha256,
        "apartment_id": d.apartment_id,
        "tenant_ref": d.tenant_ref,
    }


@router.post("/runs/{run_id}/lock")
async def lock_run(run_id: str, body: NoteIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    stored, _prop = await _run_for(session, who, run_id, edit=True)
    if not isinstance(stored.result, BillingRun):
        raise HTTPException(409, detail=f"run {run_id} is stopped")
    try:
        locked = lock(stored.result, who.username, datetime.now(UTC), body.note)
    except RunStateError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    await update_run(session, stored.record, locked)
    _audit(session, who, "billing.run.lock", "billing_run", run_id, body.note)
    await session.commit()
    return _run_view(stored.record, locked, lines=False)


@router.post("/runs/{run_id}/correct", status_code=201)
async def correct_run(
    run_id: str, who: PrincipalDep, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Recompute an exported period from today's data: a new run carries a credit of each changed
    billed charge and its re-bill. The old runs are not touched. 200 with ``changed: false`` when
    nothing changed."""
    stored, prop = await _run_for(session, who, run_id, edit=True)
    if stored.record.state not in ("exported", "locked"):
        raise HTTPException(
            409, detail=f"run {run_id} has not gone out ({stored.record.state}); recompute a draft"
        )
    billed_rows = await session.execute(
        select(BillingRunRecord.id)
        .where(
            BillingRunRecord.property_id == prop.id,
            BillingRunRecord.period_from == stored.record.period_from,
            BillingRunRecord.state.in_(("exported", "locked")),
        )
        .order_by(BillingRunRecord.created_at, BillingRunRecord.id)
    )
    billed = []
    for (rid,) in billed_rows:
        s = await load_run(session, rid)
        if s is not None and isinstance(s.result, BillingRun):
            billed.append(s.result)
    period = BillingPeriod(stored.record.period_from, stored.record.period_to)
    new_id = await next_run_id(session, prop, period.start)
    recomputed, apartment_ids, frames = await _compute(session, prop, who, period, new_id + "-recalc")
    fresh = recomputed if isinstance(recomputed, BillingRun) else recomputed.preview
    if fresh is None:
        raise HTTPException(409, detail={"reasons": to_jsonable(getattr(recomputed, "reasons", ()))})
    lines = correction_lines(billed, fresh, new_id)
    if not lines:
        response.status_code = 200
        return {"changed": False, "run_id": None}
    inp, _ = await load_input(session, prop, period.start, period.end)
    empty = replace(inp, media=(), fixed_costs=(), meter_points=(), invoices=())
    result = compute_run(empty, new_id, datetime.now(UTC), who.username, corrections=lines)
    async with _run_id_taken_is_a_conflict(session):
        record = await save_run(
            session, prop, result, apartment_ids, created_by=who.username, kind="correction",
            corrects_run_id=run_id, raw_frames=frames,
        )  # fmt: skip
        detail = f"corrects={run_id} lines={len(lines)}"
        _audit(session, who, "billing.run.correct", "billing_run", new_id, detail)
        await session.commit()
    return {"changed": True, **_run_view(record, result, lines=True)}


@router.get("/runs/{run_id}/documents")
async def list_documents(run_id: str, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    await _run_for(session, who, run_id, edit=False)
    rows = await session.execute(
        select(BillingDocument).where(BillingDocument.run_id == run_id).order_by(BillingDocument.id)
    )
    return [_doc_dict(d) for d in rows.scalars()]


@router.get("/documents/{doc_id}")
async def get_document(doc_id: int, who: PrincipalDep, session: SessionDep) -> Response:
    doc = await session.get(BillingDocument, doc_id)
    if doc is None:
        raise HTTPException(404, detail=f"no document {doc_id}")
    try:
        await _property_by_id(session, who, doc.property_id, edit=False)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(404, detail=f"no document {doc_id}") from None
        raise
    if doc.data is None:
        raise HTTPException(501, detail="file-backed documents are not served yet")
    return Response(
        content=doc.data,
        media_type=doc.content_type,
        headers={"Content-Disposition": f'attachment; filename="{doc.name}"', "X-SHA256": doc.sha256},
    )


@router.get("/runs/{run_id}/lines/{line_id}/sources")
async def line_sources(
    run_id: str, line_id: str, who: PrincipalDep, session: SessionDep
) -> list[dict[str, Any]]:
    """Traceability: the readings behind a line and the raw frames that carried them (hex)."""
    await _run_for(session, who, run_id, edit=False)
    rows = await session.execute(
        select(ReadingRow, RawFrame)
        .join(BillingLineReading, BillingLineReading.reading_id == ReadingRow.id)
        .outerjoin(RawFrame, RawFrame.id == ReadingRow.raw_frame_id)
        .where(BillingLineReading.run_id == run_id, BillingLineReading.line_id == line_id)
        .order_by(ReadingRow.read_at, ReadingRow.id)
    )
    return [
        {
            "reading_id": r.id,
            "meter_id": r.meter_id,
            "register": r.register,
            "read_at": r.read_at.isoformat(),
            "value": to_jsonable(r.value),
            "unit": r.unit,
            "raw_frame_id": r.raw_frame_id,
            "raw_frame": f.raw.hex() if f is not None else None,
            "collector": f.collector_id if f is not None else None,
            "sequence": f.sequence if f is not None else None,
        }
        for r, f in rows
    ]


# --- tenancies --------------------------------------------------------------------------------------
# Who lived in an apartment when: runs split an apartment's period at the move dates. Names are
# personal data: admin and staff write, board members read their properties', nobody else sees them.

TENANCY_READERS = frozenset({"admin", "staff", "board"})


class TenancyIn(_In):
    tenant_ref: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    move_in: date
    move_out: date | None = Field(default=None, description="the first day no longer occupied")


async def _apartment_for(
    session: AsyncSession, who: Principal, ref: int, *, edit: bool
) -> tuple[Apartment, Property]:
    if not edit and who.role not in TENANCY_READERS:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {who.role} may not see tenancies")
    apartment = await session.get(Apartment, ref)
    if apartment is None:
        raise HTTPException(404, detail=f"no apartment {ref}")
    try:
        prop = await _property_by_id(session, who, apartment.property_id, edit=edit)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(404, detail=f"no apartment {ref}") from None
        raise
    return apartment, prop


async def _tenancies_of(session: AsyncSession, apartment_id: int) -> list[Tenancy]:
    rows = await session.execute(
        select(Tenancy).where(Tenancy.apartment_id == apartment_id).order_by(Tenancy.move_in, Tenancy.id)
    )
    return list(rows.scalars())


async def _check_tenancy(
    session: AsyncSession, apartment: Apartment, body: TenancyIn, skip: int | None
) -> None:
    try:
        check_dates(body.move_in, body.move_out)
    except TenancyError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    new = TenancySpan(body.tenant_ref, body.move_in, body.move_out, ident=skip)
    others = [
        TenancySpan(t.tenant_ref, t.move_in, t.move_out, ident=t.id)
        for t in await _tenancies_of(session, apartment.id)
    ]
    clash = first_overlap(new, others)
    if clash is not None:
        raise HTTPException(
            409, detail=f"overlaps tenancy {clash.ident} ({describe(clash)}) of {apartment.object_number}"
        )


@router.get("/apartments/{ref}/tenancies")
async def list_tenancies(ref: int, who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    apartment, _prop = await _apartment_for(session, who, ref, edit=False)
    return [tenancy_dict(t, apartment) for t in await _tenancies_of(session, apartment.id)]


@router.post("/apartments/{ref}/tenancies", status_code=201)
async def create_tenancy(ref: int, body: TenancyIn, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    apartment, _prop = await _apartment_for(session, who, ref, edit=True)
    await _check_tenancy(session, apartment, body, None)
    row = Tenancy(
        apartment_id=apartment.id, updated_at=datetime.now(UTC), updated_by=who.username, **body.model_dump()
    )
    session.add(row)
    await session.flush()
    _audit(session, who, "tenancy.create", "tenancy", row.id, body.model_dump_json())
    await session.commit()
    return tenancy_dict(row, apartment)


async def _tenancy(
    session: AsyncSession, who: Principal, tenancy_id: int, *, edit: bool
) -> tuple[Tenancy, Apartment]:
    row = await session.get(Tenancy, tenancy_id)
    if row is None:
        raise HTTPException(404, detail=f"no tenancy {tenancy_id}")
    try:
        apartment, _prop = await _apartment_for(session, who, row.apartment_id, edit=edit)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise HTTPException(404, detail=f"no tenancy {tenancy_id}") from None
        raise
    return row, apartment


@router.get("/tenancies/{tenancy_id}")
async def get_tenancy(tenancy_id: int, who: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    row, apartment = await _tenancy(session, who, tenancy_id, edit=False)
    return tenancy_dict(row, apartment)


@router.put("/tenancies/{tenancy_id}")
async def update_tenancy(
    tenancy_id: int, body: TenancyIn, who: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    row, apartment = await _tenancy(session, who, tenancy_id, edit=True)
    await _check_tenancy(session, apartment, body, row.id)
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    row.updated_at, row.updated_by = datetime.now(UTC), who.username
    _audit(session, who, "tenancy.update", "tenancy", row.id, body.model_dump_json())
    await session.commit()
    return tenancy_dict(row, apartment)


@router.delete("/tenancies/{tenancy_id}", status_code=204)
async def delete_tenancy(tenancy_id: int, who: PrincipalDep, session: SessionDep) -> Response:
    row, _apartment = await _tenancy(session, who, tenancy_id, edit=True)
    await session.delete(row)
    _audit(session, who, "tenancy.delete", "tenancy", tenancy_id, f"{row.tenant_ref} {row.move_in}")
    await session.commit()
    return Response(status_code=204)


@router.post("/properties/{key}/tenancies/import")
async def import_tenancies(  # noqa: PLR0917 - the request's parts, as FastAPI passes them
    key: str,
    request: Request,
    who: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    dry_run: bool = False,
    move_out_is_last_day: bool = False,
) -> JSONResponse:
    """The rental administration's tenancy register (CSV body): every row valid or nothing imported;
    the answer lists accepted rows and, for each refused one, why (422 when any is refused)."""
    prop = await _property(session, who, key, edit=True)
    await session.close()  # the import writes in its own transaction
    body = await request.body()
    if len(body) > 10 * 1024 * 1024:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="file larger than 10 MiB")
    text = csv_text(body)
    try:
        outcome = await import_tenancies_csv(
            state.db,
            prop.key,
            text,
            move_out_is_last_day=move_out_is_last_day,
            dry_run=dry_run,
            actor=who.username,
        )
    except CsvImportError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return JSONResponse(jsonable_encoder(outcome.as_dict()), status_code=422 if outcome.refused else 200)
