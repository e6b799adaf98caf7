"""``imd sim ...``: the hardware simulator."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sim", help="simulated meters, M-Bus segment and radio stick", description="Run the simulator."
    )
    ssub = parser.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    building = ssub.add_parser("building", help="start a simulated building on a pseudo-terminal")
    building.set_defaults(func=lambda args: print("not implemented yet"))
