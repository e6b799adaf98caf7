"""``imd provision ...``: the technician's tools on site.

survey -> map -> bundle -> register -> commission (-> report). Each step reads the previous step's
file, so a step can be repeated without redoing the others. Passwords come from the environment or
a prompt, never from the command line; keys and the MQTT password are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from provisioning.survey import FoundMeter, Progress


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "provision",
        help="technician tools: survey, mapping, bundle, commissioning",
        description="Provision a collector on site: survey -> map -> bundle -> register -> commission.",
    )
    psub = parser.add_subparsers(dest="provision_command", required=True, metavar="ACTION")

    survey = psub.add_parser(
        "survey",
        help="scan the wired bus and listen on the radio; list the meters found",
        description="Wired: primary scan and/or secondary search. Radio: listen for --listen seconds. "
        "Prints a live table; classifies meters against the site export (ours/unknown/neighbour).",
    )
    survey.add_argument("--site", type=Path, help="site export JSON: the property's expected meters")
    survey.add_argument(
        "--bus",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="a wired bus to scan, e.g. mbus0=/dev/imd-mbus0 (repeatable)",
    )
    survey.add_argument("--baud", type=int, default=2400)
    survey.add_argument(
        "--margin-ms",
        type=float,
        default=15.0,
        help="extra wait for an answer beyond EN 13757-2 timing (slow USB adapters, busy hosts)",
    )
    survey.add_argument(
        "--mode",
        choices=("secondary", "primary", "both"),
        default="secondary",
        help="wired scan: secondary search (fast), primary scan 0-250, or both",
    )
    survey.add_argument("--addresses", default="0-250", help="primary scan range, e.g. 1-60 (default 0-250)")
    survey.add_argument(
        "--radio",
        action="append",
        default=[],
        metavar="NAME=PORT[:TYPE[:MODE]]",
        help="a receiver stick, e.g. radio0=/dev/imd-radio0:imst:C1T1 (repeatable)",
    )
    survey.add_argument("--listen", type=float, default=60.0, help="seconds to listen on the radio")
    _key_options(survey)
    survey.add_argument("--json", type=Path, help="write the survey as JSON ('-' for stdout)")
    survey.add_argument("--csv", type=Path, help="write the survey as CSV ('-' for stdout)")
    survey.add_argument("--quiet", action="store_true", help="no live table")
    survey.set_defaults(func=_survey)

    mapping = psub.add_parser(
        "map",
        help="assign meters to apartments; import and check keys",
        description="Build the mapping from the site export, the survey and an assignment CSV or the "
        "terminal; flag found-but-not-expected and expected-but-not-found; check each key.",
    )
    mapping.add_argument("--site", type=Path, required=True)
    mapping.add_argument("--survey", type=Path, help="survey JSON (from `survey --json`)")
    mapping.add_argument("--assign", type=Path, help="CSV: object number or lägenhetsnummer + meter id")
    mapping.add_argument("--interactive", action="store_true", help="ask for unassigned found meters")
    mapping.add_argument("--all", action="store_true", help="with --interactive: confirm every found meter")
    _key_options(mapping)
    mapping.add_argument("-o", "--output", type=Path, required=True, help="mapping JSON to write")
    mapping.add_argument("--keys-out", type=Path, help="write the mapped meters' keys here (mode 0600)")
    mapping.set_defaults(func=_map)

    bundle = psub.add_parser(
        "bundle",
        help="write the collector bundle (config, credentials, ACL, unit, installer, keys)",
        description="One tar.gz with a .sha256 file. The MQTT password is generated and never printed.",
    )
    bundle.add_argument("--mapping", type=Path, required=True)
    bundle.add_argument("--keys", type=Path, help="keys file (from `map --keys-out`)")
    bundle.add_argument("--collector", required=True, help="collector id")
    bundle.add_argument(
        "--mqtt-url", required=True, help="broker URL without credentials, e.g. mqtts://host:8883"
    )
    bundle.add_argument("--bus", action="append", default=[], metavar="NAME=PORT", help="serial port per bus")
    bundle.add_argument("--radio", action="append", default=[], metavar="NAME=PORT[:TYPE[:MODE]]")
    bundle.add_argument("--data-dir", default="/var/lib/imd-edge")
    bundle.add_argument("--interval", type=int, default=None, help="demo/commissioning: poll every N s")
    bundle.add_argument("--ca-file", type=Path, help="broker CA certificate to ship (ca.pem)")
    bundle.add_argument("--with-source", type=Path, help="include this release source tree (src/)")
    bundle.add_argument("-o", "--output", type=Path, required=True, help="directory for the archive")
    bundle.set_defaults(func=_bundle)

    reg = psub.add_parser(
        "register",
        help="register the collector and its mapping with central (one transaction)",
        description="POST the mapping to central. Password: $IMD_PASSWORD or a prompt.",
    )
    _central_options(reg)
    reg.add_argument("--mapping", type=Path, required=True)
    reg.add_argument("--keys", type=Path)
    reg.add_argument("--collector", required=True)
    reg.add_argument("--bundle", type=Path, help="the bundle archive (sends the broker hash and ACL)")
    reg.add_argument("--site", type=Path, help="site export: for the import-site fallback")
    reg.add_argument(
        "--fallback-site",
        type=Path,
        help="where to write the mapped site export when central has no registration endpoint",
    )
    reg.set_defaults(func=_register)

    com = psub.add_parser(
        "commission",
        help="read now through central and wait for every mapped meter",
        description="Triggers read_all, waits until every mapped meter has a decoded reading at central, "
        "lists what is missing with the likely cause; optional installation report.",
    )
    _central_options(com)
    com.add_argument("--mapping", type=Path, required=True)
    com.add_argument("--collector", required=True)
    com.add_argument("--timeout", type=float, default=300.0)
    com.add_argument("--no-trigger", action="store_true", help="do not send read_all")
    com.add_argument("--json", type=Path, help="write the result as JSON")
    com.add_argument("--technician", default=os.environ.get("USER", "technician"))
    com.add_argument("--report-html", type=Path)
    com.add_argument("--report-pdf", type=Path)
    com.set_defaults(func=_commission)

    rep = psub.add_parser("report", help="installation report (HTML/PDF) from a commissioning result")
    rep.add_argument("result", type=Path, help="commission --json output")
    rep.add_argument("--technician", default=os.environ.get("USER", "technician"))
    rep.add_argument("--html", type=Path)
    rep.add_argument("--pdf", type=Path)
    rep.set_defaults(func=_report)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys",
        type=Path,
        action="append",
        default=[],
        help="meter keys: CSV, ID=KEY lines, JSON, or a Kamstrup KEM/KEM2 file (repeatable)",
    )
    parser.add_argument(
        "--kem-password-env",
        default="IMD_KEM_PASSWORD",
        help="environment variable holding the KEM file password (default IMD_KEM_PASSWORD)",
    )


def _central_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--central",
        default=os.environ.get("IMD_CENTRAL_URL", "http://127.0.0.1:8000"),
        help="central's base URL (default $IMD_CENTRAL_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--user", default=os.environ.get("IMD_USER"), help="technician login ($IMD_USER)")


# -- helpers ----------------------------------------------------------------------------------------


def _err(text: str) -> None:
    print(f"imd provision: {text}", file=sys.stderr)


class LiveTable(Progress):
    def __init__(self, out: TextIO, err: TextIO, classify: Any = None) -> None:
        from provisioning.survey import TABLE_HEADER

        self.out, self.err = out, err
        self.classify = classify
        self.tty = err.isatty()
        print(TABLE_HEADER, file=out, flush=True)

    def row(self, meter: FoundMeter) -> None:
        from provisioning.survey import table_row

        if self.classify is not None:
            self.classify(meter)
        if self.tty:
            self.err.write("\r\033[K")
        print(table_row(meter), file=self.out, flush=True)

    def step(self, text: str, done: int, total: int) -> None:
        if not self.tty:
            return
        width = 24
        filled = int(width * done / total) if total else width
        self.err.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}")
        self.err.flush()


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"imd provision: {what} {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _radio_ports(items: list[str]) -> dict[str, Any]:
    from provisioning.bundle import RadioPort

    out = {}
    for name, spec in _pairs(items, "--radio").items():
        parts = spec.split(":")
        out[name] = RadioPort(parts[0], *(p for p in parts[1:3] if p))
    return out


def _load_keys(paths: list[Path], password_env: str) -> dict[str, bytes]:
    from provisioning.keys import load_keys

    keys: dict[str, bytes] = {}
    for path in paths:
        keys.update(load_keys(path, os.environ.get(password_env)))
    return keys


def _load_site(path: Path | None) -> Any:
    if path is None:
        return None
    from protocols.site import parse_site

    return parse_site(path.read_bytes())


def _write(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _range(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


# -- actions ------------------------------------------------------------------------------------------


def _survey(args: argparse.Namespace) -> int:
    from edge.bus import BusError, SerialBus
    from edge.config import RadioConfig
    from provisioning.survey import Expected, RadioSurvey, SurveyResult, finish, listen, now_iso, survey_wired

    if not args.bus and not args.radio:
        _err("survey: give at least one --bus NAME=PORT or --radio NAME=PORT")
        return 2
    try:
        site = _load_site(args.site)
        keys = _load_keys(args.keys, args.kem_password_env)
    except (OSError, ValueError) as exc:
        _err(str(exc))
        return 2
    if site is not None:
        keys = {m.id.upper(): bytes.fromhex(m.key) for m in site.meters if m.key} | keys
    expected = Expected(site)
    quiet_out = open(os.devnull, "w") if args.quiet or str(args.json) == "-" or str(args.csv) == "-" else None  # noqa: SIM115
    try:
        table = LiveTable(quiet_out or sys.stdout, sys.stderr, classify=expected.classify)
        result = SurveyResult(property=site.property.id if site else None, started_at=now_iso())
        links = []
        for name, port in _pairs(args.bus, "--bus").items():
            links.append("mbus")
            try:
                with SerialBus(port, args.baud, margin_s=args.margin_ms / 1000) as bus:
                    result.meters += survey_wired(bus, name, mode=args.mode, addresses=_range(args.addresses),
                                                  progress=table)  # fmt: skip
            except BusError as exc:
                result.notes.append(f"bus {name}: {exc}")
                _err(f"bus {name}: {exc}")
        if args.radio:
            links.append("wmbus")
            radios = []
            for name, spec in _pairs(args.radio, "--radio").items():
                port, _, rest = spec.partition(":")
                kind, _, mode = rest.partition(":")
                radios.append(
                    RadioConfig.model_validate(
                        {"name": name, "port": port, "type": kind or "imst", "link_mode": mode or "C1T1"}
                    )
                )
            radio = RadioSurvey(keys)
            result.notes += listen(radios, args.listen, radio, progress=table)
            result.meters += list(radio.meters.values())
            result.notes.append(f"radio: {radio.telegrams} telegrams in {args.listen:g} s, "
                                f"{radio.unparsable} unparsable")  # fmt: skip
        if table.tty:
            sys.stderr.write("\r\033[K")
    finally:
        if quiet_out is not None:
            quiet_out.close()
    finish(result, expected, links)
    counts = result.counts()
    print(f"{counts['found']} meters: {counts['ours']} ours, {counts['unknown']} unknown, "
          f"{counts['neighbour']} neighbours; {counts['expected_not_found']} expected but not found",
          file=sys.stderr)  # fmt: skip
    for item in result.expected_not_found:
        print(f"  expected, not found: {item['id']} {item['manufacturer']} {item['medium']} "
              f"apt {item['apartment'] or 'main'} ({item['link']} {item['bus']})",
              file=sys.stderr)  # fmt: skip
    if args.json:
        _write(args.json, result.to_json())
    if args.csv:
        _write(args.csv, result.to_csv())
    return 0


def _map(args: argparse.Namespace) -> int:
    from provisioning.keys import render_keys_file, write_secret
    from provisioning.mapping import (
        MappingError,
        build_mapping,
        interactive_assign,
        load_assignments,
        mapping_keys,
    )
    from provisioning.survey import SurveyResult

    try:
        site = _load_site(args.site)
        survey = SurveyResult.from_json(args.survey.read_text()) if args.survey else None
        keys = _load_keys(args.keys, args.kem_password_env)
        assignments = (
            load_assignments(args.assign.read_text(encoding="utf-8"), site, str(args.assign))
            if args.assign
            else []
        )
    except (OSError, ValueError) as exc:
        _err(str(exc))
        return 2
    if args.interactive:
        if survey is None:
            _err("map --interactive needs --survey")
            return 2
        assignments = interactive_assign(site, survey, assignments, everything=args.all)
    try:
        all_keys = mapping_keys_all = {
            m.id.upper(): bytes.fromhex(m.key) for m in site.meters if m.key
        } | keys
        mapping = build_mapping(site, survey, assignments=assignments, keys=all_keys)
    except MappingError as exc:
        _err(str(exc))
        return 2
    _write(args.output, mapping.to_json())
    if args.keys_out:
        write_secret(args.keys_out, render_keys_file(mapping_keys(mapping, site, mapping_keys_all)))
    counts = mapping.counts()
    print(f"{counts['mapped']} meters mapped ({counts['found']} found in the survey) -> {args.output}")
    for item in mapping.found_not_expected:
        print(f"  found, not expected: {item['id']} {item['manufacturer']} {item['medium']} ({item['link']} "
              f"{item['bus']} {item.get('address') or ''}) - {item['decision']}")  # fmt: skip
    for item in mapping.expected_not_found:
        print(f"  expected, not found: {item['id']} {item['manufacturer']} {item['medium']} "
              f"apt {item['apartment'] or 'main'} "
              f"({item['link']} {item['bus']} {item['address']})")  # fmt: skip
    for m in mapping.meters:
        if m.key in ("wrong", "missing"):
            print(f"  key {m.key}: meter {m.id} {m.manufacturer} apt {m.apartment or 'main'}")
    for problem in mapping.problems:
        print(f"  {problem}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from provisioning.bundle import BundleError, BundleOptions, build_bundle
    from provisioning.keys import load_keys
    from provisioning.mapping import MeterMapping

    try:
        mapping = MeterMapping.from_json(args.mapping.read_text())
        keys = load_keys(args.keys) if args.keys else {}
        options = BundleOptions(
            collector_id=args.collector, mqtt_url=args.mqtt_url, ports=_pairs(args.bus, "--bus"),
            radios=_radio_ports(args.radio), data_dir=args.data_dir, interval_s=args.interval,
            ca_file=args.ca_file, with_source=args.with_source,
        )  # fmt: skip
        bundle = build_bundle(mapping, keys, options, args.output)
    except (OSError, ValueError, BundleError) as exc:
        _err(str(exc))
        return 2
    print(f"bundle: {bundle.archive} ({len(bundle.files)} files, MQTT user {bundle.username})")
    print(f"sha256: {bundle.sha256}  ({bundle.checksum_file})")
    return 0


def _client(args: argparse.Namespace) -> Any:
    from provisioning.central_client import CentralClient

    if not args.user:
        raise SystemExit("imd provision: give --user or set IMD_USER")
    password = os.environ.get("IMD_PASSWORD") or getpass.getpass(
        f"Password for {args.user} at {args.central}: "
    )
    client = CentralClient(args.central)
    client.login(args.user, password)
    return client


def _register(args: argparse.Namespace) -> int:
    import tarfile

    from provisioning.broker import collector_username
    from provisioning.central_client import CentralError, RegistrationUnsupportedError
    from provisioning.keys import load_keys
    from provisioning.mapping import MeterMapping, mapped_site, registration_body

    mapping = MeterMapping.from_json(args.mapping.read_text())
    keys = load_keys(args.keys) if args.keys else {}
    broker: dict[str, str] = {"username": collector_username(args.collector)}
    if args.bundle:
        with tarfile.open(args.bundle, "r:gz") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                if member.name.endswith("broker/mosquitto-passwd"):
                    broker["password_hash"] = handle.read().decode().strip().split(":", 1)[1]
                elif member.name.endswith("broker/mosquitto-acl.conf"):
                    broker["acl"] = handle.read().decode()
    body = registration_body(mapping, args.collector, keys, broker=broker)
    try:
        with _client(args) as client:
            answer = client.register(body)
    except RegistrationUnsupportedError as exc:
        _err(str(exc))
        if args.site is None or args.fallback_site is None:
            _err(
                "give --site and --fallback-site to write the mapped site export "
                "for `imd central import-site`"
            )
            return 3
        from provisioning.keys import write_secret

        site = _load_site(args.site)
        write_secret(args.fallback_site, mapped_site(site, mapping, keys).model_dump_json(indent=2) + "\n")
        print(f"wrote {args.fallback_site} (holds keys, 0600): an admin imports it with "
              f"`imd central import-site {args.fallback_site}`")  # fmt: skip
        return 3
    except CentralError as exc:
        _err(str(exc))
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def _progress_bar(done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    end = "\n" if done == total else ""
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} meters, {elapsed:5.0f} s{end}"
    )
    sys.stderr.flush()


def _commission(args: argparse.Namespace) -> int:
    from provisioning.central_client import CentralError
    from provisioning.commission import commission
    from provisioning.mapping import MeterMapping

    mapping = MeterMapping.from_json(args.mapping.read_text())
    try:
        with _client(args) as client:
            result = commission(client, mapping, args.collector, timeout_s=args.timeout,
                                trigger=not args.no_trigger, progress=_progress_bar)  # fmt: skip
    except CentralError as exc:
        _err(str(exc))
        return 1
    sys.stderr.write("\n")
    print(result.read_now)
    delivered = sum(m.ok for m in result.meters)
    print(f"{delivered} of {len(result.meters)} meters delivered a decoded reading")
    for m in result.missing():
        print(f"  MISSING {m.id} {m.manufacturer} {m.medium:12} apt {m.apartment or 'main':12} "
              f"{m.link} {m.bus} {m.address}: {m.cause}")  # fmt: skip
    if args.json:
        _write(args.json, json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    _write_reports(result, args.technician, args.report_html, args.report_pdf)
    return 0 if result.ok else 1


def _write_reports(result: Any, technician: str, html_path: Path | None, pdf_path: Path | None) -> None:
    from provisioning.report import ReportInfo, render_html, render_pdf

    info = ReportInfo(technician=technician, date=datetime.now(UTC))
    if html_path:
        _write(html_path, render_html(result, info))
    if pdf_path:
        pdf_path.parent.mkdir(parents=True, exist_ok=True)
        pdf_path.write_bytes(render_pdf(result, info))


def _report(args: argparse.Namespace) -> int:
    from provisioning.commission import CommissionResult, MeterOutcome

    data = json.loads(args.result.read_text())
    names = MeterOutcome.__dataclass_fields__
    result = CommissionResult(
        collector=data["collector"], property=data["property"], property_name=data.get("property_name", ""),
        started_at=data.get("started_at", ""), finished_at=data.get("finished_at", ""),
        read_now=data.get("read_now", ""),
        meters=[MeterOutcome(**{k: v for k, v in m.items() if k in names}) for m in data["meters"]],
    )  # fmt: skip
    _write_reports(result, args.technician, args.html, args.pdf)
    return 0
