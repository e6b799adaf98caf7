"""End to end: ``imd demo`` drives simulator -> collector -> broker -> central -> API.

The demo is started exactly as a user starts it (a subprocess of the installed ``imd`` command),
once with the embedded broker that ``make demo`` uses and once against the test broker (Mosquitto
when it answers), which also exercises the shared subscription.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MIN_METERS_WITH_READINGS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # central not listening yet (URLError wraps connection refused)
        return 0, b""


def _token(base: str, username: str, password: str) -> tuple[int, dict[str, object]]:
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(f"{base}/api/auth/token", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _run_demo(tmp_path: Path, extra_env: dict[str, str]) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "IMD_MQTT_URL"}
    env.update(extra_env, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "imd", "demo", "--data-dir", str(tmp_path / "data"),
             "--port", str(port), "--interval", "10", "--speed", "600"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            deadline = time.monotonic() + 90
            meters: list[dict[str, object]] = []
            token = None
            while time.monotonic() < deadline:
                assert demo.poll() is None, log_path.read_text()[-3000:]
                if token is None:
                    status, body = _get(f"{base}/api/health")
                    if status == 200:
                        code, answer = _token(base, "demo", "demo")
                        assert code == 200, answer
                        assert answer["token_type"] == "bearer"
                        token = str(answer["access_token"])
                if token is not None:
                    status, body = _get(f"{base}/api/meters", token)
                    assert status == 200, body
                    payload = json.loads(body)
                    meters = payload["items"] if isinstance(payload, dict) else payload
                    read = [m for m in meters if m.get("last_reading_at")]
                    if len(read) >= MIN_METERS_WITH_READINGS:
                        break
                time.sleep(1)
            read = [m for m in meters if m.get("last_reading_at")]
            assert len(read) >= MIN_METERS_WITH_READINGS, log_path.read_text()[-3000:]
            for meter in read:
                for key in ("id", "manufacturer", "medium", "apartment", "last_reading_at"):
                    assert key in meter
            media = {m["medium"] for m in meters}
            assert {"heat", "hot_water", "cold_water", "electricity"} <= media

            assert _get(f"{base}/api/meters")[0] == 401
            assert _get(f"{base}/api/meters", "not-a-token")[0] == 401
            assert _token(base, "demo", "wrong")[0] == 401
            status, page = _get(f"{base}/")
            assert status == 200
            assert b"login" in page.lower()  # redirected to the login form
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                code = demo.wait(30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
                pytest.fail("demo did not stop within 30 s of Ctrl-C")
    assert code == 0, log_path.read_text()[-3000:]
    # every child stopped: central no longer answers
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_demo_with_embedded_broker(tmp_path: Path) -> None:
    _run_demo(tmp_path, {})


def test_demo_with_test_broker(tmp_path: Path, mqtt_url: str) -> None:
    _run_demo(tmp_path, {"IMD_MQTT_URL": mqtt_url})
