"""``imd sim building`` as the demo runs it: a process with a pty, a stable link, an export and a
control socket, stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import serial

from protocols.mbus.link import snd_nke
from protocols.site import parse_site


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    raise AssertionError(f"no {marker!r} line: {lines}")


def _imd(*args: str) -> list[str]:
    return [sys.executable, "-m", "imd", *args]


def test_building_process_serves_a_pty_and_stops_cleanly(tmp_path: Path):
    export = tmp_path / "site.json"
    link = tmp_path / "mbus0"
    control = tmp_path / "ctl.sock"
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        _imd(
            "sim",
            "building",
            "--apartments",
            "2",
            "--seed",
            "1",
            "--speed",
            "60",
            "--export",
            str(export),
            "--link",
            str(link),
            "--control",
            str(control),
            "--truth",
            str(truth),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(proc, "pty: ")
        pty = lines[-1].split()[1]
        assert pty.startswith("/dev/pts/")
        assert link.resolve() == Path(pty)
        site = parse_site(export.read_bytes())
        assert len(site.meters) == 9
        assert any(site.meters[0].id in line for line in lines)  # the meter list is printed
        with serial.Serial(str(link), 2400, parity=serial.PARITY_EVEN, timeout=0.5) as ser:
            ser.write(snd_nke(1))
            assert ser.read(1) == b"\xe5"
            inject = subprocess.run(
                _imd("sim", "inject", "--control", str(control), "address:1", "silent"),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert inject.returncode == 0, inject.stdout + inject.stderr
            ser.reset_input_buffer()
            ser.write(snd_nke(1))
            assert ser.read(1) == b""
            ser.write(snd_nke(2))
            assert ser.read(1) == b"\xe5"
        events = [json.loads(line) for line in truth.read_text().splitlines()]
        assert [(e["event"], e["meter"], e["fault"]) for e in events] == [
            ("fault", site.meters[0].id, "silent")
        ]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert "stopped:" in out
        assert not link.exists()
        assert not link.is_symlink()
        assert not control.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_export_without_running(tmp_path: Path):
    out = tmp_path / "site.json"
    result = subprocess.run(
        _imd("sim", "export", "--apartments", "12", "--seed", "1", "-o", str(out)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    site = parse_site(out.read_bytes())
    assert len(site.meters) == 49
    again = subprocess.run(
        _imd("sim", "export", "--apartments", "12", "--seed", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert parse_site(again.stdout) == site
