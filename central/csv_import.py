"""CSV imports: apartment and tenancy registers from rental administration systems, meter lists with keys.

Every row is validated first; the report says which rows were accepted and why any row was
refused. Nothing is imported unless every row is valid (no half-imports). Swedish and English
headers are accepted, ``;`` or ``,`` as separator and a decimal comma in numbers. Keys in a meter
list are encrypted before they reach the database and never appear in a report or a log.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from central.db import Database
from central.keys import MeterKeyBox
from central.models import Apartment, AuditLog, Building, Property, Tenancy
from central.site_import import import_site
from central.tenancies import TenancyError, TenancySpan, check_dates, describe, first_overlap
from protocols.site import SiteApartment, SiteBuilding, SiteExport, SiteMeter, SiteProperty

APARTMENT_COLUMNS = {
    "object_number": ("object_number", "objektsnummer", "objektnummer", "objekt"),
    "number": ("number", "lägenhetsnummer", "lagenhetsnummer", "lgh", "lghnr", "apartment"),
    "building": ("building", "hus", "byggnad"),
    "area_m2": ("area_m2", "area", "yta", "boarea"),
    "share": ("share", "andel", "andelstal"),
    "address": ("address", "adress"),
    "tenant_ref": ("tenant_ref", "hyresgäst", "hyresgast", "kontrakt", "tenant"),
}
METER_COLUMNS = {
    "id": ("id", "meter_id", "mätarnummer", "matarnummer", "serial"),
    "manufacturer": ("manufacturer", "tillverkare"),
    "version": ("version",),
    "device_type": ("device_type", "medium_code", "enhetstyp"),
    "medium": ("medium",),
    "apartment": ("apartment", "object_number", "objektsnummer", "lägenhet"),
    "model": ("model", "modell"),
    "bus": ("bus", "buss"),
    "primary_address": ("primary_address", "primäradress", "primaradress", "address"),
    "key": ("key", "nyckel", "aes_key"),
}
REQUIRED_APARTMENT = ("object_number", "number", "area_m2")
REQUIRED_METER = ("id", "manufacturer", "medium")
MAX_ROWS = 20_000


class CsvImportError(ValueError):
    """The file as a whole cannot be read (encoding, header)."""


@dataclass(slots=True)
class ImportOutcome:
    kind: str
    rows: int = 0
    accepted: list[int] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    imported: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "accepted": len(self.accepted),
            "refused": self.refused,
            "imported": self.imported,
            "summary": self.summary,
        }


def _rows(text: str, columns: dict[str, tuple[str, ...]], required: tuple[str, ...]) -> list[dict[str, str]]:
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise CsvImportError("the file is empty")
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=";,\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ";"
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    index: dict[str, int] = {}
    for name, aliases in columns.items():
        for alias in aliases:
            if alias in header and name not in index and header.index(alias) not in index.values():
                index[name] = header.index(alias)
    missing = [name for name in required if name not in index]
    if missing:
        raise CsvImportError(f"header: missing column(s) {', '.join(missing)} (got {', '.join(header)})")
    rows = []
    for raw in reader:
        if not any(cell.strip() for cell in raw):
            continue
        rows.append({name: (raw[i].strip() if i < len(raw) else "") for name, i in index.items()})
        if len(rows) > MAX_ROWS:
            raise CsvImportError(f"more than {MAX_ROWS} rows")
    return rows


def _decimal(value: str, name: str) -> Decimal | None:
    if not value:
        return None
    try:
        return Decimal(value.replace(" ", "").replace(",", "."))
    except InvalidOperation:
        raise ValueError(f"{name}: {value!r} is not a number") from None


def _code(value: str) -> int:
    value = value.strip().lower()
    if not value:
        return 0
    return int(value[2:], 16) if value.startswith("0x") else int(value)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)


async def _existing(
    db: Database, property_key: str
) -> tuple[SiteProperty, list[SiteBuilding], list[SiteApartment]]:
    async with db.sessions() as session:
        prop = (
            await session.execute(select(Property).where(Property.key == property_key))
        ).scalar_one_or_none()
        if prop is None:
            raise CsvImportError(f"property: no property {property_key!r}")
        buildings = list(
            (await session.execute(select(Building).where(Building.property_id == prop.id))).scalars()
        )
        by_id = {b.id: b.key for b in buildings}
        apartments = list(
            (await session.execute(select(Apartment).where(Apartment.property_id == prop.id))).scalars()
        )
    return (
        SiteProperty(id=prop.key, name=prop.name, address=prop.address, city=prop.city),
        [SiteBuilding(id=b.key, name=b.name, address=b.address) for b in buildings],
        [
            SiteApartment(
                object_number=a.object_number,
                number=a.number,
                building=by_id[a.building_id],
                area_m2=a.area_m2,
                share=a.share,
                address=a.address,
                tenant_ref=a.tenant_ref,
            )
            for a in apartments
        ],
    )


async def import_apartments_csv(
    db: Database,
    property_key: str,
    text: str,
    keybox: MeterKeyBox,
    *,
    dry_run: bool = False,
    actor: str | None = None,
) -> ImportOutcome:
    outcome = ImportOutcome("apartments")
    prop, buildings, existing = await _existing(db, property_key)
    rows = _rows(text, APARTMENT_COLUMNS, REQUIRED_APARTMENT)
    outcome.rows = len(rows)
    parsed: dict[str, SiteApartment] = {}
    known_buildings = {b.id for b in buildings}
    new_buildings: dict[str, SiteBuilding] = {}
    default_building = buildings[0].id if len(buildings) == 1 else None
    for n, row in enumerate(rows, start=2):  # row 1 is the header
        try:
            building = row.get("building") or default_building
            if not building:
                raise ValueError("building: needed when the property has several buildings (or none yet)")
            if row["object_number"] in parsed:
                raise ValueError(f"object_number: {row['object_number']} appears twice in the file")
            apartment = SiteApartment(
                object_number=row["object_number"],
                number=row["number"],
                building=building,
                area_m2=_decimal(row["area_m2"], "area_m2"),  # type: ignore[arg-type]
                share=_decimal(row.get("share", ""), "share"),
                address=row.get("address", ""),
                tenant_ref=row.get("tenant_ref") or None,
            )
        except (ValueError, ValidationError) as exc:
            outcome.refused.append(
                {"row": n, "object_number": row.get("object_number"), "reason": _reason(exc)}
            )
            continue
        if building not in known_buildings and building not in new_buildings:
            new_buildings[building] = SiteBuilding(id=building, name=building)
        parsed[apartment.object_number] = apartment
        outcome.accepted.append(n)
    if outcome.refused or dry_run:
        return outcome
    merged = {a.object_number: a for a in existing} | parsed
    site = SiteExport(
        property=prop,
        buildings=[*buildings, *new_buildings.values()],
        apartments=list(merged.values()),
        meters=[],
    )
    report = await import_site(db, site, keybox, actor=actor)
    outcome.imported = True
    outcome.summary = {k: v for k, v in report.as_dict().items() if k.startswith(("apartments", "buildings"))}
    return outcome


async def import_meters_csv(
    db: Database,
    property_key: str,
    text: str,
    keybox: MeterKeyBox,
    *,
    dry_run: bool = False,
    actor: str | None = None,
) -> ImportOutcome:
    outcome = ImportOutcome("meters")
    prop, buildings, apartments = await _existing(db, property_key)
    if not buildings:
        raise CsvImportError("property: import the apartments (and buildings) first")
    rows = _rows(text, METER_COLUMNS, REQUIRED_METER)
    outcome.rows = len(rows)
    known_apartments = {a.object_number for a in apartments}
    meters: dict[tuple[str, str], SiteMeter] = {}
    for n, row in enumerate(rows, start=2):
        try:
            apartment = row.get("apartment") or None
            if apartment is not None and apartment not in known_apartments:
                raise ValueError(f"apartment: no apartment {apartment!r} in {property_key}")
            values: dict[str, Any] = {
                "id": row["id"].zfill(8) if row["id"].isdigit() else row["id"],
                "manufacturer": row["manufacturer"].upper(),
                "version": int(row.get("version") or 0),
                "device_type": _code(row.get("device_type", "")),
                "medium": row["medium"],
                "apartment": apartment,
                "model": row.get("model", ""),
                "bus": row.get("bus") or "mbus0",
                "primary_address": int(row["primary_address"]) if row.get("primary_address") else None,
                "key": row.get("key") or None,
            }
            meter = SiteMeter.model_validate(values)
            if (meter.id, meter.manufacturer) in meters:
                raise ValueError(f"id: meter {meter.id} ({meter.manufacturer}) appears twice in the file")
        except (ValueError, ValidationError) as exc:
            # Never echo the key: the reason names fields, the row gives the meter id only.
            reason = _reason(exc)
            if row.get("key"):
                reason = reason.replace(row["key"], "***")
            outcome.refused.append({"row": n, "meter": row.get("id"), "reason": reason})
            continue
        meters[(meter.id, meter.manufacturer)] = meter
        outcome.accepted.append(n)
    if outcome.refused or dry_run:
        return outcome
    site = SiteExport(property=prop, buildings=buildings, apartments=apartments, meters=list(meters.values()))
    report = await import_site(db, site, keybox, actor=actor)
    outcome.imported = True
    outcome.summary = {k: v for k, v in report.as_dict().items() if k.startswith(("meter", "keys"))}
    return outcome


# --- Tenancy register (who lived where when) ------------------------------------------------------

TENANCY_COLUMNS = {
    "object_number": ("object_number", "objektsnummer", "objektnummer", "objekt"),
    "number": ("number", "lägenhetsnummer", "lagenhetsnummer", "lgh", "lghnr", "apartment"),
    "tenant_ref": ("tenant_ref", "hyresgäst", "hyresgast", "kontrakt", "kundnummer", "medlem", "tenant"),
    "name": ("name", "namn"),
    "move_in": ("move_in", "inflyttning", "inflyttningsdatum", "inflyttad"),
    "move_out": ("move_out", "utflyttning", "utflyttningsdatum", "avflyttning", "avflyttningsdatum"),
}
REQUIRED_TENANCY = ("tenant_ref", "move_in")


def _day(value: str, name: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    text = f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None


def csv_text(body: bytes) -> str:
    """An uploaded register as text: UTF-8, else Windows-1252 (what older Windows exports of rental
    administration systems write; every byte decodes, so this never fails)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


async def import_tenancies_csv(
    db: Database,
    property_key: str,
    text: str,
    *,
    move_out_is_last_day: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
) -> ImportOutcome:
    """The rental administration's register of tenancies (object number or lägenhetsnummer, tenant
    reference, name, move-in, move-out). A row is matched to a stored tenancy by apartment and
    move-in: it updates that one (a move-out being filled in) or adds a new one. A row that would
    overlap another tenancy of the same apartment (stored or in the file) is refused, as is the whole
    file with it. ``move_out`` is the first day no longer occupied, as everywhere in billing; with
    ``move_out_is_last_day`` the file gives the contract's last day (t.o.m.) and a day is added."""
    outcome = ImportOutcome("tenancies")
    rows = _rows(text, TENANCY_COLUMNS, REQUIRED_TENANCY)
    if rows and not {"object_number", "number"} & rows[0].keys():
        raise CsvImportError(
            "header: needs an object_number (objektsnummer) or number (lägenhetsnummer) column"
        )
    outcome.rows = len(rows)
    async with db.sessions.begin() as session:
        prop = (
            await session.execute(select(Property).where(Property.key == property_key))
        ).scalar_one_or_none()
        if prop is None:
            raise CsvImportError(f"property: no property {property_key!r}")
        apartments = list(
            (await session.execute(select(Apartment).where(Apartment.property_id == prop.id))).scalars()
        )
        by_object = {a.object_number: a for a in apartments}
        by_number: dict[str, list[Apartment]] = {}
        for a in apartments:
            by_number.setdefault(a.number, []).append(a)
        stored: dict[int, list[Tenancy]] = {}
        for t in (
            await session.execute(
                select(Tenancy).where(Tenancy.apartment_id.in_([a.id for a in apartments] or [-1]))
            )
        ).scalars():
            stored.setdefault(t.apartment_id, []).append(t)
        wanted: dict[int, list[TenancySpan]] = {}
        accepted: list[tuple[Apartment, TenancySpan, str]] = []
        for n, row in enumerate(rows, start=2):  # row 1 is the header
            try:
                apartment = _tenancy_apartment(row, by_object, by_number, property_key)
                ref = row["tenant_ref"]
                if not ref or len(ref) > 64:
                    raise ValueError("tenant_ref: needed, at most 64 characters")
                name = row.get("name", "")
                if len(name) > 200:
                    raise ValueError("name: at most 200 characters")
                move_in = _day(row["move_in"], "move_in")
                if move_in is None:
                    raise ValueError("move_in: needed")
                move_out = _day(row.get("move_out", ""), "move_out")
                if move_out is not None and move_out_is_last_day:
                    move_out += timedelta(days=1)
                check_dates(move_in, move_out)
                span = TenancySpan(ref, move_in, move_out, ident=("file", n))
                mine = wanted.setdefault(apartment.id, [])
                twin = next((s for s in mine if s.move_in == move_in), None)
                if twin is not None:
                    raise ValueError(
                        f"move_in: {apartment.object_number} {move_in} appears twice in the file"
                    )
                clash = first_overlap(span, mine)
                if clash is not None:
                    raise ValueError(
                        f"overlaps {describe(clash)} (row {clash.ident[1]}) of {apartment.object_number}"
                    )
                kept = [
                    TenancySpan(t.tenant_ref, t.move_in, t.move_out, ident=t.id)
                    for t in stored.get(apartment.id, [])
                    if t.move_in != move_in
                ]
                clash = first_overlap(span, kept)
                if clash is not None:
                    raise ValueError(
                        f"overlaps the stored tenancy {describe(clash)} of {apartment.object_number} "
                        "(change or delete that one first)"
                    )
            except (ValueError, TenancyError) as exc:
                outcome.refused.append(
                    {
                        "row": n,
                        "object_number": row.get("object_number") or row.get("number"),
                        "tenant_ref": row.get("tenant_ref"),
                        "reason": _reason(exc),
                    }
                )
                continue
            mine.append(span)
            accepted.append((apartment, span, name))
            outcome.accepted.append(n)
        if outcome.refused or dry_run:
            return outcome
        created = updated = unchanged = 0
        now = datetime.now(UTC)
        for apartment, span, name in accepted:
            row_ = next((t for t in stored.get(apartment.id, []) if t.move_in == span.move_in), None)
            if row_ is None:
                session.add(
                    Tenancy(
                        apartment_id=apartment.id,
                        tenant_ref=span.tenant_ref,
                        name=name,
                        move_in=span.move_in,
                        move_out=span.move_out,
                        updated_at=now,
                        updated_by=actor,
                    )
                )
                created += 1
            elif (row_.tenant_ref, row_.name, row_.move_out) == (span.tenant_ref, name, span.move_out):
                unchanged += 1
            else:
                row_.tenant_ref, row_.name, row_.move_out = span.tenant_ref, name, span.move_out
                row_.updated_at, row_.updated_by = now, actor
                updated += 1
        session.add(
            AuditLog(
                at=now,
                actor=actor,
                action="tenancy.import",
                entity="property",
                entity_id=prop.key,
                detail=f"rows={len(rows)} created={created} updated={updated} unchanged={unchanged}",
            )
        )
    outcome.imported = True
    outcome.summary = {
        "tenancies_created": created,
        "tenancies_updated": updated,
        "tenancies_unchanged": unchanged,
    }
    return outcome


def _tenancy_apartment(
    row: dict[str, str],
    by_object: dict[str, Apartment],
    by_number: dict[str, list[Apartment]],
    property_key: str,
) -> Apartment:
    obj, number = row.get("object_number", ""), row.get("number", "")
    if obj:
        apartment = by_object.get(obj)
        if apartment is None:
            raise ValueError(f"object_number: no apartment {obj!r} in {property_key}")
        if number and apartment.number != number:
            raise ValueError(f"number: {obj} is lägenhetsnummer {apartment.number}, not {number}")
        return apartment
    if not number:
        raise ValueError("object_number or number: one is needed")
    found = by_number.get(number, [])
    if len(found) != 1:
        what = "no apartment" if not found else f"{len(found)} apartments (give the object number)"
        raise ValueError(f"number: {what} with lägenhetsnummer {number!r} in {property_key}")
    return found[0]
