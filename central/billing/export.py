"""Debiteringsfil: a run's billable lines in one canonical form, rendered through a profile.

The canonical line is the contract; a *profile* (plain data: a dict, JSON or TOML) says how one
rental administration system wants it: which columns in which order with which headings, delimiter,
decimal separator, encoding, line ending, charge codes, an optional header and trailer record, and
fixed widths where the system reads fixed-width records. New customers get a profile, not code.

Rendering is deterministic: the same run and profile give the same bytes (no clock, no locale).
Only lines that go on a tenant's notice are exported (not vacant/common/rent-included lines, and
not held lines); the header totals are over exactly the exported lines.
"""

from __future__ import annotations

import csv
import io
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

from .money import ZERO, fmt
from .runs import BillingLine, BillingRun

__all__ = [
    "EXCEL_CSV",
    "FIXED_WIDTH_CP1252",
    "GENERIC_CSV",
    "Column",
    "Debiteringsfil",
    "ExportError",
    "ExportHeader",
    "ExportLine",
    "Profile",
    "canonical_file",
    "load_profile",
    "profile_from_dict",
    "render",
]


class ExportError(ValueError):
    """The run cannot be written with this profile (a character the encoding lacks, a field too wide)."""


@dataclass(frozen=True, slots=True)
class ExportLine:
    property_id: str
    object_number: str
    apartment_number: str
    tenant_ref: str
    charge_code: str  # canonical: "<charge>.<vat class>", e.g. "heat.vat25", "cost.samf.exempt"
    medium: str
    vat_class: str
    period_from: date
    period_to: date  # exclusive
    period_last_day: date  # inclusive, what most systems print
    quantity: Decimal | None
    unit: str
    unit_price: Decimal | None
    net: Decimal
    vat_rate: Decimal
    vat: Decimal
    gross: Decimal
    reading_start: Decimal | None
    reading_end: Decimal | None
    reading_start_date: date | None
    reading_end_date: date | None
    source: str
    estimated: bool
    text: str
    run_id: str
    line_id: str
    corrects: str


@dataclass(frozen=True, slots=True)
class ExportHeader:
    property_id: str
    run_id: str
    period_from: date
    period_to: date
    period_last_day: date
    line_count: int
    net: Decimal
    vat: Decimal
    gross: Decimal


@dataclass(frozen=True, slots=True)
class Debiteringsfil:
    header: ExportHeader
    lines: tuple[ExportLine, ...]


def _canonical(line: BillingLine, property_id: str, tz_date: Any) -> ExportLine:
    one = len(line.spans) == 1
    span = line.spans[0] if one else None
    return ExportLine(
        property_id=property_id,
        object_number=line.object_number,
        apartment_number=line.apartment_number,
        tenant_ref=line.tenant_ref or "",
        charge_code=f"{line.charge}.{line.vat_class}",
        medium=str(line.medium) if line.medium else "",
        vat_class=line.vat_class,
        period_from=line.period_from,
        period_to=line.period_to,
        period_last_day=line.period_to - timedelta(days=1),
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price,
        net=line.net,
        vat_rate=line.vat_rate,
        vat=line.vat,
        gross=line.gross,
        reading_start=span.start_value if span else None,
        reading_end=span.end_value if span else None,
        reading_start_date=tz_date(span.start_at) if span else None,
        reading_end_date=tz_date(span.end_at) if span else None,
        source=line.source,
        estimated=line.estimated,
        text=line.text,
        run_id=line.run_id,
        line_id=line.line_id,
        corrects=line.corrects or "",
    )


def canonical_file(run: BillingRun, timezone: str = "Europe/Stockholm") -> Debiteringsfil:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    lines = tuple(
        _canonical(ln, run.property_id, lambda t: t.astimezone(zone).date()) for ln in run.exportable()
    )
    net = sum((ln.net for ln in lines), ZERO)
    vat = sum((ln.vat for ln in lines), ZERO)
    header = ExportHeader(
        run.property_id,
        run.run_id,
        run.period_from,
        run.period_to,
        run.period_to - timedelta(days=1),
        len(lines),
        net,
        vat,
        net + vat,
    )
    return Debiteringsfil(header, lines)


@dataclass(frozen=True, slots=True)
class Column:
    field: str  # an ExportLine/ExportHeader field name, or "=text" for a constant
    header: str = ""
    width: int | None = None  # fixed-width layouts
    align: str = "left"  # left | right
    decimals: int | None = None  # fixed decimals for numbers (rounded half-up); None keeps the value's own
    pad: str = " "


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    columns: tuple[Column, ...]
    encoding: str = "utf-8"
    delimiter: str = ";"
    decimal_separator: str = ","
    line_terminator: str = "\r\n"
    column_headers: bool = True
    fixed_width: bool = False
    header_record: tuple[Column, ...] = ()
    trailer_record: tuple[Column, ...] = ()
    charge_codes: Mapping[str, str] = field(default_factory=dict)  # canonical -> system code
    date_format: str = "%Y-%m-%d"
    true_value: str = "1"
    false_value: str = "0"
    excel_text: tuple[str, ...] = ()  # fields written as ="..." so Excel keeps leading zeros


_LINE_FIELDS = {f.name for f in fields(ExportLine)}
_HEADER_FIELDS = {f.name for f in fields(ExportHeader)}


def profile_from_dict(data: Mapping[str, Any]) -> Profile:
    """A profile from plain data (what a JSON or TOML profile file holds); checks field names."""

    def cols(items: Any, allowed: set[str]) -> tuple[Column, ...]:
        out = []
        for item in items or ():
            col = Column(**item) if isinstance(item, Mapping) else Column(field=str(item), header=str(item))
            if not col.field.startswith("=") and col.field not in allowed:
                raise ExportError(f"profile {data.get('name')}: unknown field {col.field!r}")
            out.append(col)
        return tuple(out)

    known = {f.name for f in fields(Profile)}
    extra = set(data) - known
    if extra:
        raise ExportError(f"profile {data.get('name')}: unknown settings {sorted(extra)}")
    values = dict(data)
    values["columns"] = cols(data.get("columns"), _LINE_FIELDS)
    values["header_record"] = cols(data.get("header_record"), _HEADER_FIELDS)
    values["trailer_record"] = cols(data.get("trailer_record"), _HEADER_FIELDS)
    values["charge_codes"] = dict(data.get("charge_codes", {}))
    values["excel_text"] = tuple(data.get("excel_text", ()))
    profile = Profile(**values)
    "x".encode(profile.encoding)  # an unknown encoding fails here, not at export time
    return profile


def load_profile(text: str, fmt_name: str = "toml") -> Profile:
    data = tomllib.loads(text) if fmt_name == "toml" else json.loads(text)
    return profile_from_dict(data)


def _text(value: Any, col: Column, profile: Profile, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return profile.true_value if value else profile.false_value
    if isinstance(value, Decimal):
        if col.decimals is not None:
            value = value.quantize(Decimal(1).scaleb(-col.decimals), rounding="ROUND_HALF_UP")
        return fmt(value).replace(".", profile.decimal_separator)
    if isinstance(value, date):
        return value.strftime(profile.date_format)
    out = str(value)
    if name in profile.excel_text and out:
        out = '="' + out.replace('"', '""') + '"'
    return out


def _writer(col: Column, profile: Profile) -> Callable[[Any], str]:
    """The text of ``col`` for a record, with the column's decisions taken once per file, not per line.

    Same result as ``_text`` (kept as the reference and for odd types); the common types of the
    canonical line (str, Decimal, date, bool, None) get a direct path.
    """
    if col.field.startswith("="):
        const = _text(col.field[1:], col, profile, col.field)
        return lambda _obj: const
    get = attrgetter(col.field)
    codes = profile.charge_codes if col.field == "charge_code" else None
    excel = col.field in profile.excel_text
    sep = profile.decimal_separator
    step = Decimal(1).scaleb(-col.decimals) if col.decimals is not None else None
    iso = profile.date_format == "%Y-%m-%d"

    def write(obj: Any) -> str:
        value = get(obj)
        t = type(value)
        if t is str:
            text: str = codes.get(value, value) if codes is not None else value
            if excel and text:
                return '="' + text.replace('"', '""') + '"'
            return text
        if value is None:
            return ""
        if t is Decimal:
            if step is not None:
                value = value.quantize(step, rounding="ROUND_HALF_UP")
            return f"{value:f}".replace(".", sep)
        if t is date and iso:
            return str(value.isoformat())
        return _text(value, col, profile, col.field)

    return write


def _record(obj: Any, writers: list[Callable[[Any], str]]) -> list[str]:
    return [w(obj) for w in writers]


def _fixed(values: list[str], cols: tuple[Column, ...]) -> str:
    parts = []
    for value, col in zip(values, cols, strict=True):
        width = col.width or len(value)
        text = value
        if len(text) > width:
            if col.align == "right":  # a number cut short would be a different number
                raise ExportError(f"{col.field}: {text!r} wider than {width}")
            text = text[:width]
        parts.append(text.rjust(width, col.pad) if col.align == "right" else text.ljust(width, col.pad))
    return "".join(parts)


def render(run: BillingRun | Debiteringsfil, profile: Profile) -> bytes:
    """The debiteringsfil of ``run`` in ``profile``'s layout, as the bytes to write."""
    data = run if isinstance(run, Debiteringsfil) else canonical_file(run)
    rows: list[list[str]] = []
    kinds: list[tuple[Column, ...]] = []
    line_writers = [_writer(c, profile) for c in profile.columns]
    if profile.header_record:
        rows.append(_record(data.header, [_writer(c, profile) for c in profile.header_record]))
        kinds.append(profile.header_record)
    rows += [_record(line, line_writers) for line in data.lines]
    kinds += [profile.columns] * len(data.lines)
    if profile.trailer_record:
        rows.append(_record(data.header, [_writer(c, profile) for c in profile.trailer_record]))
        kinds.append(profile.trailer_record)
    buf = io.StringIO()
    if profile.fixed_width:
        for row, cols in zip(rows, kinds, strict=True):
            buf.write(_fixed(row, cols) + profile.line_terminator)
    else:
        writer = csv.writer(buf, delimiter=profile.delimiter, lineterminator=profile.line_terminator)
        if profile.column_headers:
            writer.writerow([c.header or c.field for c in profile.columns])
        writer.writerows(rows)
    try:
        return buf.getvalue().encode(profile.encoding)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ExportError(f"profile {profile.name}: {bad!r} cannot be written in {profile.encoding}") from exc


_ALL = tuple(
    Column(name, name)
    for name in (
        "property_id",
        "object_number",
        "apartment_number",
        "tenant_ref",
        "charge_code",
        "period_from",
        "period_last_day",
        "quantity",
        "unit",
        "unit_price",
        "net",
        "vat_rate",
        "vat",
        "gross",
        "reading_start",
        "reading_end",
        "reading_start_date",
        "reading_end_date",
        "source",
        "estimated",
        "text",
        "run_id",
        "line_id",
        "corrects",
    )
)

GENERIC_CSV = Profile(name="generic_csv", columns=_ALL)

EXCEL_CSV = Profile(
    name="excel",
    encoding="utf-8-sig",  # the BOM makes Excel read UTF-8 (å, ä, ö) instead of guessing cp1252
    columns=tuple(
        Column(c.field, h)
        for c, h in zip(
            _ALL,
            (
                "Fastighet",
                "Objektnummer",
                "Lägenhetsnummer",
                "Hyresgäst",
                "Debiteringskod",
                "Från",
                "Till",
                "Förbrukning",
                "Enhet",
                "À-pris",
                "Netto",
                "Momssats",
                "Moms",
                "Brutto",
                "Mätarställning start",
                "Mätarställning slut",
                "Avläst start",
                "Avläst slut",
                "Källa",
                "Uppskattad",
                "Text",
                "Körning",
                "Rad-id",
                "Rättar rad",
            ),
            strict=True,
        )
    ),
    trailer_record=(
        Column("=Summa"),
        *(Column("=") for _ in range(9)),
        Column("net"),
        Column("="),
        Column("vat"),
        Column("gross"),
    ),
    true_value="Ja",
    false_value="Nej",
    excel_text=("object_number", "apartment_number", "tenant_ref"),
)

FIXED_WIDTH_CP1252 = Profile(
    name="fixed_width_cp1252",
    encoding="cp1252",
    fixed_width=True,
    column_headers=False,
    line_terminator="\r\n",
    date_format="%Y%m%d",
    header_record=(
        Column("=H", width=1),
        Column("property_id", width=12),
        Column("run_id", width=24),
        Column("period_from", width=8),
        Column("period_last_day", width=8),
        Column("line_count", width=6, align="right", pad="0"),
        Column("net", width=14, align="right", decimals=2),
        Column("vat", width=14, align="right", decimals=2),
        Column("gross", width=14, align="right", decimals=2),
    ),
    columns=(
        Column("=D", width=1),
        Column("object_number", width=12),
        Column("apartment_number", width=6),
        Column("charge_code", width=8),
        Column("period_from", width=8),
        Column("period_last_day", width=8),
        Column("quantity", width=12, align="right", decimals=3),
        Column("unit", width=4),
        Column("net", width=12, align="right", decimals=2),
        Column("vat", width=12, align="right", decimals=2),
        Column("text", width=40),
        Column("line_id", width=41),
    ),
    charge_codes={
        "heat.vat25": "VARME",
        "heat.exempt": "VARME0",
        "hot_water.vat25": "VV",
        "hot_water.exempt": "VV0",
        "cold_water.vat25": "KV",
        "cold_water.exempt": "KV0",
        "electricity.vat25": "EL",
        "electricity.exempt": "EL0",
    },
)
