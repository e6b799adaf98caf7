"""MQTT uplink to central (paho-mqtt 2.x): QoS 1, TLS, last will, reconnect with backoff.

Three objects, each with one job:

- :class:`Backoff` - how long to wait before the next connection attempt (pure, testable);
- :class:`MqttConnection` - owns the paho client and a network thread that connects, runs the
  paho loop while connected, and reconnects with the backoff when the link drops. Callbacks are
  handed to the asyncio loop with ``call_soon_threadsafe`` so everything else stays single-threaded;
- :class:`OutboxPublisher` - moves frames from the durable outbox to the broker in batches, marks
  them "awaiting receipt" on the PUBACK of the message that carried them and deletes them on
  central's receipt (``imd/v1/<collector>/receipt``), which says they are committed there.

A message that was sent but not acknowledged when the link dropped is re-sent by paho after the
reconnect (same mid); if the process dies instead, the rows are still in the outbox and go out
again after the restart. A row acknowledged by the broker but never receipted (the broker dropped
it: Mosquitto does not restore ``$share/`` subscriptions after a restart) is published again after
``receipt_timeout_s`` of link time. Either way central sees the same ``(collector, sequence)`` and
de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox import Outbox
from protocols.messages import (
    CollectorState,
    CollectorStatus,
    Command,
    IngestReceipt,
    command_topic,
    encode,
    frames_topic,
    parse_command,
    parse_receipt,
    receipt_topic,
    status_topic,
)
from protocols.mqtturl import MqttUrl

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter so a fleet reconnecting after a broker restart spreads out."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5  # the delay is drawn from [(1 - jitter) * d, d]
    rng: Callable[[], float] = field(default=random.random, repr=False)
    _attempt: int = 0

    def next(self) -> float:
        base = min(self.maximum_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return base * (1.0 - self.jitter * self.rng())

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


def _offline(collector: str) -> bytes:
    return encode(CollectorStatus(collector=collector, state=CollectorState.OFFLINE, at=datetime.now(UTC)))


class MqttConnection:
    """The paho client plus the thread that keeps it connected.

    ``on_connected``/``on_disconnected``/``on_ack(mid)``/``on_command(Command)``/
    ``on_receipt(IngestReceipt)`` run in the asyncio loop given to the constructor. The receipt
    topic is subscribed to only when ``on_receipt`` is set before the connection is made.
    """

    def __init__(
        self,
        collector: str,
        broker: MqttUrl,
        loop: asyncio.AbstractEventLoop,
        *,
        tls: TlsFiles | None = None,
        keepalive_s: int = 30,
        backoff: Backoff | None = None,
        client_id: str | None = None,
        subscribe_commands: bool = True,
    ) -> None:
        self.collector = collector
        self.broker = broker
        self._loop = loop
        self.backoff = backoff or Backoff()
        self._keepalive = keepalive_s
        self._subscribe_commands = subscribe_commands
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.on_connected: Callable[[], None] | None = None
        self.on_disconnected: Callable[[], None] | None = None
        self.on_ack: Callable[[int], None] | None = None
        self.on_command: Callable[[Command], None] | None = None
        self.on_receipt: Callable[[IngestReceipt], None] | None = None
        self.last_error: str | None = None

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"imd-edge-{collector}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            tls = tls or TlsFiles()
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.client_cert) if tls.client_cert else None,
                keyfile=str(tls.client_key) if tls.client_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        # Central learns of a crash or power cut from the broker: retained "offline".
        client.will_set(status_topic(collector), _offline(collector), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _call(self, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed during shutdown
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("MQTT %s refused the connection: %s", self.broker.redacted(), reason)
            return
        self.backoff.reset()
        self.connects += 1
        self.last_error = None
        log.info("MQTT connected to %s", self.broker.redacted())
        if self._subscribe_commands:
            client.subscribe(command_topic(self.collector), qos=1)
        if self.on_receipt is not None:
            client.subscribe(receipt_topic(self.collector), qos=1)
        # Replaces the retained will/offline at once; the daemon's heartbeat adds the health figures.
        online = CollectorStatus(collector=self.collector, state=CollectorState.ONLINE, at=datetime.now(UTC))
        client.publish(status_topic(self.collector), encode(online), qos=1, retain=True)
        self._call(self._set_connected, True)
        self._call(self.on_connected)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._stop.is_set():
            log.warning("MQTT connection to %s lost: %s", self.broker.redacted(), reason)
        self._call(self._set_connected, False)
        self._call(self.on_disconnected)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        self._call(self.on_ack, mid)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == receipt_topic(self.collector):
            try:
                receipt = parse_receipt(bytes(message.payload))
            except Exception as exc:  # whatever arrives, the network thread must survive
                log.warning("ignoring malformed receipt on %s: %s", message.topic, exc)
                return
            if receipt.collector != self.collector:
                log.warning("ignoring a receipt for collector %r on our topic", receipt.collector)
                return
            self._call(self.on_receipt, receipt)
            return
        try:
            command = parse_command(bytes(message.payload))
        except Exception as exc:  # whatever arrives, the network thread must survive
            log.warning("ignoring malformed command on %s: %s", message.topic, exc)
            return
        self._call(self.on_command, command)

    def _set_connected(self, value: bool) -> None:
        if value:
            self.connected.set()
        else:
            self.connected.clear()

    # -- network thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.collector}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = self.client
        first = True
        try:
            while not self._stop.is_set():
                try:
                    if first:
                        client.connect(self.broker.host, self.broker.port, keepalive=self._keepalive)
                        first = False
                    else:
                        client.reconnect()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self.last_error = f"cannot connect: {exc}"
                    delay = self.backoff.next()
                    log.warning("MQTT %s: %s; retry in %.1f s", self.broker.redacted(), exc, delay)
                    self._stop.wait(delay)
                    continue
                while True:
                    rc = client.loop(timeout=0.5)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                if self._stop.is_set():
                    break
                delay = self.backoff.next()
                log.info("MQTT reconnect to %s in %.1f s", self.broker.redacted(), delay)
                self._stop.wait(delay)
        finally:
            self._call(self._set_connected, False)
            # paho's socket pair is only closed in __del__; close it now so nothing leaks.
            reset = getattr(client, "_reset_sockets", None)
            if reset is not None:
                reset()

    # -- used from the asyncio loop -------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return int(info.mid)

    def publish_info(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    async def stop(self, *, offline: bool = True, timeout_s: float = 3.0) -> None:
        """Say "offline" (retained), disconnect cleanly and end the network thread."""
        if self._thread is None:
            return
        if offline and self.connected.is_set():
            info = self.client.publish(
                status_topic(self.collector), _offline(self.collector), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):  # link dropped meanwhile: the will says it
                await asyncio.to_thread(info.wait_for_publish, timeout_s)
        self._stop.set()
        self.client.disconnect()
        await asyncio.to_thread(self._thread.join, timeout_s + 2)
        self._thread = None


DeleteAfter = Literal["receipt", "puback"]


class OutboxPublisher:
    """Publish outbox rows in batches; delete them on central's receipt (or, with
    ``delete_after="puback"``, on the broker's PUBACK). Runs as one asyncio task."""

    def __init__(
        self,
        collector: str,
        outbox: Outbox,
        connection: MqttConnection,
        *,
        batch_max_frames: int = 100,
        max_inflight: int = 10,
        resend_after_s: float = 120.0,
        delete_after: DeleteAfter = "receipt",
        receipt_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = collector
        self.outbox = outbox
        self.connection = connection
        self.batch_max_frames = batch_max_frames
        self.max_inflight = max_inflight
        self.resend_after_s = resend_after_s
        self.delete_after = delete_after
        self.receipt_timeout_s = receipt_timeout_s
        # Injected so tests can let days pass during a broker outage without waiting for them.
        self.clock = clock
        self._inflight: dict[int, tuple[list[int], float]] = {}
        self._acks: deque[int] = deque()
        self._receipts: deque[IngestReceipt] = deque()
        # Rows acknowledged by the broker, oldest first: (link time of the PUBACK, their sequences).
        self._awaiting: deque[tuple[float, list[int]]] = deque()
        self._awaiting_loaded = False
        # Link time: seconds with the link up, so an outage never makes receipts "late".
        self._link_s = 0.0
        self._up_since: float | None = None
        self._wake = asyncio.Event()
        self.published_frames = 0
        self.acked_frames = 0
        self.receipted_frames = 0
        self.republished_frames = 0  # acknowledged by the broker, no receipt in time, published again
        connection.on_ack = self._ack
        connection.on_connected = self._connected
        connection.on_disconnected = self._disconnected
        if delete_after == "receipt":
            connection.on_receipt = self._receipt

    def _connected(self) -> None:
        # paho re-sends every unacknowledged QoS 1 message (same mid) right after a reconnect, so
        # the resend clock of what is in flight starts again now. Counting the outage itself would
        # make the safety net below publish those rows a second time after any outage longer than
        # ``resend_after_s``: a duplicate at central for every long outage.
        now = self.clock()
        for mid, (seqs, _sent) in list(self._inflight.items()):
            self._inflight[mid] = (seqs, now)
        if self._up_since is None:
            self._up_since = now
        self.wake()

    def _disconnected(self) -> None:
        if self._up_since is not None:
            self._link_s += max(self.clock() - self._up_since, 0.0)
            self._up_since = None

    def link_time(self) -> float:
        """Seconds the link has been up since this publisher started."""
        up = max(self.clock() - self._up_since, 0.0) if self._up_since is not None else 0.0
        return self._link_s + up

    @property
    def awaiting_frames(self) -> int:
        return self.outbox.awaiting

    def wake(self) -> None:
        """New rows in the outbox, or the link came up: look for work."""
        self._wake.set()

    @property
    def inflight_frames(self) -> int:
        return sum(len(seqs) for seqs, _ in self._inflight.values())

    def _inflight_sequences(self) -> set[int]:
        return {s for seqs, _ in self._inflight.values() for s in seqs}

    async def _handle_ack(self, mid: int) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # a status or command-result message, or a batch given up on after a resend
        if self.delete_after == "puback":
            self.acked_frames += await self.outbox.delete(entry[0])
        else:
            # The broker has it, which is not yet central having it: wait for the receipt. A row
            # receipted already (the receipt overtook this PUBACK) is gone and changes nothing.
            await self.outbox.mark_published(entry[0])
            self.acked_frames += len(entry[0])
            self._awaiting.append((self.link_time(), entry[0]))
        self._wake.set()

    async def _handle_receipt(self, receipt: IngestReceipt) -> None:
        self.receipted_frames += await self.outbox.delete_ranges(receipt.ranges)
        # Batches whose rows are all gone need no expiry: without this every sequence published
        # stayed in memory for receipt_timeout_s (~28,000 at 93 frames/s and 300 s, ~1.5 MB RSS).
        spans = receipt.ranges
        awaiting = self._awaiting
        while awaiting and all(any(lo <= s <= hi for lo, hi in spans) for s in awaiting[0][1]):
            awaiting.popleft()

    async def _expire_receipts(self) -> None:
        """Rows acknowledged by the broker but not receipted within the timeout: pending again."""
        if not self._awaiting_loaded:
            self._awaiting_loaded = True
            again = await self.outbox.requeue_awaiting()
            if again:
                log.info("%d frame(s) published by an earlier run were never receipted: publishing them"
                         " again", again)
                self.republished_frames += again
        now = self.link_time()
        again = 0
        while self._awaiting and now - self._awaiting[0][0] > self.receipt_timeout_s:
            _at, seqs = self._awaiting.popleft()
            again += await self.outbox.mark_pending(seqs)
        if again:
            self.republished_frames += again
            log.warning("%d frame(s) acknowledged by the broker but not receipted by central within %.0f s"
                        " of link time: publishing them again", again, self.receipt_timeout_s)

    async def _fill(self) -> None:
        if not self.connection.connected.is_set():
            return  # an outage is no reason to give up on what is in flight: paho re-sends it
        now = self.clock()
        # Safety net: a batch not acknowledged long after being sent on a live link is sent again
        # (central de-duplicates on the sequence numbers: a duplicate costs bandwidth, never a reading).
        for mid, (_seqs, sent) in list(self._inflight.items()):
            if now - sent > self.resend_after_s:
                log.warning("batch mid %d not acknowledged after %.0f s: publishing its frames again",
                            mid, now - sent)
                del self._inflight[mid]
        if self.delete_after == "receipt":
            await self._expire_receipts()
        while self.connection.connected.is_set() and len(self._inflight) < self.max_inflight:
            items = await self.outbox.peek(self.batch_max_frames, exclude=self._inflight_sequences())
            if not items:
                return
            sent_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            # The rows already hold validated FrameMessage JSON: splice them instead of re-parsing.
            payload = (
                b'{"schema_version":1,"collector":"'
                + self.collector.encode()
                + b'","sent_at":"'
                + sent_at.encode()
                + b'","frames":['
                + b",".join(i.payload for i in items)
                + b"]}"
            )
            mid = self.connection.publish(frames_topic(self.collector), payload, qos=1)
            # No await between publish and this line: the ack callback cannot run before it.
            self._inflight[mid] = ([i.sequence for i in items], self.clock())
            self.published_frames += len(items)

    def _ack(self, mid: int) -> None:
        self._acks.append(mid)
        self._wake.set()

    def _receipt(self, receipt: IngestReceipt) -> None:
        self._receipts.append(receipt)
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while self._acks:
                    await self._handle_ack(self._acks[0])
                    self._acks.popleft()
                while self._receipts:
                    await self._handle_receipt(self._receipts[0])
                    self._receipts.popleft()
                await self._fill()
            except (OSError, ValueError, sqlite3.Error) as exc:
                # A disk hiccup must not end publishing for good: log, breathe, try again.
                log.error("outbox publisher: %s; retrying in 1 s", exc)
                await asyncio.sleep(1.0)
                continue
            if not self._acks and not self._receipts:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set, and stop() then waits for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._wake.wait()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight (tests, ``--once``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.depth == 0 and not self._inflight:
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return self.outbox.depth == 0 and not self._inflight
