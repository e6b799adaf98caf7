"""Site survey: which meters are on the wire and on the air, and are they the ones we expect.

Wired: a primary scan (SND_NKE to each address, then a readout of every address that answered, to
learn its identity) and/or the secondary-address search (wildcard selection; the 16-hex addresses
carry id, manufacturer, version and medium, so no readout is needed - the fast way on a full bus).
Radio: listen on a stick for a chosen time, keep the strongest signal, how often each meter was
heard, one sample telegram per meter (for the key check of the mapping step) and whether it is
encrypted and whether a key we hold opens it.

Every found meter is classified against the property's expected meter list (a site export):
``ours`` (on the list), ``unknown`` (on our wire but not on the list, or heard loud on the air) or
``neighbour`` (heard on the air, not on the list, weak: the house next door). Keys are never
printed; the survey output says only ``ok`` / ``wrong`` / ``missing`` / ``none``.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from protocols.errors import ProtocolError, SecurityError
from protocols.mbus.application import medium_name
from protocols.mbus.manufacturers import manufacturer_letters
from protocols.site import SiteExport, SiteMeter

Classification = Literal["ours", "unknown", "neighbour"]
KeyState = Literal["ok", "wrong", "missing", "none", "unchecked"]

SURVEY_SCHEMA: Final = "imd-survey/1"
# A meter not on the list but heard at least this loud is probably in our building (mislisted or
# forgotten), not next door: call it "unknown" so the technician looks at it.
LOUD_RSSI_DBM: Final = -70

CSV_COLUMNS: Final = (
    "classification", "link", "bus", "address", "id", "manufacturer", "version", "device_type", "medium",
    "apartment", "rssi_best", "rssi_last", "heard", "encrypted", "security_mode", "key",
)  # fmt: skip


@dataclass(slots=True)
class FoundMeter:
    """One meter the survey found (a row of the live table)."""

    id: str
    manufacturer: str
    version: int
    device_type: int
    link: Literal["mbus", "wmbus"]
    bus: str
    address: str | None = None  # primary (decimal) or secondary (16 hex) for wired meters
    medium: str = ""
    classification: Classification = "unknown"
    apartment: str | None = None
    rssi_best: int | None = None
    rssi_last: int | None = None
    heard: int = 0
    encrypted: bool | None = None
    security_mode: int | None = None
    key: KeyState = "unchecked"
    sample: str | None = None  # one raw telegram (hex) a key can be checked against later
    first_heard: str | None = None
    last_heard: str | None = None

    def __post_init__(self) -> None:
        if not self.medium:
            self.medium = medium_name(self.device_type)
        if self.link == "mbus" and self.key == "unchecked":
            self.key, self.encrypted = "none", False  # wired M-Bus answers in the clear

    @property
    def secondary_address(self) -> str:
        from protocols.mbus.manufacturers import manufacturer_code

        return f"{self.id}{manufacturer_code(self.manufacturer):04X}{self.version:02X}{self.device_type:02X}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoundMeter:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class SurveyResult:
    property: str | None = None
    started_at: str = ""
    finished_at: str = ""
    meters: list[FoundMeter] = field(default_factory=list)
    expected_not_found: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SURVEY_SCHEMA,
            "property": self.property,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "counts": self.counts(),
            "meters": [m.as_dict() for m in self.meters],
            "expected_not_found": self.expected_not_found,
            "notes": self.notes,
        }

    def counts(self) -> dict[str, int]:
        out = {"found": len(self.meters), "ours": 0, "unknown": 0, "neighbour": 0}
        for m in self.meters:
            out[m.classification] += 1
        out["expected_not_found"] = len(self.expected_not_found)
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=";", lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for m in self.meters:
            d = m.as_dict()
            writer.writerow(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
        return buf.getvalue()

    @classmethod
    def from_json(cls, text: str) -> SurveyResult:
        data = json.loads(text)
        if data.get("schema") != SURVEY_SCHEMA:
            raise ValueError(f"not a survey file (schema {data.get('schema')!r}, want {SURVEY_SCHEMA})")
        return cls(
            property=data.get("property"),
            started_at=data.get("started_at", ""),
            finished_at=data.get("finished_at", ""),
            meters=[FoundMeter.from_dict(m) for m in data.get("meters", [])],
            expected_not_found=list(data.get("expected_not_found", [])),
            notes=list(data.get("notes", [])),
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- progress (the live table) ------------------------------------------------------------------


class Progress:
    """What the survey reports while it runs: a table row per meter found and a progress line.

    The default does nothing; :class:`provisioning.cli` prints rows to stdout and the progress line
    to stderr (rewritten in place on a terminal).
    """

    def row(self, meter: FoundMeter) -> None:
        pass

    def step(self, text: str, done: int, total: int) -> None:
        pass


TABLE_HEADER: Final = (
    f"{'class':9} {'link':5} {'bus':7} {'address':16} {'id':8} {'man':3} {'ver':>3} {'medium':16} "
    f"{'rssi':>4} {'heard':>5} {'enc':3} {'key':9} apartment"
)


def table_row(m: FoundMeter) -> str:
    enc = "-" if m.encrypted is None else ("yes" if m.encrypted else "no")
    rssi = "" if m.rssi_best is None else str(m.rssi_best)
    heard = str(m.heard) if m.link == "wmbus" else ""
    return (
        f"{m.classification:9} {m.link:5} {m.bus:7} {m.address or '':16} {m.id:8} {m.manufacturer:3} "
        f"{m.version:>3} {m.medium[:16]:16} {rssi:>4} {heard:>5} {enc:3} {m.key:9} "
        f"{m.apartment or ('main' if m.classification == 'ours' else '')}"
    )


# -- classification -------------------------------------------------------------------------------


class Expected:
    """The property's expected meter list, looked up by meter id (and manufacturer when known)."""

    def __init__(self, site: SiteExport | None) -> None:
        self.site = site
        self._by_id: dict[str, list[SiteMeter]] = {}
        for meter in site.meters if site else ():
            self._by_id.setdefault(meter.id.upper(), []).append(meter)

    def find(self, ident: str, manufacturer: str | None = None) -> SiteMeter | None:
        candidates = self._by_id.get(ident.upper(), [])
        for meter in candidates:
            if manufacturer is None or meter.manufacturer == manufacturer:
                return meter
        return None

    def classify(self, found: FoundMeter, loud_rssi: int = LOUD_RSSI_DBM) -> None:
        meter = self.find(found.id, found.manufacturer)
        if meter is not None:
            found.classification = "ours"
            found.apartment = meter.apartment
            return
        found.apartment = None
        if found.link == "mbus":
            found.classification = "unknown"  # on our own wire: ours, but nobody listed it
        elif found.rssi_best is not None and found.rssi_best >= loud_rssi:
            found.classification = "unknown"
        else:
            found.classification = "neighbour"

    def not_found(self, found: Iterable[FoundMeter], links: Iterable[str]) -> list[dict[str, Any]]:
        """Expected meters on the surveyed links (``mbus``/``wmbus``) that the survey did not find."""
        if self.site is None:
            return []
        seen = {(m.id.upper(), m.manufacturer) for m in found}
        wanted = set(links)
        return [
            {"id": m.id, "manufacturer": m.manufacturer, "link": m.link, "bus": m.bus,
             "primary_address": m.primary_address, "medium": m.medium.value, "apartment": m.apartment}
            for m in self.site.meters
            if m.link in wanted and (m.id.upper(), m.manufacturer) not in seen
        ]  # fmt: skip


# -- wired ---------------------------------------------------------------------------------------


def parse_secondary(address: str) -> tuple[str, str, int, int]:
    """(id, manufacturer, version, device type) of a 16-hex secondary address."""
    address = address.strip().upper()
    if len(address) != 16:
        raise ValueError(f"secondary address must be 16 hex digits, got {address!r}")
    return (
        address[:8],
        manufacturer_letters(int(address[8:12], 16)),
        int(address[12:14], 16),
        int(address[14:16], 16),
    )


def survey_wired(
    bus: Any,
    name: str,
    *,
    mode: Literal["primary", "secondary", "both"] = "secondary",
    addresses: Iterable[int] = range(251),
    attempts: int = 2,
    progress: Progress | None = None,
) -> list[FoundMeter]:
    """Scan one wired bus (an open :class:`edge.bus.SerialBus` or anything with its methods)."""
    progress = progress or Progress()
    found: dict[str, FoundMeter] = {}
    if mode in ("secondary", "both"):
        progress.step(f"{name}: secondary search", 0, 1)
        for secondary in bus.secondary_search():
            ident, man, version, device_type = parse_secondary(secondary)
            meter = FoundMeter(ident, man, version, device_type, "mbus", name, address=secondary)
            found[f"{man}{ident}"] = meter
            progress.row(meter)
        progress.step(f"{name}: secondary search", 1, 1)
    if mode in ("primary", "both"):
        wanted = list(addresses)
        for n, address in enumerate(wanted, 1):
            progress.step(f"{name}: primary scan, address {address}", n, len(wanted))
            if bus.ping(address, attempts) == "none":
                continue
            result = bus.read_meter(address, retries=attempts - 1)
            telegrams = result.telegrams
            if not telegrams:
                reason = next((f.reason for f in result.frames if f.reason), "no valid answer")
                meter = FoundMeter("????????", "???", 0, 0, "mbus", name, address=str(address),
                                   medium=f"answers but unreadable: {reason}"[:60])  # fmt: skip
                found[f"primary{address}"] = meter
                progress.row(meter)
                continue
            t = telegrams[0]
            key = f"{t.manufacturer}{t.id}"
            if key in found:  # already found by the secondary search: note its primary address
                found[key].address = f"{address} / {found[key].address}"
                continue
            meter = FoundMeter(t.id, t.manufacturer, t.version, t.device_type, "mbus", name,
                               address=str(address))  # fmt: skip
            found[key] = meter
            progress.row(meter)
    return list(found.values())


# -- radio ---------------------------------------------------------------------------------------


def check_key(raw: bytes, ident: str, key: bytes | None, link_mode: str | None = None) -> KeyState:
    """What one telegram says about a key: ``none`` (not encrypted), ``missing``, ``ok`` or ``wrong``."""
    return _check(raw, ident, key, link_mode)[0]


def _check(raw: bytes, ident: str, key: bytes | None, link_mode: str | None) -> tuple[KeyState, int | None]:
    from protocols.wmbus import decode_wmbus

    keys = {ident.upper(): key} if key is not None else {}
    try:
        w = decode_wmbus(raw, keys, link_mode=link_mode)
    except SecurityError as exc:
        return ("missing" if key is None and "key missing" in str(exc) else "wrong"), None
    except ProtocolError:
        return "unchecked", None  # damaged or unsupported: says nothing about the key
    encrypted = w.decrypted or w.security_mode != 0 or (w.ell is not None and w.ell.encryption != 0)
    return ("ok" if encrypted else "none"), w.security_mode


class RadioSurvey:
    """Sans-IO aggregation of heard telegrams into survey rows (one per meter)."""

    def __init__(self, keys: Mapping[str, bytes] | None = None) -> None:
        self.keys = {k.upper(): v for k, v in (keys or {}).items()}
        self.meters: dict[str, FoundMeter] = {}
        self.telegrams = 0
        self.unparsable = 0
        self._seen: set[bytes] = set()
        self._key_states: dict[str, set[str]] = {}

    def add(self, stick: str, raw: bytes, rssi: int | None, link_mode: str | None,
            received_at: datetime | None = None) -> FoundMeter | None:  # fmt: skip
        """Count one telegram; returns the row when this meter is heard for the first time."""
        from edge.radio import _meter_address
        from protocols.errors import FrameError
        from protocols.wmbus import parse_link

        self.telegrams += 1
        try:
            link = parse_link(raw, link_mode=link_mode)
        except FrameError:
            self.unparsable += 1
            return None
        # The same bytes again (a repeater, or two sticks) is one transmission, not two.
        if link.stripped in self._seen:
            return None
        self._seen.add(link.stripped)
        ident, man, version, device_type = _meter_address(link)
        at = (received_at or datetime.now(UTC)).isoformat(timespec="seconds")
        key = f"{man}{ident}"
        meter = self.meters.get(key)
        new = meter is None
        if meter is None:
            meter = FoundMeter(ident, man, version, device_type, "wmbus", stick, first_heard=at)
            self.meters[key] = meter
        meter.heard += 1
        meter.last_heard = at
        meter.rssi_last = rssi
        if rssi is not None and (meter.rssi_best is None or rssi > meter.rssi_best):
            meter.rssi_best = rssi
        state, mode = _check(raw, ident, self.keys.get(ident.upper()), link_mode)
        if mode is not None:
            meter.security_mode = mode
        states = self._key_states.setdefault(key, set())
        states.add(state)
        # One good decryption proves the key; "wrong" only when no telegram opened (corruption
        # on the air also fails decryption, so a single failure proves nothing).
        best: KeyState
        for best in ("ok", "none", "missing", "wrong", "unchecked"):
            if best in states:
                meter.key = best
                break
        meter.encrypted = None if meter.key == "unchecked" else meter.key != "none"
        if meter.sample is None or state in ("ok", "none", "missing"):
            meter.sample = raw.hex()
        return meter if new else None


def listen(
    radios: list[Any],
    seconds: float,
    survey: RadioSurvey,
    *,
    progress: Progress | None = None,
    driver_factory: Callable[..., Any] | None = None,
    classify: Callable[[FoundMeter], None] | None = None,
) -> list[str]:
    """Listen with each stick (``edge.config.RadioConfig``) for ``seconds``; returns stick problems."""
    from edge.radio import Heard, StickDriver

    progress = progress or Progress()
    lock = threading.Lock()
    pending: list[Heard] = []

    def deliver(heard: Heard) -> None:  # called in a stick thread
        with lock:
            pending.append(heard)

    factory = driver_factory or StickDriver
    drivers = [factory(radio, deliver, answer_timeout_s=1.0) for radio in radios]
    for d in drivers:
        d.start()
    start = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - start
            with lock:
                batch, pending[:] = list(pending), []
            for heard in batch:
                row = survey.add(heard.stick, heard.raw, heard.rssi, heard.link_mode, heard.received_at)
                if row is not None:
                    if classify is not None:
                        classify(row)
                    progress.row(row)
            progress.step(
                f"radio: listening, {len(survey.meters)} meters, {survey.telegrams} telegrams",
                int(min(elapsed, seconds)),
                int(seconds),
            )
            if elapsed >= seconds:
                break
            time.sleep(min(0.2, max(0.0, seconds - elapsed)))
    finally:
        for d in drivers:
            d.stop()
    return [f"radio {d.health.name}: {d.health.error}" for d in drivers if d.health.error]


def finish(
    result: SurveyResult, expected: Expected, links: Iterable[str], loud_rssi: int = LOUD_RSSI_DBM
) -> SurveyResult:
    """Classify every row against the expected list and note the expected meters not found."""
    for meter in result.meters:
        expected.classify(meter, loud_rssi)
    order = {"ours": 0, "unknown": 1, "neighbour": 2}
    result.meters.sort(key=lambda m: (order[m.classification], m.link, m.bus, m.apartment or "", m.id))
    result.expected_not_found = expected.not_found(result.meters, links)
    result.finished_at = now_iso()
    return result
