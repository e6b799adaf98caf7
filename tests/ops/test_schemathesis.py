"""schemathesis against a running central's OpenAPI schema: no request makes it answer 5xx.

A real ``imd central serve`` (demo admin, SQLite, ingest on the test broker, so commands can go
out) and the schemathesis CLI with an admin token; only the server-error check is asked for.
The suite runs a small budget (``IMD_SCHEMATHESIS_EXAMPLES``, default 5 per operation);
``make schemathesis`` runs 25 per operation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.embedded_broker import free_port

BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _get(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return bytes(response.read())


@pytest.fixture
def central_url(tmp_path: Path, mqtt_url: str) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "central.log").open("w")
    env = {**os.environ, "IMD_LOG_FORMAT": "text"}
    proc = subprocess.Popen(
        [
            str(BIN / "imd"),
            "central",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--mqtt-url",
            mqtt_url,
            "--client-id",
            f"imd-central-st-{uuid.uuid4().hex[:6]}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if json.loads(_get(url + "/api/health/ready"))["ready"]:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "central did not become ready: " + (tmp_path / "central.log").read_text()
                )
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    errors = [line for line in (tmp_path / "central.log").read_text().splitlines() if "Traceback" in line]
    assert not errors, "central logged tracebacks during the run"


def test_no_server_errors_anywhere_in_the_api(central_url: str, tmp_path: Path) -> None:
    token = json.loads(_get(central_url + "/api/auth/token", b"username=demo&password=demo"))["access_token"]
    examples = os.environ.get("IMD_SCHEMATHESIS_EXAMPLES", "5")
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            central_url + "/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            examples,
            "--seed",
            os.environ.get("IMD_SCHEMATHESIS_SEED", "20251203"),
            "--continue-on-failure",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=840,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    out = result.stdout + result.stderr
    summary = re.search(r"(\d+) generated, .*", out)
    print(summary.group(0) if summary else out[-2000:])
    assert result.returncode == 0, out[-6000:]
    assert "Server error" not in out
    assert summary is not None
    assert int(summary.group(1)) > 500  # every one of the ~80 operations got its cases
