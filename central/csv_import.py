"""CSV imports: apartment registers from rental administration systems and meter lists with keys.

Every row is validated first; the report says which rows were accepted and why any row was
refused. Nothing is imported unless every row is valid (no half-imports). Swedish and English
headers are accepted, ``;`` or ``,`` as separator and a decimal comma in numbers. Keys in a meter
list are encrypted before they reach the database and never appear in a report or a log.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from central.db import Database
from central.keys import MeterKeyBox
from central.models import Apartment, Building, Property
from central.site_import import import_site
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
