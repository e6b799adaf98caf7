"""``imd decode``: decode M-Bus / wM-Bus frames given as hex."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("decode", help="decode frames given as hex")
    parser.add_argument("frames", nargs="*", help="hex frames; one per line on stdin when none")
    parser.add_argument("--json", action="store_true", help="one JSON object per frame per line")
    parser.add_argument("--key", action="append", default=[], metavar="ID=HEX", help="meter key")
    parser.set_defaults(func=lambda args: print("not implemented yet"))
