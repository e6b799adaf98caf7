"""Shared fixtures: a real MQTT broker and, where reachable, a real PostgreSQL.

Order of preference for the broker: $IMD_TEST_MQTT_URL, Mosquitto on 127.0.0.1:1883 when it answers,
else the embedded amqtt broker started for the session. PostgreSQL: $IMD_TEST_DATABASE_URL or
127.0.0.1:5432; tests that need it skip with the reason when it is not reachable.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _mqtt_answers(host: str, port: int) -> bool:
    """A TCP accept is not enough: send CONNECT and expect CONNACK."""
    connect = bytes.fromhex("101000044d5154540402003c0004696d6474")  # MQTT 3.1.1, client id "imdt"
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(connect)
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


class _BrokerThread:
    def __init__(self) -> None:
        from central.embedded_broker import EmbeddedBroker, free_port

        self.port = free_port()
        self.password = "test-central"
        self._loop = asyncio.new_event_loop()
        self._broker = EmbeddedBroker("127.0.0.1", self.port, {"central": self.password})
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(timeout=15)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """URL of a real MQTT broker for this test session."""
    env = os.environ.get("IMD_TEST_MQTT_URL")
    if env:
        yield env
        return
    if _mqtt_answers("127.0.0.1", 1883):
        yield "mqtt://127.0.0.1:1883"
        return
    broker = _BrokerThread()
    broker.start()
    try:
        yield f"mqtt://central:{broker.password}@127.0.0.1:{broker.port}"
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """An asyncpg SQLAlchemy URL of a reachable PostgreSQL server, or skip with the reason."""
    url = os.environ.get("IMD_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parts = urlsplit(url.replace("+asyncpg", ""))
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not _reachable(host, port):
        pytest.skip(f"PostgreSQL not reachable at {host}:{port}; set IMD_TEST_DATABASE_URL to run them")
    return url


def mqtt_publisher(mqtt_url: str, prefix: str = "test-pub") -> mqtt.Client:
    """A connected paho client (network loop running) for a test to publish with, as a collector would."""
    import paho.mqtt.client as mqtt

    from protocols.mqtturl import parse_mqtt_url

    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{uuid.uuid4().hex[:8]}")
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.connect(url.host, url.port)
    client.loop_start()
    return client
