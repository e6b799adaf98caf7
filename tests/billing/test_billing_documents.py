"""Debiteringsunderlag and property summary PDFs: structure, content, determinism, parallel rendering."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from billing_builders import (
    CREATED,
    MARCH,
    D,
    apartment,
    debitering,
    invoice,
    make_input,
    point,
    reading,
    settings,
    simple_point,
)

from central.billing import compute_run
from central.billing.documents import (
    Comparison,
    apartment_documents,
    context_from_input,
    documents_parallel,
    property_summary_document,
)
from central.billing.model import (
    FixedCost,
    FixedKey,
    Medium,
    MediumConfig,
    PriceModel,
    ReadingSource,
    TenantPeriod,
)
from central.billing.pdf import pdf_text, text_width
from central.billing.runs import BillingRun


def _input():  # type: ignore[no-untyped-def]
    # A001: one tenant all month, heat debitering 100 kWh × 1.25 = 125.00 (+25 % VAT), an estimated
    # end reading; A002: moves on 16 March (readings 0 -> 40 on the move day -> 100), two tenants.
    a1 = apartment("A001", "70")
    a1 = type(a1)(a1.id, a1.object_number, a1.number, a1.area_m2, None, "Storgatan 1, lgh 1001")
    a2 = apartment("A002", "50")
    move = date(2024, 3, 16)
    return make_input(
        settings=settings(vat_registered=True),
        apartments=(a1, a2),
        meter_points=(
            point("h1", "A001", [reading("h1-s", MARCH[0], "1000"),
                                 reading("h1-e", MARCH[1], "1100", ReadingSource.ESTIMATED,
                                         method="same period last year", reason="no frames 9 days")]),
            point("h2", "A002", [reading("h2-s", MARCH[0], "0"), reading("h2-m", move, "40", hour=9),
                                 reading("h2-e", MARCH[1], "100")]),
            simple_point("w1", "A001", "10", "12.5", medium=Medium.HOT_WATER, unit="m3"),
            simple_point("w2", "A002", "5", "6", medium=Medium.HOT_WATER, unit="m3"),
        ),
        media=(debitering(), MediumConfig(Medium.HOT_WATER, PriceModel.FORDELNING, "m3")),
        invoices=(invoice("350.00", medium=Medium.HOT_WATER),),
        tenants=(
            TenantPeriod("A001", "T-1001", date(2020, 1, 1)),
            TenantPeriod("A002", "T-2001", date(2020, 1, 1), move),
            TenantPeriod("A002", "T-2002", move),
        ),
        fixed_costs=(FixedCost("samf", "Samfällighetsavgift", D("120.00"), FixedKey.AREA),),
    )


def _run() -> tuple[BillingRun, object]:
    inp = _input()
    run = compute_run(inp, "R-2024-03", CREATED, "anna")
    assert isinstance(run, BillingRun), run
    comps = {"A001": (Comparison(Medium.HEAT, "kWh", D("95.5"), D("120.25"), D("1.61")),)}
    return run, context_from_input(inp, comps)


def _check_pdf(data: bytes) -> None:
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF\n")
    xref = int(re.search(rb"startxref\n(\d+)\n", data).group(1))  # type: ignore[union-attr]
    assert data[xref:].startswith(b"xref\n")
    count = int(re.search(rb"xref\n0 (\d+)\n", data).group(1))  # type: ignore[union-attr]
    offsets = re.findall(rb"(\d{10}) 00000 n \n", data[xref:])
    assert len(offsets) == count - 1
    for n, off in enumerate(offsets, start=1):
        assert data[int(off):].startswith(b"%d 0 obj\n" % n)
    for m in re.finditer(rb"<< /Length (\d+) >>\nstream\n", data):
        length = int(m.group(1))
        assert data[m.end() + length : m.end() + length + 10] == b"\nendstream"


def shown(data: bytes) -> str:
    """The text the content streams show, decoded from WinAnsi (our writer never compresses)."""
    parts = re.findall(rb"\(((?:[^()\\]|\\.)*)\) Tj", data)
    return "\n".join(p.replace(b"\\(", b"(").replace(b"\\)", b")").replace(b"\\\\", b"\\").decode("cp1252")
                     for p in parts)


def test_one_document_per_apartment_and_tenant_with_only_their_lines() -> None:
    run, ctx = _run()
    docs = apartment_documents(run, ctx)  # type: ignore[arg-type]
    assert [(d.apartment_id, d.tenant_ref) for d in docs] == [
        ("A001", "T-1001"), ("A002", "T-2001"), ("A002", "T-2002"),
    ]
    for doc in docs:
        _check_pdf(doc.data)
        assert doc.sha256 == hashlib.sha256(doc.data).hexdigest()
    t1, t2 = shown(docs[1].data), shown(docs[2].data)
    assert "T-2001" in t1
    assert "T-2002" not in t1
    assert "T-2002" in t2
    assert "T-2001" not in t2
    assert docs[0].name == "underlag_P1_202403_OBJ-A001_T-1001.pdf"


def test_underlag_shows_readings_sources_arithmetic_totals_and_comparisons() -> None:
    run, ctx = _run()
    doc = apartment_documents(run, ctx)[0]  # type: ignore[arg-type]
    text = shown(doc.data)
    for expected in (
        "Debiteringsunderlag", "Period 2024-03-01 – 2024-03-31", "Brf Exempel (P1)", "OBJ-A001", "1001",
        "Storgatan 1, lgh 1001", "T-1001", "70 m²", "Mätarställningar", "1000", "1100", "fjärravläst",
        "uppskattad", "100 kWh", "Värme", "Beräkning: 100 kWh × 1.25 = 125.00",
        "Uppskattat: same period last year; no frames 9 days", "Samfällighetsavgift",
        "Jämförelse av förbrukning", "95,5 kWh", "120,25 kWh", "1,61 kWh/m²", "1,43 kWh/m²",
        "Att betala",
    ):
        assert expected in text, expected
    # Totals: heat 125.00 + VAT 31.25; hot water 12.5/... share; fixed cost exempt. Recompute from lines.
    mine = [ln for ln in run.exportable() if ln.tenant_ref == "T-1001"]
    net = sum((ln.net for ln in mine), D(0))
    vat = sum((ln.vat for ln in mine), D(0))
    assert f"{net:,.2f}".replace(",", " ").replace(".", ",") in text
    assert f"{net + vat:,.2f}".replace(",", " ").replace(".", ",") in text
    assert b"/BaseFont /Helvetica /Encoding /WinAnsiEncoding" in doc.data
    assert "M\xe4tarst\xe4llningar".encode("cp1252") in doc.data  # å ä ö as WinAnsi bytes


def test_english_variant() -> None:
    run, ctx = _run()
    ctx_en = replace(ctx, language="en")  # type: ignore[type-var]
    text = shown(apartment_documents(run, ctx_en)[0].data)
    assert "Billing basis" in text
    assert "Amount due" in text
    assert "Meter readings" in text


def test_documents_are_deterministic_and_parallel_gives_the_same_bytes() -> None:
    run, ctx = _run()
    seq = [*apartment_documents(run, ctx), property_summary_document(run, ctx)]  # type: ignore[arg-type]
    again = [*apartment_documents(run, ctx), property_summary_document(run, ctx)]  # type: ignore[arg-type]
    assert [d.data for d in seq] == [d.data for d in again]
    par = documents_parallel([(run, ctx), (run, ctx)], workers=2, chunk=1)  # type: ignore[list-item]
    assert [d.sha256 for d in par] == [d.sha256 for d in seq] * 2
    assert b"/CreationDate (D:20240405080000+00'00')" in seq[0].data


def test_property_summary_shows_pool_charged_difference_and_estimated_share() -> None:
    run, ctx = _run()
    doc = property_summary_document(run, ctx)  # type: ignore[arg-type]
    _check_pdf(doc.data)
    text = shown(doc.data)
    hot = next(m for m in run.summary.media if m.medium is Medium.HOT_WATER)
    assert hot.cost == D("350.00")
    for expected in ("Sammanställning per fastighet", "Varmvatten – fördelning (faktisk kostnad)",
                     "Kostnad (pool)", "350,00", "Kostnad minus debiterat", "Uppskattad andel",
                     "samf", "Per lägenhet", "OBJ-A002", "T-2002"):
        assert expected in text, expected
    assert doc.name == "sammanstallning_P1_202403.pdf"


def test_text_outside_winansi_is_spelled_out_and_widths_are_known() -> None:
    assert pdf_text("Σ 12 → x") == "Summa  12 -> x"
    assert pdf_text("åäöÅÄÖé ×÷²") == "åäöÅÄÖé ×÷²"
    assert text_width("0000", "F1", 10) == pytest.approx(22.24)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (pdftoppm) not installed")
def test_poppler_renders_the_underlag(tmp_path: Path) -> None:
    run, ctx = _run()
    doc = apartment_documents(run, ctx)[0]  # type: ignore[arg-type]
    pdf = tmp_path / "u.pdf"
    pdf.write_bytes(doc.data)
    proc = subprocess.run(
        ["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "u")], capture_output=True, check=False
    )
    assert proc.returncode == 0
    assert proc.stderr == b""
    assert (tmp_path / "u-1.png").stat().st_size > 1000
