"""Running a simulated building as a process: ptys, symlink, export, faults, control socket, signals."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from hwsim.building import SimBuilding
from hwsim.clock import SimClock
from hwsim.faults import FAULT_KINDS, find_meter, parse_time
from hwsim.radio import RadioAir, RadioStick
from hwsim.segment import MbusSegment


def _say(text: str) -> None:
    print(text, flush=True)


def write_export(sim: SimBuilding, path: Path) -> None:
    """Atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(sim.site.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def make_link(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise SystemExit(f"--link {link} exists and is not a symlink; not replacing it")
        link.unlink()  # left over from a run that was killed
    link.symlink_to(target)


def remove_link(target: str, link: Path) -> None:
    with contextlib.suppress(OSError):
        if link.is_symlink() and os.readlink(link) == target:
            link.unlink()


def _parse_fault_option(text: str) -> tuple[str, str, str, str | None]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2 or len(parts) > 4:
        raise SystemExit(f"--fault {text!r}: expected METER,KIND[,START[,END]]")
    start = parts[2] if len(parts) > 2 and parts[2] else "+0s"
    end = parts[3] if len(parts) > 3 and parts[3] else None
    return parts[0], parts[1], start, end


def apply_control(sim: SimBuilding, clock: SimClock, request: dict[str, Any]) -> dict[str, Any]:
    """One ``imd sim inject`` request against the running building."""
    try:
        meter = find_meter(sim.meters, request["meter"])
        kind = str(request["kind"])
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        now = clock.now()
        if request.get("clear"):
            ended = sim.faults.clear(meter, kind, now)
            return {"ok": True, "message": f"ended {len(ended)} {kind} fault(s) on {meter.ident:08d}"}
        start = parse_time(request.get("start") or "+0s", now)
        end = parse_time(request["end"], now) if request.get("end") else None
        params = {k: _number(v) for k, v in dict(request.get("params") or {}).items()}
        sim.faults.inject(meter, kind, start, end, **params)
        return {"ok": True, "message": f"{kind} on {meter.ident:08d} from {start.isoformat()}"}
    except (KeyError, ValueError, TypeError) as exc:
        return {"ok": False, "message": f"rejected: {exc}"}


def _number(value: Any) -> Any:
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


class ControlServer:
    """A Unix socket taking one JSON request per connection and answering one JSON line."""

    def __init__(self, path: Path, sim: SimBuilding, clock: SimClock) -> None:
        self.path = path
        self.sim = sim
        self.clock = clock
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock.bind(str(path))
        self._sock.listen(4)
        self._sock.settimeout(0.3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                try:
                    answer = apply_control(self.sim, self.clock, json.loads(data or b"{}"))
                except json.JSONDecodeError as exc:
                    answer = {"ok": False, "message": f"bad request: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def send_control(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    result: dict[str, Any] = json.loads(data)
    return result


def run_building(args: argparse.Namespace, sim: SimBuilding) -> int:
    start = parse_time(args.start, datetime.now().astimezone()) if args.start else None
    clock = SimClock(start, args.speed)
    if args.truth:
        args.truth.parent.mkdir(parents=True, exist_ok=True)
        sim.faults.set_truth_log(args.truth)
    now = clock.now()
    if args.scenario:
        sim.faults.load_scenario(args.scenario, sim.meters, now)
    for option in args.fault:
        meter_ref, kind, fault_start, fault_end = _parse_fault_option(option)
        answer = apply_control(
            sim, clock, {"meter": meter_ref, "kind": kind, "start": fault_start, "end": fault_end}
        )
        if not answer["ok"]:
            raise SystemExit(f"--fault {option!r}: {answer['message']}")

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    segments: list[tuple[str, MbusSegment]] = []
    links: list[tuple[str, Path]] = []
    control: ControlServer | None = None
    radio: tuple[RadioStick, RadioAir] | None = None  # the virtual radio stick (hwsim/radio.py)
    try:
        if sim.stick_type is not None and sim.radio_stick is not None:
            stick = RadioStick(sim.radio_stick, stick=sim.stick_type, seed=sim.seed,
                               corrupt_rate=getattr(args, "radio_corrupt", 0.0)).start()
            air = RadioAir(sim.radio + sim.neighbours, clock=clock, seed=sim.seed)
            air.attach(stick)
            radio = (stick, air.start())
            if getattr(args, "radio_link", None):
                make_link(stick.port, args.radio_link)
                links.append((stick.port, args.radio_link))
        for bus, meters in sim.buses().items():
            segment = MbusSegment(meters, baud=args.baud, echo=args.echo, timed=args.timed, clock=clock)
            segment.start()
            segments.append((bus, segment))
        if args.export:
            write_export(sim, args.export)
        if args.link:
            for i, (_bus, segment) in enumerate(segments):
                link = args.link if i == 0 else args.link.with_name(f"{args.link.name}.{i}")
                make_link(segment.port, link)
                links.append((segment.port, link))
        if args.control:
            control = ControlServer(args.control, sim, clock)
        prop = sim.site.property
        _say(
            f"property {prop.id} '{prop.name}', {prop.address}, {prop.city}: "
            f"{len(sim.site.apartments)} apartments, {len(sim.meters)} meters, seed {sim.seed}"
        )
        _say(
            f"simulated time {now.isoformat(timespec='seconds')} at {clock.speed:g}x"
            f"{', timed ' + str(args.baud) + ' baud' if args.timed else ''}{', echo' if args.echo else ''}"
        )
        for line in sim.describe():
            _say("  " + line)
        if args.export:
            _say(f"export: {args.export}")
        if args.control:
            _say(f"control: {args.control}")
        for i, (bus, segment) in enumerate(segments):
            if i:
                _say(f"pty {bus}: {segment.port}")
        if radio is not None:
            _say(f"radio pty {radio[0].name} ({radio[0].stick}, {len(sim.radio)} meters ours, "
                 f"{len(sim.neighbours)} neighbours): {radio[0].port}")
        for bus, segment in segments[:1]:
            _say(
                f"pty: {segment.port}" + (f" (link {args.link}, bus {bus})" if args.link else f" (bus {bus})")
            )
        stop.wait(args.run_for)
    finally:
        if control is not None:
            control.close()
        for target, link in links:
            remove_link(target, link)
        for _bus, segment in segments:
            segment.stop()
        if radio is not None:
            radio[1].stop()
            radio[0].stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
    stats = [segment.stats for _b, segment in segments]
    _say(
        f"stopped: {sum(s.requests for s in stats)} requests, {sum(s.answers for s in stats)} answers, "
        f"{sum(s.collisions for s in stats)} collisions"
    )
    return 0
