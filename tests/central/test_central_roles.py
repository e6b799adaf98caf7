"""``imd central serve`` roles: an ingest worker without HTTP (``--no-api``), an API without ingest
(``--no-ingest``) and where the periodic check sweep runs (``--no-scheduler``).

The two process roles run as real ``imd`` processes against the real broker: the ingest worker must
store what is published and listen on no TCP port; the API process must answer HTTP and store
nothing that is published, because it subscribes to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from central_testdata import corpus_frame
from sqlalchemy import func, select
from test_central_ingest_mqtt import eventually, frame_batch, publish, publisher

from central.api.app import central_state
from central.config import Settings
from central.db import Database, sqlite_url
from central.embedded_broker import free_port
from central.models import RawFrame, Reading
from imd.cli import main
from protocols.messages import frames_topic
from protocols.mqtturl import parse_mqtt_url

ROOT = Path(__file__).resolve().parents[2]
PROC = Path("/proc/self/fd").exists()


class Central:
    """One ``imd central serve`` process; its stdout is read by a thread, line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imd", "central", "serve", *args],  # this tree's code
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "IMD_DEMO": ""},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    async def line_with(self, text: str, timeout: float = 30.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no line with {text!r}; output so far: {self.lines}")
            await asyncio.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def tcp_sockets(pid: int) -> tuple[set[int], set[int]]:
    """(local ports it listens on, remote ports of its established connections) of one process."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    listening: set[int] = set()
    remote: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[9]) not in inodes:
                continue
            if fields[3] == "0A":  # LISTEN
                listening.add(int(fields[1].rsplit(":", 1)[1], 16))
            elif fields[3] == "01":  # ESTABLISHED
                remote.add(int(fields[2].rsplit(":", 1)[1], 16))
    return listening, remote


def forget_session(mqtt_url: str, client_id: str) -> None:
    """A clean-session connect drops the persistent session a test worker left on the broker."""
    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if url.username:
        client.username_pw_set(url.username, url.password)
    with contextlib.suppress(OSError):
        client.connect(url.host, url.port, keepalive=10)
        client.loop(timeout=1.0)
        client.disconnect()


@contextlib.asynccontextmanager
async def database(data: Path) -> AsyncIterator[Database]:
    db = await Database.open(sqlite_url(data))
    try:
        yield db
    finally:
        await db.close()


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


@contextlib.contextmanager
def mqtt_publisher(mqtt_url: str) -> Iterator[mqtt.Client]:
    client = publisher(mqtt_url)
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.skipif(not PROC, reason="needs /proc to see the process's sockets")
async def test_ingest_only_worker_stores_frames_and_listens_on_no_port(tmp_path: Path, mqtt_url: str) -> None:
    collector = f"t-role-{uuid.uuid4().hex[:8]}"
    client_id = f"t-ingest-{collector}"
    data = tmp_path / "ingest"
    central = Central(
        "--no-api", "--mqtt-url", mqtt_url, "--collector", collector, "--client-id", client_id,
        "--data-dir", str(data),
    )  # fmt: skip
    try:
        line = await central.line_with("Ingest: subscribed")
        url = parse_mqtt_url(mqtt_url)
        assert "(no HTTP port)" in line
        if url.password:
            assert url.password not in line
        listening, remote = tcp_sockets(central.proc.pid)
        assert listening == set(), f"an ingest-only worker listens on {listening}"
        assert url.port in remote  # the check does see its sockets: the broker connection

        heat = corpus_frame("kamstrup_multical_601")
        with mqtt_publisher(mqtt_url) as pub:
            publish(pub, frames_topic(collector), frame_batch(collector, [(1, heat), (2, heat)]))
        async with database(data) as db:

            async def stored() -> bool:
                return await count(db, RawFrame) == 2

            await eventually(stored, timeout=30)
            assert await count(db, Reading) > 0
        assert tcp_sockets(central.proc.pid)[0] == set()
    finally:
        code = central.stop()
        await asyncio.to_thread(forget_session, mqtt_url, client_id)
    assert code == 0, central.lines


async def test_api_only_process_answers_http_and_subscribes_nothing(tmp_path: Path, mqtt_url: str) -> None:
    collector = f"t-role-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "api"
    port = free_port()
    central = Central(
        "--no-ingest", "--mqtt-url", mqtt_url, "--collector", collector,
        "--client-id", f"t-api-{collector}", "--port", str(port), "--data-dir", str(data),
    )  # fmt: skip
    try:
        line = await central.line_with("Dashboard:")
        assert f":{port}/" in line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def connected() -> bool:
                health = (await http.get("/api/health")).json()
                return bool(health["ingest"] and health["ingest"]["connected"])

            await eventually(connected, timeout=20)  # connected to the broker, for commands
            health = (await http.get("/api/health")).json()
            assert health["status"] == "ok"
            assert health["ingest"]["subscribed"] is False
            assert (await http.get("/docs")).status_code == 200

            with mqtt_publisher(mqtt_url) as pub:
                publish(
                    pub,
                    frames_topic(collector),
                    frame_batch(collector, [(1, corpus_frame("kamstrup_multical_601"))]),
                )
            await asyncio.sleep(2.0)  # what an ingest would have stored by now (see the test above)
            assert (await http.get("/api/health")).json()["ingest"]["frames_new"] == 0
        async with database(data) as db:
            assert await count(db, RawFrame) == 0
    finally:
        code = central.stop()
    # uvicorn shuts down cleanly on SIGTERM and then re-raises it (systemd counts that as a clean stop)
    assert code in (0, -signal.SIGTERM), central.lines


async def test_no_scheduler_keeps_the_checks_after_ingest_but_not_the_sweep(tmp_path: Path) -> None:
    async def task_names(settings: Settings) -> set[str]:
        async with central_state(settings, start_ingest=False):
            return {task.get_name() for task in asyncio.all_tasks()}

    default = await task_names(Settings(data_dir=tmp_path / "a").validated())
    assert {"checks-after-ingest", "checks-sweep"} <= default
    quiet = await task_names(Settings(data_dir=tmp_path / "b", scheduler=False).validated())
    assert "checks-after-ingest" in quiet
    assert "checks-sweep" not in quiet


def test_role_flags_that_cannot_work_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["central", "serve", "--no-api", "--data-dir", str(tmp_path)]) == 2
    assert "mqtt_url" in capsys.readouterr().err
    both = ["central", "serve", "--no-api", "--no-ingest", "--mqtt-url", "mqtt://127.0.0.1:1", "--data-dir"]
    assert main([*both, str(tmp_path)]) == 2
    assert "nothing to run" in capsys.readouterr().err
