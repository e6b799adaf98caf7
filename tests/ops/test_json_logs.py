"""``imd central serve --log-format json``: one JSON object per line, and no secret in any of them.

A real central (subprocess, real broker) ingests encrypted wM-Bus frames of a meter whose AES key
came in with the site import, and staff log in (also once with a wrong password); afterwards every
line central wrote parses as JSON and none holds the meter key, a password or an API token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from central.embedded_broker import free_port
from central.logs import JsonFormatter, redact, resolve
from protocols.messages import FrameBatch, FrameMessage, LinkKind, encode, frames_topic
from protocols.mqtturl import parse_mqtt_url

BIN = Path(sys.executable).parent
KEY = "28F64A24988064A079AA2C807D6102AE"  # Kamstrup Multical 21 76348799 (wmbusmeters test data)
TELEGRAM = "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"
PASSWORD = "staff-Pass-9fQ2x!"
WRONG = "wrong-Pass-77zz"


def _site(path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "property": {"id": "BRF-LOG", "name": "Brf Loggen"},
                "buildings": [{"id": "A", "name": "Hus A"}],
                "apartments": [
                    {"object_number": "OBJ-1", "number": "1001", "building": "A", "area_m2": "60"}
                ],
                "meters": [
                    {
                        "id": "76348799", "manufacturer": "KAM", "version": 27, "device_type": 22,
                        "medium": "cold_water", "apartment": "OBJ-1", "link": "wmbus", "bus": "im871a",
                        "key": KEY,
                    }
                ],
            }
        )
    )  # fmt: skip


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _imd(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "imd"), *args], input=stdin, capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout + result.stderr


def test_json_logs_hold_no_secret(tmp_path: Path, mqtt_url: str) -> None:
    data = tmp_path / "data"
    collector = f"t-log-{uuid.uuid4().hex[:8]}"
    _site(tmp_path / "site.json")
    cli_output = _imd("central", "import-site", str(tmp_path / "site.json"), "--data-dir", str(data))
    cli_output += _imd(
        "central", "create-user", "staff1", "--role", "staff", "--password-stdin", "--data-dir", str(data),
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    port = free_port()
    log_path = tmp_path / "central.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "imd"), "central", "serve", "-v", "--log-format", "json", "--port", str(port),
                "--data-dir", str(data), "--mqtt-url", mqtt_url, "--collector", collector,
                "--client-id", f"t-central-{collector}",
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "IMD_LOG_FORMAT"},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        token = ""
        try:
            _wait(lambda: _http(base + "/api/health/ready")[0] == 200, proc)
            assert _http(base + "/api/auth/token", f"username=staff1&password={WRONG}".encode())[0] == 401
            code, body = _http(base + "/api/auth/token", f"username=staff1&password={PASSWORD}".encode())
            assert code == 200
            token = body["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            _publish(mqtt_url, collector)
            _wait(lambda: _frames_ok(base, auth) == 2, proc)
            assert _http(base + "/metrics", headers=auth)[0] == 403  # staff is not the monitoring role
            status, meters = _http(base + "/api/meters", headers=auth)
            assert status == 200
            assert "76348799" in json.dumps(meters)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        if line.startswith(("Dashboard:", "Demo login:")):  # the CLI's own announcement on stdout
            continue
        records.append(json.loads(line))  # every log line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    http = [r for r in records if r["logger"] == "central.http"]
    assert {"route": "/api/auth/token", "status": 401} in [
        {"route": r["route"], "status": r["status"]} for r in http
    ]
    assert any(r["route"] == "/api/meters" and r["status"] == 200 for r in http)
    assert any("rejected message" in r["msg"] for r in records)
    assert token
    secrets = [KEY, KEY.lower(), PASSWORD, WRONG, token, token.split(".")[-1]]
    password = parse_mqtt_url(mqtt_url).password
    if password:
        secrets.append(password)
    for secret in secrets:
        assert secret not in text, "a secret is in central's log"
        assert secret not in cli_output, "a secret is in the CLI's output"


def _wait(check: Any, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"central exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def _frames_ok(base: str, auth: dict[str, str]) -> int:
    status, frames = _http(base + "/api/frames", headers=auth)
    return sum(1 for f in frames if f["status"] == "ok") if status == 200 else 0


def _publish(mqtt_url: str, collector: str) -> None:
    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-logpub-{uuid.uuid4().hex[:8]}")
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port)
    client.loop_start()
    try:
        at = datetime.now(UTC)
        frames = [
            FrameMessage(
                sequence=n, received_at=at, link=LinkKind.WMBUS, port="im871a", link_mode="C1", raw=TELEGRAM
            )
            for n in (1, 2)
        ]
        # the same telegram twice under two sequence numbers: two frames, one reading time
        batch = FrameBatch(collector=collector, sent_at=at, frames=frames)
        client.publish(frames_topic(collector), encode(batch), qos=1).wait_for_publish(5)
        client.publish(frames_topic(collector), b'{"password": "x"', qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("connecting to mqtt://central:s3cret@broker:8883", "mqtt://central:***@broker:8883"),
        ("Authorization: Bearer abc.def.ghi", "Bearer <token>"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "token <token>"),
        ("form password=hunter2&username=x", "password=***&username=x"),
        ('{"key": "00112233445566778899AABBCCDDEEFF"}', '"key": ***}'),
    ],
)
def test_redact_masks_what_slips_through(raw: str, masked: str) -> None:
    assert masked in redact(raw)


def test_json_formatter_one_line_with_extras_and_traceback() -> None:
    import logging

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "central.x", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    record.route = "/api/meters"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "failed x"
    assert entry["route"] == "/api/meters"
    assert "ValueError" in entry["exc"]


def test_log_format_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMD_LOG_FORMAT", "json")
    assert resolve(None) == "json"
    assert resolve("text") == "text"
    monkeypatch.setenv("IMD_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log format 'xml'"):
        resolve(None)
