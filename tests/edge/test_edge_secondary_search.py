"""Secondary-address search: probes per found meter on a 250-meter bus with random ids.

The wire model reuses the simulator's own physics (``hwsim.segment``): selection matching and the
wired-AND superposition of answers that collide, with the same few-bit stagger. It runs in memory
(no pseudo-terminal) so a 250-meter search takes well under a second; the pty path itself is covered
by ``test_edge_bus_master.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hwsim.segment import secondary_matches, superimpose

from protocols.mbus.link import LinkParser, LongFrame, ShortFrame, rsp_ud
from protocols.mbus.master import Listen, Send
from protocols.mbus.search import SearchDone, SearchResult, SecondarySearch, matches, secondary_address_of


@dataclass(frozen=True)
class FakeMeter:
    ident: str  # 8 digits
    manufacturer: int
    version: int
    medium: int

    @property
    def secondary(self) -> str:
        return f"{self.ident}{self.manufacturer:04X}{self.version:02X}{self.medium:02X}"

    def rsp_ud(self) -> bytes:
        header = bytes.fromhex(self.ident)[::-1] + self.manufacturer.to_bytes(2, "little")
        tail = bytes((self.version, self.medium, 1, 0, 0, 0)) + b"\x0c\x13\x11\x22\x33\x44"  # + volume
        return rsp_ud(0, 0x72, header + tail)


class Wire:
    """Answers selections and REQ_UD2 like the simulated segment, colliding answers included."""

    def __init__(self, meters: list[FakeMeter], seed: int = 0) -> None:
        self.meters = meters
        self.selected: list[FakeMeter] = []
        self.rng = random.Random(seed)
        self.parser = LinkParser()

    def _answer(self, answers: list[bytes]) -> bytes:
        if len(answers) <= 1:
            return b"".join(answers)
        offsets = [self.rng.randrange(6) + 3 * i for i in range(len(answers))]
        return superimpose(answers, offsets)

    def request(self, data: bytes) -> bytes:
        out = b""
        for frame in self.parser.feed(data):
            if isinstance(frame, LongFrame) and frame.ci == 0x52 and frame.address == 253:
                self.selected = [
                    m for m in self.meters
                    if secondary_matches(frame.data, int(m.ident), m.manufacturer, m.version, m.medium)
                ]
                out += self._answer([b"\xe5"] * len(self.selected))
            elif isinstance(frame, ShortFrame) and frame.address == 253 and frame.control & 0x4F == 0x4B:
                out += self._answer([m.rsp_ud() for m in self.selected])
        return out


def run_search(wire: Wire, **kwargs: object) -> SearchResult:
    machine = SecondarySearch(**kwargs)  # type: ignore[arg-type]
    action = machine.start()
    while not isinstance(action, SearchDone):
        if isinstance(action, Send):
            answer = wire.request(action.data)
            action = machine.feed(answer) if answer else machine.timeout()
        else:
            assert isinstance(action, Listen)
            action = machine.timeout()  # the in-memory wire delivers whole answers at once
    return action.result


MODELS = [(0x2C2D, 0x35, 0x04), (0x2324, 0x20, 0x06), (0x2C2D, 0x1B, 0x16), (0x0442, 0x20, 0x02)]


def random_bus(n: int, seed: int) -> list[FakeMeter]:
    rng = random.Random(seed)
    ids = rng.sample(range(10**8), n)
    return [FakeMeter(f"{i:08d}", *MODELS[k % len(MODELS)]) for k, i in enumerate(ids)]


def libmbus_probes(meters: list[FakeMeter]) -> int:
    """Selections the libmbus scan (digits 0-9, one nibble deeper on collision) needs on the same bus."""
    probes = 0

    def scan(prefix: str) -> None:
        nonlocal probes
        for digit in "0123456789":
            mask = prefix + digit
            probes += 1
            hits = sum(1 for m in meters if m.ident.startswith(mask))
            if hits > 1 and len(mask) < 8:
                scan(mask)

    scan("")
    return probes


def test_probes_per_meter_on_250_random_meters() -> None:
    figures = []
    for seed in (1, 2, 3):
        meters = random_bus(250, seed)
        result = run_search(Wire(meters, seed))
        assert sorted(result.found) == sorted(m.secondary for m in meters)
        figures.append((result.probes / 250, libmbus_probes(meters) / 250, result.reads / 250))
    ours = sum(f[0] for f in figures) / len(figures)
    libmbus = sum(f[1] for f in figures) / len(figures)
    print(f"\nsecondary search, 250 meters with random ids: {ours:.2f} probes per found meter "
          f"(libmbus scan on the same buses: {libmbus:.2f}); REQ_UD2 reads per meter {figures[0][2]:.2f}")
    # Measured 4.3, the same as the libmbus scan on these buses. With three-valued answers (none /
    # one / collision, the wired-AND garbles everything else) and ten values per decimal digit, a
    # collision of two or three meters costs ten probes to split, so random ids sit near 4 probes per
    # meter for any tree search; the 1.5 goal is met only for dense (consecutive) ids, below.
    assert ours <= 4.5
    assert ours <= libmbus + 0.01  # we also probe the all-wildcard root, so one and zero meters cost 1


def test_dense_batch_of_consecutive_ids_is_cheap() -> None:
    # Meters bought in one batch have consecutive numbers: most significant digit first pays off.
    meters = [FakeMeter(f"{12340000 + i:08d}", *MODELS[i % 4]) for i in range(250)]
    result = run_search(Wire(meters))
    assert len(result.found) == 250
    print(f"\nconsecutive ids: {result.probes / 250:.2f} probes per meter")
    assert result.probes / 250 <= 1.5


def test_meters_with_hex_fields_and_shared_ids_are_found() -> None:
    # Two meters share an identification number and differ only in the medium (0x0F, hex) or in
    # the version (0xA7): libmbus, trying digits 0-9 only, cannot separate them.
    meters = [
        FakeMeter("11223344", 0x2C2D, 0x1B, 0x0F),
        FakeMeter("11223344", 0x2C2D, 0x1B, 0x16),
        FakeMeter("11223344", 0x2C2D, 0xA7, 0x16),
        FakeMeter("99887766", 0x0442, 0x20, 0x02),
    ]
    result = run_search(Wire(meters))
    assert sorted(result.found) == sorted(m.secondary for m in meters)


def test_secondary_address_helpers() -> None:
    meter = FakeMeter("12345678", 0x2C2D, 0x01, 0x04)
    (frame,) = LinkParser().feed(meter.rsp_ud())
    assert isinstance(frame, LongFrame)
    assert secondary_address_of(frame) == "123456782C2D0104"
    assert matches("12FFFFFFFFFFFFFF", "123456782C2D0104")
    assert matches("FFFFFFFF2C2DFF04", "123456782C2D0104")
    assert not matches("FFFFFFFF2C2DFF05", "123456782C2D0104")
    assert not matches("13FFFFFFFFFFFFFF", "123456782C2D0104")


def _batches(n: int, size: int, seed: int) -> list[FakeMeter]:
    """Meters bought in batches of ``size`` consecutive numbers, each batch somewhere random."""
    rng = random.Random(seed)
    out: list[FakeMeter] = []
    while len(out) < n:
        base = rng.randrange(10**8 - size)
        out += [FakeMeter(f"{base + i:08d}", *MODELS[i % len(MODELS)]) for i in range(size)]
    return out[:n]


def test_adaptive_split_resolves_small_batches() -> None:
    # 25 batches of 10 consecutive ids: most-significant-first walks each batch's common prefix one
    # digit at a time (about 7 probes per meter); "adaptive" splits a collision three or more digits
    # deep on the last digit (measured 2.4 over 8 buses) and is no worse on random ids.
    msb = adaptive = 0
    for seed in (1, 2):
        meters = _batches(250, 10, seed)
        for split in ("msb", "adaptive"):
            result = run_search(Wire(meters, seed), split=split)
            assert sorted(result.found) == sorted(m.secondary for m in meters)
            if split == "msb":
                msb += result.probes
            else:
                adaptive += result.probes
    print(f"\n25 batches of 10: msb {msb / 500:.2f}, adaptive {adaptive / 500:.2f} probes per meter")
    assert adaptive / 500 <= 3.0
    assert msb / 500 >= 6.0
