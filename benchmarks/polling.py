"""Wired polling speed (issue 6, point 9): read a segment of meters in the simulator's timed mode and
compare the wall time with the physical minimum of the frames actually exchanged.

The segment holds the real line speed (11 bits per byte: start, 8 data, even parity, stop) and
answers after a per-meter delay (``hwsim.segment``); the master is the collector's own
``edge.bus.SerialBus`` reading meter after meter by primary address, as the nightly poll does.

Physical minimum = sum over every request and answer byte of 11 bit times, plus the shortest answer
delay EN 13757-2 allows (11 bit times) per answer. The report splits the measured time of each
exchange into line time, the meter's answer delay beyond that minimum, and the rest (master
turnaround: the time from an answer's last byte to the next request on the wire, plus OS latency).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

BITS_PER_BYTE = 11


@dataclass(frozen=True, slots=True)
class PollingFigures:
    meters: int
    baud: int
    read_ok: int
    requests: int
    answers: int
    bytes_on_wire: int
    wall_s: float
    minimum_s: float
    answer_delay_s: float  # the simulated meters' answer delays summed (what they cost beyond line time)
    failures: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        return self.wall_s / self.minimum_s

    @property
    def line_s(self) -> float:
        return self.bytes_on_wire * BITS_PER_BYTE / self.baud

    @property
    def turnaround_s(self) -> float:
        """Everything that is neither line time nor the meters' own answer delay."""
        return self.wall_s - self.line_s - self.answer_delay_s

    def report(self) -> str:
        bit = 1 / self.baud
        per = 1000 / max(self.requests, 1)
        return "\n".join([
            f"polled {self.meters} meters at {self.baud} baud (timed simulator): {self.read_ok} read, "
            f"{self.requests} requests, {self.answers} answers, {self.bytes_on_wire} bytes on the wire",
            f"  wall time         {self.wall_s:8.3f} s",
            f"  physical minimum  {self.minimum_s:8.3f} s  = {self.bytes_on_wire} bytes x 11 bit"
            f" / {self.baud} + {self.answers} answers x 11 bit ({11 * bit * 1000:.2f} ms)",
            f"  ratio             {self.ratio:8.3f}  (goal <= 1.15)",
            f"  where the time goes: line {self.line_s:.3f} s, meters' answer delays "
            f"{self.answer_delay_s:.3f} s (standard minimum {self.answers * 11 * bit:.3f} s), "
            f"master turnaround and OS {self.turnaround_s:.3f} s"
            f" ({self.turnaround_s * per:.2f} ms per request)",
        ])


def measure(meters: int = 250, baud: int = 2400, seed: int = 1) -> PollingFigures:
    from hwsim.building import build_building
    from hwsim.segment import MbusSegment

    from edge.bus import SerialBus

    building = build_building(seed=seed, apartments=max(1, math.ceil((meters - 1) / 4)))
    bus_meters = building.buses()["mbus0"][:meters]
    segment = MbusSegment(bus_meters, baud=baud, timed=True)
    segment.start()
    try:
        with SerialBus(segment.port, baud) as bus:
            # one untimed warm-up exchange so opening the port is not billed to the first meter
            bus.ping(bus_meters[0].primary_address, attempts=1)
            requests = answers = wire = ok = 0
            delay = 0.0
            t0 = time.perf_counter()
            results = [bus.read_meter(m.primary_address) for m in bus_meters]
            wall = time.perf_counter() - t0
        failures = []
        for meter, result in zip(bus_meters, results, strict=True):
            ok += result.answered
            if not result.ok:  # read in the end, but some attempt was corrupt or silent
                failures.append(f"meter {result.address} ({type(meter).__name__}): "
                                + "; ".join(f.reason or str(f.status) for f in result.frames))
            requests += result.requests
            got = len(result.exchanged) - result.requests
            answers += got
            wire += sum(len(x) for x in result.exchanged)
            delay += got * segment._delay_s(meter)  # the simulator's own per-meter figure
    finally:
        segment.stop()
    minimum = (wire + 11 / BITS_PER_BYTE * answers) * BITS_PER_BYTE / baud
    return PollingFigures(len(bus_meters), baud, ok, requests, answers, wire, wall, minimum, delay,
                          tuple(failures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.polling", description=__doc__)
    parser.add_argument("--meters", type=int, default=250, help="meters on the segment (1-250)")
    parser.add_argument("--baud", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=1)
    args, _unknown = parser.parse_known_args(argv)
    if not 1 <= args.meters <= 250:
        parser.error("--meters must be 1..250")
    figures = measure(args.meters, args.baud, args.seed)
    print(figures.report(), flush=True)
    if figures.failures:
        print(f"  {len(figures.failures)} meter(s) needed a retry or failed:", *figures.failures,
              sep="\n    ")
    return 0 if figures.read_ok == figures.meters else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
