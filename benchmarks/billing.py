"""Billing speed: a synthetic portfolio (seeded, deterministic) through ``compute_run``, the
debiteringsfil export and the debiteringsunderlag PDFs.

The portfolio: properties of ``--per-property`` apartments (default 50) for one month (March 2024),
four media per apartment: heat by fördelning of a supplier invoice (30 % by area), hot water, cold
water and electricity by debitering (electricity with a fixed fee), plus a samfällighetsavgift by
area. Each meter has the readings a daily remote read-out leaves around each boundary (one before and
one after local midnight, so every boundary value is interpolated, as in real life); about 2 % of
apartments have a tenant moving mid-month, 0.5 % a meter replaced, 1 % an estimated reading, a few
are vacant. Every other property is VAT-registered.

``python -m benchmarks.billing`` runs 100,000 apartments (the issue's goal: run < 30 s, >= 50 PDFs/s);
``--apartments 2000`` is a quick look. Input building is timed separately from the run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from central.billing.model import (
    Apartment,
    BillingInput,
    FixedCost,
    FixedKey,
    InvoiceLine,
    InvoiceLineKind,
    Medium,
    MediumConfig,
    MeterInstallation,
    MeterPoint,
    PriceEntry,
    PriceModel,
    PropertySettings,
    Reading,
    ReadingSource,
    SupplierInvoice,
    TenantPeriod,
)

TZ = ZoneInfo("Europe/Stockholm")
PERIOD = (date(2024, 3, 1), date(2024, 4, 1))
CREATED = datetime(2024, 4, 5, 8, 0, tzinfo=ZoneInfo("UTC"))
D = Decimal

# medium -> (unit, typical monthly use per m² as (lo, hi) in thousandths, price per unit, fee per month)
_MEDIA = {
    Medium.HEAT: ("kWh", (800, 2200), None, None),
    Medium.HOT_WATER: ("m3", (20, 60), D("68.50"), None),
    Medium.COLD_WATER: ("m3", (30, 80), D("32.75"), None),
    Medium.ELECTRICITY: ("kWh", (1500, 4000), D("1.4375"), D("45.00")),
}


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, dtime(hour, minute), tzinfo=TZ)


def _readings(rng: random.Random, pid: str, start_value: Decimal, use: Decimal, estimated: bool) -> list[Reading]:
    """Readings around 1 March and 1 April: 23:40 the day before and 00:20 on the day."""
    lo, hi = PERIOD
    per_hour = use / D(31 * 24)
    before_lo = start_value - (per_hour * D("0.333")).quantize(D("0.001"))
    after_hi = start_value + use + (per_hour * D("0.333")).quantize(D("0.001"))
    rows = [
        Reading(f"{pid}-a", _at(lo - timedelta(days=1), 23, 40), before_lo),
        Reading(f"{pid}-b", _at(lo, 0, 20), start_value + (per_hour * D("0.333")).quantize(D("0.001"))),
        Reading(f"{pid}-c", _at(hi - timedelta(days=1), 23, 40), start_value + use - (per_hour * D("0.333")).quantize(D("0.001"))),
        Reading(f"{pid}-d", _at(hi, 0, 20), after_hi, raw_frame_id=f"frame-{pid}-d"),
    ]
    if estimated:
        rows[3] = Reading(
            f"{pid}-d", rows[3].at, after_hi, ReadingSource.ESTIMATED, "same period last year", "no frames 9 days"
        )
    del rng
    return rows


def build_property(index: int, apartments: int, seed: int = 2024) -> BillingInput:
    """Property ``index`` of the portfolio: the same index and seed always give the same input."""
    rng = random.Random(seed * 1_000_003 + index)
    pid = f"P{index:05d}"
    lo, hi = PERIOD
    apts: list[Apartment] = []
    points: list[MeterPoint] = []
    tenants: list[TenantPeriod] = []
    for n in range(apartments):
        aid = f"{pid}-A{n:03d}"
        area = D(rng.randrange(280, 1250)) / 10
        apts.append(
            Apartment(aid, f"{index:05d}{n:03d}", f"{1001 + n}", area, None, f"Storgatan {index % 97 + 1}, lgh {1001 + n}")
        )
        roll = rng.random()
        if roll < 0.02:  # a move mid-month
            move = lo + timedelta(days=rng.randrange(5, 25))
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}0", date(2019, 1, 1), move))
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}1", move, None))
        elif roll < 0.025:  # vacant all month
            pass
        else:
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}0", date(2019, 1, 1), None))
        for medium, (unit, (ulo, uhi), _, _) in _MEDIA.items():
            mpid = f"{aid}-{medium}"
            use = (area * rng.randrange(ulo, uhi) / 1000).quantize(D("0.001"))
            start = D(rng.randrange(1000, 900_000)) / 10
            estimated = rng.random() < 0.01
            rows = _readings(rng, mpid, start, use, estimated)
            if rng.random() < 0.005:  # meter replaced mid-month
                swap = _at(lo + timedelta(days=14), 10)
                half = (use / 2).quantize(D("0.001"))
                old = MeterInstallation(
                    f"m-{mpid}-old",
                    datetime(2019, 1, 1, tzinfo=TZ),
                    swap,
                    (*rows[:2], Reading(f"{mpid}-x", swap, start + half)),
                )
                new_rows = (
                    Reading(f"{mpid}-y", swap, D(0)),
                    Reading(f"{mpid}-z", _at(hi, 0, 20), use - half + D("0.050")),
                    Reading(f"{mpid}-w", _at(hi - timedelta(days=1), 23, 40), use - half),
                )
                installs: tuple[MeterInstallation, ...] = (old, MeterInstallation(f"m-{mpid}", swap, None, new_rows))
            else:
                installs = (MeterInstallation(f"m-{mpid}", datetime(2019, 1, 1, tzinfo=TZ), None, tuple(rows)),)
            points.append(MeterPoint(mpid, medium, unit, aid, installs))
    main_use = D(sum(apts[i].area_m2 for i in range(apartments))) * D("1.6")
    media = []
    for medium, (unit, _, price, fee) in _MEDIA.items():
        if price is None:
            media.append(MediumConfig(medium, PriceModel.FORDELNING, unit, fixed_key_share=D("0.30")))
        else:
            media.append(
                MediumConfig(
                    medium, PriceModel.DEBITERING, unit, prices=(PriceEntry(date(2020, 1, 1), None, price, fee or D(0)),)
                )
            )
    cost = (main_use * D("1.10")).quantize(D("0.01"))
    invoice = SupplierInvoice(
        f"{pid}-INV-2403",
        "Fjärrvärme AB",
        Medium.HEAT,
        lo,
        hi,
        (
            InvoiceLine(InvoiceLineKind.FIXED_FEE, D("2500.00")),
            InvoiceLine(InvoiceLineKind.ENERGY, cost, main_use.quantize(D("1")), "kWh"),
            InvoiceLine(InvoiceLineKind.VAT, ((cost + D("2500.00")) * D("0.25")).quantize(D("0.01"))),
        ),
    )
    settings = PropertySettings(pid, f"Brf Portfölj {index}", vat_registered=index % 2 == 0)
    return BillingInput(
        settings,
        lo,
        hi,
        tuple(apts),
        tuple(points),
        tuple(media),
        tuple(tenants),
        (invoice,),
        (FixedCost("samf", "Samfällighetsavgift", D("1250.00"), FixedKey.AREA),),
    )


def portfolio(apartments: int, per_property: int = 50, seed: int = 2024) -> Iterator[BillingInput]:
    """The portfolio's properties in order (the last one smaller when ``apartments`` is not a multiple)."""
    index = 0
    left = apartments
    while left > 0:
        size = min(per_property, left)
        yield build_property(index, size, seed)
        left -= size
        index += 1


def _run_chunk(args: tuple[int, int, int, int, int]) -> tuple[float, float, int, int]:
    """Build and run properties ``[first, last)`` in a worker: (build s, run s, lines, apartments)."""
    from central.billing import compute_run
    from central.billing.runs import BillingRun

    first, last, per_property, total, seed = args
    build_s = run_s = 0.0
    lines = apartments = 0
    for index in range(first, last):
        size = min(per_property, total - index * per_property)
        t0 = time.process_time()  # CPU time: the machine is shared, wall time per call is noisy
        inp = build_property(index, size, seed)
        t1 = time.process_time()
        run = compute_run(inp, f"R-{inp.settings.property_id}-2403", CREATED, "bench")
        t2 = time.process_time()
        build_s += t1 - t0
        run_s += t2 - t1
        full = run if isinstance(run, BillingRun) else run.preview
        lines += len(full.lines) if full else 0
        apartments += size
    return build_s, run_s, lines, apartments


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.billing")
    parser.add_argument("--apartments", type=int, default=100_000)
    parser.add_argument("--per-property", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--profile", action="store_true", help="cProfile the run of the first 20 properties")
    args = parser.parse_args(argv)
    per = args.per_property
    count = -(-args.apartments // per)
    if args.profile:
        import cProfile
        import pstats

        from central.billing import compute_run

        inputs = [build_property(i, per, args.seed) for i in range(min(count, 20))]
        prof = cProfile.Profile()
        prof.enable()
        for inp in inputs:
            compute_run(inp, "R", CREATED, "bench")
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    chunks = [(i, min(i + 10, count), per, args.apartments, args.seed) for i in range(0, count, 10)]
    print(f"portfolio: {args.apartments} apartments in {count} properties, 4 media, March 2024; "
          f"workers: {args.workers}")
    t0 = time.perf_counter()
    if args.workers <= 1:
        results = [_run_chunk(c) for c in chunks]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(_run_chunk, chunks))
    wall = time.perf_counter() - t0
    build_s = sum(r[0] for r in results)
    run_s = sum(r[1] for r in results)
    lines = sum(r[2] for r in results)
    print(f"input build  (CPU s, all workers): {build_s:8.2f} s")
    print(f"compute_run  (CPU s, all workers): {run_s:8.2f} s  {lines / run_s:10.0f} lines/s per core  "
          f"{run_s / args.apartments * 1000:.3f} ms/apartment  ({lines} lines)")
    print(f"wall, input build + run ({args.workers} workers): {wall:8.2f} s  {lines / wall:10.0f} lines/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
