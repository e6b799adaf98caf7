"""Billing engine: debitering and fördelning, fixed costs, VAT, runs and the debiteringsfil.

Pure domain code: frozen dataclasses in, frozen dataclasses out; no database, clock or I/O. A thin
adapter (later) builds ``BillingInput`` from central's storage and stores the run (everything is
serialisable with ``serial.to_jsonable``; run and line ids are stable).

Modules
    ``money``     Decimal/Fraction helpers: öre rounding and the largest-remainder ``allocate``.
    ``model``     the inputs: property settings, apartments, meter points with their meters and
                  readings, tenant periods, price lists, supplier invoices, fixed costs, approvals.
    ``periods``   monthly/quarterly periods ``[start, end)``, the lag (which notice bills which
                  period), local-midnight boundaries.
    ``readings``  alignment of registers to boundaries (exact, interpolated, extrapolated, always
                  flagged), consumption across meter replacements, the move-day reading.
    ``invoices``  supplier-invoice interpretation: the period's cost per line kind, the pool, the
                  price per unit and main meter vs Σ apartments, with the arithmetic as text.
    ``engine``    ``compute_run``: segments per tenant, debitering and fördelning per medium, fixed
                  costs, VAT, the property summary; returns ``BillingRun`` or ``RunStopped``.
    ``runs``      the result types, states draft -> approved -> exported -> locked with an audit
                  trail, and corrections (credit + re-bill in a later run).
    ``export``    the canonical debiteringsfil line and data-driven profiles (generic CSV, Excel,
                  fixed width cp1252), rendered to bytes deterministically.
    ``ocr``       OCR references with Luhn check digit and optional length digit.
    ``serial``    JSON-able form, canonical bytes and the input digest (written directly, not via
                  ``json.dumps``: it is on the run's hot path).
    ``pdf``       a small deterministic PDF 1.4 writer (standard Helvetica, WinAnsiEncoding).
    ``documents`` the debiteringsunderlag per apartment and tenant and the property summary as PDF
                  (Swedish, English available), with SHA-256; ``documents_parallel`` across cores.
    ``invoicing`` the invoicing-partner file: invoices with OCR, the ``invoice_csv_v1`` profile and
                  Peppol BIS Billing 3.0 UBL.
    ``reconciliation`` yearly a-conto with true-up: monthly advances, then actual minus advances
                  per tenant and medium (VAT included) from a run over the year.
    ``synthetic`` a seeded synthetic portfolio (benchmarks, load tests, demos).

Speed (``python -m benchmarks.billing``)
    The hot path is the input digest and the per-meter alignment. The digest writes canonical JSON
    directly (generated per-dataclass encoders; byte-identical to ``json.dumps(to_jsonable(...))``,
    tested); boundary values are interpolated in integers (tested against the Decimal formula);
    VAT and the line id are computed when a line is built, so no line is copied; ``allocate`` scales
    Decimal weights by a power of ten instead of ``Fraction``. Same inputs, same bytes as before.

Remainder rule
    Every split of money (fördelning pool, fixed costs, fixed fees over tenant segments, VAT per
    total) and every split of a quantity by days uses ``money.allocate``: each part gets its exact
    quota (integer arithmetic on exactly scaled weights) rounded toward zero to the öre (or the
    reading resolution); the remaining units go one each to the largest remainders, ties to the
    smallest key (apartment id, then segment start). Σ parts == total, always. When Σ
    consumption of a fördelning pool is 0 the consumption part is split by the medium's fixed key
    (area by default) instead, and the summary says so: the pool is always distributed.

Decisions worth knowing
    A period spanning a price change is split *by the readings*: the register is aligned
    (interpolated) to local midnight of the change date, one line per price. A move is split by
    the first real reading taken on the move day, else by days (flagged "split by days"). A
    debitering point without usable readings is held back (a held line, nothing charged); in a
    fördelning it stops the run (``missing_readings``), because a pool cannot be split without
    it. An open fault holds the line (``FaultPolicy.HOLD``; a fördelning still allocates it, so
    the pool stays zero-sum) or bills it flagged as an estimate (``ESTIMATE``). Only estimates of
    the consumption itself count toward ``estimated_share_limit`` (share of the metered area);
    over it the run returns ``RunStopped`` with the would-be draft as ``preview`` until an
    ``Approval`` is given. An apartment without a meter for a fördelning medium pays only the
    fixed-key part.

Rounding rule
    A debitering line is quantity × unit price rounded once to öre with the property's rule
    (``PropertySettings.rounding``, default ROUND_HALF_UP). VAT (25 % when the property is
    VAT-registered, HFD 2019 ref. 54) is on consumption and fee lines paid by a tenant: per line
    rounded with the same rule (``VatRounding.LINE``) or once per tenant total and split back onto
    the lines by largest remainder (``VatRounding.TOTAL``). Property-carried lines (vacant, common
    losses) are outside VAT; media included in the rent and pass-through fixed costs are exempt.
    Derived register values (interpolated/extrapolated) are rounded half-even to
    ``reading_decimals``. No binary float is used anywhere.
"""

from __future__ import annotations

from .documents import (
    Comparison,
    Document,
    DocumentContext,
    apartment_documents,
    context_from_input,
    documents_parallel,
    property_summary_document,
)
from .engine import compute_run
from .export import EXCEL_CSV, FIXED_WIDTH_CP1252, GENERIC_CSV, Profile, canonical_file, load_profile, render
from .invoicing import Customer, InvoicingSettings, invoices_csv, invoices_from_run, ubl_invoice, ubl_invoices
from .model import BillingInput
from .ocr import is_valid_ocr, ocr_reference
from .runs import BillingRun, RunStopped, approve, correction_lines, lock, mark_exported

__all__ = [
    "EXCEL_CSV",
    "FIXED_WIDTH_CP1252",
    "GENERIC_CSV",
    "BillingInput",
    "BillingRun",
    "Comparison",
    "Customer",
    "Document",
    "DocumentContext",
    "InvoicingSettings",
    "Profile",
    "RunStopped",
    "apartment_documents",
    "approve",
    "canonical_file",
    "compute_run",
    "context_from_input",
    "correction_lines",
    "documents_parallel",
    "invoices_csv",
    "invoices_from_run",
    "is_valid_ocr",
    "load_profile",
    "lock",
    "mark_exported",
    "ocr_reference",
    "property_summary_document",
    "render",
    "ubl_invoice",
    "ubl_invoices",
]
