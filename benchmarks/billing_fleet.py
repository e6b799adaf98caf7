"""Billing through central's database on a simulator fleet: ``load_input`` + ``compute_run`` + ``save_run``.

``benchmarks.billing`` times the engine on inputs built in memory. This one times what a billing run
costs the service: the readings are what real decoding of the simulator's telegrams gives, stored by
central's ingest, and every property is loaded from and saved to SQLite the way
``POST /api/billing/properties/{key}/runs`` does it.

Setup (timed, reported, not part of the billing figures):

* a fleet (:class:`hwsim.fleet.Fleet`) of properties of ``--per-property`` apartments (heat, hot
  water, cold water, electricity meter each, a main heat meter per property);
* each property's site export imported with ``central.site_import.import_site``; the meters are then
  given a commissioning date before the period (the import stamps the import day);
* a daily read-out at 02:00 UTC of every meter from ``--days-around`` days before the period (March
  2023, near the simulator's epoch) to as many after it, as ``FrameBatch`` messages through
  ``central.ingest.IngestProcessor.handle_many`` (no broker: the broker's share is measured by
  ``benchmarks.ingest``);
* billing settings per property as ``PUT .../settings`` stores them: heat by fördelning of a supplier
  invoice (30 % by area), hot water, cold water and electricity by debitering (prices per medium,
  electricity with a fixed fee), a samfällighetsavgift by count; every other property VAT-registered.

The run: ``--workers`` forked processes, each with its own connection pool on the same database file,
take properties idx, idx + workers, ... and per property do the endpoint's sequence: settings and
period, ``next_run_id``, ``load_input`` (phase *load*), ``compute_run`` and ``raw_frames_of`` (phase
*compute*), ``save_run`` + the audit row + commit (phase *save*). Wall time of the whole run is taken
from barriers (every worker ready -> every worker done); CPU seconds per phase are summed over the
workers (aiosqlite's thread included: ``process_time`` counts every thread of the process).

Runs are independent per property, so 100,000 apartments are reported as the measured N plus a
linear extrapolation of it, stated as such (``make bench`` runs a small N; the setup dominates).
``--documents K``: afterwards K properties' debiteringsunderlag + summary PDFs rendered in the
workers from the stored context (``document_context`` + ``comparisons_for``), as the export does.

Measured (2 cores, idle; ``--apartments 10000 --workers 2 --documents 2``): 200 properties, 40,200
meters, 18.8 M readings from 1.96 M frames (setup 12 min); the run 3.60-3.84 s wall, 6.3-6.6 CPU-s:
per apartment load_input 0.24-0.25 ms CPU, compute_run 0.14, save_run + commit 0.26-0.27; linear
extrapolation to 100,000 apartments (not measured) 36-38 s wall on 2 workers, 63-66 CPU-s (a third
worker does not help: the two cores are 87-89 % busy already). load_input reads only the readings
within 26 h of the instants the run aligns to, four per meter for a month of nightly read-outs,
whatever the window loaded around them (``--days-around``). Where the CPU goes and why 30 s is out
of reach on two cores: README, "The billing run against 30 s".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hardware-sim"))

D = Decimal
PERIOD_FROM = date(2023, 3, 1)
PERIOD_TO = date(2023, 4, 1)
READ_AT = timedelta(hours=2)  # daily read-out time, UTC
CREATED_BY = "bench"

MEDIA = {
    "heat": {"model": "fordelning", "fixed_key_share": "0.30", "fixed_key": "area"},
    "hot_water": {"model": "debitering"},
    "cold_water": {"model": "debitering"},
    "electricity": {"model": "debitering"},
}
# medium -> (price per unit excl. VAT, fixed fee per month)
PRICES = {
    "hot_water": (D("61.25"), D("0")),
    "cold_water": (D("32.75"), D("0")),
    "electricity": (D("1.4250"), D("29.00")),
}


@dataclass
class Setup:
    properties: int = 0
    apartments: int = 0
    meters: int = 0
    frames: int = 0
    readings: int = 0
    import_s: float = 0.0
    simulate_cpu: float = 0.0
    ingest_cpu: float = 0.0
    ingest_wall: float = 0.0
    configure_s: float = 0.0


@dataclass
class WorkerResult:
    properties: int = 0
    apartments: int = 0
    lines: int = 0
    load_cpu: float = 0.0
    load_wall: float = 0.0
    compute_cpu: float = 0.0
    compute_wall: float = 0.0
    save_cpu: float = 0.0
    save_wall: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    # run id -> (apartment object numbers, object numbers with at least one line)
    coverage: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    documents: int = 0
    documents_cpu: float = 0.0
    documents_wall: float = 0.0


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# --- setup -----------------------------------------------------------------------------------------


async def build_database(
    path: Path, apartments: int, per_property: int, days_around: int, seed: int
) -> Setup:
    """A fresh central database at ``path`` holding the fleet, its read-outs and billing settings."""
    from hwsim.fleet import Fleet
    from sqlalchemy import func, select, update

    from central.db import Database
    from central.ingest import IngestProcessor
    from central.keys import MeterKeyBox
    from central.models import Meter, Reading
    from central.site_import import import_site
    from protocols.messages import encode, frames_topic

    count = -(-apartments // per_property)
    fleet = Fleet(seed=seed, properties=count, apartments=per_property)
    setup = Setup(properties=count, apartments=count * per_property, meters=fleet.meter_count)
    db = await Database.open(_url(path))
    try:
        w0 = time.perf_counter()
        keybox = MeterKeyBox(path.parent / "meter-keys")
        for prop in fleet.properties:
            await import_site(db, prop.sim.site, keybox, actor=CREATED_BY)
        async with db.sessions.begin() as session:
            # Commissioned well before the period: the import stamps the day it ran.
            commissioned = datetime.combine(PERIOD_FROM, datetime.min.time(), tzinfo=UTC) - timedelta(days=90)
            await session.execute(update(Meter).values(installed_at=commissioned))
        setup.import_s = time.perf_counter() - w0

        processor = IngestProcessor(db, keybox=keybox)
        first = datetime.combine(PERIOD_FROM, datetime.min.time(), tzinfo=UTC) - timedelta(days=days_around)
        days = (PERIOD_TO - PERIOD_FROM).days + 2 * days_around
        w0 = time.perf_counter()
        for day in range(days):
            c0 = time.process_time()
            messages = [
                (frames_topic(collector), encode(batch))
                for collector, batch in fleet.batches(first + timedelta(days=day) + READ_AT, batch_size=200)
            ]
            c1 = time.process_time()
            # One transaction per few properties' read-outs, as the MQTT ingest groups what arrives.
            for i in range(0, len(messages), 20):
                await processor.handle_many(messages[i : i + 20])
            setup.simulate_cpu += c1 - c0
            setup.ingest_cpu += time.process_time() - c1
        setup.ingest_wall = time.perf_counter() - w0
        setup.frames = processor.stats.frames_new
        async with db.sessions() as session:
            setup.readings = int(await session.scalar(select(func.count()).select_from(Reading)) or 0)

        w0 = time.perf_counter()
        await configure(db)
        setup.configure_s = time.perf_counter() - w0
    finally:
        await db.close()
    return setup


async def describe_database(path: Path) -> Setup:
    """The counts of a database built by an earlier run (``--reuse``); its setup times are not known."""
    from sqlalchemy import func, select

    from central.db import Database
    from central.models import Apartment, Meter, Property, RawFrame, Reading

    db = await Database.open(_url(path), migrate=False)
    try:
        async with db.sessions() as session:

            async def count(model: Any) -> int:
                return int(await session.scalar(select(func.count()).select_from(model)) or 0)

            return Setup(
                properties=await count(Property),
                apartments=await count(Apartment),
                meters=await count(Meter),
                frames=await count(RawFrame),
                readings=await count(Reading),
            )
    finally:
        await db.close()


async def configure(db: Any) -> None:
    """Settings, prices, a heat invoice and a fixed cost per property, stored as the API stores them."""
    from sqlalchemy import select

    from central.api.billing import SettingsIn
    from central.billing.serial import to_jsonable
    from central.models import (
        Apartment,
        BillingFixedCost,
        BillingPrice,
        BillingSettings,
        BillingSupplierInvoice,
        BillingSupplierInvoiceLine,
        Property,
    )

    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        props = (await session.execute(select(Property).order_by(Property.id))).scalars().all()
        flats: dict[int, int] = {}
        for (pid,) in await session.execute(select(Apartment.property_id)):
            flats[pid] = flats.get(pid, 0) + 1
        for index, prop in enumerate(props):
            body = SettingsIn.model_validate({"vat_registered": index % 2 == 0, "media": MEDIA})
            row = BillingSettings(property_id=prop.id)
            for name, value in body.model_dump(exclude={"media", "invoicing"}).items():
                setattr(row, name, value)
            # the same JSON as PUT .../settings writes
            row.media = json.dumps(
                {str(m): to_jsonable(cfg.model_dump()) for m, cfg in sorted(body.media.items())},
                sort_keys=True,
            )
            row.updated_at, row.updated_by = now, CREATED_BY
            session.add(row)
            for medium, (unit_price, fee) in PRICES.items():
                session.add(
                    BillingPrice(
                        property_id=prop.id,
                        medium=medium,
                        valid_from=date(2023, 1, 1),
                        unit_price=unit_price,
                        fixed_fee_per_month=fee,
                    )
                )
            # A district-heating invoice sized to the property: ~900 kWh per apartment in March.
            n = flats.get(prop.id, 0)
            kwh = D(900 * n)
            energy = (kwh * D("0.8125")).quantize(D("0.01"))
            fixed = D("1500.00") + D("25.00") * n
            invoice = BillingSupplierInvoice(
                property_id=prop.id,
                supplier="Fjärrvärme AB",
                reference=f"F-{prop.key}-2303",
                medium="heat",
                period_from=PERIOD_FROM,
                period_to=PERIOD_TO,
                created_at=now,
                created_by=CREATED_BY,
            )
            session.add(invoice)
            await session.flush()
            for position, (kind, amount, qty, unit, text) in enumerate(
                (
                    ("fixed_fee", fixed, None, None, "Fast avgift"),
                    ("energy", energy, kwh, "kWh", "Energi"),
                    ("vat", ((fixed + energy) * D("0.25")).quantize(D("0.01")), None, None, "Moms"),
                )
            ):
                session.add(
                    BillingSupplierInvoiceLine(
                        invoice_id=invoice.id, position=position, kind=kind, amount=amount,
                        quantity=qty, unit=unit, text=text,
                    )
                )  # fmt: skip
            session.add(
                BillingFixedCost(
                    property_id=prop.id, name="Samfällighetsavgift", amount_per_month=D("900.00"), key="count"
                )
            )


# --- the run ---------------------------------------------------------------------------------------


async def bill_properties(url: str, idx: int, workers: int, documents: int) -> WorkerResult:
    """Properties idx, idx + workers, ... in the order of the billing endpoint; per-phase CPU/wall."""
    from sqlalchemy import select

    from central.billing import compute_run
    from central.billing.documents import apartment_documents, property_summary_document
    from central.billing.model import Frequency
    from central.billing.periods import period_containing
    from central.billing.runs import BillingRun, RunStopped
    from central.billing.store import (
        comparisons_for,
        document_context,
        load_input,
        next_run_id,
        raw_frames_of,
        save_run,
    )
    from central.db import Database
    from central.models import AuditLog, BillingSettings, Property

    out = WorkerResult()
    db = await Database.open(url, migrate=False)
    try:
        async with db.sessions() as session:
            props = (await session.execute(select(Property).order_by(Property.id))).scalars().all()
            keys = [p.key for p in props][idx::workers]
        kept: list[tuple[str, BillingRun]] = []
        for key in keys:
            async with db.sessions() as session:
                c0, w0 = time.process_time(), time.perf_counter()
                prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one()
                srow = await session.get(BillingSettings, prop.id)
                assert srow is not None
                period = period_containing(PERIOD_FROM, Frequency(srow.frequency))
                run_id = await next_run_id(session, prop, period.start)
                inp, apartment_ids = await load_input(session, prop, period.start, period.end)
                c1, w1 = time.process_time(), time.perf_counter()
                result = compute_run(inp, run_id, datetime.now(UTC), CREATED_BY)
                frames = raw_frames_of(inp)
                c2, w2 = time.process_time(), time.perf_counter()
                record = await save_run(
                    session, prop, result, apartment_ids, created_by=CREATED_BY, raw_frames=frames
                )
                session.add(
                    AuditLog(
                        at=datetime.now(UTC), actor=CREATED_BY, action="billing.run.create",
                        entity="billing_run", entity_id=run_id,
                        detail=f"state={record.state} input={result.input_digest}",
                    )
                )  # fmt: skip
                await session.commit()
                c3, w3 = time.process_time(), time.perf_counter()
            out.load_cpu += c1 - c0
            out.load_wall += w1 - w0
            out.compute_cpu += c2 - c1
            out.compute_wall += w2 - w1
            out.save_cpu += c3 - c2
            out.save_wall += w3 - w2
            out.properties += 1
            out.apartments += len(inp.apartments)
            out.states[record.state] = out.states.get(record.state, 0) + 1
            run = result if isinstance(result, BillingRun) else result.preview
            assert run is not None or isinstance(result, RunStopped)
            billed = sorted({ln.object_number for ln in run.lines}) if run is not None else []
            out.lines += len(run.lines) if run is not None else 0
            out.coverage[run_id] = ([a.id for a in inp.apartments], billed)
            if run is not None and len(kept) < documents:
                kept.append((key, run))
        c0, w0 = time.process_time(), time.perf_counter()
        for key, run in kept:
            async with db.sessions() as session:
                prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one()
                ctx = replace(
                    await document_context(session, prop),
                    comparisons=await comparisons_for(session, prop, run),
                )
            docs = [*apartment_documents(run, ctx), property_summary_document(run, ctx)]
            out.documents += len(docs)
        out.documents_cpu, out.documents_wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        await db.close()
    return out


def _worker(url: str, idx: int, workers: int, documents: int, barrier: Any, out: Any) -> None:  # noqa: PLR0917
    # The central app's collector settings (central/api/app.py): what the service runs with.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    barrier.wait()
    result = asyncio.run(bill_properties(url, idx, workers, documents))
    barrier.wait()
    out.put(result)


def run_billing(path: Path, workers: int, documents: int = 0) -> tuple[float, list[WorkerResult]]:
    """(wall seconds of the whole run, one result per worker); ``workers == 1`` runs in-process."""
    url = _url(path)
    # The service has its modules loaded: import them before the workers fork, so the first
    # property's figures are not the interpreter compiling them.
    import central.billing.documents
    import central.billing.periods
    import central.billing.store
    import central.db
    import central.models  # noqa: F401

    if workers <= 1:
        w0 = time.perf_counter()
        result = asyncio.run(bill_properties(url, 0, 1, documents))
        return time.perf_counter() - w0, [result]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, i, workers, documents, barrier, queue)) for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    w0 = time.perf_counter()
    barrier.wait()
    wall = time.perf_counter() - w0
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return wall, results


# --- report ----------------------------------------------------------------------------------------


def check_coverage(results: list[WorkerResult]) -> list[str]:
    """Apartments of a run without a single line (every apartment gets its bill or a vacancy line)."""
    return [
        f"{run_id}: {obj}"
        for r in results
        for run_id, (apartments, billed) in r.coverage.items()
        for obj in sorted(set(apartments) - set(billed))
    ]


def report(setup: Setup, wall: float, results: list[WorkerResult], workers: int, target: int) -> None:
    apts = sum(r.apartments for r in results)
    lines = sum(r.lines for r in results)
    states: dict[str, int] = {}
    for r in results:
        for k, v in r.states.items():
            states[k] = states.get(k, 0) + v
    print(
        f"setup: {setup.properties} properties, {setup.apartments} apartments, {setup.meters} meters; "
        f"import {setup.import_s:.1f} s; {setup.frames} frames -> {setup.readings} readings "
        f"(simulate {setup.simulate_cpu:.1f} CPU-s, ingest {setup.ingest_cpu:.1f} CPU-s, "
        f"{setup.ingest_wall:.1f} s wall); settings {setup.configure_s:.1f} s"
    )
    print(f"run: {apts} apartments, {lines} lines, runs {dict(sorted(states.items()))}, {workers} workers, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    total_cpu = 0.0
    for phase in ("load", "compute", "save"):
        cpu = sum(getattr(r, f"{phase}_cpu") for r in results)
        pwall = sum(getattr(r, f"{phase}_wall") for r in results)
        total_cpu += cpu
        name = {"load": "load_input (DB)", "compute": "compute_run", "save": "save_run + commit"}[phase]
        print(
            f"  {name:<20} {pwall / apts * 1000:7.3f} ms wall/apartment (summed over workers)  "
            f"{cpu / apts * 1000:7.3f} ms CPU/apartment  {cpu:7.2f} CPU-s"
        )
    print(
        f"  whole run            wall {wall:7.2f} s "
        f"({wall / apts * 1000:.3f} ms/apartment on {workers} workers)  "
        f"CPU {total_cpu:7.2f} s ({total_cpu / apts * 1000:.3f} ms/apartment)  {lines / wall:8.0f} lines/s"
    )
    scale = target / apts
    print(
        f"  extrapolated linearly to {target} apartments (not measured): wall {wall * scale:.1f} s on "
        f"{workers} workers, {total_cpu * scale:.1f} CPU-s"
    )
    docs = sum(r.documents for r in results)
    if docs:
        dwall = max(r.documents_wall for r in results)
        dcpu = sum(r.documents_cpu for r in results)
        print(
            f"  documents            {docs} PDFs in {dwall:.2f} s wall "
            f"({docs / dwall:.0f} PDFs/s on {workers} workers, context from the DB), {dcpu:.2f} CPU-s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.billing_fleet")
    parser.add_argument(
        "--apartments", type=int, default=200, help="fleet size (rounded up to whole properties)"
    )
    parser.add_argument("--per-property", type=int, default=50)
    parser.add_argument("--days-around", type=int, default=4, help="read-out days either side of the month")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--documents", type=int, default=2, help="properties per worker whose PDFs are rendered"
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--extrapolate", type=int, default=100_000, help="apartments to extrapolate to")
    parser.add_argument("--db-dir", type=Path, help="keep the database here (default: a temporary directory)")
    parser.add_argument(
        "--reuse", action="store_true",
        help="bill the database already in --db-dir (built by an earlier run; its runs are kept)",
    )  # fmt: skip
    args = parser.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="imd-bench-billing-") as tmp:
        directory = args.db_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "central.sqlite"
        if args.reuse and args.db_dir and path.exists():
            print(f"fleet billing: the database built earlier in {path}")
            setup = asyncio.run(describe_database(path))
        else:
            if path.exists():
                path.unlink()
            print(
                f"fleet billing: {args.apartments} apartments, {args.per_property} per property, March 2023 "
                f"with daily read-outs +-{args.days_around} days, SQLite {path}"
            )
            setup = asyncio.run(
                build_database(path, args.apartments, args.per_property, args.days_around, args.seed)
            )
        wall, results = run_billing(path, args.workers, args.documents)
        report(setup, wall, results, args.workers, args.extrapolate)
        missing = check_coverage(results)
        if missing:
            print(f"apartments without lines: {len(missing)}, e.g. {missing[:5]}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
