"""``imd`` console command. Each part of the system registers its own subcommand tree.

Registration imports only argparse-level code so that ``imd --help`` stays fast; the heavy imports
happen inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from imd import __version__


def build_parser() -> argparse.ArgumentParser:
    from hwsim import cli as sim_cli

    from central import cli as central_cli
    from edge import cli as edge_cli
    from imd import decode_cli, demo
    from provisioning import cli as provision_cli

    parser = argparse.ArgumentParser(
        prog="imd",
        description="IMD gateway: read M-Bus/wM-Bus meters, ingest, check and bill consumption.",
    )
    parser.add_argument("--version", action="version", version=f"imd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(sub)
    central_cli.register(sub)
    edge_cli.register(sub)
    sim_cli.register(sub)
    decode_cli.register(sub)
    provision_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
