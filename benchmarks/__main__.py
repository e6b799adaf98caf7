"""``python -m benchmarks``: run every benchmark module listed in ``BENCHMARKS``."""

from __future__ import annotations

import importlib
import sys

# module name -> one line of what it measures; each module has ``main(argv) -> int``
BENCHMARKS = {
    "benchmarks.decode": "M-Bus decode: imd decode --json vs pyMeterBus on the libmbus corpus",
    "benchmarks.billing": "billing: compute_run, debiteringsfil and PDFs for a 100,000-apartment portfolio",
    "benchmarks.billing_fleet": "billing from the DB: load_input, compute_run, save_run, simulator fleet",
    "benchmarks.wmbus": "wM-Bus decode incl. AES decryption: imd decode --json --key on golden telegrams",
    "benchmarks.ingest": "central ingest via Mosquitto: readings/s into SQLite and PostgreSQL, latency",
    "benchmarks.detection": "meter checks: recall, precision, delay per fault (588 meters, 90 d; --days 365)",
    "benchmarks.polling": "wired polling: 250 meters at 2400 baud (timed simulator) vs the physical minimum",
    "benchmarks.edge_memory": "collector RSS: imd edge run with 250 wired + 500 radio meters (goal <= 60 MB)",
    "benchmarks.api_latency": "API/page latency over HTTP: 10,000 meters, a year of daily readings (p95)",
}


def main(argv: list[str] | None = None) -> int:
    status = 0
    for name, what in BENCHMARKS.items():
        print(f"== {what}", flush=True)
        module = importlib.import_module(name)
        status |= int(module.main(argv or []))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
