"""``imd edge ...``: the collector daemon."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "edge", help="collector: poll meters and publish frames", description="Run the collector."
    )
    esub = parser.add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    run = esub.add_parser("run", help="run the collector daemon")
    run.set_defaults(func=lambda args: print("not implemented yet"))
