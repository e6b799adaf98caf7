"""Invoicing-partner file: invoices per tenant, the invoice_csv_v1 profile and Peppol BIS 3 UBL."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from billing_builders import CREATED, D, apartment, debitering, invoice, make_input, settings, simple_point

from central.billing import compute_run
from central.billing.invoicing import (
    BIS3_CUSTOMIZATION,
    BIS3_PROFILE,
    Customer,
    InvoicingSettings,
    invoices_csv,
    invoices_from_run,
    ubl_invoice,
    ubl_invoices,
)
from central.billing.model import FixedCost, FixedKey, Medium, MediumConfig, PriceModel, TenantPeriod
from central.billing.ocr import is_valid_ocr
from central.billing.runs import BillingRun

NS = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
CUSTOMERS = {
    "T-1": Customer("T-1", "Anna Andersson", "Storgatan 1", "111 22", "Stockholm"),
    "T-2": Customer("T-2", "Björn Öberg & Co <AB>", "Storgatan 1", "111 22", "Stockholm"),
}
SETTINGS = InvoicingSettings(
    seller_name="Brf Exempel",
    seller_org_number="7696000000",
    seller_street="Storgatan 1",
    seller_postal_code="111 22",
    seller_city="Stockholm",
    bankgiro="5050-1055",
    issue_date=date(2024, 4, 10),
    first_invoice_number=240400,
    seller_vat_number="SE769600000001",
)


def _run(vat_registered: bool = True) -> BillingRun:
    # Heat debitering 8.008 kWh × 1.25 = 10.01 per apartment; hot water fördelning of 100.00 by
    # consumption 1 : 2; a samfällighetsavgift of 30.00 by area 60 : 40 (exempt).
    inp = make_input(
        settings=settings(vat_registered=vat_registered),
        apartments=(apartment("A001", "60"), apartment("A002", "40")),
        meter_points=(
            simple_point("h1", "A001", "0", "8.008"),
            simple_point("h2", "A002", "0", "8.008"),
            simple_point("w1", "A001", "0", "1", medium=Medium.HOT_WATER, unit="m3"),
            simple_point("w2", "A002", "0", "2", medium=Medium.HOT_WATER, unit="m3"),
        ),
        media=(debitering(), MediumConfig(Medium.HOT_WATER, PriceModel.FORDELNING, "m3")),
        invoices=(invoice("100.00", medium=Medium.HOT_WATER),),
        tenants=(
            TenantPeriod("A001", "T-1", date(2020, 1, 1)),
            TenantPeriod("A002", "T-2", date(2020, 1, 1)),
        ),
        fixed_costs=(FixedCost("samf", "Samfällighetsavgift", D("30.00"), FixedKey.AREA),),
    )
    run = compute_run(inp, "R-2024-03", CREATED, "anna")
    assert isinstance(run, BillingRun), run
    return run


def test_one_invoice_per_tenant_with_ocr_dates_and_vat_per_category() -> None:
    invs = invoices_from_run(_run(), CUSTOMERS, SETTINGS)
    assert [(i.number, i.customer.ref, i.object_number) for i in invs] == [
        ("240400", "T-1", "OBJ-A001"), ("240401", "T-2", "OBJ-A002"),
    ]
    first = invs[0]
    assert is_valid_ocr(first.ocr, length_digit=True)
    assert first.ocr.startswith("240400")
    assert (first.issue_date, first.due_date) == (date(2024, 4, 10), date(2024, 5, 10))
    # A001: heat 10.01 (S 25 %), hot water 33.33 (S 25 %), samf 18.00 (E)
    assert first.net == D("61.34")
    cats = {(v.category, v.percent): (v.taxable, v.tax) for v in first.vat}
    assert cats == {("S", D("25.00")): (D("43.34"), D("10.84")), ("E", D("0.00")): (D("18.00"), D("0.00"))}
    assert first.tax == D("10.84")
    assert first.gross == D("72.18")


def test_missing_customer_is_an_error() -> None:
    with pytest.raises(KeyError, match="T-2"):
        invoices_from_run(_run(), {"T-1": CUSTOMERS["T-1"]}, SETTINGS)


def test_csv_profile_records_add_up() -> None:
    invs = invoices_from_run(_run(), CUSTOMERS, SETTINGS)
    data = invoices_csv(invs, SETTINGS)
    assert data == invoices_csv(invs, SETTINGS)
    assert b"\r\n" in data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter=";"))
    heads = [r for r in rows if r[0] == "I"]
    lines = [r for r in rows if r[0] == "L"]
    (trailer,) = [r for r in rows if r[0] == "T"]
    assert rows[-1] == trailer

    def num(text: str) -> Decimal:
        return Decimal(text.replace(",", "."))

    assert len(heads) == 2
    for head in heads:
        mine = [r for r in lines if r[1] == head[1]]
        assert sum(num(r[8]) for r in mine) == num(head[15])
        assert num(head[15]) + num(head[16]) == num(head[17])
        assert is_valid_ocr(head[13], length_digit=True)
    assert trailer[1] == "2"
    assert num(trailer[2]) == sum(num(h[15]) for h in heads)
    assert num(trailer[4]) == sum(num(h[17]) for h in heads)
    assert heads[1][6] == "Björn Öberg & Co <AB>"


def _amount(root: ET.Element, path: str) -> Decimal:
    el = root.find(path, NS)
    assert el is not None, path
    assert el.get("currencyID") == "SEK"
    return Decimal(el.text or "")


@pytest.mark.parametrize("vat_registered", [True, False])
def test_ubl_bis3_is_well_formed_has_the_mandatory_elements_and_adds_up(vat_registered: bool) -> None:
    cfg = SETTINGS if vat_registered else replace(SETTINGS, seller_vat_number=None)
    invs = invoices_from_run(_run(vat_registered), CUSTOMERS, cfg)
    docs = ubl_invoices(invs, cfg)
    assert list(docs) == ["invoice_240400.xml", "invoice_240401.xml"]
    for inv in invs:
        data = ubl_invoice(inv, cfg)
        assert data == docs[f"invoice_{inv.number}.xml"]
        root = ET.fromstring(data)
        assert root.tag == f"{{{NS['inv']}}}Invoice"
        text = {p: (root.findtext(p, namespaces=NS) or "") for p in (
            "cbc:CustomizationID", "cbc:ProfileID", "cbc:ID", "cbc:IssueDate", "cbc:DueDate",
            "cbc:InvoiceTypeCode", "cbc:DocumentCurrencyCode", "cbc:BuyerReference",
            "cac:AccountingSupplierParty/cac:Party/cbc:EndpointID",
            "cac:AccountingSupplierParty/cac:Party/cac:PostalAddress/cac:Country/cbc:IdentificationCode",
            "cac:AccountingSupplierParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName",
            "cac:AccountingCustomerParty/cac:Party/cbc:EndpointID",
            "cac:AccountingCustomerParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName",
            "cac:PaymentMeans/cbc:PaymentMeansCode", "cac:PaymentMeans/cbc:PaymentID",
            "cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID",
        )}  # fmt: skip
        assert all(text.values()), text
        assert text["cbc:CustomizationID"] == BIS3_CUSTOMIZATION
        assert text["cbc:ProfileID"] == BIS3_PROFILE
        assert text["cbc:InvoiceTypeCode"] == "380"
        assert text["cbc:ID"] == inv.number
        assert is_valid_ocr(text["cac:PaymentMeans/cbc:PaymentID"], length_digit=True)
        lines = root.findall("cac:InvoiceLine", NS)
        assert len(lines) == len(inv.items)
        line_sum = sum((_amount(ln, "cbc:LineExtensionAmount") for ln in lines), D(0))
        total = "cac:LegalMonetaryTotal/"
        assert line_sum == _amount(root, total + "cbc:LineExtensionAmount")
        excl = _amount(root, total + "cbc:TaxExclusiveAmount")
        tax = _amount(root, "cac:TaxTotal/cbc:TaxAmount")
        assert excl + tax == _amount(root, total + "cbc:TaxInclusiveAmount")
        assert excl + tax == _amount(root, total + "cbc:PayableAmount")
        subs = root.findall("cac:TaxTotal/cac:TaxSubtotal", NS)
        assert sum((_amount(s, "cbc:TaxAmount") for s in subs), D(0)) == tax
        assert sum((_amount(s, "cbc:TaxableAmount") for s in subs), D(0)) == excl
        for sub in subs:
            cat = sub.findtext("cac:TaxCategory/cbc:ID", namespaces=NS)
            pct = sub.findtext("cac:TaxCategory/cbc:Percent", namespaces=NS)
            if cat == "O":
                assert pct is None
                assert _amount(sub, "cbc:TaxAmount") == 0
            else:
                want = (_amount(sub, "cbc:TaxableAmount") * Decimal(pct or "0") / 100).quantize(
                    D("0.01"), rounding=ROUND_HALF_UP
                )
                assert _amount(sub, "cbc:TaxAmount") == want
            if cat in ("E", "O"):
                assert sub.findtext("cac:TaxCategory/cbc:TaxExemptionReason", namespaces=NS)
        for ln in lines:
            qty = Decimal(ln.findtext("cbc:InvoicedQuantity", namespaces=NS) or "")
            price = _amount(ln, "cac:Price/cbc:PriceAmount")
            assert price >= 0
            amount = _amount(ln, "cbc:LineExtensionAmount")
            assert (qty * price).quantize(D("0.01"), rounding=ROUND_HALF_UP) == amount
        cats = {s.findtext("cac:TaxCategory/cbc:ID", namespaces=NS) for s in subs}
        assert cats == ({"S", "E"} if vat_registered else {"O"})


def test_ubl_escapes_text_and_credit_lines_keep_a_positive_price() -> None:
    run = _run()
    credit = replace(run.lines[0], net=-run.lines[0].net, quantity=None, unit_price=None, line_id="X-1",
                     vat=-run.lines[0].vat)
    run2 = replace(run, lines=(*run.lines, credit))
    invs = invoices_from_run(run2, CUSTOMERS, SETTINGS)
    data = ubl_invoice(invs[1], SETTINGS)
    assert b"Bj\xc3\xb6rn \xc3\x96berg &amp; Co &lt;AB&gt;" in data
    root = ET.fromstring(ubl_invoice(invs[0], SETTINGS))
    last = root.findall("cac:InvoiceLine", NS)[-1]
    assert last.findtext("cbc:InvoicedQuantity", namespaces=NS) == "-1"
    assert Decimal(last.findtext("cac:Price/cbc:PriceAmount", namespaces=NS) or "") == run.lines[0].net
