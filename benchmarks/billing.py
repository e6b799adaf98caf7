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
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal

from central.billing.model import Medium
from central.billing.synthetic import CREATED, build_property

D = Decimal


def _run_chunk(args: tuple[int, int, int, int, int]) -> tuple[float, float, float, int, int]:
    """Build, run and export properties ``[first, last)`` in a worker: CPU seconds of each step,
    lines and apartments."""
    from central.billing import GENERIC_CSV, compute_run, render
    from central.billing.runs import BillingRun

    first, last, per_property, total, seed = args
    build_s = run_s = export_s = 0.0
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
        if full is not None:
            render(full, GENERIC_CSV)
            export_s += time.process_time() - t2
            lines += len(full.lines)
        apartments += size
    return build_s, run_s, export_s, lines, apartments


def _documents(count: int, per_property: int, seed: int, workers: int) -> None:
    from central.billing import compute_run
    from central.billing.documents import Comparison, context_from_input, documents_parallel
    from central.billing.runs import BillingRun

    items = []
    for index in range(count):
        inp = build_property(index, per_property, seed)
        run = compute_run(inp, f"R-{inp.settings.property_id}-2403", CREATED, "bench")
        full = run if isinstance(run, BillingRun) else run.preview
        assert full is not None
        comps = {
            a.id: (
                Comparison(Medium.HEAT, "kWh", D("812.5"), D("901.2"), D("15.31")),
                Comparison(Medium.HOT_WATER, "m3", D("2.1"), D("2.3"), D("0.05")),
            )
            for a in inp.apartments
        }
        items.append((full, context_from_input(inp, comps)))
    t0 = time.perf_counter()
    docs = documents_parallel(items, workers=workers)
    wall = time.perf_counter() - t0
    size = sum(len(d.data) for d in docs)
    print(
        f"documents: {len(docs)} PDFs ({count} properties, underlag + summary) in {wall:.2f} s wall, "
        f"{workers} workers: {len(docs) / wall:.0f} PDFs/s, {size / len(docs) / 1024:.1f} KiB each"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.billing")
    parser.add_argument("--apartments", type=int, default=100_000)
    parser.add_argument("--per-property", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--documents", type=int, default=40, help="properties whose PDFs are rendered (0: none)"
    )
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
    print(
        f"portfolio: {args.apartments} apartments in {count} properties, 4 media, March 2024; "
        f"workers: {args.workers}"
    )
    t0 = time.perf_counter()
    if args.workers <= 1:
        results = [_run_chunk(c) for c in chunks]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(_run_chunk, chunks))
    wall = time.perf_counter() - t0
    build_s = sum(r[0] for r in results)
    run_s = sum(r[1] for r in results)
    export_s = sum(r[2] for r in results)
    lines = sum(r[3] for r in results)
    print(f"input build  (CPU s, all workers): {build_s:8.2f} s")
    print(
        f"compute_run  (CPU s, all workers): {run_s:8.2f} s  {lines / run_s:10.0f} lines/s per core  "
        f"{run_s / args.apartments * 1000:.3f} ms/apartment  ({lines} lines)"
    )
    print(f"export debiteringsfil (CPU s, generic CSV): {export_s:8.2f} s  {lines / export_s:10.0f} lines/s")
    print(
        f"wall, input build + run + export ({args.workers} workers): {wall:8.2f} s  "
        f"{lines / wall:10.0f} lines/s"
    )
    if args.documents:
        _documents(min(args.documents, count), per, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
