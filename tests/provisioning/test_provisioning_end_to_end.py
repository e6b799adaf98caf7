"""The technician's day on the simulator (issue 10, point 7).

A property of 60 apartments (heat and electricity meters on the wire, water meters on the radio), the
house next door's radio meters heard through the wall, one key file with a wrong key and one dead
wired meter. Survey -> mapping -> registration -> bundle -> collector started from the bundle
(``imd edge run`` on the unpacked collector.toml) against a real Mosquitto configured with the
bundle's password line and ACL -> central (``imd central serve``) -> commissioning, which must report
exactly the wrong key and the dead meter.

Registration goes through central's API (``POST /api/collectors/{id}/registration``, technician
role): the property manager's register (property, buildings, apartments; no meters) is in central
before the technician arrives, as an admin's ``imd central import-site``; the technician's
``imd provision register`` then creates the collector, the meters with their keys and the meter
points in one transaction, and a second run changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hwsim.building import build_building
from hwsim.radio import RadioAir, RadioStick
from hwsim.segment import MbusSegment

from imd.cli import main
from provisioning.broker import mosquitto_hash
from provisioning.bundle import extract_bundle

pytestmark = pytest.mark.e2e

COLLECTOR = "kv-e2e-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"port {port} not open: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_technician_day_on_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto is None:
        pytest.skip("mosquitto is not installed")
    sim = build_building(seed=11, apartments=60, radio="imst", neighbours=6, radio_interval_s=1.0)
    site = sim.site
    wired = [m for m in site.meters if m.link == "mbus"]
    radio = [m for m in site.meters if m.link == "wmbus"]
    assert len(site.apartments) == 60
    assert len(wired) == 121
    assert len(radio) == 120
    dead = next(m for m in wired if m.primary_address == 11)
    wrong = radio[7]

    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    files = contextlib.ExitStack()
    segment = MbusSegment(sim.buses()["mbus0"]).start()
    stick = RadioStick("radio0", stick="imst", seed=11).start()
    air = RadioAir(sim.radio + sim.neighbours, clock=segment.clock, seed=11)
    air.attach(stick)
    air.start()
    try:
        sim.faults.inject(sim.meter(dead.id), "silent", segment.clock.now() - timedelta(days=1))

        # What the technician brings: the meter list (no keys), the supplier's key file (one key
        # wrong) and the property manager's assignment list (object numbers and lägenhetsnummer).
        site_path = tmp_path / "site.json"
        site_path.write_text(
            site.model_copy(
                update={"meters": [m.model_copy(update={"key": None}) for m in site.meters]}
            ).model_dump_json()
        )
        keys_path = tmp_path / "supplier-keys.csv"
        keys_path.write_text(
            "Serial No;AES Key\n"
            + "".join(f"{m.id};{'00' * 16 if m.id == wrong.id else m.key}\n" for m in radio)
        )
        numbers = {a.object_number: a.number for a in site.apartments}
        assign_path = tmp_path / "assign.csv"
        rows = ["objektsnummer;lägenhetsnummer;mätarnummer"]
        for n, m in enumerate(site.meters):
            if m.apartment is None:
                rows.append(f";;{m.id}")
            elif n % 2:
                rows.append(f";{numbers[m.apartment]};{m.id}")
            else:
                rows.append(f"{m.apartment};;{m.id}")
        assign_path.write_text("\n".join(rows) + "\n", encoding="utf-8")

        # 1. survey: primary scan of the address plan's range and four seconds on the radio
        t0 = time.monotonic()
        assert (
            main(
                [
                    "provision",
                    "survey",
                    "--site",
                    str(site_path),
                    "--bus",
                    f"mbus0={segment.port}",
                    "--mode",
                    "primary",
                    "--margin-ms",
                    "100",
                    "--addresses",
                    "1-125",
                    "--radio",
                    f"radio0={stick.port}:imst:C1T1",
                    "--listen",
                    "4",
                    "--keys",
                    str(keys_path),
                    "--json",
                    str(tmp_path / "survey.json"),
                    "--csv",
                    str(tmp_path / "survey.csv"),
                    "--quiet",
                ]
            )
            == 0
        )
        survey_s = time.monotonic() - t0
        survey = json.loads((tmp_path / "survey.json").read_text())
        assert survey["counts"]["ours"] == 240  # every meter but the dead one
        assert survey["counts"]["neighbour"] == 6
        assert survey["counts"]["unknown"] == 0
        assert [e["id"] for e in survey["expected_not_found"]] == [dead.id]
        keys_by_id = {m["id"]: m["key"] for m in survey["meters"] if m["link"] == "wmbus"}
        assert keys_by_id[wrong.id] == "wrong"
        assert {k for i, k in keys_by_id.items() if i in {m.id for m in radio} and i != wrong.id} == {"ok"}
        assert {m["key"] for m in survey["meters"] if m["classification"] == "neighbour"} == {"missing"}
        assert (tmp_path / "survey.csv").read_text().count("\n") == 1 + 240 + 6

        # 2. mapping with the assignment list and the key check
        assert (
            main(
                [
                    "provision",
                    "map",
                    "--site",
                    str(site_path),
                    "--survey",
                    str(tmp_path / "survey.json"),
                    "--assign",
                    str(assign_path),
                    "--keys",
                    str(keys_path),
                    "-o",
                    str(tmp_path / "mapping.json"),
                    "--keys-out",
                    str(tmp_path / "keys.txt"),
                ]
            )
            == 0
        )
        mapping = json.loads((tmp_path / "mapping.json").read_text())
        assert mapping["counts"]["mapped"] == 241
        assert mapping["counts"]["found"] == 240
        assert [e["id"] for e in mapping["expected_not_found"]] == [dead.id]
        assert [m["id"] for m in mapping["meters"] if m["key"] == "wrong"] == [wrong.id]
        assert {m["id"]: m["apartment"] for m in mapping["meters"]} == {
            m.id: m.apartment for m in site.meters
        }

        # 3. the bundle, unpacked as on the Pi
        mqtt_port, central_port = _free_port(), _free_port()
        assert (
            main(
                [
                    "provision",
                    "bundle",
                    "--mapping",
                    str(tmp_path / "mapping.json"),
                    "--keys",
                    str(tmp_path / "keys.txt"),
                    "--collector",
                    COLLECTOR,
                    "--mqtt-url",
                    f"mqtt://127.0.0.1:{mqtt_port}",
                    "--bus",
                    f"mbus0={segment.port}",
                    "--radio",
                    f"radio0={stick.port}:imst:C1T1",
                    "--data-dir",
                    str(tmp_path / "edge-data"),
                    "--interval",
                    "30",
                    "-o",
                    str(tmp_path / "out"),
                ]
            )
            == 0
        )
        bundle_dir = extract_bundle(tmp_path / "out" / f"{COLLECTOR}-bundle.tar.gz", tmp_path / "pi")

        # the broker, configured with the bundle's password line and ACL block
        central_pw = "central-test-password"
        broker_dir = tmp_path / "broker"
        broker_dir.mkdir()
        (broker_dir / "passwd").write_text(
            (bundle_dir / "broker" / "mosquitto-passwd").read_text()
            + f"central:{mosquitto_hash(central_pw)}\n"
        )
        (broker_dir / "passwd").chmod(0o600)
        (broker_dir / "acl").write_text(
            (bundle_dir / "broker" / "mosquitto-acl.conf").read_text()
            + "\nuser central\ntopic readwrite imd/v1/#\n"
        )
        (broker_dir / "mosquitto.conf").write_text(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous false\npassword_file {broker_dir / 'passwd'}\n"
            f"acl_file {broker_dir / 'acl'}\npersistence false\nuser root\nlog_dest stdout\n"
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("IMD_MQTT_URL", None)
        logs = {name: tmp_path / f"{name}.log" for name in ("mosquitto", "central", "collector", "setup")}
        broker_proc = subprocess.Popen(
            [mosquitto, "-c", str(broker_dir / "mosquitto.conf")],
            stdout=files.enter_context(logs["mosquitto"].open("w")),
            stderr=subprocess.STDOUT,
        )
        procs.append((broker_proc, signal.SIGTERM))
        _wait_port(mqtt_port, broker_proc, logs["mosquitto"])

        # central with a technician account
        data = tmp_path / "central"
        setup_log = files.enter_context(logs["setup"].open("w"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "imd",
                "central",
                "create-user",
                "tech",
                "--role",
                "technician",
                "--password-stdin",
                "--data-dir",
                str(data),
            ],
            input=b"tech-pass\n",
            check=True,
            stdout=setup_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        central = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imd",
                "central",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(central_port),
                "--mqtt-url",
                f"mqtt://central:{central_pw}@127.0.0.1:{mqtt_port}",
                "--no-shared-subscription",
            ],
            stdout=files.enter_context(logs["central"].open("w")),
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append((central, signal.SIGINT))
        base = f"http://127.0.0.1:{central_port}"
        _wait_port(central_port, central, logs["central"], timeout=30)
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/api/health").status_code != 200:
            assert time.monotonic() < deadline, logs["central"].read_text()[-3000:]
            time.sleep(0.2)

        # the property manager's register, entered by an admin before the technician's visit
        register_path = tmp_path / "register.json"
        register_path.write_text(site.model_copy(update={"meters": []}).model_dump_json())
        subprocess.run(
            [
                sys.executable,
                "-m",
                "imd",
                "central",
                "import-site",
                str(register_path),
                "--data-dir",
                str(data),
            ],
            check=True,
            stdout=setup_log,
            stderr=subprocess.STDOUT,
            env=env,
        )

        # 4. registration over the API, in one transaction; run twice, the second changes nothing
        monkeypatch.setenv("IMD_PASSWORD", "tech-pass")
        register_args = [
            "provision",
            "register",
            "--central",
            base,
            "--user",
            "tech",
            "--mapping",
            str(tmp_path / "mapping.json"),
            "--keys",
            str(tmp_path / "keys.txt"),
            "--collector",
            COLLECTOR,
            "--bundle",
            str(tmp_path / "out" / f"{COLLECTOR}-bundle.tar.gz"),
        ]
        capsys.readouterr()
        assert main(register_args) == 0
        first = json.loads(capsys.readouterr().out)
        assert (first["meters_created"], first["meter_points_created"]) == (241, 241)
        assert first["keys_set"] == 120
        assert first["collector_created"] is True
        assert main(register_args) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["changed"] is False
        assert (again["meters_created"], again["meters_updated"], again["keys_set"]) == (0, 0, 0)

        # 5. the collector, started from the unpacked bundle
        collector = subprocess.Popen(
            [sys.executable, "-m", "imd", "edge", "run", "--config", str(bundle_dir / "collector.toml")],
            stdout=files.enter_context(logs["collector"].open("w")),
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append((collector, signal.SIGTERM))

        # 6. commissioning and the installation report
        t1 = time.monotonic()
        code = main(
            [
                "provision",
                "commission",
                "--central",
                base,
                "--user",
                "tech",
                "--mapping",
                str(tmp_path / "mapping.json"),
                "--collector",
                COLLECTOR,
                "--timeout",
                "45",
                "--json",
                str(tmp_path / "commission.json"),
                "--technician",
                "Tekniker Test",
                "--report-html",
                str(tmp_path / "report.html"),
                "--report-pdf",
                str(tmp_path / "report.pdf"),
            ]
        )
        commission_s = time.monotonic() - t1
        assert collector.poll() is None, logs["collector"].read_text()[-3000:]
        result = json.loads((tmp_path / "commission.json").read_text())
        diagnostics = "\n".join(log.read_text()[-1500:] for log in logs.values() if log.exists())
        assert code == 1, diagnostics
        assert {m["id"]: m["cause"] for m in result["missing"]} == {
            dead.id: "no answer",
            wrong.id: "wrong key",
        }, (result["missing"], diagnostics)
        assert result["delivered"] == 239
        assert result["total"] == 241
        report = (tmp_path / "report.html").read_text()
        assert "Meters that need a visit (2)" in report
        assert "Tekniker Test" in report
        assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
        # nothing logged a secret
        password = (bundle_dir / "collector.toml").read_text().split('password = "', 1)[1].split('"', 1)[0]
        for log in logs.values():
            text = log.read_text() if log.exists() else ""
            assert password not in text
            assert all(m.key not in text for m in radio if m.key)
        print(f"survey {survey_s:.1f} s, commissioning {commission_s:.1f} s")
    finally:
        for proc, sig in reversed(procs):
            _stop(proc, sig)
        files.close()
        air.stop()
        stick.stop()
        segment.stop()
