"""Commissioning check: trigger a read through central and wait until every mapped meter has a
decoded reading there; for each one that has not, say the likely cause.

Causes, from what central stored for this collector since the check started:

* ``wrong key`` - radio telegrams arrived but decryption failed (the collector or central said so);
* ``no answer`` - the collector polled the wired meter and got no answer within its retries;
* ``collision`` - garbled answers (two meters on one primary address, or a noisy line);
* ``not heard`` - no telegram from this radio meter reached the collector;
* ``failed: <reason>`` - frames arrived but could not be decoded for another reason;
* ``not registered`` - central does not know the meter (registration missing or incomplete);
* ``no data`` - nothing at all about a wired meter yet (the collector may not have polled).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioning.central_client import CentralClient, CentralError
from provisioning.mapping import MappedMeter, MeterMapping

KEY_WORDS = ("key", "decrypt", "mac mismatch", "2f2f")
COLLISION_WORDS = ("collision", "garbled", "checksum", "garbage")


@dataclass(slots=True)
class MeterOutcome:
    id: str
    manufacturer: str
    link: str
    bus: str
    address: str
    apartment: str | None
    apartment_number: str | None
    medium: str
    meter_point: str
    ok: bool = False
    cause: str | None = None
    first_reading_at: str | None = None
    last_frame_at: str | None = None
    rssi: int | None = None
    values: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class CommissionResult:
    collector: str
    property: str
    property_name: str
    started_at: str
    finished_at: str = ""
    read_now: str = ""
    meters: list[MeterOutcome] = field(default_factory=list)

    @builtins.property  # the field "property" shadows the builtin in this class body
    def ok(self) -> bool:
        return all(m.ok for m in self.meters)

    def missing(self) -> list[MeterOutcome]:
        return [m for m in self.meters if not m.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "collector": self.collector, "property": self.property, "property_name": self.property_name,
            "started_at": self.started_at, "finished_at": self.finished_at, "read_now": self.read_now,
            "ok": self.ok, "delivered": sum(m.ok for m in self.meters), "total": len(self.meters),
            "missing": [{"id": m.id, "apartment": m.apartment, "medium": m.medium, "cause": m.cause}
                        for m in self.missing()],
            "meters": [m.as_dict() for m in self.meters],
        }  # fmt: skip


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _outcome(m: MappedMeter) -> MeterOutcome:
    return MeterOutcome(
        id=m.id, manufacturer=m.manufacturer, link=m.link, bus=m.bus, address=m.address,
        apartment=m.apartment,
        apartment_number=m.apartment_number, medium=m.medium, meter_point=m.meter_point, rssi=m.rssi,
    )  # fmt: skip


def likely_cause(meter: MeterOutcome, frames: list[dict[str, Any]], known_at_central: bool) -> str:
    """The cause for one meter without a reading, from the failed/no-answer frames about it."""
    if not known_at_central:
        return "not registered"
    reasons = [str(f.get("reason") or "").lower() for f in frames]
    if any(any(w in r for w in KEY_WORDS) for r in reasons):
        return "wrong key"
    if any(f.get("status") == "no_answer" for f in frames):
        return "no answer"
    if any(any(w in r for w in COLLISION_WORDS) for r in reasons):
        return "collision"
    if frames:
        return f"failed: {frames[0].get('reason') or 'undecodable frame'}"[:200]
    return "not heard" if meter.link == "wmbus" else "no data"


DEFINITE = frozenset(("wrong key", "no answer", "collision"))


def _explain(
    client: CentralClient,
    collector: str,
    since: datetime,
    outcomes: dict[tuple[str, str], MeterOutcome],
    known: set[tuple[str, str]],
) -> list[MeterOutcome]:
    """Set the likely cause on every meter still without a reading; returns those meters."""
    missing = [o for o in outcomes.values() if not o.ok]
    if not missing:
        return missing
    by_address: dict[str, list[dict[str, Any]]] = {}
    for status in ("failed", "no_answer"):
        for frame in client.frames(collector, status=status):
            received = _parse_time(frame.get("received_at"))
            if received is not None and received < since:
                continue
            by_address.setdefault(f"{frame.get('port')}|{frame.get('address')}", []).append(frame)
    for o in missing:
        o.cause = likely_cause(o, by_address.get(f"{o.bus}|{o.address}", []), (o.id, o.manufacturer) in known)
    return missing


def commission(
    client: CentralClient,
    mapping: MeterMapping,
    collector: str,
    *,
    timeout_s: float = 300.0,
    poll_s: float = 2.0,
    since: datetime | None = None,
    trigger: bool = True,
    progress: Callable[[int, int, float], None] | None = None,
    stop_when_explained: bool = True,
    settle_s: float = 5.0,
) -> CommissionResult:
    """Ask for a read now and wait until every mapped meter has a reading at central (or timeout).

    ``since`` (default: ten minutes before the start) is the earliest reading that counts, so a
    reading from the collector's first poll right after installation counts too. With
    ``stop_when_explained`` the wait ends early once every missing meter has a definite cause
    (wrong key, no answer, collision) that stayed the same for ``settle_s``.
    """
    start = datetime.now(UTC)
    since = since or start - timedelta(minutes=10)
    result = CommissionResult(
        collector, mapping.property, mapping.property_name, start.isoformat(timespec="seconds")
    )
    outcomes = {(m.id, m.manufacturer): _outcome(m) for m in mapping.meters}
    deadline = time.monotonic() + timeout_s
    t0 = time.monotonic()
    known: set[tuple[str, str]] = set()
    sent = not trigger
    stable: tuple[frozenset[tuple[str, str]], float] | None = None
    while True:
        if not sent:
            # A collector that was just started is unknown to central until its first message (404):
            # ask again on the next round; meanwhile its own first poll runs anyway.
            try:
                answer = client.read_now(collector)
                result.read_now = f"read_all sent (command {answer.get('id')})"
                sent = True
            except CentralError as exc:
                result.read_now = f"read now not possible ({exc}); waiting for the collector's own schedule"
                sent = exc.status != 404
        for item in client.meters(mapping.property):
            key = (item["id"], item["manufacturer"])
            outcome = outcomes.get(key)
            if outcome is None:
                continue
            known.add(key)
            outcome.last_frame_at = item.get("last_frame_at")
            last = _parse_time(item.get("last_reading_at"))
            if last is not None and last >= since and not outcome.ok:
                outcome.ok = True
                outcome.first_reading_at = last.isoformat(timespec="seconds")
                outcome.values = list(item.get("values") or [])[:4]
        done = sum(o.ok for o in outcomes.values())
        if progress is not None:
            progress(done, len(outcomes), time.monotonic() - t0)
        if done == len(outcomes) or time.monotonic() >= deadline:
            break
        if stop_when_explained and done:
            # Waiting longer does not fix a wrong key or a dead meter: stop once every missing meter
            # has such a cause and the missing set has not changed for ``settle_s``.
            missing = _explain(client, collector, since, outcomes, known)
            now = time.monotonic()
            current = frozenset((o.id, o.manufacturer) for o in missing)
            if all(o.cause in DEFINITE for o in missing):
                if stable is None or stable[0] != current:
                    stable = (current, now)
                elif now - stable[1] >= settle_s:
                    break
            else:
                stable = None
        time.sleep(poll_s)
    _explain(client, collector, since, outcomes, known)
    result.meters = sorted(outcomes.values(), key=lambda o: (o.ok, o.apartment or "", o.medium, o.id))
    result.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return result
