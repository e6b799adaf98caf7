"""``imd demo``: the whole system on simulated hardware in one command."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("demo", help="run everything on simulated hardware")
    parser.set_defaults(func=lambda args: print("not implemented yet"))
