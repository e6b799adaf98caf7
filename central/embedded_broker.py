"""An embedded MQTT broker (amqtt) for the one-command demo and for tests without Mosquitto.

Production runs Mosquitto (see deploy/); this broker exists so ``make demo`` needs nothing but
Python. It still enforces credentials and the same topic ACL as production: a collector account
``collector-<id>`` may only publish and subscribe under ``imd/v1/<id>/``, and only the central
account may send commands.

Limitation: amqtt has no MQTT 5 shared subscriptions, so central subscribes to the plain topic
filter when it runs against this broker (one ingest worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from protocols.messages import TOPIC_ROOT

log = logging.getLogger(__name__)

CENTRAL_USER = "central"
COLLECTOR_PREFIX = "collector-"


def _topic_matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard match of ``topic`` (a name or a filter) against an ACL ``pattern``."""
    pparts, tparts = pattern.split("/"), topic.split("/")
    for i, part in enumerate(pparts):
        if part == "#":
            return True
        if i >= len(tparts):
            return False
        if part != "+" and part != tparts[i]:
            return False
    return len(pparts) == len(tparts)


def allowed(username: str | None, topic: str, action: Action) -> bool:
    """The broker ACL: central may do anything under imd/v1; a collector only its own subtree."""
    if username is None:
        return False
    if topic.startswith("$share/"):
        topic = topic.split("/", 2)[2] if topic.count("/") >= 2 else ""
    if username == CENTRAL_USER:
        return topic.startswith(f"{TOPIC_ROOT}/") or topic == f"{TOPIC_ROOT}/#"
    if username.startswith(COLLECTOR_PREFIX):
        collector = username.removeprefix(COLLECTOR_PREFIX)
        own = f"{TOPIC_ROOT}/{collector}/"
        if not topic.startswith(own):
            return False
        rest = topic.removeprefix(own)
        if action == Action.PUBLISH:
            return rest in ("frames", "status", "cmd/result")
        # read: its commands and central's receipts (only central may write either)
        return rest in ("cmd", "receipt") or _topic_matches(rest, "cmd") or _topic_matches(rest, "receipt")
    return False


class CredentialsAuth(BaseAuthPlugin):
    """Username/password check against the in-memory account table (constant-time compare)."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Session) -> bool:
        users: dict[str, str] = self.context.config.users  # type: ignore[union-attr]
        expected = users.get(session.username or "")
        if expected is None or session.password is None:
            log.warning("MQTT login refused for %r", session.username)
            return False
        ok = hmac.compare_digest(expected.encode(), str(session.password).encode())
        if not ok:
            log.warning("MQTT login refused for %r", session.username)
        return ok


class TopicAcl(BaseTopicPlugin):
    """Topic ACL for publish, subscribe and delivery; see :func:`allowed`."""

    @dataclass
    class Config:
        enabled: bool = True

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None or action is None:
            return False
        if action == Action.RECEIVE:
            return True  # subscription was already checked
        ok = allowed(session.username, topic, action)
        if not ok:
            log.warning("MQTT ACL refused %s %s for %r", action, topic, session.username)
        return ok


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_credentials(collectors: list[str]) -> dict[str, str]:
    """Fresh random passwords for central and each collector."""
    users = {CENTRAL_USER: secrets.token_urlsafe(18)}
    for collector in collectors:
        users[f"{COLLECTOR_PREFIX}{collector}"] = secrets.token_urlsafe(18)
    return users


def broker_config(host: str, port: int, users: dict[str, str]) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 1000}},
        "plugins": {
            "central.embedded_broker.CredentialsAuth": {"users": users},
            "central.embedded_broker.TopicAcl": {"enabled": True},
        },
    }


class EmbeddedBroker:
    """Start/stop an amqtt broker inside the running event loop."""

    def __init__(self, host: str, port: int, users: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._config = broker_config(host, port, users)
        self._broker: Broker | None = None

    async def start(self) -> None:
        # amqtt binds the broker to the loop it is constructed in
        self._broker = Broker(self._config)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


async def _serve(host: str, port: int, users: dict[str, str]) -> None:
    broker = EmbeddedBroker(host, port, users)
    await broker.start()
    print(f"broker: mqtt://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m central.embedded_broker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1884)
    parser.add_argument(
        "--users-file", type=Path, required=True, help="JSON object {username: password}; kept out of argv"
    )
    args = parser.parse_args(argv)
    users = json.loads(args.users_file.read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s broker %(levelname)s %(message)s")
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, users))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
