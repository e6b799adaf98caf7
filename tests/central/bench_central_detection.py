"""Detection quality of the meter-function checks against the simulator's ground truth.

A simulated fleet (``hwsim.fleet.Fleet``) gets faults injected at random meters and times (spread over
the whole run, so over a year every season); its daily read-outs go through the real ingest into a
fresh SQLite database and the checks run every ``--check-every`` simulated days. The ground truth is
the simulator's truth log (``FaultBook.events``). A fault counts as detected when a fault of a rule
that can see that kind is raised for the meter at or after the fault's start; every raised fault
without such a truth entry (other rule, other meter, or raised before the fault began) is a false
positive. Prints, per fault kind: injected, detected, recall, the raised faults of the rules that may
report that kind and how many of them were false, precision, and the detection delay (median, 90th
percentile, maximum, in days from the injected start to the fault being opened). Faults of severity
``info`` (rollover, low consumption) are notes and are not counted.

Unobservable faults. Some injected faults leave the data exactly as a healthy meter's would be: a
register stuck, or running backwards, in a flat where nothing is used from the fault's start to the
end of the run gives the same read-outs as a working meter in an empty flat. The criterion is taken
from the simulator, never from the rules: at every daily read-out from the fault's start to the end
of the run the meter is asked for its read-out twice, with its faults and without them (same
registers of every telegram, same identity, answering or not); when the two never differ the fault
is counted as unobservable, reported apart with the true consumption of its billing register over
the window, and left out of recall. Raised faults that match it still count as true for precision.
For the others the first read-out that differs is the moment the fault became observable; the
delay is also given from that moment (a backwards register in a flat whose people are away only
moves back when they come home).

Several seeds run side by side (``--seeds 7,11,23 --jobs 2``), each its own fleet and faults;
``--tuned`` names the seeds the rules were tuned on, the others are reported as held out.

    .venv/bin/python tests/central/bench_central_detection.py --properties 12 --days 365 --seeds 7,23
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from central.checks import run_meter_checks
from central.db import Database
from central.ingest import IngestProcessor
from central.keys import MeterKeyBox
from central.models import Fault, FaultEvent, Meter
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
    observable_at: datetime | None = None  # first read-out differing from a healthy meter's
    true_use: str = ""  # the billing register's true growth over the fault window (unobservable)


def first_difference(meter: Any, times: list[datetime]) -> datetime | None:
    """The first of ``times`` at which the meter's read-out with its faults differs from the one it
    would give without them: registers of its telegrams, identity, whether it answers at all."""
    book = meter.faults
    keys = {f.key for telegram in meter.layout for f in telegram}
    for at in times:
        if book is not None and book.silent(meter, at):
            return at
        faulty, faulty_id = meter.registers(at), meter.identity(at)
        meter.faults = None
        try:
            healthy, healthy_id = meter.registers(at), meter.identity(at)
        finally:
            meter.faults = book
        if faulty_id != healthy_id or any(faulty.get(k) != healthy.get(k) for k in keys):
            return at
    return None


def true_growth(meter: Any, start: datetime, end: datetime) -> str:
    """Growth of the meter's first billing register from ``start`` to ``end``, fault-free, in its unit."""
    key = meter.main_registers[0] if meter.main_registers else None
    if key is None:
        return "-"
    field = next(f for telegram in meter.layout for f in telegram if f.key == key)
    grown = meter.base_registers(end)[key] - meter.base_registers(start)[key]
    return f"{field.meant(grown)} {field.unit}"


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
    say = functools.partial(print, f"seed {seed}:")  # the seeds' processes print side by side
    start = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    rng = random.Random(seed)
    media = {}
    for prop in fleet.properties:
        for sm in prop.sim.site.meters:
            media[int(sm.id)] = (prop, sm.medium.value)
    taken: set[int] = set()
    candidates = list(media)
    for kind in EXPECTED_RULES:
        suitable = [m for m in candidates if m not in taken and _suits(kind, media[m][1])]
        for ident in rng.sample(suitable, min(faults_per_kind, len(suitable))):
            taken.add(ident)
            prop, _medium = media[ident]
            at = start + timedelta(days=rng.randint(days // 5, max(days // 5, days - 20)))
            prop.sim.faults.inject(ident, kind, at, None, **FAULT_PARAMS.get(kind, {}))
    # Scored against what the simulator logged, not against what was asked of it.
    truth = [
        Injected(e["meter"], e["fault"], datetime.fromisoformat(e["start"]))
        for prop in fleet.properties
        for e in prop.sim.faults.events
        if e["event"] == "fault"
    ]

    # Which faults the data can show at all, and from when (see the module docstring).
    sim_meters = {m.ident: m for prop in fleet.properties for m in prop.sim.meters}
    readouts = [start + timedelta(days=day) for day in range(days)]
    for t in truth:
        meter = sim_meters[int(t.serial)]
        t.observable_at = first_difference(meter, [at for at in readouts if at >= t.start])
        if t.observable_at is None:
            t.true_use = true_growth(meter, t.start, readouts[-1])

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
    cpu = {"simulator": 0.0, "ingest": 0.0, "checks": 0.0}
    for day in range(days):
        at = start + timedelta(days=day)
        c0 = time.process_time()
        batches = [
            (frames_topic(collector), encode(FrameBatch.model_validate(batch)))
            for collector, batch in fleet.batches(at, batch_size=200)
        ]
        c1 = time.process_time()
        for topic, payload in batches:
            await processor.handle(topic, payload)
        c2 = time.process_time()
        if day % check_every == check_every - 1:
            await run_meter_checks(db, now=at + timedelta(hours=1))
        c3 = time.process_time()
        cpu["simulator"] += c1 - c0
        cpu["ingest"] += c2 - c1
        cpu["checks"] += c3 - c2
    elapsed = time.perf_counter() - t0

    async with db.sessions() as session:
        rows = (
            await session.execute(select(Fault, Meter.serial).join(Meter, Fault.meter_id == Meter.id))
        ).all()
        # A note that later became a warning counts from when it did.
        escalated: dict[int, datetime] = {}
        for fault_id, at in (
            await session.execute(
                select(FaultEvent.fault_id, FaultEvent.at)
                .where(FaultEvent.kind == "escalated", FaultEvent.text.like("info -> %"))
                .order_by(FaultEvent.at)
            )
        ).all():
            escalated.setdefault(fault_id, at)
    await db.close()
    shutil.rmtree(tmp, ignore_errors=True)
    for fault, _serial in rows:
        if fault.id in escalated:
            fault.first_seen_at = escalated[fault.id]
    by_meter: dict[str, list[Injected]] = defaultdict(list)
    for t in truth:
        by_meter[t.serial].append(t)
    detected: dict[tuple[str, str], datetime] = {}
    false_positives: dict[str, int] = defaultdict(int)
    true_by_rule: dict[str, int] = defaultdict(int)
    for fault, serial in rows:
        if fault.severity == "info":
            continue  # rollovers and the like are notes, not faults
        matches = [t for t in by_meter.get(serial, []) if fault.rule in EXPECTED_RULES[t.kind]]
        if not matches:
            false_positives[fault.rule] += 1
            if verbose:
                say(
                    "false positive:",
                    serial,
                    media[int(serial)][1] if int(serial) in media else "?",
                    fault.rule,
                    f"{fault.first_seen_at:%Y-%m-%d}",
                    fault.message,
                    "truth:",
                    [t.kind for t in by_meter.get(serial, [])] or "none",
                )
            continue
        began = [t for t in matches if fault.first_seen_at >= t.start]
        if not began:  # the rule fits the meter's fault but fired before the fault existed
            false_positives[fault.rule] += 1
            if verbose:
                say(
                    "false positive (before the fault):",
                    serial,
                    fault.rule,
                    f"{fault.first_seen_at:%Y-%m-%d}",
                    fault.message,
                    [(t.kind, f"{t.start:%Y-%m-%d}") for t in matches],
                )
            continue
        true_by_rule[fault.rule] += 1
        for t in began:
            key = (t.serial, t.kind)
            if key not in detected or fault.first_seen_at < detected[key]:
                detected[key] = fault.first_seen_at
    report: dict[str, Any] = {
        "seed": seed,
        "meters": fleet.meter_count,
        "days": days,
        "check_every_days": check_every,
        "frames": processor.stats.frames_new,
        "readings": processor.stats.readings,
        "seconds": round(elapsed, 1),
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "kinds": {},
        "false_positives_by_rule": dict(false_positives),
    }
    report["unobservable"] = [
        {
            "meter": t.serial,
            "medium": media[int(t.serial)][1],
            "fault": t.kind,
            "start": t.start.isoformat(),
            "reason": "read-outs identical to a healthy meter's from the fault start to the end of the run",
            "true_consumption": t.true_use,
        }
        for t in truth
        if t.observable_at is None
    ]
    for kind, rules in EXPECTED_RULES.items():
        injected = [t for t in truth if t.kind == kind]
        observable = [t for t in injected if t.observable_at is not None]
        found = [t for t in observable if (t.serial, t.kind) in detected]
        hits = sorted((detected[(t.serial, t.kind)] - t.start).total_seconds() / 86400 for t in found)
        seen = sorted(
            max(0.0, (detected[(t.serial, t.kind)] - t.observable_at).total_seconds() / 86400)
            for t in found
            if t.observable_at is not None
        )
        if verbose:
            for t in injected:
                if t.observable_at is None:
                    say("unobservable:", t.serial, media[int(t.serial)][1], kind, t.start.date(),
                          "true consumption over the window:", t.true_use)  # fmt: skip
                elif (t.serial, t.kind) not in detected:
                    say("missed:", t.serial, media[int(t.serial)][1], kind, t.start.date(),
                          "observable from", t.observable_at.date())  # fmt: skip
        true = sum(true_by_rule[r] for r in rules)
        false = sum(false_positives.get(r, 0) for r in rules)
        report["kinds"][kind] = {
            "injected": len(injected),
            "unobservable": len(injected) - len(observable),
            "detected": len(hits),
            "raised": true + false,
            "false": false,
            "recall": round(len(hits) / len(observable), 3) if observable else None,
            "precision": round(true / (true + false), 3) if true + false else None,
            "delay_days": _spread(hits),
            "delay_from_observable_days": _spread(seen),
        }
    raised = sum(1 for f, _s in rows if f.severity != "info")
    report["raised_by_rule"] = {
        r: true_by_rule[r] + false_positives.get(r, 0)
        for r in sorted(set(true_by_rule) | set(false_positives))
    }
    report["precision"] = round((raised - sum(false_positives.values())) / raised, 3) if raised else None
    return report


def _spread(days: list[float]) -> dict[str, float] | None:
    if not days:
        return None
    return {
        "median": round(statistics.median(days), 1),
        "p90": round(days[min(len(days) - 1, int(len(days) * 0.9))], 1),
        "max": round(days[-1], 1),
    }


def _run_one(args: tuple[int, int, int, int, int, int, bool]) -> dict[str, Any]:
    return asyncio.run(run(*args))


def table(report: dict[str, Any], held_out: bool) -> str:
    """The per-kind figures of one seed as a Markdown table."""
    cpu = report["cpu_seconds"]
    lines = [
        f"seed {report['seed']} ({'held out' if held_out else 'tuned on'}): {report['meters']} meters, "
        f"{report['days']} days, checks every {report['check_every_days']} d, {report['readings']} "
        f"readings; {report['seconds']} s wall, CPU s: simulator {cpu['simulator']}, ingest "
        f"{cpu['ingest']}, checks {cpu['checks']}",
        "",
        "| fault | injected | unobservable | detected | recall | raised | false | precision "
        "| delay median/p90/max (d) | from observable (d) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for kind, k in report["kinds"].items():
        delays = [
            f"{d['median']} / {d['p90']} / {d['max']}" if d else "-"
            for d in (k["delay_days"], k["delay_from_observable_days"])
        ]
        lines.append(
            f"| {kind} | {k['injected']} | {k['unobservable']} | {k['detected']} | {k['recall']} "
            f"| {k['raised']} | {k['false']} | {k['precision']} | {delays[0]} | {delays[1]} |"
        )
    if report["unobservable"]:
        lines.append("")
    lines.extend(
        f"unobservable (not in recall): {u['fault']} on {u['medium']} meter {u['meter']} from "
        f"{u['start'][:10]}: {u['reason']}; true consumption over the window {u['true_consumption']}"
        for u in report["unobservable"]
    )
    lines.append(f"\nall raised faults: precision {report['precision']}; false positives by rule: "
                 f"{report['false_positives_by_rule'] or 'none'}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_central_detection.py", description=__doc__)
    parser.add_argument("--properties", type=int, default=12)
    parser.add_argument("--apartments", type=int, default=12)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--check-every", type=int, default=3, help="simulated days between check runs")
    parser.add_argument("--faults-per-kind", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    parser.add_argument("--seeds", default="7", help="comma-separated seeds, each its own fleet")
    parser.add_argument("--tuned", default="7,11", help="seeds the rules were tuned on (others: held out)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds simulated in parallel processes")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON, not tables")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each false positive and miss")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else [int(x) for x in args.seeds.split(",") if x]
    tuned = {int(x) for x in args.tuned.split(",") if x}
    jobs = [
        (
            args.properties,
            args.apartments,
            args.days,
            args.check_every,
            args.faults_per_kind,
            seed,
            args.verbose,
        )
        for seed in seeds
    ]
    began = time.perf_counter()
    if len(jobs) > 1 and args.jobs > 1:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs))) as pool:
            reports = list(pool.map(_run_one, jobs))
    else:
        reports = [_run_one(job) for job in jobs]
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for report in reports:
            print(table(report, report["seed"] not in tuned), end="\n\n")
        print(f"total wall time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
