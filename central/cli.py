"""``imd central ...``: the central service."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "central", help="central service: ingest, API, dashboard", description="Run central."
    )
    csub = parser.add_subparsers(dest="central_command", required=True, metavar="ACTION")
    serve = csub.add_parser("serve", help="run the API, dashboard and MQTT ingest")
    serve.set_defaults(func=lambda args: print("not implemented yet"))
