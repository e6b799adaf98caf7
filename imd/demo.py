"""``imd demo``: the whole system on simulated hardware in one command.

Starts, each as its own process so that Ctrl-C stops them all in order: the embedded MQTT broker
(unless ``IMD_MQTT_URL`` names an external one), the simulator (one property on a virtual wired
M-Bus segment behind a real pseudo-terminal), central (SQLite under the data directory) and a
collector polling the segment. Secrets (MQTT passwords) travel in files and environment variables
of the children, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from imd.supervisor import Supervisor, SupervisorError

DEMO_COLLECTOR = "demo1"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run everything on simulated hardware",
        description=(
            "Start broker, simulator, central and a collector on this machine and print the dashboard "
            "URL. Set IMD_MQTT_URL to use an external broker instead of the embedded one."
        ),
    )
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="default: ./demo-data")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of central (default 8000)")
    parser.add_argument("--apartments", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=int, default=60, help="seconds between polls (default 60)")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    parser.add_argument("--run-for", type=float, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _imd(*args: str) -> list[str]:
    return [sys.executable, "-m", "imd", *args]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own localhost URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SupervisorError(f"central did not answer {url} within {timeout:.0f} s")


def _mqtt_urls(data_dir: Path, sup: Supervisor) -> tuple[str, str, bool]:
    """(central URL, collector URL, broker supports shared subscriptions)."""
    external = os.environ.get("IMD_MQTT_URL")
    if external:
        return external, external, True
    from central.embedded_broker import CENTRAL_USER, COLLECTOR_PREFIX, free_port, make_credentials

    users_file = data_dir / "mqtt-users.json"
    users = make_credentials([DEMO_COLLECTOR])
    users_file.write_text(json.dumps(users))
    users_file.chmod(0o600)
    port = free_port()
    broker_argv = [sys.executable, "-m", "central.embedded_broker", "--port", str(port)]
    sup.start(
        "broker",
        [*broker_argv, "--users-file", str(users_file)],
        ready="broker: mqtt://",
        timeout=30,
    )
    central = f"mqtt://{CENTRAL_USER}:{users[CENTRAL_USER]}@127.0.0.1:{port}"
    collector_user = f"{COLLECTOR_PREFIX}{DEMO_COLLECTOR}"
    collector = f"mqtt://{collector_user}:{users[collector_user]}@127.0.0.1:{port}"
    return central, collector, False


def run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    site_file = data_dir / "site.json"
    pty_link = data_dir / "mbus0"
    collector_toml = data_dir / "collector.toml"
    dashboard = f"http://{args.host}:{args.port}/"

    sup = Supervisor()
    stop_requested = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        central_url, collector_url, shared = _mqtt_urls(data_dir, sup)
        sup.start(
            "sim",
            _imd(
                "sim", "building",
                "--apartments", str(args.apartments),
                "--seed", str(args.seed),
                "--speed", str(args.speed),
                "--export", str(site_file),
                "--link", str(pty_link),
            ),
            ready="pty: ",
            timeout=60,
        )
        sup.run_once("import", _imd("central", "import-site", str(site_file), "--data-dir", str(data_dir)))
        central_args = ["central", "serve", "--data-dir", str(data_dir), "--host", args.host,
                        "--port", str(args.port), "--demo"]
        if not shared:
            central_args.append("--no-shared-subscription")
        sup.start("central", _imd(*central_args), env={"IMD_MQTT_URL": central_url}, timeout=90)
        _wait_http(f"http://{args.host}:{args.port}/api/health", timeout=90)
        sup.run_once(
            "edge-config",
            _imd(
                "edge", "config-from-site", str(site_file),
                "--port", str(pty_link),
                "--collector", DEMO_COLLECTOR,
                "--interval", str(args.interval),
                "-o", str(collector_toml),
            ),
            env={"IMD_MQTT_URL": collector_url},
        )
        collector_toml.chmod(0o600)
        sup.start("edge", _imd("edge", "run", "--config", str(collector_toml)), timeout=30)
        print(
            f"\n  IMD demo is running.\n"
            f"  Dashboard: {dashboard}\n"
            f"  Login:     demo / demo  (demo mode only)\n"
            f"  API docs:  {dashboard}docs\n"
            f"  Data:      {data_dir}\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        started = time.monotonic()
        while not stop_requested:
            dead = sup.first_dead()
            if dead:
                print(f"demo: {dead} exited unexpectedly; stopping", file=sys.stderr, flush=True)
                return 1
            if args.run_for is not None and time.monotonic() - started > args.run_for:
                break
            time.sleep(0.2)
        return 0
    except SupervisorError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("demo: stopping ...", flush=True)
        sup.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("demo: stopped", flush=True)
