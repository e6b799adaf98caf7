"""``imd central ...``: the central service (API, dashboard, ingest) and its admin commands.

Only argparse here; the heavy imports happen inside the handlers so that ``imd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ENV_HELP = "Environment: IMD_DATA_DIR, IMD_DATABASE_URL, IMD_MQTT_URL, IMD_DEMO=1 (flags win)."


def _db_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="data directory (SQLite file, key files); default data/central"
    )
    parser.add_argument(
        "--database-url",
        help="sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db (default: SQLite in data dir)",
    )


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from central.config import Settings

    return Settings.from_env(
        data_dir=getattr(args, "data_dir", None), database_url=getattr(args, "database_url", None), **extra
    )


def _config_error(exc: Exception) -> int:
    print(f"imd central: configuration error: {exc}", file=sys.stderr)
    return 2


def _run(handler: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from central.config import ConfigError
        from central.db import DatabaseConfigError

        try:
            return int(handler(args) or 0)
        except (ConfigError, DatabaseConfigError) as exc:
            return _config_error(exc)

    return wrapped


def _serve(args: argparse.Namespace) -> int:
    from central.service import serve

    settings = _settings(
        args,
        mqtt_url=args.mqtt_url,
        host=args.host,
        port=args.port,
        demo=True if args.demo else None,
        shared_subscription=False if args.no_shared_subscription else None,
        mqtt_client_id=args.client_id,
        api=False if args.no_api else None,
        ingest=False if args.no_ingest else None,
        scheduler=False if args.no_scheduler else None,
        collectors=tuple(args.collector) if args.collector else None,
    )
    from central.logs import configure as configure_logging

    try:
        configure_logging(logging.INFO if args.verbose else logging.WARNING, args.log_format)
    except ValueError as exc:
        return _config_error(exc)

    def ready(url: str) -> None:
        if not settings.api:
            print(f"Ingest: subscribed on {url} as {settings.mqtt_client_id} (no HTTP port)", flush=True)
            return
        print(f"Dashboard: {url}", flush=True)
        if settings.demo:
            print("Demo login: demo / demo", flush=True)

    try:
        asyncio.run(serve(settings, on_ready=ready))
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"imd central: {exc}", file=sys.stderr)
        return 1
    return 0


def _import_site(args: argparse.Namespace) -> int:
    from central.service import import_site_file
    from protocols.errors import MessageError

    settings = _settings(args)
    try:
        report = import_site_file(settings, args.site)
    except (OSError, MessageError) as exc:
        print(f"imd central import-site: {args.site}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


def _create_user(args: argparse.Namespace) -> int:
    from central.service import create_user_async

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif os.environ.get("IMD_NEW_PASSWORD"):
        password = os.environ["IMD_NEW_PASSWORD"]
    else:
        password = getpass.getpass(f"Password for {args.username}: ")
    try:
        asyncio.run(
            create_user_async(
                settings,
                args.username,
                password,
                args.role,
                properties=args.property or None,
                apartment=args.apartment,
                actor="cli",
                replace=args.update,
            )
        )
    except ValueError as exc:
        print(f"imd central create-user: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.username} ({args.role}) saved")
    return 0


def _redecode(args: argparse.Namespace) -> int:
    from central.service import redecode_async

    counts = asyncio.run(redecode_async(_settings(args), args.collector))
    print(json.dumps(counts))
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    from central.db import Database
    from central.keys import KeyFileError, RotationError, rotate_meter_keys

    settings = _settings(args)
    if not settings.meter_key_file.exists():
        print(f"imd central rotate-keys: no meter key file at {settings.meter_key_file}", file=sys.stderr)
        return 1

    async def run() -> dict[str, Any]:
        db = await Database.open(settings.effective_database_url)
        try:
            keep = not args.discard_retired
            report = await rotate_meter_keys(db, settings.meter_key_file, keep_retired=keep)
        finally:
            await db.close()
        return report.as_dict()

    try:
        report = asyncio.run(run())
    except (KeyFileError, RotationError) as exc:
        print(f"imd central rotate-keys: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    if report["retired_file"]:
        print(
            f"the old key is in {report['retired_file']}: keep it with the backups taken before now "
            "(off this server), then delete it here",
            file=sys.stderr,
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from central.service import migrate_async

    asyncio.run(migrate_async(_settings(args)))
    print("database schema is up to date")
    return 0


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "central",
        help="central service: ingest, API, dashboard",
        description="Central: MQTT ingest, storage, REST API and dashboard. " + ENV_HELP,
    )
    csub = parser.add_subparsers(dest="central_command", required=True, metavar="ACTION")

    serve = csub.add_parser(
        "serve",
        help="run the API, dashboard and MQTT ingest",
        description="Run the REST API (/docs), dashboard (/) and MQTT ingest in one process, or one "
        "role of it (--no-api: an ingest worker; --no-ingest: API and dashboard only). " + ENV_HELP,
    )
    _db_args(serve)
    serve.add_argument("--mqtt-url", help="broker, e.g. mqtt://user:pass@host:1883 (none: no ingest)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000)")
    serve.add_argument("--demo", action="store_true", help="demo mode: creates user demo/demo (admin)")
    serve.add_argument(
        "--no-shared-subscription",
        action="store_true",
        help="subscribe to imd/v1/+/frames instead of $share/ingest/... (brokers without $share support)",
    )
    serve.add_argument(
        "--client-id",
        help="MQTT client id of this ingest worker, stable across restarts (default imd-central-<hostname>; "
        "env IMD_MQTT_CLIENT_ID)",
    )
    serve.add_argument(
        "--collector",
        action="append",
        help="subscribe only to this collector's topics (repeatable; default: all collectors)",
    )
    serve.add_argument(
        "--no-api",
        action="store_true",
        help="an ingest worker: MQTT ingest and the checks after it, no HTTP port (needs --mqtt-url)",
    )
    serve.add_argument(
        "--no-ingest", action="store_true", help="API and dashboard only: subscribe to nothing"
    )
    serve.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not run the periodic meter-function check sweep here (another process does)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text (default) or json: one JSON object per line, secrets masked (env IMD_LOG_FORMAT)",
    )
    serve.set_defaults(func=_run(_serve))

    imp = csub.add_parser(
        "import-site",
        help="import a site export (property, apartments, meters, keys)",
        description="Idempotent.",
    )
    imp.add_argument("site", type=Path, metavar="SITE.json")
    _db_args(imp)
    imp.set_defaults(func=_run(_import_site))

    user = csub.add_parser("create-user", help="create a user (password read from a prompt or stdin)")
    user.add_argument("username")
    user.add_argument("--role", required=True, choices=("admin", "staff", "technician", "board", "resident"))
    user.add_argument("--property", action="append", help="property id the user may see (board; repeatable)")
    user.add_argument("--apartment", help="apartment object number (resident)")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.add_argument("--update", action="store_true", help="update the user if it exists")
    _db_args(user)
    user.set_defaults(func=_run(_create_user))

    red = csub.add_parser("redecode", help="decode stored raw frames again (after a decoder or key fix)")
    red.add_argument("--collector", help="only this collector's frames")
    _db_args(red)
    red.set_defaults(func=_run(_redecode))

    rot = csub.add_parser(
        "rotate-keys",
        help="re-encrypt every stored meter key under a new meter-key file (crash-safe)",
        description="A new Fernet key goes first in the meter-key file, every stored key is re-encrypted "
        "with it in small transactions, then the old keys leave the file (to <file>.retired-<time>, "
        "for restoring older backups). A crash at any point leaves every key readable; run it again.",
    )
    rot.add_argument(
        "--discard-retired",
        action="store_true",
        help="do not keep the old keys (backups taken before lose their keys)",
    )
    _db_args(rot)
    rot.set_defaults(func=_run(_rotate_keys))

    mig = csub.add_parser("migrate", help="upgrade the database schema to the current version")
    _db_args(mig)
    mig.set_defaults(func=_run(_migrate))
