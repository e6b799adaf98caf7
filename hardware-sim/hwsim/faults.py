"""Faults with ground truth: what the simulator did wrong, when, and to which meter.

Each injected fault is a line in the truth log (JSON lines): ``{"event": "fault", "meter", "fault",
"start", "end", "params"}``; bus faults that strike now and then (checksum errors, noise, collisions)
also log each ``"occurrence"``, so a checker's findings can be scored against what really happened.
"""

from __future__ import annotations

import json
import random
import threading
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hwsim import climate

if TYPE_CHECKING:
    from hwsim.meters import Identity, Meter, Value

# What each fault kind does and which meters it makes sense for ("*" = any).
FAULT_KINDS: dict[str, str] = {
    "silent": "the meter stops answering",
    "stuck": "main registers freeze at their value when the fault starts",
    "backwards": "main registers run backwards from the fault start",
    "reset": "main registers restart from zero (electronics reset)",
    "replaced": "meter exchanged: a new identification number and registers from zero",
    "leak": "water: flow never drops to zero (params: flow_lh), leak flag",
    "burst": "water: a burst pipe, large continuous flow (params: flow_lh), burst flag",
    "backflow": "water: backward flow register grows (params: flow_lh), backflow flag",
    "dry": "water: the pipe is empty, dry flag",
    "temperature_reversed": "heat: flow temperature below return temperature",
    "error_flags": "sensor error flags set (params: bits), status permanent error",
    "low_battery": "battery nearly empty (params: days), low battery flag and status power low",
    "wrong_clock": "meter clock off (params: offset_hours)",
    "tamper": "tamper flag set",
    "checksum": "intermittent checksum errors on answers (params: probability)",
    "noise": "noise bytes on the bus around answers (params: probability)",
    "collision": "a second device answers on the same address at once (params: probability)",
}
BUS_FAULTS = frozenset({"silent", "checksum", "noise", "collision"})


@dataclass
class Fault:
    meter: int  # the meter's original identification number
    kind: str
    start: datetime
    end: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def active(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)

    def hours(self, at: datetime) -> float:
        return max(0.0, (at - self.start).total_seconds() / 3600)

    def truth(self) -> dict[str, Any]:
        return {
            "event": "fault",
            "meter": f"{self.meter:08d}",
            "fault": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "params": self.params,
        }


def _int(value: Value) -> int:
    if not isinstance(value, int):
        raise TypeError(f"register is {type(value).__name__}, not a number")
    return value


def _flag(meter: Meter, name: str) -> int:
    from hwsim.meters import FLAG_BITS

    return FLAG_BITS.get(meter.flag_family, {}).get(name, 0)


class FaultBook:
    """Active and planned faults for the meters of one simulation, and the truth log."""

    def __init__(self, truth: Path | IO[str] | None = None, seed: int = 0) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._truth_path = truth if isinstance(truth, Path) else None
        self._truth_stream = truth if truth is not None and not isinstance(truth, Path) else None
        self.events: list[dict[str, Any]] = []  # everything written to the truth log, in order
        self._rng = random.Random(seed)
        self.replacement_ids: dict[int, int] = {}

    # -- truth log ---------------------------------------------------------------------------------

    def set_truth_log(self, truth: Path | IO[str] | None) -> None:
        self._truth_path = truth if isinstance(truth, Path) else None
        self._truth_stream = truth if truth is not None and not isinstance(truth, Path) else None

    def _log(self, entry: dict[str, Any]) -> None:
        self.events.append(entry)
        line = json.dumps(entry, sort_keys=True)
        if self._truth_path is not None:
            with self._truth_path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        elif self._truth_stream is not None:
            self._truth_stream.write(line + "\n")
            self._truth_stream.flush()

    # -- injection ---------------------------------------------------------------------------------

    def inject(
        self, meter: Meter | int, kind: str, start: datetime, end: datetime | None = None, **params: Any
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(sorted(FAULT_KINDS))}")
        ident = meter if isinstance(meter, int) else meter.ident
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if end is not None and end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        if kind == "replaced":
            new_id = int(params.get("new_id") or self._new_ident(ident))
            params = {**params, "new_id": f"{new_id:08d}"}
            self.replacement_ids[ident] = new_id
        fault = Fault(ident, kind, start, end, dict(params))
        with self._lock:
            self._faults.append(fault)
        self._log(fault.truth())
        return fault

    def clear(self, meter: Meter | int, kind: str | None, at: datetime) -> list[Fault]:
        """End the meter's open faults (of ``kind``, or all) at ``at``; logs an ``end`` event each."""
        ident = meter if isinstance(meter, int) else meter.ident
        ended = []
        with self._lock:
            for f in self._faults:
                if f.meter == ident and (kind is None or f.kind == kind) and (f.end is None or f.end > at):
                    f.end = at
                    ended.append(f)
        for f in ended:
            self._log(
                {
                    "event": "end",
                    "meter": f"{ident:08d}",
                    "fault": f.kind,
                    "start": f.start.isoformat(),
                    "end": at.isoformat(),
                }
            )
        return ended

    def occurrence(self, meter: Meter | int, kind: str, at: datetime, **detail: Any) -> None:
        ident = meter if isinstance(meter, int) else meter.ident
        self._log(
            {"event": "occurrence", "meter": f"{ident:08d}", "fault": kind, "at": at.isoformat(), **detail}
        )

    def faults(self, ident: int | None = None) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if ident is None or f.meter == ident]

    def active(self, meter: Meter, at: datetime, kind: str | None = None) -> list[Fault]:
        with self._lock:
            return [
                f
                for f in self._faults
                if f.meter == meter.ident and (kind is None or f.kind == kind) and f.active(at)
            ]

    def _new_ident(self, old: int) -> int:
        return int(climate.mix(old, 777) % 90_000_000) + 10_000_000

    # -- effects -----------------------------------------------------------------------------------

    def identity(self, meter: Meter, at: datetime, base: Identity) -> Identity:
        from hwsim.meters import Identity

        for f in self.active(meter, at, "replaced"):
            return Identity(int(f.params["new_id"]), base.manufacturer, base.version, base.device_type)
        return base

    def silent(self, meter: Meter, at: datetime) -> bool:
        return bool(self.active(meter, at, "silent"))

    def strikes(self, meter: Meter, at: datetime, kind: str) -> bool:
        """Whether an intermittent bus fault strikes this answer (logged when it does)."""
        for f in self.active(meter, at, kind):
            with self._lock:
                hit = self._rng.random() < float(f.params.get("probability", 0.5))
            if hit:
                self.occurrence(meter, kind, at)
                return True
        return False

    def random_bytes(self, n: int) -> bytes:
        with self._lock:
            return bytes(self._rng.randrange(256) for _ in range(n))

    def apply(self, meter: Meter, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
        for f in self.active(meter, at):
            effect = _EFFECTS.get(f.kind)
            if effect is not None:
                values = effect(meter, f, at, values)
        return values

    # -- scenario files ----------------------------------------------------------------------------

    def load_scenario(self, path: Path, meters: Iterable[Meter], sim_start: datetime) -> list[Fault]:
        """Inject the faults of a TOML or JSON scenario file (see :func:`parse_scenario`)."""
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return [
            self.inject(m, kind, start, end, **params)
            for m, kind, start, end, params in parse_scenario(data, list(meters), sim_start)
        ]


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``6h``, ``3d``, ``2w``."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if not text or text[-1] not in units:
        raise ValueError(f"duration {text!r} must end in s, m, h, d or w")
    return timedelta(seconds=float(text[:-1]) * units[text[-1]])


def parse_time(value: Any, sim_start: datetime) -> datetime:
    """An ISO time, or ``+6h`` relative to the simulation start."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.startswith("+"):
        return sim_start + parse_duration(text[1:])
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def find_meter(meters: list[Meter], ref: str | int) -> Meter:
    """By identification number, ``address:N`` or ``apartment:OBJECT/medium``."""
    text = str(ref)
    if text.startswith("address:"):
        address = int(text.split(":", 1)[1])
        hits = [m for m in meters if m.primary_address == address]
    elif text.startswith("apartment:"):
        apartment, _, medium = text.split(":", 1)[1].partition("/")
        hits = [m for m in meters if m.apartment == apartment and (not medium or m.medium.value == medium)]
    else:
        hits = [m for m in meters if m.ident == int(text)]
    if len(hits) != 1:
        raise ValueError(f"meter reference {ref!r} matches {len(hits)} meters")
    return hits[0]


def parse_scenario(
    data: dict[str, Any], meters: list[Meter], sim_start: datetime
) -> list[tuple[Meter, str, datetime, datetime | None, dict[str, Any]]]:
    """``{"fault": [{"meter": "12345678", "kind": "leak", "start": "+1h", "end": "+2d",
    "params": {"flow_lh": 12}}]}`` (``[[fault]]`` tables in TOML)."""
    out = []
    entries = data.get("fault", data.get("faults", []))
    if not isinstance(entries, list):
        raise ValueError("scenario: 'fault' must be a list of tables")
    for i, entry in enumerate(entries):
        try:
            meter = find_meter(meters, entry["meter"])
            kind = str(entry["kind"])
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}")
            start = parse_time(entry.get("start", "+0s"), sim_start)
            end = parse_time(entry["end"], sim_start) if entry.get("end") is not None else None
            params = dict(entry.get("params", {}))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"scenario fault #{i + 1}: {exc}") from exc
        out.append((meter, kind, start, end, params))
    return out


# -- value effects, one function per fault kind -----------------------------------------------------

Effect = Callable[["Meter", Fault, datetime, "dict[str, Value]"], "dict[str, Value]"]


def _at_start(meter: Meter, fault: Fault) -> dict[str, Value]:
    return meter.base_registers(fault.start)


def _stuck(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    frozen = _at_start(meter, fault)
    for key in meter.main_registers:
        values[key] = frozen[key]
    return values


def _backwards(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    then = _at_start(meter, fault)
    for key in meter.main_registers:
        now, before = values[key], then[key]
        if isinstance(now, int) and isinstance(before, int) and not key.endswith("set_day"):
            values[key] = max(0, before - (now - before))
    return values


def _restart(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    then = _at_start(meter, fault)
    for key in meter.main_registers:
        now, before = values[key], then[key]
        if isinstance(now, int) and isinstance(before, int):
            values[key] = max(0, now - before)
    return values


def _flow_fault(flag: str, default_lh: float) -> Effect:
    def effect(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
        if meter.kind != "water":
            return values
        lh = float(fault.params.get("flow_lh", default_lh))
        extra = int(lh * fault.hours(at))  # litres, the water registers' resolution
        values["volume"] = _int(values["volume"]) + extra
        flow = _int(values["flow"])
        values["flow"] = max(flow, round(lh))
        values["error_flags"] = _int(values["error_flags"]) | _flag(meter, flag)
        return values

    return effect


def _backflow(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    if meter.kind != "water":
        return values
    lh = float(fault.params.get("flow_lh", 3.0))
    values["backflow"] = _int(values["backflow"]) + int(lh * fault.hours(at))
    values["error_flags"] = _int(values["error_flags"]) | _flag(meter, "backflow")
    return values


def _flag_only(name: str, status: int = 0) -> Effect:
    def effect(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
        values["error_flags"] = _int(values["error_flags"]) | _flag(meter, name)
        values["status"] = _int(values["status"]) | status
        return values

    return effect


def _reversed(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    if "flow_temperature" in values and "return_temperature" in values:
        supply, ret = _int(values["flow_temperature"]), _int(values["return_temperature"])
        if supply >= ret:
            supply, ret = ret - 150, supply  # swapped sensors: supply reads below return
        values["flow_temperature"], values["return_temperature"] = supply, ret
        values["temperature_difference"] = supply - ret
        values["error_flags"] = _int(values["error_flags"]) | _flag(meter, "temperature_reversed")
    return values


def _error_flags(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    from hwsim.meters import STATUS_PERMANENT_ERROR

    values["error_flags"] = _int(values["error_flags"]) | int(fault.params.get("bits", 0x01))
    values["status"] = _int(values["status"]) | STATUS_PERMANENT_ERROR
    return values


def _low_battery(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    from hwsim.meters import STATUS_POWER_LOW

    days = int(fault.params.get("days", 60))
    if "battery_days" in values:
        values["battery_days"] = max(0, days - int(fault.hours(at) // 24))
    values["error_flags"] = _int(values["error_flags"]) | _flag(meter, "low_battery")
    values["status"] = _int(values["status"]) | STATUS_POWER_LOW
    return values


def _wrong_clock(meter: Meter, fault: Fault, at: datetime, values: dict[str, Value]) -> dict[str, Value]:
    offset = timedelta(hours=float(fault.params.get("offset_hours", -24 * 400)))
    clock = values.get("datetime")
    if isinstance(clock, datetime):
        values["datetime"] = clock + offset
    return values


_EFFECTS: dict[str, Effect] = {
    "stuck": _stuck,
    "backwards": _backwards,
    "reset": _restart,
    "replaced": _restart,
    "leak": _flow_fault("leak", 12.0),
    "burst": _flow_fault("burst", 900.0),
    "backflow": _backflow,
    "dry": _flag_only("dry"),
    "tamper": _flag_only("tamper"),
    "temperature_reversed": _reversed,
    "error_flags": _error_flags,
    "low_battery": _low_battery,
    "wrong_clock": _wrong_clock,
}
