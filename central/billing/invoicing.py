"""Invoicing-partner file: one invoice per apartment and tenant, as a documented CSV and as Peppol
BIS Billing 3.0 UBL XML (the successor of Svefaktura).

When the property hands the consumption charges to an invoicing partner (e.g. Intrum) instead of
the rent notice, each tenant/member of the run gets an invoice: customer reference and address,
invoice number, OCR reference (Luhn check digit, optional length digit, ``ocr.py``), invoice and due
dates, payment terms, and the run's exportable lines with VAT.

VAT on the invoice follows EN 16931: per VAT category the tax is the category's taxable amount x
rate, rounded half-up to öre (BR-CO-17). With ``VatRounding.TOTAL`` that equals the run's VAT;
with per-line rounding it can differ from Σ line VAT by an öre or two, and the invoice figure is the
one that is owed (the CSV's ``L`` records keep the line VAT of the run for reference).
Categories: S (standard, the property is VAT-registered), E (exempt supply of a VAT-registered
property, e.g. a pass-through fixed cost; reason given), O (the property is not VAT-registered:
nothing on the invoice is subject to VAT).

CSV profile ``invoice_csv_v1`` (UTF-8, ``;``, decimal comma, CRLF, dates ``YYYY-MM-DD``), one record
per row, the first field says which:

``I`` invoice: record; invoice_number; invoice_date; due_date; payment_terms_days; customer_ref;
   customer_name; street; postal_code; city; country; object_number; apartment_number; ocr;
   currency; net; vat; gross; period_from; period_to (inclusive); run_id
``L`` line (after its invoice): record; invoice_number; line_no; charge_code; text; quantity; unit;
   unit_price; net; vat_category; vat_rate (percent); line_vat (the run's); line_id
``T`` trailer (last row): record; invoice_count; net; vat; gross

Both renderings are deterministic: the same run and settings give the same bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from xml.sax.saxutils import escape

from .money import EXACT, ORE, ZERO, fmt
from .ocr import ocr_reference
from .runs import BillingLine, BillingRun

__all__ = [
    "BIS3_CUSTOMIZATION",
    "BIS3_PROFILE",
    "Customer",
    "Invoice",
    "InvoiceLineItem",
    "InvoicingSettings",
    "VatBreakdown",
    "invoices_csv",
    "invoices_from_run",
    "ubl_invoice",
    "ubl_invoices",
]

BIS3_CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
BIS3_PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
UBL_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"

# UN/ECE Recommendation 20 unit codes for our units; anything else is counted in pieces.
UNIT_CODES = {"kWh": "KWH", "MWh": "MWH", "m3": "MTQ", "mån": "MON", "": "C62"}


@dataclass(frozen=True, slots=True)
class Customer:
    ref: str  # the tenant/member reference of the run's lines
    name: str
    street: str
    postal_code: str
    city: str
    country: str = "SE"
    endpoint: tuple[str, str] | None = None  # Peppol (scheme, id); None: the partner's address


@dataclass(frozen=True, slots=True)
class InvoicingSettings:
    seller_name: str
    seller_org_number: str  # organisationsnummer, 10 digits
    seller_street: str
    seller_postal_code: str
    seller_city: str
    bankgiro: str
    issue_date: date
    first_invoice_number: int
    seller_vat_number: str | None = None  # "SE5560000000" + "01"; None: not VAT-registered
    payment_terms_days: int = 30
    currency: str = "SEK"
    ocr_length_digit: bool = True
    partner_endpoint: tuple[str, str] = ("0007", "5560000000")  # where a buyer without one is routed
    exemption_reason: str = "Undantaget från skatteplikt, 3 kap. mervärdesskattelagen"


@dataclass(frozen=True, slots=True)
class InvoiceLineItem:
    line_no: int
    line: BillingLine
    category: str  # S, E, O
    percent: Decimal


@dataclass(frozen=True, slots=True)
class VatBreakdown:
    category: str
    percent: Decimal
    taxable: Decimal
    tax: Decimal


@dataclass(frozen=True, slots=True)
class Invoice:
    number: str
    ocr: str
    issue_date: date
    due_date: date
    customer: Customer
    object_number: str
    apartment_number: str
    period_from: date
    period_to: date  # exclusive
    items: tuple[InvoiceLineItem, ...]
    vat: tuple[VatBreakdown, ...]
    net: Decimal
    tax: Decimal
    run_id: str

    @property
    def gross(self) -> Decimal:
        return self.net + self.tax


def _category(line: BillingLine, settings: InvoicingSettings) -> tuple[str, Decimal]:
    if settings.seller_vat_number is None:
        return "O", ZERO
    if line.vat_rate:
        return "S", (line.vat_rate * 100).quantize(Decimal("0.01"))
    return "E", Decimal("0.00")


def invoices_from_run(
    run: BillingRun, customers: Mapping[str, Customer], settings: InvoicingSettings
) -> tuple[Invoice, ...]:
    """One invoice per apartment and tenant of the run's exportable lines, numbered in object order.

    A tenant without a ``Customer`` entry is an error (``KeyError`` naming the reference): an
    invoice without an address cannot go out.
    """
    groups: dict[tuple[str, str], list[BillingLine]] = {}
    for line in run.exportable():
        groups.setdefault((line.object_number, line.tenant_ref or ""), []).append(line)
    out = []
    for i, ((obj, tenant), lines) in enumerate(sorted(groups.items(), key=lambda kv: kv[0])):
        if tenant not in customers:
            raise KeyError(f"no customer for tenant reference {tenant!r}")
        number = str(settings.first_invoice_number + i)
        items = []
        for n, line in enumerate(lines, start=1):
            cat, pct = _category(line, settings)
            items.append(InvoiceLineItem(n, line, cat, pct))
        bases: dict[tuple[str, Decimal], Decimal] = {}
        for item in items:
            key = (item.category, item.percent)
            bases[key] = bases.get(key, ZERO) + item.line.net
        vat = tuple(
            VatBreakdown(
                cat,
                pct,
                base,
                (base * pct / 100).quantize(ORE, rounding=ROUND_HALF_UP, context=EXACT),
            )
            for (cat, pct), base in sorted(bases.items())
        )
        net = sum((it.line.net for it in items), ZERO)
        out.append(
            Invoice(
                number=number,
                ocr=ocr_reference(number, length_digit=settings.ocr_length_digit),
                issue_date=settings.issue_date,
                due_date=settings.issue_date + timedelta(days=settings.payment_terms_days),
                customer=customers[tenant],
                object_number=obj,
                apartment_number=lines[0].apartment_number,
                period_from=min(ln.period_from for ln in lines),
                period_to=max(ln.period_to for ln in lines),
                items=tuple(items),
                vat=vat,
                net=net,
                tax=sum((v.tax for v in vat), ZERO),
                run_id=run.run_id,
            )
        )
    return tuple(out)


def _sv(value: Decimal | None) -> str:
    return "" if value is None else fmt(value).replace(".", ",")


def invoices_csv(invoices: tuple[Invoice, ...], settings: InvoicingSettings) -> bytes:
    """The ``invoice_csv_v1`` profile (see the module note)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    for inv in invoices:
        c = inv.customer
        w.writerow(
            [
                "I", inv.number, inv.issue_date.isoformat(), inv.due_date.isoformat(),
                settings.payment_terms_days, c.ref, c.name, c.street, c.postal_code, c.city, c.country,
                inv.object_number, inv.apartment_number, inv.ocr, settings.currency,
                _sv(inv.net), _sv(inv.tax), _sv(inv.gross), inv.period_from.isoformat(),
                (inv.period_to - timedelta(days=1)).isoformat(), inv.run_id,
            ]
        )  # fmt: skip
        for item in inv.items:
            ln = item.line
            w.writerow(
                [
                    "L", inv.number, item.line_no, f"{ln.charge}.{ln.vat_class}", ln.text, _sv(ln.quantity),
                    ln.unit, _sv(ln.unit_price), _sv(ln.net), item.category, _sv(item.percent), _sv(ln.vat),
                    ln.line_id,
                ]
            )  # fmt: skip
    net = sum((i.net for i in invoices), ZERO)
    tax = sum((i.tax for i in invoices), ZERO)
    w.writerow(["T", len(invoices), _sv(net), _sv(tax), _sv(net + tax)])
    return buf.getvalue().encode("utf-8")


def _amount(value: Decimal) -> str:
    return fmt(value.quantize(ORE, context=EXACT))


class _Xml:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.depth = 0

    def open(self, tag: str, attrs: str = "") -> None:
        self.parts.append(f"{'  ' * self.depth}<{tag}{attrs}>")
        self.depth += 1

    def close(self, tag: str) -> None:
        self.depth -= 1
        self.parts.append(f"{'  ' * self.depth}</{tag}>")

    def leaf(self, tag: str, text: str, **attrs: str) -> None:
        attr = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in attrs.items())
        self.parts.append(f"{'  ' * self.depth}<{tag}{attr}>{escape(text)}</{tag}>")


def _address(x: _Xml, street: str, city: str, postal: str, country: str) -> None:
    x.open("cac:PostalAddress")
    x.leaf("cbc:StreetName", street)
    x.leaf("cbc:CityName", city)
    x.leaf("cbc:PostalZone", postal)
    x.open("cac:Country")
    x.leaf("cbc:IdentificationCode", country)
    x.close("cac:Country")
    x.close("cac:PostalAddress")


def _tax_category(x: _Xml, tag: str, category: str, percent: Decimal, reason: str | None) -> None:
    x.open(tag)
    x.leaf("cbc:ID", category)
    if category != "O":
        x.leaf("cbc:Percent", fmt(percent))
    if reason and category in ("E", "O"):
        x.leaf("cbc:TaxExemptionReason", reason)
    x.open("cac:TaxScheme")
    x.leaf("cbc:ID", "VAT")
    x.close("cac:TaxScheme")
    x.close(tag)


def ubl_invoice(inv: Invoice, settings: InvoicingSettings) -> bytes:
    """One invoice as a Peppol BIS Billing 3.0 UBL 2.1 ``Invoice`` document (UTF-8)."""
    x = _Xml()
    cur = settings.currency
    x.parts.append('<?xml version="1.0" encoding="UTF-8"?>')
    x.open("Invoice", f' xmlns="{UBL_NS}" xmlns:cac="{CAC_NS}" xmlns:cbc="{CBC_NS}"')
    x.leaf("cbc:CustomizationID", BIS3_CUSTOMIZATION)
    x.leaf("cbc:ProfileID", BIS3_PROFILE)
    x.leaf("cbc:ID", inv.number)
    x.leaf("cbc:IssueDate", inv.issue_date.isoformat())
    x.leaf("cbc:DueDate", inv.due_date.isoformat())
    x.leaf("cbc:InvoiceTypeCode", "380")
    x.leaf("cbc:Note", f"Förbrukning {inv.object_number} lgh {inv.apartment_number}, körning {inv.run_id}")
    x.leaf("cbc:DocumentCurrencyCode", cur)
    x.leaf("cbc:BuyerReference", inv.customer.ref)
    x.open("cac:InvoicePeriod")
    x.leaf("cbc:StartDate", inv.period_from.isoformat())
    x.leaf("cbc:EndDate", (inv.period_to - timedelta(days=1)).isoformat())
    x.close("cac:InvoicePeriod")
    # Seller
    x.open("cac:AccountingSupplierParty")
    x.open("cac:Party")
    x.leaf("cbc:EndpointID", settings.seller_org_number, schemeID="0007")
    x.open("cac:PartyName")
    x.leaf("cbc:Name", settings.seller_name)
    x.close("cac:PartyName")
    _address(x, settings.seller_street, settings.seller_city, settings.seller_postal_code, "SE")
    if settings.seller_vat_number:
        x.open("cac:PartyTaxScheme")
        x.leaf("cbc:CompanyID", settings.seller_vat_number)
        x.open("cac:TaxScheme")
        x.leaf("cbc:ID", "VAT")
        x.close("cac:TaxScheme")
        x.close("cac:PartyTaxScheme")
    x.open("cac:PartyLegalEntity")
    x.leaf("cbc:RegistrationName", settings.seller_name)
    x.leaf("cbc:CompanyID", settings.seller_org_number, schemeID="0007")
    x.close("cac:PartyLegalEntity")
    x.close("cac:Party")
    x.close("cac:AccountingSupplierParty")
    # Buyer
    c = inv.customer
    scheme, endpoint = c.endpoint or settings.partner_endpoint
    x.open("cac:AccountingCustomerParty")
    x.open("cac:Party")
    x.leaf("cbc:EndpointID", endpoint, schemeID=scheme)
    x.open("cac:PartyIdentification")
    x.leaf("cbc:ID", c.ref)
    x.close("cac:PartyIdentification")
    _address(x, c.street, c.city, c.postal_code, c.country)
    x.open("cac:PartyLegalEntity")
    x.leaf("cbc:RegistrationName", c.name)
    x.close("cac:PartyLegalEntity")
    x.close("cac:Party")
    x.close("cac:AccountingCustomerParty")
    # Payment: bankgiro with the OCR reference
    x.open("cac:PaymentMeans")
    x.leaf("cbc:PaymentMeansCode", "30")
    x.leaf("cbc:PaymentID", inv.ocr)
    x.open("cac:PayeeFinancialAccount")
    x.leaf("cbc:ID", settings.bankgiro)
    x.open("cac:FinancialInstitutionBranch")
    x.leaf("cbc:ID", "SE:BANKGIRO")
    x.close("cac:FinancialInstitutionBranch")
    x.close("cac:PayeeFinancialAccount")
    x.close("cac:PaymentMeans")
    x.open("cac:PaymentTerms")
    x.leaf("cbc:Note", f"{settings.payment_terms_days} dagar netto")
    x.close("cac:PaymentTerms")
    # VAT
    x.open("cac:TaxTotal")
    x.leaf("cbc:TaxAmount", _amount(inv.tax), currencyID=cur)
    for v in inv.vat:
        x.open("cac:TaxSubtotal")
        x.leaf("cbc:TaxableAmount", _amount(v.taxable), currencyID=cur)
        x.leaf("cbc:TaxAmount", _amount(v.tax), currencyID=cur)
        reason = settings.exemption_reason if v.category == "E" else "Ej momsregistrerad"
        _tax_category(x, "cac:TaxCategory", v.category, v.percent, reason)
        x.close("cac:TaxSubtotal")
    x.close("cac:TaxTotal")
    x.open("cac:LegalMonetaryTotal")
    x.leaf("cbc:LineExtensionAmount", _amount(inv.net), currencyID=cur)
    x.leaf("cbc:TaxExclusiveAmount", _amount(inv.net), currencyID=cur)
    x.leaf("cbc:TaxInclusiveAmount", _amount(inv.gross), currencyID=cur)
    x.leaf("cbc:PayableAmount", _amount(inv.gross), currencyID=cur)
    x.close("cac:LegalMonetaryTotal")
    for item in inv.items:
        ln = item.line
        # A priced line keeps quantity x unit price = net; a fördelning share or fixed cost is one unit.
        # BIS 3 wants a price >= 0 (BR-27): an unpriced credit is minus one unit at the positive amount.
        if ln.quantity is not None and ln.unit_price is not None and ln.unit_price >= 0:
            priced, qty, price, unit = True, ln.quantity, ln.unit_price, UNIT_CODES.get(ln.unit, "C62")
        else:
            priced, qty, price, unit = False, Decimal(1 if ln.net >= 0 else -1), abs(ln.net), "C62"
        x.open("cac:InvoiceLine")
        x.leaf("cbc:ID", str(item.line_no))
        x.leaf("cbc:InvoicedQuantity", fmt(qty), unitCode=unit)
        x.leaf("cbc:LineExtensionAmount", _amount(ln.net), currencyID=cur)
        x.open("cac:InvoicePeriod")
        x.leaf("cbc:StartDate", ln.period_from.isoformat())
        x.leaf("cbc:EndDate", (ln.period_to - timedelta(days=1)).isoformat())
        x.close("cac:InvoicePeriod")
        x.open("cac:Item")
        x.leaf("cbc:Description", ln.arithmetic)
        x.leaf("cbc:Name", ln.text[:100])
        x.open("cac:SellersItemIdentification")
        x.leaf("cbc:ID", ln.charge)
        x.close("cac:SellersItemIdentification")
        _tax_category(x, "cac:ClassifiedTaxCategory", item.category, item.percent, None)
        x.close("cac:Item")
        x.open("cac:Price")
        x.leaf("cbc:PriceAmount", fmt(price) if priced else _amount(price), currencyID=cur)
        x.close("cac:Price")
        x.close("cac:InvoiceLine")
    x.close("Invoice")
    return ("\n".join(x.parts) + "\n").encode("utf-8")


def ubl_invoices(invoices: tuple[Invoice, ...], settings: InvoicingSettings) -> dict[str, bytes]:
    """Every invoice of a run as its own BIS 3 document (Peppol sends one invoice per message)."""
    return {f"invoice_{inv.number}.xml": ubl_invoice(inv, settings) for inv in invoices}
