"""Fleets for load tests: many properties' meters published straight to MQTT as collectors would.

Each property gets its own collector id and the frames a collector would have read from its bus
(every telegram of every meter), wrapped in :class:`protocols.messages.FrameBatch` messages on
``imd/v1/<collector>/frames``. Sequence numbers are derived from the simulated readout time, so a
rerun with the same seed and start sends the same (collector, sequence) pairs and ingest dedupes.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hwsim import climate
from hwsim.building import SimBuilding, build_building
from protocols.messages import FrameBatch, FrameMessage, FrameStatus, LinkKind, encode, frames_topic
from protocols.mqtturl import parse_mqtt_url


@dataclass
class FleetProperty:
    collector: str
    sim: SimBuilding


class Fleet:
    """``properties`` simulated properties of ``apartments`` apartments each; same seed, same fleet."""

    def __init__(self, seed: int = 1, properties: int = 10, apartments: int = 12) -> None:
        self.seed = seed
        # One set of identification numbers for the whole fleet: drawn per property, 40,000 random
        # 8-digit numbers collide (26 pairs in a 200-property fleet), and central then keeps the
        # later property's meter, leaving the earlier one's point without a meter.
        taken: set[int] = set()
        self.properties = [
            FleetProperty(
                collector=f"fleet{seed}-{p:04d}",
                sim=build_building(
                    seed=int(climate.mix(seed, 500, p) % 1_000_000_000),
                    apartments=apartments,
                    property_id=f"FLEET{seed}-{p:04d}",
                    taken=taken,
                ),
            )
            for p in range(properties)
        ]

    @property
    def meter_count(self) -> int:
        return sum(len(p.sim.meters) for p in self.properties)

    def readout(self, prop: FleetProperty, at: datetime) -> list[FrameMessage]:
        """One full readout of a property's bus at simulated time ``at``."""
        base = int(at.timestamp()) * 1000
        frames: list[FrameMessage] = []
        for meter in prop.sim.meters:
            if meter.faults and meter.faults.silent(meter, at):
                frames.append(
                    FrameMessage(
                        sequence=base + len(frames), received_at=at, link=LinkKind.MBUS, port="mbus0",
                        address=str(meter.primary_address), status=FrameStatus.NO_ANSWER, reason="no answer",
                    )
                )  # fmt: skip
                continue
            for telegram in range(len(meter.layout)):
                raw = meter.rsp_ud(at, meter.primary_address, telegram)
                frames.append(
                    FrameMessage(
                        sequence=base + len(frames), received_at=at, link=LinkKind.MBUS, port="mbus0",
                        address=str(meter.primary_address), raw=raw.hex(),
                    )
                )  # fmt: skip
        return frames

    def batches(self, at: datetime, batch_size: int = 50) -> Iterator[tuple[str, FrameBatch]]:
        for prop in self.properties:
            frames = self.readout(prop, at)
            for i in range(0, len(frames), batch_size):
                yield (
                    prop.collector,
                    FrameBatch(collector=prop.collector, sent_at=at, frames=frames[i : i + batch_size]),
                )


@dataclass
class PublishResult:
    messages: int = 0
    frames: int = 0
    seconds: float = 0.0


def publish(
    fleet: Fleet,
    mqtt_url: str,
    *,
    start: datetime,
    rounds: int = 1,
    interval: timedelta = timedelta(hours=1),
    rate: float = 0.0,
    batch_size: int = 50,
    stop: threading.Event | None = None,
) -> PublishResult:
    """Publish ``rounds`` readouts of the whole fleet at QoS 1, at most ``rate`` frames per second."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"imd-sim-fleet-{fleet.seed}-{os.getpid()}")
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()
    client.connect(url.host, url.port, keepalive=30)
    client.loop_start()
    result = PublishResult()
    began = time.monotonic()
    stop = stop or threading.Event()
    try:
        n = 0
        while (rounds == 0 or n < rounds) and not stop.is_set():
            at = start + interval * n
            for collector, batch in fleet.batches(at, batch_size):
                info = client.publish(frames_topic(collector), encode(batch), qos=1)
                info.wait_for_publish(timeout=30)
                result.messages += 1
                result.frames += len(batch.frames)
                if rate > 0:
                    due = began + result.frames / rate
                    wait = due - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                if stop.is_set():
                    break
            n += 1
    finally:
        client.loop_stop()
        client.disconnect()
    result.seconds = time.monotonic() - began
    return result


def run_fleet_cli(args: argparse.Namespace) -> int:
    import signal

    from hwsim.faults import parse_time

    start = (
        parse_time(args.start, datetime.now(UTC)) if args.start else datetime.now(UTC).replace(microsecond=0)
    )
    url = args.mqtt_url or os.environ.get("IMD_MQTT_URL") or "mqtt://127.0.0.1:1883"
    fleet = Fleet(seed=args.seed, properties=args.properties, apartments=args.apartments)
    print(
        f"fleet: {len(fleet.properties)} properties, {fleet.meter_count} meters, seed {args.seed}", flush=True
    )
    if args.export_dir:
        out: Path = args.export_dir
        out.mkdir(parents=True, exist_ok=True)
        for prop in fleet.properties:
            (out / f"{prop.collector}.json").write_text(prop.sim.site.model_dump_json(indent=2) + "\n")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = publish(
            fleet, url, start=start, rounds=args.rounds, interval=timedelta(seconds=args.interval),
            rate=args.rate, batch_size=args.batch, stop=stop,
        )  # fmt: skip
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    per_s = result.frames / result.seconds if result.seconds else 0.0
    print(f"published {result.frames} frames in {result.messages} messages in {result.seconds:.1f} s "
          f"({per_s:.0f} frames/s)", flush=True)  # fmt: skip
    return 0
