"""The shipped deployment files parse: systemd units (systemd-analyze verify), shell scripts
(sh -n) and the central.env template (central's own Settings accept it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from central.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_IMD = Path(shutil.which("imd") or ROOT / ".venv" / "bin" / "imd")
SCRIPTS = sorted(p for sub in ("central", "mosquitto", "backup") for p in (DEPLOY / sub).glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shell_scripts_parse_and_are_executable(script: Path) -> None:
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    assert script.read_text().startswith("#!/bin/sh\n")
    assert "set -eu" in script.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.skipif(not VENV_IMD.exists(), reason="the imd command is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    units = [*(DEPLOY / "central").glob("*.service"), *(DEPLOY / "backup").glob("imd-backup.*")]
    names = []
    for unit in units:
        text = unit.read_text().replace("/opt/imd/venv/bin/imd", str(VENV_IMD))
        text = text.replace("/opt/imd/src/deploy", str(DEPLOY))
        name = unit.name.replace("@.", "@8001.")  # verify the template through an instance
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_env_template_is_accepted_by_central(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {}
    for line in (DEPLOY / "central" / "central.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            # systemd and /bin/sh must read the same value: no padding, no quotes
            assert (key, value) == (key.strip(), value.strip()), line
            assert '"' not in value, line
            env[key] = value
    assert {"IMD_DATA_DIR", "IMD_DATABASE_URL", "IMD_MQTT_URL", "FORWARDED_ALLOW_IPS"} <= set(env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMD_DATA_DIR", str(tmp_path / "central"))
    settings = Settings.from_env()
    assert str(settings.database_url).startswith("postgresql+asyncpg://")
    assert str(settings.mqtt_url).startswith("mqtts://")
    assert settings.shared_subscription


def test_units_pin_distinct_client_ids_and_local_ports() -> None:
    api = (DEPLOY / "central" / "imd-central-api.service").read_text()
    worker = (DEPLOY / "central" / "imd-central@.service").read_text()
    assert "--host 127.0.0.1 --port 8000 --client-id imd-central-%H-8000" in api
    assert "--host 127.0.0.1 --port %i --client-id imd-central-%H-%i" in worker
    nginx = (DEPLOY / "central" / "nginx-imd.conf").read_text()
    assert "server 127.0.0.1:8000" in nginx
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in nginx
    assert "client_max_body_size" in nginx


def _exec_start(unit: str) -> str:
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return line


def test_ingest_worker_unit_runs_ingest_only_and_the_sweep_runs_once() -> None:
    ingest = (DEPLOY / "central" / "imd-ingest@.service").read_text()
    worker = (DEPLOY / "central" / "imd-central@.service").read_text()
    api = (DEPLOY / "central" / "imd-central-api.service").read_text()
    execs = [line for line in ingest.splitlines() if line.startswith("ExecStart=")]
    assert execs == [
        "ExecStart=/opt/imd/venv/bin/imd central serve --no-api --no-scheduler "
        "--client-id imd-central-%H-ingest-%i"
    ]
    assert "--port" not in execs[0]  # no HTTP port: nothing for nginx to balance
    assert "SocketBindDeny=any" in ingest
    assert "PartOf=imd-central-api.service" in ingest
    assert (
        "After=network-online.target postgresql.service mosquitto.service imd-central-api.service" in ingest
    )
    # the periodic check sweep runs in the API unit only, whatever the number of workers
    assert "--no-scheduler" in _exec_start(worker)
    assert "--no-scheduler" not in _exec_start(api)
    install = (DEPLOY / "central" / "install-central.sh").read_text()
    assert 'deploy/central/imd-ingest@.service" /etc/systemd/system/' in install


def test_ingest_worker_command_line_is_accepted(tmp_path: Path) -> None:
    """The unit's flags parse and give the ingest-only settings (``imd central serve`` itself is
    tested as a process in tests/central/test_central_roles.py)."""
    import argparse

    from central import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    ingest = (DEPLOY / "central" / "imd-ingest@.service").read_text()
    line = next(line for line in ingest.splitlines() if line.startswith("ExecStart="))
    argv = line.split()[1:]
    assert argv[:2] == ["central", "serve"]
    argv = [a.replace("%H", "host").replace("%i", "1") for a in argv]
    args = parser.parse_args([*argv, "--data-dir", str(tmp_path), "--mqtt-url", "mqtt://127.0.0.1:1883"])
    settings = cli._settings(
        args,
        mqtt_url=args.mqtt_url,
        api=False if args.no_api else None,
        scheduler=False if args.no_scheduler else None,
        mqtt_client_id=args.client_id,
    )
    assert (settings.api, settings.ingest, settings.scheduler) == (False, True, False)
    assert settings.mqtt_client_id == "imd-central-host-ingest-1"


def test_install_scripts_upgrade_setuptools_past_its_advisories() -> None:
    """A venv seeded by Debian's python3-venv carries a setuptools that `make audit` flags; the
    production venvs get the floor the dev environment is held to."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'^    "(setuptools>=[0-9.]+)",$', pyproject, re.MULTILINE)  # the dev extra's pin
    assert floor is not None
    for script in ("central/install-central.sh", "edge/install-raspberry-pi.sh"):
        text = (DEPLOY / script).read_text()
        assert f"--upgrade pip '{floor.group(1)}'" in text, script
