"""Mapping: which meter belongs to which apartment and meter point, with the key check.

Inputs: the property's site export (the expected meters, normally already with their apartments),
the survey (what is really on the wire and in the air) and optionally an assignment CSV or the
technician's answers in the terminal, plus the meter keys. The output is one mapping document
(JSON, no keys in it) that says for every meter: apartment, meter point, how the collector reaches
it, whether it was found, and whether its key opens a heard telegram. It also lists what needs a
decision: meters found but not expected, and meters expected but not found.

Assignment CSV: ``;``, ``,`` or tab separated with a header. The apartment is named by object number
(``object_number``, ``objektsnummer``, ``objektnummer``, ``objekt``) or by lägenhetsnummer
(``lägenhetsnummer``, ``lagenhetsnummer``, ``lgh``, ``lghnr``, ``number``; add ``building``/``hus``
where numbers repeat between buildings); the meter by ``meter_id``, ``id``, ``mätarnummer``,
``matarnummer``, ``meter`` or ``serial``. Optional ``medium`` and ``meter_point``/``mätpunkt``.
An empty apartment (or ``main``/``huvudmätare``) makes the meter a building main meter.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from protocols.site import Medium, SiteExport, SiteMeter
from provisioning.keys import normalise_id
from provisioning.survey import FoundMeter, SurveyResult, check_key, now_iso

MAPPING_SCHEMA: Final = "imd-mapping/1"

OBJECT_COLUMNS: Final = ("object_number", "objektsnummer", "objektnummer", "objekt")
NUMBER_COLUMNS: Final = ("lägenhetsnummer", "lagenhetsnummer", "lgh", "lghnr", "lgh_nr", "number")
BUILDING_COLUMNS: Final = ("building", "hus", "byggnad")
METER_COLUMNS: Final = ("meter_id", "id", "mätarnummer", "matarnummer", "meter", "serial")
MEDIUM_COLUMNS: Final = ("medium",)
POINT_COLUMNS: Final = ("meter_point", "mätpunkt", "matpunkt", "point")
MAIN_WORDS: Final = frozenset(("", "main", "huvudmätare", "huvudmatare", "-"))

# M-Bus medium/device type code -> what the meter point measures (EN 13757-3 table 3).
MEDIUM_OF_DEVICE_TYPE: Final[dict[int, Medium]] = {
    0x02: Medium.ELECTRICITY,
    0x04: Medium.HEAT,
    0x0C: Medium.HEAT,
    0x0D: Medium.HEAT,
    0x06: Medium.HOT_WATER,
    0x15: Medium.HOT_WATER,
    0x07: Medium.COLD_WATER,
    0x16: Medium.COLD_WATER,
    0x1B: Medium.ROOM_TEMPERATURE,
}


class MappingError(ValueError):
    """An assignment cannot be used; the message names the file/line and what is wrong."""


@dataclass(slots=True)
class MappedMeter:
    id: str
    manufacturer: str
    version: int
    device_type: int
    medium: str
    link: str
    bus: str
    apartment: str | None  # object number; None: a building main meter
    apartment_number: str | None = None
    meter_point: str = ""
    primary_address: int | None = None
    secondary_address: str = ""
    model: str = ""
    expected: bool = True
    found: bool = False
    rssi: int | None = None
    key: str = "not needed"  # ok, wrong, missing, none, not heard, unchecked, not needed
    has_key: bool = False
    source: str = "site"  # site, csv, terminal

    @property
    def address(self) -> str:
        """How the collector names the meter in frames: primary address, secondary, or radio id."""
        if self.link == "wmbus":
            return self.id
        return str(self.primary_address) if self.primary_address is not None else self.secondary_address

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Assignment:
    meter_id: str
    apartment: str | None  # object number
    medium: Medium | None = None
    meter_point: str | None = None
    source: str = "csv"


@dataclass(slots=True)
class MeterMapping:
    property: str
    property_name: str = ""
    created_at: str = ""
    meters: list[MappedMeter] = field(default_factory=list)
    found_not_expected: list[dict[str, Any]] = field(default_factory=list)
    expected_not_found: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": MAPPING_SCHEMA,
            "property": self.property,
            "property_name": self.property_name,
            "created_at": self.created_at,
            "counts": self.counts(),
            "meters": [m.as_dict() for m in self.meters],
            "found_not_expected": self.found_not_expected,
            "expected_not_found": self.expected_not_found,
            "problems": self.problems,
        }

    def counts(self) -> dict[str, int]:
        keys: dict[str, int] = {}
        for m in self.meters:
            keys[f"key_{m.key.replace(' ', '_')}"] = keys.get(f"key_{m.key.replace(' ', '_')}", 0) + 1
        return {
            "mapped": len(self.meters),
            "found": sum(m.found for m in self.meters),
            "found_not_expected": len(self.found_not_expected),
            "expected_not_found": len(self.expected_not_found),
            **keys,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MeterMapping:
        data = json.loads(text)
        if data.get("schema") != MAPPING_SCHEMA:
            raise MappingError(f"not a mapping file (schema {data.get('schema')!r}, want {MAPPING_SCHEMA})")
        names = MappedMeter.__dataclass_fields__
        return cls(
            property=data["property"],
            property_name=data.get("property_name", ""),
            created_at=data.get("created_at", ""),
            meters=[MappedMeter(**{k: v for k, v in m.items() if k in names}) for m in data["meters"]],
            found_not_expected=list(data.get("found_not_expected", [])),
            expected_not_found=list(data.get("expected_not_found", [])),
            problems=list(data.get("problems", [])),
        )

    def wired(self) -> dict[str, list[MappedMeter]]:
        out: dict[str, list[MappedMeter]] = {}
        for m in self.meters:
            if m.link == "mbus":
                out.setdefault(m.bus, []).append(m)
        return out

    def radio(self) -> dict[str, list[MappedMeter]]:
        out: dict[str, list[MappedMeter]] = {}
        for m in self.meters:
            if m.link == "wmbus":
                out.setdefault(m.bus, []).append(m)
        return out

    def needs_attention(self) -> list[MappedMeter]:
        return [m for m in self.meters if not m.found or m.key in ("wrong", "missing")]


# -- assignment CSV ----------------------------------------------------------------------------------


def _column(header: list[str], names: Iterable[str]) -> int | None:
    return next((header.index(n) for n in names if n in header), None)


def resolve_apartment(site: SiteExport, object_number: str | None, number: str | None,
                      building: str | None, where: str) -> str | None:  # fmt: skip
    """The object number for an object number or a lägenhetsnummer (None: main meter)."""
    if object_number is not None and object_number.strip().lower() not in MAIN_WORDS:
        wanted = object_number.strip()
        if not any(a.object_number == wanted for a in site.apartments):
            raise MappingError(f"{where}: no apartment with object number {wanted!r}")
        return wanted
    if number is not None and number.strip().lower() not in MAIN_WORDS:
        wanted = number.strip()
        matches = [a for a in site.apartments if a.number == wanted
                   and (not building or a.building == building.strip())]  # fmt: skip
        if not matches:
            raise MappingError(f"{where}: no apartment with lägenhetsnummer {wanted!r}")
        if len(matches) > 1:
            raise MappingError(
                f"{where}: lägenhetsnummer {wanted!r} exists in buildings "
                f"{', '.join(a.building for a in matches)}; add a building column or use the object number"
            )
        return matches[0].object_number
    return None


def load_assignments(text: str, site: SiteExport, source: str = "<csv>") -> list[Assignment]:
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    if not lines:
        raise MappingError(f"{source}: the file is empty")
    try:
        delimiter = csv.Sniffer().sniff(lines[0], delimiters=";,\t").delimiter
    except csv.Error:
        delimiter = ";"
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    header = [h.strip().lower() for h in rows[0]]
    meter_col = _column(header, METER_COLUMNS)
    object_col = _column(header, OBJECT_COLUMNS)
    number_col = _column(header, NUMBER_COLUMNS)
    if meter_col is None or (object_col is None and number_col is None):
        raise MappingError(
            f"{source}: header needs a meter column ({', '.join(METER_COLUMNS)}) and an apartment column "
            f"(object number: {', '.join(OBJECT_COLUMNS)}; or lägenhetsnummer: {', '.join(NUMBER_COLUMNS)})"
        )
    building_col = _column(header, BUILDING_COLUMNS)
    medium_col = _column(header, MEDIUM_COLUMNS)
    point_col = _column(header, POINT_COLUMNS)

    def cell(row: list[str], col: int | None) -> str | None:
        return row[col].strip() if col is not None and col < len(row) else None

    out: list[Assignment] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{source}: line {number}"
        try:
            ident = normalise_id(cell(row, meter_col) or "")
            if not ident:
                raise MappingError(f"{where}: empty meter id")
            if ident in seen:
                raise MappingError(f"{where}: meter {ident} already assigned on line {seen[ident]}")
            seen[ident] = number
            apartment = resolve_apartment(site, cell(row, object_col), cell(row, number_col),
                                          cell(row, building_col), where)  # fmt: skip
            medium_text = cell(row, medium_col)
            try:
                medium = Medium(medium_text) if medium_text else None
            except ValueError:
                raise MappingError(
                    f"{where}: medium {medium_text!r} is not one of {', '.join(m.value for m in Medium)}"
                ) from None
            out.append(Assignment(ident, apartment, medium, cell(row, point_col) or None))
        except MappingError as exc:
            errors.append(str(exc))
    if errors:
        raise MappingError("\n".join(errors[:50]))
    return out


# -- building the mapping --------------------------------------------------------------------------------


def _medium_for(found: FoundMeter | None, site_meter: SiteMeter | None, assignment: Assignment | None) -> str:
    if assignment is not None and assignment.medium is not None:
        return assignment.medium.value
    if site_meter is not None:
        return site_meter.medium.value
    if found is not None and found.device_type in MEDIUM_OF_DEVICE_TYPE:
        return MEDIUM_OF_DEVICE_TYPE[found.device_type].value
    return found.medium if found is not None else ""


def _primary(found: FoundMeter | None) -> int | None:
    if found is None or found.address is None:
        return None
    head = found.address.split(" / ", 1)[0]
    return int(head) if head.isdigit() else None


def build_mapping(
    site: SiteExport,
    survey: SurveyResult | None,
    *,
    assignments: Iterable[Assignment] = (),
    keys: Mapping[str, bytes] | None = None,
) -> MeterMapping:
    """Expected meters (with the site's apartments, overridden by ``assignments``) plus found meters
    that an assignment places; neighbours and unassigned unknown meters are only listed."""
    keys = {k.upper(): v for k, v in (keys or {}).items()}
    by_assignment = {a.meter_id: a for a in assignments}
    apartments = {a.object_number: a for a in site.apartments}
    found_by_id: dict[str, FoundMeter] = {}
    for f in survey.meters if survey else ():
        found_by_id.setdefault(f.id.upper(), f)
    mapping = MeterMapping(property=site.property.id, property_name=site.property.name, created_at=now_iso())

    def place(meter: MappedMeter, assignment: Assignment | None) -> None:
        if assignment is not None:
            meter.apartment = assignment.apartment
            meter.source = assignment.source
            if assignment.meter_point:
                meter.meter_point = assignment.meter_point
        apt = apartments.get(meter.apartment or "")
        meter.apartment_number = apt.number if apt else None
        if not meter.meter_point:
            meter.meter_point = meter.medium if meter.apartment else f"main {meter.medium}"

    used: set[str] = set()
    for sm in site.meters:
        ident = sm.id.upper()
        found = found_by_id.get(ident)
        if found is not None and found.manufacturer != sm.manufacturer:
            found = None
        assignment = by_assignment.get(ident)
        meter = MappedMeter(
            id=sm.id, manufacturer=sm.manufacturer, version=sm.version, device_type=sm.device_type,
            medium=_medium_for(found, sm, assignment), link=sm.link, bus=sm.bus, apartment=sm.apartment,
            primary_address=sm.primary_address if sm.primary_address is not None else _primary(found),
            secondary_address=sm.secondary_address, model=sm.model, expected=True, found=found is not None,
            rssi=found.rssi_best if found else None,
        )  # fmt: skip
        if (
            found is not None
            and found.link == "mbus"
            and sm.primary_address is None
            and _primary(found) is None
        ):
            meter.primary_address = None  # reached by its secondary address
        place(meter, assignment)
        if sm.key and ident not in keys:
            keys[ident] = bytes.fromhex(sm.key)
        used.add(ident)
        mapping.meters.append(meter)

    for found in survey.meters if survey else ():
        ident = found.id.upper()
        if ident in used or found.id.startswith("?"):
            continue
        assignment = by_assignment.get(ident)
        if assignment is None:
            if found.classification != "neighbour":
                mapping.found_not_expected.append(
                    {"id": found.id, "manufacturer": found.manufacturer, "link": found.link, "bus": found.bus,
                     "address": found.address, "medium": found.medium, "rssi": found.rssi_best,
                     "decision": "not mapped: give it an apartment (CSV or terminal) or leave it out"}
                )  # fmt: skip
            continue
        used.add(ident)
        meter = MappedMeter(
            id=found.id, manufacturer=found.manufacturer, version=found.version,
            device_type=found.device_type,
            medium=_medium_for(found, None, assignment), link=found.link, bus=found.bus, apartment=None,
            primary_address=_primary(found), secondary_address=found.secondary_address, expected=False,
            found=True, rssi=found.rssi_best,
        )  # fmt: skip
        place(meter, assignment)
        mapping.meters.append(meter)

    for ident in by_assignment:
        if ident not in used:
            mapping.problems.append(f"assignment for meter {ident}: neither expected nor found; ignored")

    if survey is not None:
        surveyed_links = {f.link for f in survey.meters} | {e.get("link") for e in survey.expected_not_found}
        mapping.expected_not_found = [
            {"id": m.id, "manufacturer": m.manufacturer, "link": m.link, "bus": m.bus,
             "address": m.address, "apartment": m.apartment, "medium": m.medium}
            for m in mapping.meters if m.expected and not m.found and m.link in surveyed_links
        ]  # fmt: skip
    check_keys(mapping, survey, keys)
    return mapping


def check_keys(mapping: MeterMapping, survey: SurveyResult | None, keys: Mapping[str, bytes]) -> None:
    """For each radio meter: does its key open the telegram heard in the survey?"""
    samples = {f.id.upper(): f for f in survey.meters if f.link == "wmbus"} if survey else {}
    for meter in mapping.meters:
        ident = meter.id.upper()
        meter.has_key = ident in keys
        if meter.link != "wmbus":
            meter.key = "not needed"
            continue
        heard = samples.get(ident)
        if heard is None or heard.sample is None:
            meter.key = "not heard"
            continue
        meter.key = check_key(bytes.fromhex(heard.sample), ident, keys.get(ident))


def mapping_keys(mapping: MeterMapping, site: SiteExport, imported: Mapping[str, bytes]) -> dict[str, bytes]:
    """The keys of the mapped meters: the imported file wins over keys in the site export."""
    keys: dict[str, bytes] = {}
    site_keys = {m.id.upper(): bytes.fromhex(m.key) for m in site.meters if m.key}
    for meter in mapping.meters:
        ident = meter.id.upper()
        key = imported.get(ident, site_keys.get(ident))
        if key is not None:
            keys[ident] = key
    return keys


# -- the terminal ---------------------------------------------------------------------------------------


def interactive_assign(
    site: SiteExport,
    survey: SurveyResult,
    assignments: list[Assignment],
    *,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    everything: bool = False,
) -> list[Assignment]:
    """Ask for the apartment of each found meter that has none (every found meter with ``everything``).

    Answers: an object number or a lägenhetsnummer, ``main`` for a building main meter, empty to skip
    (keep the site's apartment, or leave an unknown meter out), ``q`` to stop asking.
    """
    done = {a.meter_id for a in assignments}
    expected = {m.id.upper(): m for m in site.meters}
    out = list(assignments)
    for found in survey.meters:
        ident = found.id.upper()
        if ident in done or found.classification == "neighbour" or found.id.startswith("?"):
            continue
        current = expected.get(ident)
        if current is not None and not everything:
            continue
        default = (current.apartment or "main") if current else "-"
        where = f"rssi {found.rssi_best} dBm" if found.link == "wmbus" else f"address {found.address}"
        prompt = (
            f"meter {found.id} {found.manufacturer} {found.medium} ({found.link} {found.bus}, {where}) "
            f"[{default}]: "
        )
        while True:
            answer = ask(prompt).strip()
            if answer.lower() == "q":
                return out
            if not answer:
                break
            try:
                if answer.lower() in MAIN_WORDS:
                    apartment = None
                else:
                    apartment = resolve_apartment(
                        site, answer if any(a.object_number == answer for a in site.apartments) else None,
                        answer, None, "answer",
                    )  # fmt: skip
            except MappingError as exc:
                say(str(exc))
                continue
            out.append(Assignment(ident, apartment, source="terminal"))
            break
    return out


# -- for central -------------------------------------------------------------------------------------


def registration_body(
    mapping: MeterMapping,
    collector_id: str,
    keys: Mapping[str, bytes],
    *,
    broker: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The body of the registration request (see ``provisioning/central_client.py``). Holds keys."""
    meters = []
    for m in mapping.meters:
        item: dict[str, Any] = {
            "id": m.id, "manufacturer": m.manufacturer, "version": m.version, "device_type": m.device_type,
            "medium": m.medium, "link": m.link, "bus": m.bus, "primary_address": m.primary_address,
            "secondary_address": m.secondary_address or None, "apartment": m.apartment,
            "meter_point": m.meter_point, "model": m.model,
        }  # fmt: skip
        key = keys.get(m.id.upper())
        if key is not None:
            item["key"] = key.hex().upper()
        meters.append(item)
    body: dict[str, Any] = {"property": mapping.property, "collector": {"id": collector_id}, "meters": meters}
    if broker:
        body["collector"]["mqtt"] = dict(broker)
    return body


def mapped_site(site: SiteExport, mapping: MeterMapping, keys: Mapping[str, bytes]) -> SiteExport:
    """The site export as mapped (apartments and keys from the mapping): what ``imd central
    import-site`` takes while central has no registration endpoint."""
    meters = []
    for m in mapping.meters:
        key = keys.get(m.id.upper())
        meters.append(
            SiteMeter(
                id=m.id, manufacturer=m.manufacturer, version=m.version, device_type=m.device_type,
                medium=Medium(m.medium), apartment=m.apartment, model=m.model, link=m.link,  # type: ignore[arg-type]
                bus=m.bus, primary_address=m.primary_address, key=key.hex().upper() if key else None,
            )
        )  # fmt: skip
    return SiteExport(
        property=site.property, buildings=site.buildings, apartments=site.apartments, meters=meters
    )
