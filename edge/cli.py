"""``imd edge ...``: the collector daemon and its tools."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "edge",
        help="collector: poll meters and publish frames",
        description="The collector: poll wired M-Bus meters on schedule and publish frames over MQTT.",
    )
    esub = parser.add_subparsers(dest="edge_command", required=True, metavar="ACTION")

    run = esub.add_parser("run", help="run the collector daemon", description="Run the collector daemon.")
    run.add_argument("--config", "-c", required=True, type=Path, help="collector TOML file")
    run.add_argument("--once", action="store_true", help="poll every bus once, publish, and exit")
    run.set_defaults(func=_run)

    check = esub.add_parser(
        "check-config",
        help="validate a collector configuration file",
        description="Validate a collector TOML file: exit 0 when usable, 2 naming the field otherwise.",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check_config)

    gen = esub.add_parser(
        "config-from-site",
        help="write a collector configuration for a site export",
        description="Write a collector TOML file for the wired meters of a site export (protocols.site).",
    )
    gen.add_argument("site", type=Path, help="site export JSON")
    gen.add_argument("--port", default=None, help="serial port of the wired bus (needed for wired meters)")
    gen.add_argument("--collector", required=True, help="collector id")
    gen.add_argument(
        "--mqtt-url",
        default=None,
        help="mqtt://user:pass@host:port or mqtts://... (default: $IMD_MQTT_URL, which keeps it out of ps)",
    )
    gen.add_argument("--bus", default=None, help="only meters on this bus (default: every wired meter)")
    gen.add_argument("--baud", type=int, default=2400)
    gen.add_argument("--interval", type=int, default=None, help="demo mode: poll every N seconds")
    gen.add_argument("--heartbeat", type=int, default=300, help="heartbeat interval in seconds")
    gen.add_argument("--data-dir", default=None, help="default: a 'data' directory next to the output file")
    gen.add_argument("-o", "--output", type=Path, default=None, help="output file (default: stdout)")
    # radio (wM-Bus) meters: one [[radios]] section per stick named in the export's `bus` field
    gen.add_argument(
        "--radio-port",
        action="append",
        default=[],
        metavar="[STICK=]PORT",
        help="serial port of a receiver stick (repeatable; default /dev/imd-<stick>, the udev name)",
    )
    gen.add_argument("--radio-type", choices=("imst", "amber", "cul", "rtl"), default="imst")
    gen.add_argument("--link-mode", choices=("T1", "C1", "S1", "C1T1"), default="C1T1")
    gen.add_argument("--forward-interval", type=int, default=900,
                     help="seconds between forwarded telegrams per radio meter (default 900)")
    gen.add_argument("--keys-file", type=Path, default=None,
                     help="meter keys file to write, mode 0600 (default: <collector>-meter-keys.txt next to"
                          " the output file)")
    gen.set_defaults(func=_config_from_site)

    read = esub.add_parser(
        "read",
        help="read one meter now and print the frames",
        description="Read one meter by primary (0-250) or secondary (16 hex) address over a serial port.",
    )
    read.add_argument("--port", required=True)
    read.add_argument("--baud", type=int, default=2400)
    read.add_argument("address", help="primary address or 16-hex secondary address")
    read.set_defaults(func=_read)

    scan = esub.add_parser(
        "scan", help="scan a bus for meters", description="Primary scan 0-250 or secondary-address search."
    )
    scan.add_argument("--port", required=True)
    scan.add_argument("--baud", type=int, default=2400)
    scan.add_argument("--secondary", action="store_true", help="secondary-address search instead of primary")
    scan.set_defaults(func=_scan)


def _check_config(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    keys_note = ""
    if config.meter_keys_file is not None:
        from edge.radio import KeysFileError, load_meter_keys

        try:
            keys = load_meter_keys(config.meter_keys_file)
        except KeysFileError as exc:  # names the file and the entry, never a key
            print(f"{args.file}: meter_keys_file: {exc}", file=sys.stderr)
            return 2
        radio_meters = {m for r in config.radios for m in r.meters}
        keys_note = f", {len(keys)} meter key(s) ({len(radio_meters & keys.keys())} for our radio meters)"
    meters = sum(len(b.meters) for b in config.buses)
    print(
        f"{args.file}: ok - collector {config.collector_id}, broker {config.mqtt.broker().redacted()},"
        f" {len(config.buses)} bus(es) with {meters} meter(s), {len(config.radios)} radio stick(s)"
        f"{keys_note}"
    )
    return 0


def _radio_ports(values: list[str], sticks: list[str]) -> dict[str, str]:
    """``--radio-port`` values as stick -> port; a bare PORT is for the only stick."""
    ports: dict[str, str] = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or name.startswith("/"):
            if len(sticks) != 1:
                choices = ", ".join(sticks) or "(no radio meters in the export)"
                raise ValueError(f"--radio-port {value}: say which stick (STICK=PORT), one of {choices}")
            name, port = sticks[0], value
        if name not in sticks:
            raise ValueError(f"--radio-port {value}: no radio meters on stick {name!r} in the site export")
        ports[name] = port
    return {s: ports.get(s, f"/dev/imd-{s}") for s in sticks}


def _config_from_site(args: argparse.Namespace) -> int:
    from edge.config import (
        ConfigError,
        MeterConfig,
        RadioConfig,
        parse_config,
        render_config,
        write_meter_keys,
    )
    from protocols.errors import MessageError
    from protocols.site import parse_site

    mqtt_url = args.mqtt_url or os.environ.get("IMD_MQTT_URL")
    if not mqtt_url:
        print("config-from-site: give --mqtt-url or set IMD_MQTT_URL", file=sys.stderr)
        return 2
    try:
        site = parse_site(args.site.read_bytes())
    except (OSError, MessageError) as exc:
        print(f"{args.site}: {exc}", file=sys.stderr)
        return 2
    meters = []
    radio_meters: dict[str, list[str]] = {}  # stick -> meter ids
    keys: dict[str, str] = {}
    for meter in site.meters:
        if meter.link == "wmbus":
            radio_meters.setdefault(meter.bus, []).append(meter.id)
            if meter.key is not None:
                keys[meter.id] = meter.key
            continue
        if args.bus is not None and meter.bus != args.bus:
            continue
        label = f"{meter.medium.value} {meter.apartment or 'main'}"
        if meter.primary_address is not None:
            meters.append(MeterConfig(primary=meter.primary_address, name=label))
        else:
            meters.append(MeterConfig(secondary=meter.secondary_address, name=label))
    if meters and args.port is None:
        print(f"config-from-site: {len(meters)} wired meter(s): give --port (the bus's serial port)",
              file=sys.stderr)
        return 2
    try:
        ports = _radio_ports(args.radio_port, sorted(radio_meters))
        radios = [
            RadioConfig(name=stick, port=ports[stick], type=args.radio_type, link_mode=args.link_mode,
                        forward_interval_s=args.forward_interval, meters=ids)
            for stick, ids in sorted(radio_meters.items())
        ]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"config-from-site: {exc}", file=sys.stderr)
        return 2
    keys_file: Path | None = None
    if keys:
        if args.keys_file is not None:
            keys_file = args.keys_file.resolve()
        elif args.output is not None:
            keys_file = args.output.resolve().parent / f"{args.collector}-meter-keys.txt"
        else:
            print("config-from-site: the site export carries meter keys: give --keys-file (keys are never"
                  " printed)", file=sys.stderr)
            return 2
    if args.data_dir is not None:
        data_dir = args.data_dir
    elif args.output is not None:
        data_dir = str(args.output.resolve().parent / f"{args.collector}-data")
    else:
        data_dir = "/var/lib/imd-edge"
    text = render_config(
        collector_id=args.collector,
        mqtt_url=mqtt_url,
        buses=[(args.bus or "mbus0", args.port, args.baud, meters)] if meters else [],
        data_dir=data_dir,
        interval_s=args.interval,
        heartbeat_s=args.heartbeat,
        radios=radios,
        meter_keys_file=str(keys_file) if keys_file is not None else None,
    )
    import tomllib

    try:
        parse_config(tomllib.loads(text), args.output or "<generated>")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.chmod(0o600)  # it holds the broker password
    if keys_file is not None:
        write_meter_keys(keys_file, keys)
        print(f"wrote {len(keys)} meter key(s) to {keys_file} (mode 0600)", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from edge.daemon import run_daemon

    return run_daemon(config, config_path=args.config, once=args.once)


def _read(args: argparse.Namespace) -> int:
    from edge.bus import SerialBus

    with SerialBus(args.port, args.baud) as bus:
        result = bus.read_meter(args.address)
    for frame in result.frames:
        print(f"{frame.status}: {frame.raw.hex()}" + (f"  ({frame.reason})" if frame.reason else ""))
    return 0 if result.ok else 1


def _scan(args: argparse.Namespace) -> int:
    from edge.bus import SerialBus

    with SerialBus(args.port, args.baud) as bus:
        found = bus.secondary_search() if args.secondary else [str(a) for a in bus.primary_scan()]
    for address in found:
        print(address)
    print(f"{len(found)} meter(s) found", file=sys.stderr)
    return 0
