"""``imd provision ...``: the technician's tools on site."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "provision", help="technician tools: survey, mapping, bundle, commissioning",
        description="Provision a collector on site.",
    )
    psub = parser.add_subparsers(dest="provision_command", required=True, metavar="ACTION")
    survey = psub.add_parser("survey", help="scan the wired bus and list the meters found")
    survey.set_defaults(func=lambda args: print("not implemented yet"))
