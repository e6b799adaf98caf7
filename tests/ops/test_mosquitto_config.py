"""The shipped production Mosquitto configuration, run for real.

Starts the machine's ``mosquitto`` binary with ``deploy/mosquitto/mosquitto.conf`` (only file paths,
the port and the service user substituted), TLS certificates from ``deploy/mosquitto/make-dev-ca.sh``,
password-file parts from ``mosquitto_passwd`` and from provisioning's bundle code, the ACL base
``deploy/mosquitto/acl`` plus per-collector blocks (``collector.acl.template`` and provisioning's
``acl_block``), assembled by the shipped assemble-credentials.sh.
Then paho-mqtt 2.x clients over TLS check that the rules hold.

Every broker test runs twice: with ``password_file`` + ``acl_file`` as shipped, and with the
dynamic-security plugin (``deploy/mosquitto/dynsec.conf`` in place of those two lines, its file
built by ``dynsec-assemble.py`` from the same password parts). The plugin also closes the one gap
acl_file leaves: a collector account joining central's shared subscription.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.broker import acl_block, password_line

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed (apt install mosquitto)"),
    pytest.mark.skipif(
        MOSQUITTO_PASSWD is None, reason="mosquitto_passwd not installed (apt install mosquitto)"
    ),
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="openssl not installed (make-dev-ca.sh needs it)"
    ),
]

PASSWORDS = {"central": "central-pw-1", "collector-c1": "c1-pw-1", "collector-c2": "c2-pw-1"}
WAIT = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
MODES = [
    "acl_file",
    pytest.param(
        "dynsec",
        marks=pytest.mark.skipif(not DYNSEC_PLUGIN.exists(), reason=f"{DYNSEC_PLUGIN} not installed"),
    ),
]


def render_config(text: str, *, port: int, tmp: Path, mode: str = "acl_file") -> str:
    """The shipped config with test paths: every other line stays as shipped. ``dynsec``: the two
    lines of ``dynsec.conf`` in place of ``password_file`` and ``acl_file``, as OPERATIONS.md says."""
    if mode == "dynsec":
        plugin = [
            line.replace("/etc/mosquitto/imd/dynamic-security.json", str(tmp / "dynamic-security.json"))
            for line in (DEPLOY / "dynsec.conf").read_text().splitlines()
            if line and not line.startswith("#")
        ]
        lines = []
        for line in text.splitlines():
            key = line.split(" ", 1)[0]
            if key == "password_file":
                lines += plugin
            elif key != "acl_file":
                lines.append(line)
        assert len(lines) == len(text.splitlines()), "both lines replaced"
        text = "\n".join(lines)
    paths = {
        "cafile": tmp / "certs" / "ca.crt",
        "certfile": tmp / "certs" / "server.crt",
        "keyfile": tmp / "certs" / "server.key",
        "password_file": tmp / "passwd",
        "acl_file": tmp / "acl",
        "persistence_location": f"{tmp / 'data'}/",
        "pid_file": tmp / "mosquitto.pid",
        "user": getpass.getuser(),
    }
    out = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key in paths:
            out.append(f"{key} {paths[key]}")
        elif key == "listener":
            out.append(f"listener {port} 127.0.0.1")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class Broker:
    port: int
    ca: Path
    proc: subprocess.Popen[bytes]
    log: Path
    tmp: Path
    mode: str = "acl_file"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module", params=MODES)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"mosquitto-{mode}")
    (tmp / "data").mkdir()
    subprocess.run(
        [str(DEPLOY / "make-dev-ca.sh"), str(tmp / "certs"), "localhost", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    # the production layout: parts per account, assembled by the shipped script
    for sub in ("passwd.d", "acl.d"):
        (tmp / sub).mkdir()
    # central and c1 made with the broker's own tool and the shipped template; c2 exactly as
    # provisioning's collector bundle makes it (the two must be interchangeable)
    for user in ("central", "collector-c1"):
        part = tmp / "passwd.d" / f"{user}.passwd"
        part.touch(mode=0o600)
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(part), user, PASSWORDS[user]], check=True, capture_output=True
        )
    (tmp / "passwd.d" / "collector-c2.passwd").write_text(password_line("c2", PASSWORDS["collector-c2"]))
    shutil.copy(DEPLOY / "acl", tmp / "acl.base")
    template = (DEPLOY / "collector.acl.template").read_text()
    (tmp / "acl.d" / "collector-c1.acl").write_text(template.replace("{collector}", "c1"))
    (tmp / "acl.d" / "collector-c2.acl").write_text(acl_block("c2"))
    subprocess.run(
        [str(DEPLOY / "assemble-credentials.sh")],
        check=True,
        capture_output=True,
        env={**os.environ, "IMD_MOSQUITTO_DIR": str(tmp), "IMD_MOSQUITTO_NO_RELOAD": "1"},
    )
    assert (tmp / "acl").read_text().count("\nuser collector-") == 2
    if mode == "dynsec":
        built = subprocess.run(
            [str(DEPLOY / "dynsec-assemble.py")],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "IMD_MOSQUITTO_DIR": str(tmp), "IMD_MOSQUITTO_NO_RELOAD": "1"},
        )
        assert "3 accounts, 2 collectors" in built.stdout
        assert oct((tmp / "dynamic-security.json").stat().st_mode & 0o777) == "0o640"
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(render_config((DEPLOY / "mosquitto.conf").read_text(), port=port, tmp=tmp, mode=mode))
    log = tmp / "broker.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT)
    b = Broker(port=port, ca=tmp / "certs" / "ca.crt", proc=proc, log=log, tmp=tmp, mode=mode)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}:\n{b.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {port}:\n{b.log_text()}")
                time.sleep(0.05)
        yield b
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Client:
    """A paho client over TLS that records what it gets, for synchronous tests."""

    broker: Broker
    username: str | None
    password: str | None = None
    client_id: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")
    clean_session: bool = True
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    connack: Any = None
    suback: list[Any] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    _connected: threading.Event = field(default_factory=threading.Event)
    _subscribed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=mqtt.MQTTv311,
        )
        ctx = ssl.create_default_context(cafile=str(self.broker.ca))
        c.tls_set_context(ctx)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self.c = c

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connack = rc
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: Any, _p: Any) -> None:
        self.suback = list(rcs)
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.disconnected.set()

    def connect(self) -> Any:
        self.c.reconnect_delay_set(60, 120)  # a refused client must not retry during the test
        self.c.connect("127.0.0.1", self.broker.port, keepalive=30)
        self.c.loop_start()
        assert self._connected.wait(WAIT), "no CONNACK"
        return self.connack

    def subscribe(self, topic: str) -> Any:
        self._subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self._subscribed.wait(WAIT), "no SUBACK"
        return self.suback[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT)

    def received(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int, seconds: float = WAIT) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + seconds
        while len(self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
        # paho keeps a loopback socket pair per client until garbage collection, which may be
        # after pytest's unraisable-warning check (an error with filterwarnings=error): close it now.
        self.c._reset_sockets()


@pytest.fixture
def clients(broker: Broker) -> Iterator[Any]:
    made: list[Client] = []

    def make(username: str | None, password: str | None = None, **kw: Any) -> Client:
        if password is None:
            password = PASSWORDS.get(username or "")
        cl = Client(broker, username, password, **kw)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        cl.close()


def _connected(make: Any, user: str) -> Client:
    cl = make(user)
    rc = cl.connect()
    assert not rc.is_failure, f"{user} refused: {rc}"
    return cl


def test_shipped_config_keeps_the_production_settings() -> None:
    conf = (DEPLOY / "mosquitto.conf").read_text()
    settings = dict(
        line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#") and " " in line
    )
    assert settings["allow_anonymous"] == "false"
    assert settings["listener"] == "8883"
    assert int(settings["autosave_interval"]) <= 30
    assert settings["persistence"] == "true"
    assert re.fullmatch(r"\d+[hdwmy]", settings["persistent_client_expiration"])
    assert int(settings["max_packet_size"]) >= 4 * 1024 * 1024
    assert "listener 1883" not in conf  # no plain-text listener


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ({"a": "collector-c1:{h}\n", "b": "collector-c1:{h}\n"}, "duplicate account 'collector-c1'"),
        ({"a": "intruder:{h}\n"}, "account 'intruder': not central, monitor or collector-<id>"),
        (
            {"a": "collector-c+:{h}\n"},
            "account 'collector-c+'",
        ),  # a wildcard in the id would widen its topics
        ({"a": "central:plaintext-secret\n"}, "a.passwd:1: not a `user:$7$...` line"),
    ],
)
def test_dynsec_assemble_refuses_bad_parts(tmp_path: Path, parts: dict[str, str], reason: str) -> None:
    (tmp_path / "passwd.d").mkdir()
    hashed = password_line("c9", "pw").split(":", 1)[1].strip()
    for name, text in parts.items():
        (tmp_path / "passwd.d" / f"{name}.passwd").write_text(text.replace("{h}", hashed))
    result = subprocess.run(
        [str(DEPLOY / "dynsec-assemble.py")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "IMD_MOSQUITTO_DIR": str(tmp_path), "IMD_MOSQUITTO_NO_RELOAD": "1"},
    )
    assert result.returncode == 1
    assert reason in result.stderr
    assert hashed not in result.stderr + result.stdout
    assert "plaintext-secret" not in result.stderr + result.stdout
    assert not (tmp_path / "dynamic-security.json").exists()


def test_central_shared_subscription_receives_collector_frames(clients: Any) -> None:
    workers = [_connected(clients, "central") for _ in range(2)]
    for w in workers:
        assert not w.subscribe("$share/ingest/imd/v1/+/frames").is_failure
    c1 = _connected(clients, "collector-c1")
    sent = [f"batch-{i}".encode() for i in range(20)]
    for payload in sent:
        c1.publish("imd/v1/c1/frames", payload)
    deadline = time.monotonic() + WAIT
    while sum(len(w.received()) for w in workers) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a duplicate would arrive now
    got = [m for w in workers for m in w.received()]
    # a shared subscription: every batch reaches exactly one worker
    assert sorted(p for _t, p, _r in got) == sorted(sent)
    assert {t for t, _p, _r in got} == {"imd/v1/c1/frames"}


def test_collector_cannot_publish_into_another_collectors_subtree_or_send_commands(clients: Any) -> None:
    central = _connected(clients, "central")
    assert not central.subscribe("imd/v1/#").is_failure
    c1 = _connected(clients, "collector-c1")
    forged = [
        "imd/v1/c2/frames",
        "imd/v1/c2/status",
        "imd/v1/c2/cmd/result",
        "imd/v1/c2/cmd",
        "imd/v1/c1/cmd",  # only central sends commands, even to c1 itself
        "imd/v1/c1/receipt",  # nor receipts: a forged one would free unstored outbox rows
        "imd/v1/c2/receipt",
        "imd/v1/c1/other",
        "imd/v2/c1/frames",
    ]
    for topic in forged:
        c1.publish(topic, b"forged")
    # Mosquitto handles one connection's packets in order: once this arrives, the forged ones would have.
    c1.publish("imd/v1/c1/frames", b"marker")
    got = central.wait_for(1)
    time.sleep(0.3)
    got = [(t, p) for t, p, retained in central.received() if not retained]
    assert got == [("imd/v1/c1/frames", b"marker")]


def test_collector_receives_only_its_own_commands(clients: Any) -> None:
    """Mosquitto's acl_file grants every SUBSCRIBE and filters each delivery by the read rule, so
    a foreign subscription is accepted but nothing arrives through it."""
    c1 = _connected(clients, "collector-c1")
    for topic in ("imd/v1/c2/cmd", "imd/v1/+/cmd", "imd/v1/c2/#", "#", "imd/v1/c1/cmd"):
        c1.subscribe(topic)
    c2 = _connected(clients, "collector-c2")
    c2.subscribe("imd/v1/c2/cmd")
    central = _connected(clients, "central")
    central.publish("imd/v1/c2/cmd", b'{"id":"2"}')
    central.publish("imd/v1/c1/cmd", b'{"id":"1"}')
    central.publish("imd/v1/c2/frames", b"not for c1")  # c1 may not read another uplink either
    assert [(t, p) for t, p, _r in c2.wait_for(1)] == [("imd/v1/c2/cmd", b'{"id":"2"}')]
    c1.wait_for(1)
    time.sleep(0.3)
    # several of c1's subscriptions match its own cmd topic (one copy each): compare the set
    assert {(t, p) for t, p, _r in c1.received()} == {("imd/v1/c1/cmd", b'{"id":"1"}')}


def test_collector_receives_only_its_own_receipts(clients: Any) -> None:
    c1 = _connected(clients, "collector-c1")
    for topic in ("imd/v1/c2/receipt", "imd/v1/+/receipt", "imd/v1/c1/receipt"):
        c1.subscribe(topic)
    c2 = _connected(clients, "collector-c2")
    c2.subscribe("imd/v1/c2/receipt")
    central = _connected(clients, "central")
    central.publish("imd/v1/c2/receipt", b'{"for":"c2"}')
    central.publish("imd/v1/c1/receipt", b'{"for":"c1"}')
    assert [(t, p) for t, p, _r in c2.wait_for(1)] == [("imd/v1/c2/receipt", b'{"for":"c2"}')]
    c1.wait_for(1)
    time.sleep(0.3)
    assert {(t, p) for t, p, _r in c1.received()} == {("imd/v1/c1/receipt", b'{"for":"c1"}')}


def test_known_gap_a_collector_can_join_centrals_share_group(clients: Any, broker: Broker) -> None:
    """KNOWN GAP (docs/THREAT_MODEL.md): acl_file does not check SUBSCRIBE, so an account holding
    collector credentials can join `$share/ingest/...`. Mosquitto then hands it its round-robin share
    of frames, the read rule drops them, and central never sees those batches (the sender already
    had its PUBACK). This test pins the behaviour so a fix (dynamic-security plugin or EMQX, both
    check subscriptions) shows up as a failure here; `log_type subscribe` makes the subscription
    visible in the broker log for the alert rule in docs/OPERATIONS.md."""
    if broker.mode != "acl_file":
        pytest.skip("acl_file only: the dynamic-security plugin closes the gap (test below)")
    central = _connected(clients, "central")
    assert not central.subscribe("$share/ingest/imd/v1/+/frames").is_failure
    thief = clients("collector-c1", client_id="thief-c1")
    assert not thief.connect().is_failure
    thief.subscribe("$share/ingest/imd/v1/+/frames")
    c2 = _connected(clients, "collector-c2")
    for i in range(10):
        c2.publish("imd/v1/c2/frames", f"b{i}".encode())
    central.wait_for(10, seconds=1.5)
    assert thief.received() == []  # it cannot read them ...
    assert 0 < len(central.received()) < 10  # ... but central lost its share
    assert "thief-c1 1 $share/ingest/imd/v1/+/frames" in broker.log_text()


def test_dynsec_refuses_a_collector_joining_centrals_share_group(clients: Any, broker: Broker) -> None:
    """The fix for the gap above: with the dynamic-security plugin the broker refuses the
    collector account's SUBSCRIBE to `$share/ingest/...` (and to anything but its own `cmd`), so
    central keeps every batch."""
    if broker.mode != "dynsec":
        pytest.skip("dynamic-security plugin only")
    central = _connected(clients, "central")
    assert not central.subscribe("$share/ingest/imd/v1/+/frames").is_failure
    thief = clients("collector-c1", client_id="thief-c1")
    assert not thief.connect().is_failure
    for topic in ("$share/ingest/imd/v1/+/frames", "$share/other/imd/v1/+/frames", "imd/v1/+/frames",
                  "imd/v1/c2/frames", "imd/v1/+/cmd", "#", "$SYS/#"):  # fmt: skip
        assert thief.subscribe(topic).is_failure, topic
    assert not thief.subscribe("imd/v1/c1/cmd").is_failure  # its own commands, exactly
    c2 = _connected(clients, "collector-c2")
    for i in range(10):
        c2.publish("imd/v1/c2/frames", f"b{i}".encode())
    assert len(central.wait_for(10)) == 10
    assert sorted(p for _t, p, _r in central.received()) == sorted(f"b{i}".encode() for i in range(10))
    assert thief.received() == []


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("central", "wrong"), ("collector-c1", PASSWORDS["collector-c2"]), ("nobody", "x")],
    ids=["anonymous", "central-wrong-password", "c1-with-c2-password", "unknown-user"],
)
def test_bad_credentials_are_refused(clients: Any, username: str | None, password: str | None) -> None:
    cl = clients(username, password if password is not None else "")
    if username is None:
        cl.c.username_pw_set(None, None)
    rc = cl.connect()
    assert rc.is_failure, f"{username!r} was let in"
    assert rc.value in (4, 5, 0x86, 0x87)  # bad username or password / not authorised


def test_plain_tcp_is_not_accepted_on_the_tls_port(broker: Broker) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv311)
    c.username_pw_set("central", PASSWORDS["central"])
    result: list[Any] = []
    c.on_connect = lambda *a: result.append(a[3])
    try:
        c.connect("127.0.0.1", broker.port, keepalive=5)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not result:
            c.loop(timeout=0.1)
    except OSError:
        pass
    finally:
        c.disconnect()
        if c.socket() is not None:
            c.socket().close()
    assert not result or result[0].is_failure


def test_retained_status_reaches_a_later_subscriber(clients: Any) -> None:
    c1 = _connected(clients, "collector-c1")
    c1.publish("imd/v1/c1/status", b'{"state":"online"}', retain=True)
    c1.close()
    central = _connected(clients, "central")
    assert not central.subscribe("imd/v1/+/status").is_failure
    got = central.wait_for(1)
    assert ("imd/v1/c1/status", b'{"state":"online"}', True) in got


def test_oversized_payload_is_refused_and_the_sender_disconnected(clients: Any) -> None:
    central = _connected(clients, "central")
    assert not central.subscribe("imd/v1/#").is_failure
    c2 = _connected(clients, "collector-c2")
    c2.c.publish("imd/v1/c2/frames", b"x" * (5 * 1024 * 1024), qos=1)
    assert c2.disconnected.wait(WAIT), "broker kept a client that sent a 5 MiB packet"
    other = _connected(clients, "collector-c1")
    other.publish("imd/v1/c1/frames", b"after")
    got = central.wait_for(1)
    time.sleep(0.2)
    live = [(t, len(p)) for t, p, retained in central.received() if not retained]
    assert live == [("imd/v1/c1/frames", 5)], got


def test_persistent_session_queue_survives_while_central_is_away(clients: Any) -> None:
    """Central's persistent session keeps QoS 1 batches sent while it was disconnected."""
    worker_id = f"imd-central-test-{uuid.uuid4().hex[:6]}"
    w = clients("central", client_id=worker_id, clean_session=False)
    assert not w.connect().is_failure
    assert not w.subscribe("$share/ingest/imd/v1/+/frames").is_failure
    w.close()

    c1 = _connected(clients, "collector-c1")
    for i in range(5):
        c1.publish("imd/v1/c1/frames", f"queued-{i}".encode())

    back = clients("central", client_id=worker_id, clean_session=False)
    assert not back.connect().is_failure
    got = back.wait_for(5)
    assert sorted(p for _t, p, _r in got) == [f"queued-{i}".encode() for i in range(5)]
