"""``imd sim ...``: the hardware simulator."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _building_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apartments", type=int, default=12, help="apartments in the property (default 12)")
    parser.add_argument("--buildings", type=int, default=1, help="buildings the apartments spread over")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same property and readings")
    parser.add_argument("--room-sensors", action="store_true", help="add an Elvaco CMa10 per apartment")
    parser.add_argument("--no-main-meter", action="store_true", help="leave out the building main heat meter")
    # radio meters (hwsim/radio.py)
    parser.add_argument("--radio", choices=("imst", "amber"), default=None,
                        help="water meters are radio meters heard by a virtual iM871A or AMB8465 stick")
    parser.add_argument("--radio-stick", default="radio0", help="the stick name in the export")
    parser.add_argument("--neighbours", type=int, default=0, help="radio meters next door that are not ours")
    parser.add_argument("--radio-interval", type=float, default=None,
                        help="seconds between a radio meter's telegrams (default: the model's, 16-32 s)")
    parser.add_argument("--radio-corrupt", type=float, default=0.01, help="share of corrupted telegrams")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sim",
        help="simulated meters, M-Bus segment and radio stick",
        description="Simulated hardware: a property's meters on a virtual wired M-Bus, faults, fleets.",
    )
    ssub = parser.add_subparsers(dest="sim_command", required=True, metavar="ACTION")

    building = ssub.add_parser(
        "building",
        help="start a simulated building on a pseudo-terminal",
        description=(
            "Start a simulated property on a virtual M-Bus segment (a pseudo-terminal that a collector "
            "opens with pyserial). Prints the meter list and then 'pty: /dev/pts/N' once ready; runs "
            "until SIGINT/SIGTERM. The segment works in bytes: parity is accepted and ignored."
        ),
    )
    _building_options(building)
    building.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    building.add_argument("--start", help="simulated start time, ISO 8601 (default: now)")
    building.add_argument("--export", type=Path, help="write the site export JSON here")
    building.add_argument("--link", type=Path, help="create a symlink to the pty here (a stable path)")
    building.add_argument("--baud", type=int, default=2400, help="line speed for timed mode (default 2400)")
    building.add_argument("--timed", action="store_true", help="hold the real line speed and answer delays")
    building.add_argument("--echo", action="store_true", help="echo requests like cheap level converters")
    building.add_argument("--scenario", type=Path, help="fault scenario file (TOML or JSON)")
    building.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="METER,KIND[,START[,END]]",
        help="inject a fault; METER is an id, address:N or apartment:OBJ/medium; "
        "START/END are ISO times or +6h relative to the start (repeatable)",
    )
    building.add_argument("--truth", type=Path, help="append the fault truth log (JSON lines) here")
    building.add_argument("--control", type=Path, help="Unix socket for 'imd sim inject' while running")
    building.add_argument("--radio-link", type=Path, help="create a symlink to the radio stick's pty here")
    building.add_argument("--run-for", type=float, default=None, help=argparse.SUPPRESS)
    building.set_defaults(func=_run_building)

    export = ssub.add_parser(
        "export",
        help="write the site export (meter list) without running",
        description="Write the site export JSON that central and provisioning import.",
    )
    _building_options(export)
    export.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(func=_run_export)

    inject = ssub.add_parser(
        "inject",
        help="inject or clear a fault in a running building",
        description="Send a fault to a running 'imd sim building --control SOCKET'.",
    )
    inject.add_argument("--control", type=Path, required=True, help="the building's control socket")
    inject.add_argument("meter", help="meter id, address:N or apartment:OBJECT/medium")
    inject.add_argument("kind", help="fault kind (see 'imd sim faults')")
    inject.add_argument("--start", default="+0s", help="ISO time or +duration from now (simulated)")
    inject.add_argument("--end", default=None, help="ISO time or +duration from now (simulated)")
    inject.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    inject.add_argument("--clear", action="store_true", help="end this fault on the meter now")
    inject.set_defaults(func=_run_inject)

    faults = ssub.add_parser("faults", help="list the fault kinds the simulator can inject")
    faults.set_defaults(func=_run_faults)

    fleet = ssub.add_parser(
        "fleet",
        help="publish many properties' readings straight to MQTT (load test)",
        description="Generate N properties x M apartments and publish FrameBatch messages to MQTT as "
        "many collectors would, at a chosen rate. Same seed, same fleet.",
    )
    fleet.add_argument("--properties", type=int, default=10)
    fleet.add_argument("--apartments", type=int, default=12)
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument("--mqtt-url", default=None, help="default: $IMD_MQTT_URL or mqtt://127.0.0.1:1883")
    fleet.add_argument("--rate", type=float, default=50.0, help="frames per second in total (0 = flat out)")
    fleet.add_argument("--rounds", type=int, default=1, help="readouts per meter (0 = until stopped)")
    fleet.add_argument("--interval", type=float, default=3600.0, help="simulated seconds between readouts")
    fleet.add_argument("--start", help="simulated time of the first readout, ISO 8601 (default: now)")
    fleet.add_argument("--batch", type=int, default=50, help="frames per MQTT message")
    fleet.add_argument("--export-dir", type=Path, help="write each property's site export here")
    fleet.set_defaults(func=_run_fleet)


def _build(args: argparse.Namespace) -> Any:
    from hwsim.building import build_building

    return build_building(
        seed=args.seed,
        apartments=args.apartments,
        buildings=args.buildings,
        room_sensors=args.room_sensors,
        main_meter=not args.no_main_meter,
        radio=args.radio,
        radio_stick=args.radio_stick,
        neighbours=args.neighbours,
        radio_interval_s=args.radio_interval,
    )


def _run_export(args: argparse.Namespace) -> int:
    sim = _build(args)
    text = sim.site.model_dump_json(indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
        print(
            f"wrote {len(sim.site.meters)} meters in {len(sim.site.apartments)} apartments to {args.output}"
        )
    else:
        print(text)
    return 0


def _run_building(args: argparse.Namespace) -> int:
    from hwsim.runner import run_building

    return run_building(args, _build(args))


def _run_inject(args: argparse.Namespace) -> int:
    from hwsim.runner import send_control

    params: dict[str, Any] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = value
    answer = send_control(
        args.control,
        {
            "meter": args.meter,
            "kind": args.kind,
            "start": args.start,
            "end": args.end,
            "params": params,
            "clear": args.clear,
        },
    )
    print(answer.get("message", answer))
    return 0 if answer.get("ok") else 1


def _run_faults(args: argparse.Namespace) -> int:
    from hwsim.faults import FAULT_KINDS

    for kind, text in FAULT_KINDS.items():
        print(f"{kind:22} {text}")
    return 0


def _run_fleet(args: argparse.Namespace) -> int:
    from hwsim.fleet import run_fleet_cli

    return int(run_fleet_cli(args))
