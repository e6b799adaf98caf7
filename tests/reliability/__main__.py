"""``make reliability`` = ``python -m tests.reliability``: the fault scenarios, figures to stdout and a file.

Needs Mosquitto (``/usr/sbin/mosquitto``), PostgreSQL 15 binaries for the private cluster of the
database-restart and N-worker scenarios, root for the disk-full tmpfs, and libfaketime for the
clock jumps; a scenario whose part is missing says "not run" and why (and the run fails).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.reliability.parts import Figures, PrivatePostgres
from tests.reliability.scenarios import (
    QUICK,
    Sizes,
    broker_restart,
    broker_restart_held,
    broker_unreachable,
    clock_jumps,
    collector_kill,
    database_restart,
    disk_full,
    duplicates_reordered,
    worker_kill,
)

ROOT = Path(__file__).resolve().parents[2]


def table(rows: list[Figures]) -> str:
    lines = [
        "| scenario | frames sent | copies on the wire | frames stored | doubled | lost | readings "
        "| readings = clean ingest | recovery | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        recovery = f"{r.recovery_s:.1f} s" if r.recovery_s is not None else "-"
        lines.append(
            f"| {r.scenario} | {r.sent} | {r.copies} | {r.stored} | {r.doubled} | {r.lost} | {r.readings} "
            f"| {'yes' if r.readings_match else 'no'} | {recovery} | {'ok' if r.ok else 'FAIL'} |"
        )
    lines.append("")
    lines += [f"- **{r.scenario}** ({r.seconds:.0f} s): {r.note}"
              + (f" — problems: {'; '.join(r.problems)}" if r.problems else "") for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short outage, less traffic (development)")
    parser.add_argument("--only", action="append", help="only scenarios whose function name contains this")
    parser.add_argument("--output", type=Path, default=ROOT / "test-artifacts" / "reliability.md")
    args = parser.parse_args(argv)
    sizes: Sizes = QUICK if args.quick else Sizes()

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imd-reliability-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the broker and PostgreSQL run as their own users and must reach their dirs
        pg: PrivatePostgres | None = None
        if PrivatePostgres.available() is None:
            pg = PrivatePostgres(root / "postgres").start()
        scenarios: dict[str, Callable[[], Figures]] = {
            "broker_unreachable": lambda: broker_unreachable(root, sizes),
            "broker_restart": lambda: broker_restart(root, sizes),
            "broker_restart_held": lambda: broker_restart_held(root, sizes),
            "collector_kill": lambda: collector_kill(root, sizes),
            "worker_kill": lambda: worker_kill(root, sizes),
            "database_restart": lambda: database_restart(root, sizes, pg),
            "disk_full": lambda: disk_full(root, sizes),
            "clock_jumps": lambda: clock_jumps(root, sizes),
            "duplicates_reordered": lambda: duplicates_reordered(root, sizes, pg),
        }
        rows: list[Figures] = []
        try:
            for name, run in scenarios.items():
                if args.only and not any(o in name for o in args.only):
                    continue
                t0 = time.monotonic()
                print(f"--- {name} ...", flush=True)
                try:
                    figures = run()
                except Exception as exc:
                    traceback.print_exc()
                    figures = Figures(name.replace("_", " "), note="crashed",
                                      problems=[f"{type(exc).__name__}: {exc}"])
                figures.seconds = time.monotonic() - t0
                rows.append(figures)
                verdict = "ok" if figures.ok else "FAIL"
                print(f"    {verdict} in {figures.seconds:.0f} s: {figures.note}", flush=True)
        finally:
            if pg is not None:
                pg.stop()
    wall = time.monotonic() - began
    cpu = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    report = (
        f"# Reliability suite\n\n`python -m tests.reliability{' --quick' if args.quick else ''}`: "
        f"{wall:.0f} s wall, {cpu:.0f} CPU-seconds (this process and its children; the machine is shared, "
        "so wall times are taken loaded). Required: nothing lost, nothing doubled.\n\n" + table(rows) + "\n"
    )
    print("\n" + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
