"""Debiteringsunderlag (billing basis) per apartment and payer, and the property summary, as PDF.

One document per apartment and tenant/member of the period (a tenant who moved out mid-period and
the one who moved in each get their own: neither sees the other's charges; a vacant stretch goes on
a document for the owner). It shows the property, the apartment (object number, lägenhetsnummer,
address), the tenant reference, the period, every meter's start and end register with its date and
source, the consumption, each charge with its arithmetic (price or share), fixed costs with their
key, net, VAT and total, and the EU energy-efficiency directive comparisons (previous period, same
period last year, the building's average per m²: inputs, because only the caller has history).

Deterministic: the bytes depend only on the run, the context and the language (the creation date is
the run's computation time). Every document carries its SHA-256 for the archive.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from .model import Apartment, BillingInput, Medium
from .money import EXACT, ZERO, fmt
from .pdf import Page, PdfDocument, text_width
from .runs import BillingLine, BillingRun, LineKind, Payer

__all__ = [
    "Comparison",
    "Document",
    "DocumentContext",
    "apartment_documents",
    "context_from_input",
    "documents_parallel",
    "property_summary_document",
]


@dataclass(frozen=True, slots=True)
class Comparison:
    """EED billing information for one apartment and medium (consumption in ``unit``)."""

    medium: Medium
    unit: str
    previous_period: Decimal | None = None
    same_period_last_year: Decimal | None = None
    building_average_per_m2: Decimal | None = None  # the building's consumption per m² this period


@dataclass(frozen=True, slots=True)
class DocumentContext:
    property_id: str
    property_name: str
    apartments: Mapping[str, Apartment]
    comparisons: Mapping[str, tuple[Comparison, ...]] = field(default_factory=dict)  # by apartment id
    timezone: str = "Europe/Stockholm"
    language: str = "sv"  # "sv" or "en"
    tenant_names: Mapping[str, str] = field(default_factory=dict)  # tenant ref -> name on the notice


@dataclass(frozen=True, slots=True)
class Document:
    name: str  # file name for the archive
    kind: str  # "underlag" or "summary"
    apartment_id: str | None
    tenant_ref: str | None
    data: bytes
    sha256: str


def context_from_input(
    inp: BillingInput, comparisons: Mapping[str, tuple[Comparison, ...]] | None = None, language: str = "sv"
) -> DocumentContext:
    return DocumentContext(
        inp.settings.property_id,
        inp.settings.name,
        {a.id: a for a in inp.apartments},
        comparisons or {},
        inp.settings.timezone,
        language,
    )


_LABELS = {
    "sv": {
        "title": "Debiteringsunderlag",
        "summary_title": "Sammanställning per fastighet",
        "period": "Period",
        "property": "Fastighet",
        "object": "Objektnummer",
        "number": "Lägenhetsnummer",
        "address": "Adress",
        "tenant": "Hyresgäst/medlem",
        "vacant": "Vakant (fastighetsägaren)",
        "area": "Area",
        "readings": "Mätarställningar",
        "charges": "Debitering",
        "medium": "Medium",
        "meter": "Mätare",
        "from": "Från",
        "to": "Till",
        "start": "Start",
        "end": "Slut",
        "source": "Källa",
        "consumption": "Förbrukning",
        "text": "Text",
        "quantity": "Mängd",
        "unit_price": "À-pris",
        "net": "Netto",
        "vat": "Moms",
        "gross": "Summa",
        "total_net": "Summa netto",
        "total_vat": "Moms",
        "total": "Att betala",
        "calc": "Beräkning",
        "estimated": "Uppskattat",
        "held": "Innehållen",
        "comparison": "Jämförelse av förbrukning",
        "this_period": "Denna period",
        "previous": "Föregående period",
        "last_year": "Samma period i fjol",
        "per_m2": "Per m²",
        "building_avg": "Byggnadens snitt per m²",
        "no_readings": "Inga mätarställningar för denna period.",
        "footer": "Körning {run} · beräknad {created} · indata sha256 {digest}",
        "page": "Sida {n} av {total}",
        "model": "Prismodell",
        "cost": "Kostnad (pool)",
        "main": "Huvudmätare",
        "apartments_sum": "Summa lägenheter",
        "difference": "Skillnad",
        "rule": "Regel för skillnad",
        "charged": "Debiterat hyresgäster",
        "carried": "Bärs av fastigheten",
        "cost_minus": "Kostnad minus debiterat",
        "est_share": "Uppskattad andel",
        "notes": "Anteckningar",
        "fixed_costs": "Övriga kostnader",
        "totals": "Summa körningen",
        "lines": "Rader",
        "per_apartment": "Per lägenhet",
        "debitering": "debitering (pris per enhet)",
        "fordelning": "fördelning (faktisk kostnad)",
        "rent": "ingår i hyran",
        "eed": "Uppgifter enligt EU:s energieffektivitetsdirektiv (2012/27/EU, 2018/2002).",
    },
    "en": {
        "title": "Billing basis",
        "summary_title": "Property summary",
        "period": "Period",
        "property": "Property",
        "object": "Object number",
        "number": "Apartment number",
        "address": "Address",
        "tenant": "Tenant/member",
        "vacant": "Vacant (the owner)",
        "area": "Area",
        "readings": "Meter readings",
        "charges": "Charges",
        "medium": "Medium",
        "meter": "Meter",
        "from": "From",
        "to": "To",
        "start": "Start",
        "end": "End",
        "source": "Source",
        "consumption": "Consumption",
        "text": "Text",
        "quantity": "Quantity",
        "unit_price": "Unit price",
        "net": "Net",
        "vat": "VAT",
        "gross": "Total",
        "total_net": "Total net",
        "total_vat": "VAT",
        "total": "Amount due",
        "calc": "Calculation",
        "estimated": "Estimated",
        "held": "Held back",
        "comparison": "Consumption comparison",
        "this_period": "This period",
        "previous": "Previous period",
        "last_year": "Same period last year",
        "per_m2": "Per m²",
        "building_avg": "Building average per m²",
        "no_readings": "No meter readings for this period.",
        "footer": "Run {run} · computed {created} · input sha256 {digest}",
        "page": "Page {n} of {total}",
        "model": "Price model",
        "cost": "Cost (pool)",
        "main": "Main meter",
        "apartments_sum": "Sum of apartments",
        "difference": "Difference",
        "rule": "Difference rule",
        "charged": "Charged to tenants",
        "carried": "Carried by the property",
        "cost_minus": "Cost minus charged",
        "est_share": "Estimated share",
        "notes": "Notes",
        "fixed_costs": "Other costs",
        "totals": "Run totals",
        "lines": "Lines",
        "per_apartment": "Per apartment",
        "debitering": "debitering (price per unit)",
        "fordelning": "fördelning (actual cost)",
        "rent": "included in the rent",
        "eed": "Information under the EU energy efficiency directive (2012/27/EU, 2018/2002).",
    },
}
_MEDIA = {
    "sv": {
        Medium.HEAT: "Värme",
        Medium.HOT_WATER: "Varmvatten",
        Medium.COLD_WATER: "Kallvatten",
        Medium.ELECTRICITY: "El",
        Medium.ROOM_TEMPERATURE: "Rumstemperatur",
    },
    "en": {
        Medium.HEAT: "Heat",
        Medium.HOT_WATER: "Hot water",
        Medium.COLD_WATER: "Cold water",
        Medium.ELECTRICITY: "Electricity",
        Medium.ROOM_TEMPERATURE: "Room temperature",
    },
}
_SOURCES = {
    "sv": {
        "remote": "fjärravläst",
        "manual": "manuell",
        "estimated": "uppskattad",
        "interpolated": "interpolerad",
        "extrapolated": "extrapolerad",
    },
    "en": {},
}

MARGIN = 40.0
BOTTOM = 800.0  # lowest baseline for content; the footer sits below


def _money(value: Decimal, lang: str) -> str:
    """Two decimals with grouping: ``1 234,50`` (sv) or ``1,234.50`` (en)."""
    q = value.quantize(Decimal("0.01"), context=EXACT) if value.as_tuple().exponent != -2 else value
    text = f"{q:,.2f}"
    if lang == "sv":
        text = text.replace(",", " ").replace(".", ",")
    return text


def _qty(value: Decimal | None, lang: str) -> str:
    if value is None:
        return ""
    text = fmt(value)
    return text.replace(".", ",") if lang == "sv" else text


def _unit(unit: str) -> str:
    return {"m3": "m³", "m2": "m²"}.get(unit, unit)


def _day(d: date) -> str:
    return d.isoformat()


def _fit(text: str, width: float, size: float, bold: bool = False) -> str:
    font = "F2" if bold else "F1"
    if text_width(text, font, size) <= width:
        return text
    while text and text_width(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def _wrap(text: str, width: float, size: float) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if text_width(trial, "F1", size) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
    if line:
        out.append(line)
    return [_fit(x, width, size) for x in out]


@dataclass(frozen=True, slots=True)
class _Col:
    label: str
    width: float
    align: str = "left"


class _Flow:
    """Top-down layout over pages: a cursor, page breaks, a repeated page header and a footer."""

    def __init__(self, doc: PdfDocument, heading: str, subheading: str, footer: str, lang: str) -> None:
        self.doc = doc
        self.heading = heading
        self.subheading = subheading
        self.footer = footer
        self.lang = lang
        self.page: Page = doc.new_page()
        self.y = 0.0
        self._start_page()

    def _start_page(self) -> None:
        p = self.page
        p.text(MARGIN, 52, self.heading, size=16, bold=True)
        p.text(p.width - MARGIN, 52, self.subheading, size=10, align="right")
        p.line(MARGIN, 60, p.width - MARGIN, 60, 1.0)
        self.y = 78.0

    def need(self, height: float) -> None:
        if self.y + height > BOTTOM:
            self.page = self.doc.new_page()
            self._start_page()

    def section(self, title: str) -> None:
        self.need(52)
        self.y += 20
        self.page.text(MARGIN, self.y, title, size=11, bold=True)
        self.y += 5

    def table_header(self, cols: Sequence[_Col], size: float = 7.5) -> None:
        self.need(30)
        x = MARGIN
        self.page.box(MARGIN, self.y, self.page.width - 2 * MARGIN, 13, fill=0.88)
        for col in cols:
            tx = x + col.width - 3 if col.align == "right" else x + 3
            self.page.text(
                tx,
                self.y + 9.5,
                _fit(col.label, col.width - 4, size, True),
                size=size,
                bold=True,
                align=col.align,
            )
            x += col.width
        self.y += 13

    def row(self, cols: Sequence[_Col], values: Sequence[str], size: float = 7.5, bold: bool = False) -> None:
        self.need(12)
        x = MARGIN
        for col, value in zip(cols, values, strict=True):
            tx = x + col.width - 3 if col.align == "right" else x + 3
            self.page.text(
                tx, self.y + 9, _fit(value, col.width - 5, size, bold), size=size, bold=bold, align=col.align
            )
            x += col.width
        self.y += 11.5

    def note(self, text: str, indent: float = 3, size: float = 6.8) -> None:
        for part in _wrap(text, self.page.width - 2 * MARGIN - indent - 6, size):
            self.need(9)
            self.page.text(MARGIN + indent, self.y + 7, part, size=size, grey=True)
            self.y += 8.5

    def rule(self) -> None:
        self.page.line(MARGIN, self.y + 2, self.page.width - MARGIN, self.y + 2, 0.4)
        self.y += 4

    def pairs(self, items: Sequence[tuple[str, str]], columns: int = 2) -> None:
        """Label/value pairs in a grey box, ``columns`` pairs per row."""
        rows = -(-len(items) // columns)
        height = rows * 13 + 8
        self.need(height)
        width = self.page.width - 2 * MARGIN
        self.page.box(MARGIN, self.y, width, height, fill=0.95)
        col_w = width / columns
        for i, (label, value) in enumerate(items):
            r, c = divmod(i, columns)
            x = MARGIN + 6 + c * col_w
            y = self.y + 14 + r * 13
            self.page.text(x, y, label, size=8, grey=True)
            self.page.text(x + 92, y, _fit(value, col_w - 100, 8.5, True), size=8.5, bold=True)
        self.y += height + 4

    def finish(self) -> None:
        total = len(self.doc.pages)
        lab = _LABELS[self.lang]
        for n, page in enumerate(self.doc.pages, start=1):
            page.line(MARGIN, 812, page.width - MARGIN, 812, 0.4)
            page.text(MARGIN, 823, _fit(self.footer, page.width - 2 * MARGIN - 70, 6.5), size=6.5, grey=True)
            page.text(
                page.width - MARGIN,
                823,
                lab["page"].format(n=n, total=total),
                size=6.5,
                align="right",
                grey=True,
            )


def _footer(run: BillingRun, lang: str, zone: ZoneInfo) -> str:
    created = run.audit[0].at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if run.audit else ""
    return _LABELS[lang]["footer"].format(run=run.run_id, created=created, digest=run.input_digest[:16])


def _created(run: BillingRun) -> datetime:
    return run.audit[0].at if run.audit else datetime.combine(run.period_to, datetime.min.time())


def _period_text(run: BillingRun) -> str:
    return f"{_day(run.period_from)} – {_day(run.period_to - timedelta(days=1))}"


def _document(kind: str, name: str, apartment_id: str | None, tenant: str | None, data: bytes) -> Document:
    return Document(name, kind, apartment_id, tenant, data, hashlib.sha256(data).hexdigest())


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _tenant_text(ctx: DocumentContext, tenant_ref: str | None, vacant: str) -> str:
    if tenant_ref is None:
        return vacant
    name = ctx.tenant_names.get(tenant_ref)
    return f"{tenant_ref} ({name})" if name else tenant_ref


def underlag(
    run: BillingRun,
    ctx: DocumentContext,
    apartment_id: str,
    tenant_ref: str | None,
    lines: Sequence[BillingLine],
) -> Document:
    """The billing basis of one apartment for one payer (``tenant_ref`` None: the vacant stretches)."""
    lang = ctx.language
    lab = _LABELS[lang]
    media = _MEDIA[lang]
    sources = _SOURCES[lang]
    zone = ZoneInfo(ctx.timezone)
    apt = ctx.apartments.get(apartment_id)
    first = lines[0]
    doc = PdfDocument(
        title=f"{lab['title']} {first.object_number} {_period_text(run)}",
        author=ctx.property_name,
        created=_created(run),
    )
    flow = _Flow(doc, lab["title"], f"{lab['period']} {_period_text(run)}", _footer(run, lang, zone), lang)
    flow.pairs(
        [
            (lab["property"], f"{ctx.property_name} ({ctx.property_id})"),
            (lab["object"], first.object_number),
            (lab["address"], apt.address if apt else ""),
            (lab["number"], first.apartment_number),
            (lab["tenant"], _tenant_text(ctx, tenant_ref, lab["vacant"])),
            (lab["area"], f"{_qty(apt.area_m2, lang)} m²" if apt else ""),
        ]
    )
    # Meter readings: every span of every consumption line, once.
    flow.section(lab["readings"])
    cols = (
        _Col(lab["medium"], 62),
        _Col(lab["meter"], 78),
        _Col(lab["from"], 50),
        _Col(lab["start"], 56, "right"),
        _Col(lab["source"], 52),
        _Col(lab["to"], 50),
        _Col(lab["end"], 56, "right"),
        _Col(lab["source"], 52),
        _Col(lab["consumption"], 59, "right"),
    )
    seen: set[tuple[str, str, datetime]] = set()
    spans = []
    for line in lines:
        for span in line.spans:
            key = (span.point_id, span.meter_id, span.start_at)
            if key not in seen:
                seen.add(key)
                spans.append((line, span))
    if spans:
        flow.table_header(cols)
        for line, span in spans:
            used = span.end_value - span.start_value
            flow.row(
                cols,
                (
                    media.get(line.medium, str(line.medium)) if line.medium else "",
                    span.meter_id,
                    _day(span.start_at.astimezone(zone).date()),
                    _qty(span.start_value, lang),
                    sources.get(span.start_source, span.start_source),
                    _day(span.end_at.astimezone(zone).date()),
                    _qty(span.end_value, lang),
                    sources.get(span.end_source, span.end_source),
                    f"{_qty(used, lang)} {_unit(line.unit)}",
                ),
            )
    else:
        flow.note(lab["no_readings"], size=8)
    # Charges with their arithmetic.
    flow.section(lab["charges"])
    ccols = (
        _Col(lab["text"], 156),
        _Col(lab["period"], 98),
        _Col(lab["quantity"], 58, "right"),
        _Col(lab["unit_price"], 48, "right"),
        _Col(lab["net"], 52, "right"),
        _Col(lab["vat"], 48, "right"),
        _Col(lab["gross"], 55, "right"),
    )
    flow.table_header(ccols)
    net = vat = ZERO
    for line in lines:
        flag = ""
        if line.held:
            flag = f" ({lab['held']})"
        elif line.payer is Payer.RENT:
            flag = f" ({lab['rent']})"
        flow.row(
            ccols,
            (
                line.text + flag,
                f"{_day(line.period_from)} – {_day(line.period_to - timedelta(days=1))}",
                f"{_qty(line.quantity, lang)} {_unit(line.unit)}".strip()
                if line.quantity is not None
                else "",
                _qty(line.unit_price, lang),
                _money(line.net, lang),
                _money(line.vat, lang),
                _money(line.gross, lang),
            ),
        )
        flow.note(f"{lab['calc']}: {line.arithmetic}")
        if line.estimated and (line.estimate_method or line.estimate_reason):
            reason = "; ".join(x for x in (line.estimate_method, line.estimate_reason) if x)
            flow.note(f"{lab['estimated']}: {reason}")
        if line.held and line.hold_reason:
            flow.note(f"{lab['held']}: {line.hold_reason}")
        if not line.held and line.payer is not Payer.RENT:  # a vacant stretch: the owner's own total
            net += line.net
            vat += line.vat
    flow.rule()
    tcols = (_Col("", 360), _Col("", 100, "right"), _Col("", 55, "right"))
    flow.row(tcols, ("", lab["total_net"], _money(net, lang)))
    flow.row(tcols, ("", lab["total_vat"], _money(vat, lang)))
    flow.row(tcols, ("", lab["total"], _money(net + vat, lang)), size=9, bold=True)
    # EED comparisons.
    comps = ctx.comparisons.get(apartment_id, ())
    if comps:
        flow.section(lab["comparison"])
        kcols = (
            _Col(lab["medium"], 80),
            _Col(lab["this_period"], 75, "right"),
            _Col(lab["previous"], 85, "right"),
            _Col(lab["last_year"], 90, "right"),
            _Col(lab["per_m2"], 80, "right"),
            _Col(lab["building_avg"], 105, "right"),
        )
        flow.table_header(kcols)
        own: dict[Medium | None, Decimal] = defaultdict(lambda: ZERO)
        for line in lines:
            if line.kind is LineKind.CONSUMPTION and line.quantity is not None:
                own[line.medium] += line.quantity
        for comp in comps:
            this = own.get(comp.medium)
            per_m2 = (
                EXACT.divide(this, apt.area_m2).quantize(Decimal("0.01"), context=EXACT)
                if this is not None and apt is not None and apt.area_m2
                else None
            )
            unit = _unit(comp.unit)
            flow.row(
                kcols,
                (
                    media.get(comp.medium, str(comp.medium)),
                    f"{_qty(this, lang)} {unit}" if this is not None else "–",
                    f"{_qty(comp.previous_period, lang)} {unit}" if comp.previous_period is not None else "–",
                    f"{_qty(comp.same_period_last_year, lang)} {unit}"
                    if comp.same_period_last_year is not None
                    else "–",
                    f"{_qty(per_m2, lang)} {unit}/m²" if per_m2 is not None else "–",
                    f"{_qty(comp.building_average_per_m2, lang)} {unit}/m²"
                    if comp.building_average_per_m2 is not None
                    else "–",
                ),
            )
        flow.note(lab["eed"])
    flow.finish()
    tenant_part = _safe(tenant_ref) if tenant_ref is not None else "vakant"
    obj = _safe(first.object_number)
    name = f"underlag_{_safe(ctx.property_id)}_{run.period_from:%Y%m}_{obj}_{tenant_part}.pdf"
    return _document("underlag", name, apartment_id, tenant_ref, doc.to_bytes())


def _groups(run: BillingRun) -> list[tuple[tuple[str, str | None], list[BillingLine]]]:
    groups: dict[tuple[str, str | None], list[BillingLine]] = {}
    for line in run.lines:
        if line.apartment_id is None:
            continue
        groups.setdefault((line.apartment_id, line.tenant_ref), []).append(line)
    return sorted(groups.items(), key=lambda kv: (kv[1][0].object_number, kv[0][1] or "", kv[0][0]))


def apartment_documents(run: BillingRun, ctx: DocumentContext) -> list[Document]:
    """Every apartment's debiteringsunderlag of ``run``, in object-number order (one process)."""
    return [underlag(run, ctx, apt_id, tenant, lines) for (apt_id, tenant), lines in _groups(run)]


def property_summary_document(run: BillingRun, ctx: DocumentContext) -> Document:
    """The property's summary: per medium the pool, Σ charged, the difference, the estimated share."""
    lang = ctx.language
    lab = _LABELS[lang]
    media = _MEDIA[lang]
    zone = ZoneInfo(ctx.timezone)
    doc = PdfDocument(
        title=f"{lab['summary_title']} {ctx.property_id} {_period_text(run)}",
        author=ctx.property_name,
        created=_created(run),
    )
    period = f"{lab['period']} {_period_text(run)}"
    flow = _Flow(doc, lab["summary_title"], period, _footer(run, lang, zone), lang)
    s = run.summary
    flow.pairs(
        [
            (lab["property"], f"{ctx.property_name} ({ctx.property_id})"),
            (lab["lines"], str(s.line_count)),
            (lab["total_net"], _money(s.net, lang)),
            (lab["total_vat"], _money(s.vat, lang)),
            (lab["total"], _money(s.gross, lang)),
            (lab["held"], _money(s.held, lang)),
        ]
    )
    cols = (_Col("", 200), _Col("", 150, "right"))

    def amount(v: Decimal | None) -> str:
        return _money(v, lang) if v is not None else "–"

    for m in s.media:
        flow.section(f"{media.get(m.medium, str(m.medium))} – {lab.get(m.model, m.model)}")
        rows = [
            (lab["cost"], amount(m.cost)),
            (
                lab["main"],
                f"{_qty(m.main_quantity, lang)} {_unit(m.unit)}" if m.main_quantity is not None else "–",
            ),
            (lab["apartments_sum"], f"{_qty(m.apartments_quantity, lang)} {_unit(m.unit)}"),
            (
                lab["difference"],
                f"{_qty(m.difference_quantity, lang)} {_unit(m.unit)}"
                + (f" ({_qty(m.difference_percent, lang)} %)" if m.difference_percent is not None else "")
                if m.difference_quantity is not None
                else "–",
            ),
            (lab["rule"], m.difference_rule or "–"),
            (lab["charged"], amount(m.charged_tenants)),
            (lab["carried"], amount(m.carried_by_property)),
            (lab["held"], amount(m.held)),
            (lab["cost_minus"], amount(m.cost_minus_lines)),
            (lab["est_share"], f"{_qty((m.estimated_share * 100).quantize(Decimal('0.01')), lang)} %"),
        ]
        for label, value in rows:
            flow.row(cols, (label, value))
        for text in (*m.cost_arithmetic, *m.notes):
            flow.note(text)
    if s.fixed_costs:
        flow.section(lab["fixed_costs"])
        for cost_id, total in s.fixed_costs:
            flow.row(cols, (cost_id, _money(total, lang)))
    flow.section(lab["per_apartment"])
    pcols = (
        _Col(lab["object"], 90),
        _Col(lab["number"], 80),
        _Col(lab["tenant"], 125),
        _Col(lab["net"], 75, "right"),
        _Col(lab["vat"], 70, "right"),
        _Col(lab["gross"], 75, "right"),
    )
    flow.table_header(pcols)
    sums: dict[tuple[str, str, str], list[Decimal]] = {}
    for line in run.exportable():
        key = (line.object_number, line.apartment_number, line.tenant_ref or "")
        acc = sums.setdefault(key, [ZERO, ZERO])
        acc[0] += line.net
        acc[1] += line.vat
    for (obj, number, tenant), (n, v) in sorted(sums.items()):
        flow.row(pcols, (obj, number, tenant, _money(n, lang), _money(v, lang), _money(n + v, lang)))
    flow.finish()
    name = f"sammanstallning_{_safe(ctx.property_id)}_{run.period_from:%Y%m}.pdf"
    return _document("summary", name, None, None, doc.to_bytes())


_Group = tuple[tuple[str, str | None], list[BillingLine]]


def _render_chunk(job: tuple[BillingRun, DocumentContext, list[_Group], bool]) -> list[Document]:
    run, ctx, groups, with_summary = job
    out = [underlag(run, ctx, apt_id, tenant, lines) for (apt_id, tenant), lines in groups]
    if with_summary:
        out.append(property_summary_document(run, ctx))
    return out


def documents_parallel(
    items: Iterable[tuple[BillingRun, DocumentContext]], workers: int | None = None, chunk: int = 25
) -> list[Document]:
    """Every underlag and the summary of each run, rendered across ``workers`` processes.

    The result is in the same order as a sequential rendering (per run: the apartments, then the
    summary), and the bytes are the same whatever the number of workers. A job carries only the
    lines of its apartments (the summary job carries the run), so little is pickled.
    """
    jobs: list[tuple[BillingRun, DocumentContext, list[_Group], bool]] = []
    for run, ctx in items:
        head = replace(run, lines=(), audit=run.audit[:1])
        groups = _groups(run)
        jobs += [(head, ctx, groups[i : i + chunk], False) for i in range(0, len(groups), chunk)]
        jobs.append((replace(run, audit=run.audit[:1]), ctx, [], True))
    if workers == 1 or len(jobs) <= 1:
        return [doc for job in jobs for doc in _render_chunk(job)]
    with ProcessPoolExecutor(workers) as pool:
        return [doc for docs in pool.map(_render_chunk, jobs) for doc in docs]
