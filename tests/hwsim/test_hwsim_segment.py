"""The virtual M-Bus segment on a real pseudo-terminal, driven with pyserial like a collector does."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import serial
from hwsim.building import build_building
from hwsim.clock import SimClock
from hwsim.segment import BITS_PER_BYTE, MbusSegment, superimpose

from protocols.mbus.application import decode_long_frame
from protocols.mbus.link import (
    Garbage,
    LinkParser,
    LongFrame,
    long_frame,
    req_ud2,
    select_secondary,
    short_frame,
    snd_nke,
    snd_ud,
)
from protocols.site import Medium

AT = datetime(2025, 2, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def sim():
    return build_building(seed=1, apartments=3)


@pytest.fixture
def segment(sim):
    with MbusSegment(sim.meters, clock=SimClock(AT, speed=0)) as seg:
        yield seg


@pytest.fixture
def port(segment):
    with serial.Serial(segment.port, 2400, parity=serial.PARITY_EVEN, timeout=0.3) as ser:
        yield ser


def _exchange(ser: serial.Serial, request: bytes, quiet: float = 0.15) -> bytes:
    """Send and read until the line has been quiet for ``quiet`` seconds."""
    ser.reset_input_buffer()
    ser.write(request)
    data = b""
    deadline = time.monotonic() + 3
    last = time.monotonic()
    while time.monotonic() < deadline:
        chunk = ser.read(ser.in_waiting or 1)
        if chunk:
            data += chunk
            last = time.monotonic()
        elif time.monotonic() - last > quiet:
            break
    return data


def _frames(data: bytes) -> list[object]:
    parser = LinkParser()
    return parser.feed(data) + parser.flush()


def test_snd_nke_answers_e5_and_unknown_address_stays_silent(port):
    assert _exchange(port, snd_nke(1)) == b"\xe5"
    assert _exchange(port, snd_nke(200)) == b""


def test_req_ud2_returns_the_meters_long_frame(sim, port):
    meter = sim.meters[2]
    raw = _exchange(port, req_ud2(meter.primary_address, fcb=True))
    frames = _frames(raw)
    assert len(frames) == 1
    assert isinstance(frames[0], LongFrame)
    telegram = decode_long_frame(raw)
    assert telegram.id == f"{meter.ident:08d}"
    assert telegram.manufacturer == meter.manufacturer


def test_fcb_walks_a_multi_telegram_readout_and_repeats_on_same_fcb(sim, port):
    meter = next(m for m in sim.meters if m.medium is Medium.ELECTRICITY)
    address = meter.primary_address
    assert _exchange(port, snd_nke(address)) == b"\xe5"
    first = _exchange(port, req_ud2(address, fcb=True))
    again = _exchange(port, req_ud2(address, fcb=True))  # master missed it: same FCB, same telegram
    second = _exchange(port, req_ud2(address, fcb=False))
    wrapped = _exchange(port, req_ud2(address, fcb=True))
    t1, t2, t3 = decode_long_frame(first), decode_long_frame(second), decode_long_frame(wrapped)
    assert again == first
    assert t1.more_records_follow
    assert not t2.more_records_follow
    assert t3.more_records_follow  # after the last telegram the readout starts over
    assert t2.access_number == (t1.access_number + 1) & 0xFF
    assert any(r.unit == "V" for r in t2.records)


def test_secondary_selection_with_wildcards_and_collision(sim, port, segment):
    meter = sim.meters[5]
    secondary = meter.secondary_address(AT)
    assert _exchange(port, select_secondary(secondary)) == b"\xe5"
    raw = _exchange(port, req_ud2(253, fcb=True))
    assert decode_long_frame(raw).id == f"{meter.ident:08d}"
    # id given, manufacturer/version/medium wildcards: still exactly one meter
    assert _exchange(port, select_secondary(secondary[:8] + "FFFFFFFF")) == b"\xe5"
    # every meter matches: all answer E5 at once and the master sees a garbled line
    collisions = segment.stats.collisions
    garbled = _exchange(port, select_secondary("F" * 16))
    assert garbled
    assert garbled != b"\xe5"
    assert any(isinstance(f, Garbage) for f in _frames(garbled)) or len(garbled) > 1
    assert segment.stats.collisions == collisions + 1
    # nothing matches: silence; SND_NKE to 253 deselects
    assert _exchange(port, select_secondary("99999999FFFFFFFF")) == b""
    assert _exchange(port, req_ud2(253, fcb=False)) == b""


def test_bad_checksum_requests_are_ignored(port, segment):
    bad = bytearray(req_ud2(1, fcb=True))
    bad[3] ^= 0x55
    assert _exchange(port, bytes(bad)) == b""
    assert segment.stats.ignored >= 1
    # the segment is still in sync afterwards
    assert _exchange(port, snd_nke(1)) == b"\xe5"


def test_set_primary_address(sim, port):
    meter = sim.meters[0]
    assert _exchange(port, snd_ud(meter.primary_address, 0x51, bytes((0x01, 0x7A, 200)))) == b"\xe5"
    assert meter.primary_address == 200
    assert _exchange(port, snd_nke(200)) == b"\xe5"


def test_echo_like_a_cheap_level_converter(sim):
    with (
        MbusSegment(sim.meters, echo=True, clock=SimClock(AT, speed=0)) as seg,
        serial.Serial(seg.port, 2400, parity=serial.PARITY_EVEN, timeout=0.3) as ser,
    ):
        request = snd_nke(1)
        assert _exchange(ser, request) == request + b"\xe5"


def test_silent_meter_and_checksum_faults_match_the_truth_log(sim, tmp_path):
    truth = tmp_path / "truth.jsonl"
    sim.faults.set_truth_log(truth)
    silent, noisy = sim.meters[0], sim.meters[1]
    sim.faults.inject(silent, "silent", AT)
    sim.faults.inject(noisy, "checksum", AT, probability=0.5)
    with (
        MbusSegment(sim.meters, clock=SimClock(AT, speed=0)) as seg,
        serial.Serial(seg.port, 2400, parity=serial.PARITY_EVEN, timeout=0.3) as ser,
    ):
        assert _exchange(ser, snd_nke(silent.primary_address)) == b""
        bad = 0
        polls = 12
        for i in range(polls):
            raw = _exchange(ser, req_ud2(noisy.primary_address, fcb=bool(i % 2)), quiet=0.08)
            assert len(raw) > 50
            if not any(isinstance(f, LongFrame) for f in _frames(raw)):
                bad += 1
    lines = truth.read_text().splitlines()
    import json

    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["fault"]) for e in events[:2]] == [("fault", "silent"), ("fault", "checksum")]
    occurrences = [e for e in events if e["event"] == "occurrence"]
    assert all(e["meter"] == f"{noisy.ident:08d}" and e["fault"] == "checksum" for e in occurrences)
    assert len(occurrences) == bad
    assert 0 < bad < polls


def test_collision_helper_garbles_identical_answers():
    assert superimpose([b"\xe5"], [0]) == b"\xe5"
    assert superimpose([b"\xe5", b"\xe5"], [0, 0]) == b"\xe5"  # perfectly aligned: the AND is invisible
    assert superimpose([b"\xe5", b"\xe5"], [0, 3]) != b"\xe5"


def test_long_frame_to_unknown_ci_is_acknowledged(port, sim):
    # application reset (CI 50h) to a meter: E5, as EN 13757-3 asks
    assert _exchange(port, long_frame(0x53, sim.meters[0].primary_address, 0x50)) == b"\xe5"
    assert _exchange(port, short_frame(0x5B, 255)) == b""  # broadcast without reply


def test_timed_mode_holds_the_line_speed(sim):
    baud = 2400
    with (
        MbusSegment(sim.meters, timed=True, baud=baud, clock=SimClock(AT, speed=0)) as seg,
        serial.Serial(seg.port, baud, parity=serial.PARITY_EVEN, timeout=2) as ser,
    ):
        ser.reset_input_buffer()
        total_bytes = 0
        total_time = 0.0
        for meter in (sim.meters[0], sim.meters[4]):  # a heat meter: the longest answers
            request = req_ud2(meter.primary_address, fcb=True)
            ser.write(request)
            sent = time.monotonic()
            first = ser.read(1)
            first_at = time.monotonic()
            assert first == b"\x68"
            header = ser.read(3)
            length = header[0] + 6
            rest = ser.read(length - 4)
            done = time.monotonic()
            assert len(rest) == length - 4
            # request on the wire, then the meter's answer delay (11 bit times .. 50 ms)
            delay = first_at - sent
            assert len(request) * BITS_PER_BYTE / baud < delay < 0.15
            total_bytes += length - 1
            total_time += done - first_at
        measured = total_bytes * BITS_PER_BYTE / total_time
        assert measured == pytest.approx(baud, rel=0.05), f"{measured:.0f} baud"
