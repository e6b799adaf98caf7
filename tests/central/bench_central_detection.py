"""Detection quality of the meter-function checks against the simulator's ground truth.

A simulated fleet (``hwsim.fleet.Fleet``) gets faults injected at random meters and times; its daily
read-outs go through the real ingest into a fresh SQLite database and the checks run every
``--check-every`` simulated days. A fault counts as detected when a fault of a rule that can see
that kind is raised for the meter after the fault started; every raised fault without such a truth
entry is a false positive. Prints recall, precision and detection delay (median, 90th percentile and
maximum, in days from the injected start to the first raised fault) per fault kind; precision per
kind counts the raised faults of the rules that may report that kind. Faults of severity ``info``
(rollover, low consumption) are notes and are not counted.

    .venv/bin/python tests/central/bench_central_detection.py --properties 12 --days 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from central.checks import run_meter_checks
from central.db import Database
from central.ingest import IngestProcessor
from central.keys import MeterKeyBox
from central.models import Fault, Meter
from central.site_import import import_site
from protocols.messages import FrameBatch, encode, frames_topic

# Simulator fault kind -> the rules that may rightly report it.
EXPECTED_RULES: dict[str, frozenset[str]] = {
    "silent": frozenset({"communication_gap"}),
    "stuck": frozenset({"stuck_register"}),
    "backwards": frozenset({"register_backwards"}),
    "reset": frozenset({"register_backwards"}),
    "replaced": frozenset({"communication_gap", "register_backwards"}),
    "leak": frozenset(
        {"device_status", "continuous_flow", "consumption_vs_history", "consumption_vs_building"}
    ),
    "burst": frozenset(
        {"device_status", "continuous_flow", "spike", "consumption_vs_history", "consumption_vs_building"}
    ),
    "backflow": frozenset({"device_status", "register_backwards"}),
    "dry": frozenset({"device_status"}),
    "temperature_reversed": frozenset({"heat_sanity", "device_status"}),
    "error_flags": frozenset({"device_status"}),
    "low_battery": frozenset({"device_status"}),
    "wrong_clock": frozenset({"wrong_clock"}),
}
WATER_ONLY = {"leak", "burst", "backflow", "dry"}
HEAT_ONLY = {"temperature_reversed"}
FAULT_PARAMS: dict[str, dict[str, Any]] = {"wrong_clock": {"offset_hours": 6}}


@dataclass
class Injected:
    serial: str
    kind: str
    start: datetime


def _suits(kind: str, medium: str) -> bool:
    if kind in WATER_ONLY:
        return medium in ("hot_water", "cold_water")
    if kind in HEAT_ONLY:
        return medium == "heat"
    if kind == "stuck":
        return medium in ("hot_water", "cold_water", "electricity")
    return True


async def run(
    properties: int,
    apartments: int,
    days: int,
    check_every: int,
    faults_per_kind: int,
    seed: int,
    verbose: bool = False,
) -> dict[str, Any]:
    from hwsim.fleet import Fleet

    fleet = Fleet(seed=seed, properties=properties, apartments=apartments)
    start = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    rng = random.Random(seed)
    media = {}
    for prop in fleet.properties:
        for sm in prop.sim.site.meters:
            media[int(sm.id)] = (prop, sm.medium.value)
    truth: list[Injected] = []
    taken: set[int] = set()
    candidates = list(media)
    for kind in EXPECTED_RULES:
        suitable = [m for m in candidates if m not in taken and _suits(kind, media[m][1])]
        for ident in rng.sample(suitable, min(faults_per_kind, len(suitable))):
            taken.add(ident)
            prop, _medium = media[ident]
            at = start + timedelta(days=rng.randint(days // 5, max(days // 5, days - 20)))
            prop.sim.faults.inject(ident, kind, at, None, **FAULT_PARAMS.get(kind, {}))
            truth.append(Injected(f"{ident:08d}", kind, at))

    tmp = Path(tempfile.mkdtemp(prefix="imd-detect-"))
    db = await Database.open(f"sqlite+aiosqlite:///{tmp / 'central.sqlite'}")
    keybox = MeterKeyBox(tmp / "keys")
    for prop in fleet.properties:
        await import_site(db, prop.sim.site, keybox)
    async with db.sessions.begin() as session:  # installed before the simulated year starts
        for meter in (await session.execute(select(Meter))).scalars():
            meter.installed_at = start - timedelta(days=1)
    processor = IngestProcessor(db, keybox=keybox)
    t0 = time.perf_counter()
    for day in range(days):
        at = start + timedelta(days=day)
        for collector, batch in fleet.batches(at, batch_size=200):
            await processor.handle(frames_topic(collector), encode(FrameBatch.model_validate(batch)))
        if day % check_every == check_every - 1:
            await run_meter_checks(db, now=at + timedelta(hours=1))
    elapsed = time.perf_counter() - t0

    async with db.sessions() as session:
        rows = (
            await session.execute(select(Fault, Meter.serial).join(Meter, Fault.meter_id == Meter.id))
        ).all()
    await db.close()
    by_meter: dict[str, list[Injected]] = defaultdict(list)
    for t in truth:
        by_meter[t.serial].append(t)
    detected: dict[tuple[str, str], datetime] = {}
    false_positives: dict[str, int] = defaultdict(int)
    for fault, serial in rows:
        if fault.severity == "info":
            continue  # rollovers and the like are notes, not faults
        matches = [t for t in by_meter.get(serial, []) if fault.rule in EXPECTED_RULES[t.kind]]
        if not matches:
            false_positives[fault.rule] += 1
            if verbose:
                print(
                    "false positive:",
                    serial,
                    media[int(serial)][1] if int(serial) in media else "?",
                    fault.rule,
                    fault.message,
                )
            continue
        for t in matches:
            key = (t.serial, t.kind)
            if fault.first_seen_at >= t.start and (
                key not in detected or fault.first_seen_at < detected[key]
            ):
                detected[key] = fault.first_seen_at
    report: dict[str, Any] = {
        "meters": fleet.meter_count,
        "days": days,
        "check_every_days": check_every,
        "frames": processor.stats.frames_new,
        "readings": processor.stats.readings,
        "seconds": round(elapsed, 1),
        "kinds": {},
        "false_positives_by_rule": dict(false_positives),
    }
    true_by_rule: dict[str, int] = defaultdict(int)
    for fault, serial in rows:
        if fault.severity != "info" and any(
            fault.rule in EXPECTED_RULES[t.kind] for t in by_meter.get(serial, [])
        ):
            true_by_rule[fault.rule] += 1
    for kind, rules in EXPECTED_RULES.items():
        injected = [t for t in truth if t.kind == kind]
        hits = sorted(
            (detected[(t.serial, t.kind)] - t.start).total_seconds() / 86400
            for t in injected
            if (t.serial, t.kind) in detected
        )
        if verbose:
            for t in injected:
                if (t.serial, t.kind) not in detected:
                    print("missed:", t.serial, media[int(t.serial)][1], kind, t.start.date())
        true = sum(true_by_rule[r] for r in rules)
        false = sum(false_positives.get(r, 0) for r in rules)
        report["kinds"][kind] = {
            "injected": len(injected),
            "detected": len(hits),
            "recall": round(len(hits) / len(injected), 3) if injected else None,
            "precision": round(true / (true + false), 3) if true + false else None,
            "delay_days": {
                "median": round(statistics.median(hits), 1),
                "p90": round(hits[min(len(hits) - 1, int(len(hits) * 0.9))], 1),
                "max": round(hits[-1], 1),
            }
            if hits
            else None,
        }
    raised = sum(1 for f, _s in rows if f.severity != "info")
    report["raised_by_rule"] = {
        r: true_by_rule[r] + false_positives.get(r, 0)
        for r in sorted(set(true_by_rule) | set(false_positives))
    }
    report["precision"] = round((raised - sum(false_positives.values())) / raised, 3) if raised else None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_central_detection.py", description=__doc__)
    parser.add_argument("--properties", type=int, default=12)
    parser.add_argument("--apartments", type=int, default=12)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--check-every", type=int, default=3, help="simulated days between check runs")
    parser.add_argument("--faults-per-kind", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each false positive")
    args = parser.parse_args(argv)
    report = asyncio.run(
        run(
            args.properties,
            args.apartments,
            args.days,
            args.check_every,
            args.faults_per_kind,
            args.seed,
            args.verbose,
        )
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
