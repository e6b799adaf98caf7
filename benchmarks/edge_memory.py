"""Collector memory (issue 6, point 7): steady-state RSS of the real ``imd edge run`` process with
250 wired meters on a simulated segment and 500 radio meters on a simulated iM871A stick, against a
real broker. Goal: <= 60 MB RSS.

The simulator runs in this process (threads: the M-Bus segment, the radio air and the stick); the
collector is a subprocess started as systemd starts it (the unit's ``Environment=`` settings
included), configured by ``imd edge config-from-site`` from the simulator's site export (so the
radio section and keys file are the generated ones). The radio meters transmit every few seconds
instead of every 16-32 s so each of the 500 is heard many times within a short run. RSS (VmRSS) is
sampled from ``/proc/<pid>/status`` after every completed poll cycle; the peak is VmHWM. The first
cycle is warm-up (imports, the outbox, the decoder's format cache filling); steady state is the
largest RSS seen after it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

GOAL_MB = 60.0
UNIT = Path(__file__).resolve().parents[1] / "deploy" / "edge" / "imd-edge.service"
POLL_DONE = re.compile(r"bus mbus0: (\d+) meter\(s\) read, (\d+) failed")


def proc_memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def default_mqtt_url() -> str:
    return os.environ.get("IMD_TEST_MQTT_URL") or os.environ.get("IMD_MQTT_URL") or "mqtt://127.0.0.1:1883"


@dataclass
class MemoryFigures:
    wired: int
    radio: int
    cycles: int
    radio_interval_s: float
    rss_kb: list[int] = field(default_factory=list)  # after each completed poll cycle
    hwm_kb: int = 0
    polls: list[tuple[int, int]] = field(default_factory=list)  # (read, failed) per cycle
    transmissions: int = 0
    delivered: int = 0  # telegrams the stick passed to the collector
    frames_published: int = 0
    radio_ids_published: int = 0
    wall_s: float = 0.0

    @property
    def steady_kb(self) -> int:
        after_warmup = self.rss_kb[1:] or self.rss_kb
        return max(after_warmup) if after_warmup else 0

    def report(self) -> str:
        mb = lambda kb: kb / 1024  # noqa: E731
        per_cycle = ", ".join(f"{mb(k):.1f}" for k in self.rss_kb)
        return "\n".join([
            f"collector `imd edge run` with {self.wired} wired meters (simulated segment) and {self.radio}"
            f" radio meters (simulated iM871A, every {self.radio_interval_s:g} s), {self.wall_s:.0f} s:",
            f"  poll cycles        {len(self.polls)}  (read/failed per cycle: "
            f"{', '.join(f'{r}/{f}' for r, f in self.polls)})",
            f"  radio              {self.transmissions} transmitted, {self.delivered} delivered by the stick"
            f" ({self.delivered / max(self.radio, 1):.1f} per meter)",
            f"  published          {self.frames_published} frames; {self.radio_ids_published} distinct radio"
            f" meters",
            f"  RSS per cycle (MB) {per_cycle}",
            f"  steady-state RSS   {mb(self.steady_kb):6.1f} MB  (goal <= {GOAL_MB:g} MB)",
            f"  peak RSS (VmHWM)   {mb(self.hwm_kb):6.1f} MB",
        ])  # fmt: skip


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The ``Environment=`` settings of the collector's systemd unit (MALLOC_ARENA_MAX among them:
    without it glibc gives each of the daemon's threads its own arena and the RSS creeps up)."""
    env: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in line.removeprefix("Environment=").split():
                name, _, value = assignment.partition("=")
                env[name] = value.strip('"')
    return env


class _FrameCounter:
    """Subscribes to the collector's frames to prove the whole path works while we measure, and
    answers each batch with central's end-to-end receipt, so the collector frees its outbox rows as
    it does in production (without receipts it would keep them and publish them again)."""

    def __init__(self, url: str, collector: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from central.receipts import publish_receipts
        from protocols.messages import frames_topic, parse_frame_batch
        from protocols.mqtturl import parse_mqtt_url

        broker = parse_mqtt_url(url)
        self.frames = 0
        self.radio_ids: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        topic = frames_topic(collector)

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            batch = parse_frame_batch(bytes(msg.payload))
            publish_receipts(self.client, [batch])
            with self._lock:
                self.frames += len(batch.frames)
                self.radio_ids.update(str(f.address) for f in batch.frames if f.link.value == "wmbus")

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{collector}")
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"no subscription at {broker.redacted()}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measure(
    *,
    wired: int = 250,
    radio: int = 500,
    cycles: int = 4,
    radio_interval_s: float = 3.0,
    poll_interval_s: int = 5,
    mqtt_url: str | None = None,
    workdir: Path | None = None,
    timeout_s: float | None = None,
) -> MemoryFigures:
    from hwsim.building import build_building
    from hwsim.radio import RadioAir, RadioStick
    from hwsim.segment import MbusSegment

    mqtt_url = mqtt_url or default_mqtt_url()
    # Every apartment has two radio water meters and two wired meters (heat, electricity).
    apartments = max(-(-radio // 2), -(-wired // 2))
    building = build_building(seed=7, apartments=apartments, main_meter=False, radio="imst",
                              radio_interval_s=radio_interval_s)  # fmt: skip
    bus_ids = {m.id for m in building.site.meters if m.link == "mbus" and m.bus == "mbus0"}
    on_bus = [m for m in building.meters if f"{m.ident:08d}" in bus_ids][:wired]
    bus_ids = {f"{m.ident:08d}" for m in on_bus}
    radio_meters = building.radio[:radio]
    radio_ids = {m.ident for m in radio_meters}
    site = building.site.model_copy(update={"meters": [
        m for m in building.site.meters if m.id in bus_ids or m.id in radio_ids
    ]})  # fmt: skip
    figures = MemoryFigures(wired=len(on_bus), radio=len(radio_meters), cycles=cycles,
                            radio_interval_s=radio_interval_s)  # fmt: skip
    collector = f"bench-mem-{os.getpid()}"
    if timeout_s is None:  # a cycle takes the poll interval when all is well; allow 3x that under load
        timeout_s = 120.0 + 3.0 * cycles * poll_interval_s
    with tempfile.TemporaryDirectory(prefix="imd-edge-mem-", dir=workdir) as tmp:
        base = Path(tmp)
        (base / "site.json").write_text(site.model_dump_json())
        segment = MbusSegment(on_bus)
        segment.start()
        air = RadioAir(radio_meters, seed=building.seed, start_within_s=radio_interval_s)
        stick = RadioStick("radio0", stick="imst").start()
        air.attach(stick)
        counter = _FrameCounter(mqtt_url, collector)
        proc: subprocess.Popen[str] | None = None
        try:
            config = base / "collector.toml"
            env = {**os.environ, **unit_environment(), "IMD_MQTT_URL": mqtt_url}
            imd = [sys.executable, "-m", "imd.cli"]
            subprocess.run([  # noqa: S603 - our own interpreter and arguments
                *imd, "edge", "config-from-site", str(base / "site.json"), "--port", segment.port,
                "--bus", "mbus0", "--collector", collector, "--interval", str(poll_interval_s),
                "--heartbeat", "5", "--radio-port", stick.port, "--forward-interval", "30",
                "-o", str(config),
            ], env=env, check=True, capture_output=True, text=True)  # fmt: skip
            air.start()
            started = time.monotonic()
            command = [*imd, "edge", "run", "--config", str(config)]
            proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE,  # noqa: S603 - as above
                                    stdout=subprocess.DEVNULL, text=True)  # fmt: skip
            assert proc.stderr is not None
            log_tail: list[str] = []
            for line in proc.stderr:
                log_tail = [*log_tail[-19:], line.rstrip()]
                match = POLL_DONE.search(line)
                if match:
                    figures.polls.append((int(match[1]), int(match[2])))
                    rss, hwm = proc_memory_kb(proc.pid)
                    figures.rss_kb.append(rss)
                    figures.hwm_kb = hwm
                    if len(figures.polls) >= cycles:
                        break
                if time.monotonic() - started > timeout_s:
                    break
            if len(figures.polls) < cycles:
                raise RuntimeError("collector did not finish its polls:\n" + "\n".join(log_tail))
            figures.hwm_kb = proc_memory_kb(proc.pid)[1]
            figures.wall_s = time.monotonic() - started
            # let the stderr pipe drain while we stop, so the collector never blocks on logging
            threading.Thread(target=proc.stderr.read, daemon=True).start()
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.stderr is not None:
                    proc.stderr.close()
            air.stop()
            stick.stop()
            segment.stop()
            counter.close()
        figures.transmissions = air.transmissions
        figures.delivered = stick.stats.telegrams
        figures.frames_published = counter.frames
        figures.radio_ids_published = len(counter.radio_ids)
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_memory", description=__doc__)
    parser.add_argument("--wired", type=int, default=250)
    parser.add_argument("--radio", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=4, help="poll cycles to run (the first is warm-up)")
    parser.add_argument("--radio-interval", type=float, default=3.0,
                        help="seconds between a meter's telegrams")
    parser.add_argument("--mqtt-url", default=None, help="default: $IMD_TEST_MQTT_URL or mqtt://127.0.0.1:1883")
    args, _ = parser.parse_known_args(argv)
    figures = measure(wired=args.wired, radio=args.radio, cycles=args.cycles,
                      radio_interval_s=args.radio_interval, mqtt_url=args.mqtt_url)  # fmt: skip
    print(figures.report(), flush=True)
    return 0 if figures.steady_kb / 1024 <= GOAL_MB else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
