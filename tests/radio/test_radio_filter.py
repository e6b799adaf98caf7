"""The collector's radio rules (edge/radio.py RadioFilter), with hand-made telegrams and times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.radio import Heard, KeysFileError, RadioFilter, load_meter_keys
from protocols.mbus.encode import data_record
from protocols.messages import FrameStatus, LinkKind
from protocols.wmbus.encode import RadioIdentity, encode_wmbus

KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
OURS = RadioIdentity("KAM", "11111111", 0x1B, 0x16)
OTHER = RadioIdentity("DME", "22222222", 0x20, 0x07)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def telegram(who: RadioIdentity, access: int, *, status: int = 0, litres: int = 1000, mode: int = 7) -> bytes:
    records = data_record(0x04, 0x13, litres) + data_record(0x02, 0xFD, 0, vife=b"\x17")
    return encode_wmbus(who, records, access_number=access, status=status, security_mode=mode,
                        key=KEY, message_counter=access, frame_format="none")  # fmt: skip


def heard(raw: bytes, t: float, *, stick: str = "radio0", rssi: int = -70) -> Heard:
    return Heard(stick, raw, rssi, "C1", T0, t)


def test_duplicates_by_content_from_one_or_two_sticks_are_dropped() -> None:
    f = RadioFilter(["11111111"], {"11111111": KEY})
    raw = telegram(OURS, 1)
    first = f.accept(heard(raw, 0.0), 0)
    assert first is not None
    assert f.accept(heard(raw, 0.5), 0) is None  # heard again (repeater)
    assert f.accept(heard(raw, 0.6, stick="radio1", rssi=-90), 0) is None  # heard by the second stick
    assert f.stats.duplicates == 2
    assert f.accept(heard(telegram(OURS, 2), 1.0), 0) is not None  # next access number: new content
    assert first.link is LinkKind.WMBUS
    assert (first.port, first.address, first.rssi, first.link_mode) == ("radio0", "11111111", -70, "C1")
    assert first.raw_bytes == raw
    assert first.decoded is not None
    assert first.decoded["decrypted"] is True


def test_meters_not_ours_are_surveyed_and_not_forwarded() -> None:
    f = RadioFilter(["11111111"], {"11111111": KEY})
    for i, rssi in enumerate((-95, -88, -91)):
        assert f.accept(heard(telegram(OTHER, i), float(i), rssi=rssi), 0) is None
    assert f.accept(heard(telegram(OTHER, 9), 9.0, stick="radio1", rssi=-99), 0) is None
    (entry,) = f.survey()
    assert (entry.id, entry.manufacturer, entry.count, entry.rssi_best, entry.rssi_last) == (
        "22222222", "DME", 4, -88, -99)  # fmt: skip
    assert entry.sticks == {"radio0", "radio1"}
    assert entry.as_message().model_dump()["device_type"] == 0x07
    assert f.stats.not_ours == 4
    assert f.stats.forwarded == 0


def test_one_per_interval_plus_every_status_change() -> None:
    f = RadioFilter(["11111111"], {"11111111": KEY})
    out = [f.accept(heard(telegram(OURS, i), t), 60.0) for i, t in enumerate((0.0, 16.0, 32.0, 48.0))]
    assert [m is not None for m in out] == [True, False, False, False]
    assert f.accept(heard(telegram(OURS, 10, status=0x04), 50.0), 60.0) is not None  # power low: at once
    assert f.accept(heard(telegram(OURS, 11, status=0x04), 55.0), 60.0) is None  # same status: limited
    assert f.accept(heard(telegram(OURS, 12), 58.0), 60.0) is not None  # back to normal: a change too
    assert f.accept(heard(telegram(OURS, 13), 118.5), 60.0) is not None  # interval since the last forward
    assert f.stats.status_changes == 2
    assert f.stats.rate_limited == 4


def test_status_change_is_seen_without_the_key_from_the_clear_header() -> None:
    f = RadioFilter(["11111111"], {})  # central has the key, the collector does not
    a = f.accept(heard(telegram(OURS, 1), 0.0), 600.0)
    assert a is not None
    assert a.status is FrameStatus.OK
    assert a.decoded is None  # forwarded raw, undecrypted
    assert f.accept(heard(telegram(OURS, 2), 1.0), 600.0) is None
    assert f.accept(heard(telegram(OURS, 3, status=0x08), 2.0), 600.0) is not None


def test_corrupted_telegrams_become_failed_frames_and_cannot_flood() -> None:
    f = RadioFilter(["11111111"], {"11111111": KEY}, failed_interval_s=60.0)
    bad = bytearray(telegram(OURS, 1, mode=5))
    bad[-3] ^= 0x10  # last encrypted block
    m = f.accept(heard(bytes(bad), 0.0), 0)
    assert m is not None
    assert m.status is FrameStatus.FAILED
    assert "11111111" in (m.reason or "")
    assert KEY.hex() not in (m.reason or "").lower()
    cut = telegram(OURS, 2, mode=7)[:-5]
    cut = bytes((len(cut) - 1,)) + cut[1:]  # a stick gives the L field of what it received
    assert f.accept(heard(cut, 1.0), 0) is None  # second failure of this meter within a minute: counted
    garbage = f.accept(heard(b"\x05\x44\x00", 2.0), 0)  # not even a link layer
    assert garbage is not None
    assert garbage.status is FrameStatus.FAILED
    assert garbage.address is None
    assert (f.stats.failed, f.stats.failed_suppressed) == (3, 1)
    assert f.accept(heard(telegram(OURS, 3), 3.0), 0) is not None  # and the next good one still goes


def test_telegrams_per_minute() -> None:
    f = RadioFilter([], {})
    for i in range(30):
        f.accept(heard(telegram(OTHER, i), 100.0 + i), 0)
    assert f.telegrams_per_min(now=130.0, window_s=60.0) == 30.0
    assert f.telegrams_per_min(now=1000.0) == 0.0


def test_keys_file_formats_and_errors(tmp_path: Path) -> None:
    text = tmp_path / "keys.txt"
    text.write_text("# site keys\n11111111=00112233445566778899AABBCCDDEEFF\n2222222a 00" + "11" * 15 + "\n")
    assert load_meter_keys(text) == {"11111111": KEY, "2222222A": bytes.fromhex("00" + "11" * 15)}
    js = tmp_path / "keys.json"
    js.write_text('{"11111111": "00112233445566778899aabbccddeeff"}')
    assert load_meter_keys(js) == {"11111111": KEY}
    bad = tmp_path / "bad.txt"
    bad.write_text("11111111=0011223344556677\n")
    with pytest.raises(KeysFileError, match="entry 1") as info:
        load_meter_keys(bad)
    assert "0011223344556677" not in str(info.value)


def test_recent_contents_expire_by_age_and_by_count_and_stay_small() -> None:
    import tracemalloc

    from edge.radio import _RecentContents

    recent = _RecentContents(window_s=300.0, capacity=3)
    assert not recent.seen(b"a", 0.0)
    assert recent.seen(b"a", 299.0)  # within the window
    assert not recent.seen(b"b", 299.5)
    assert not recent.seen(b"a", 300.5)  # "a" heard at 0.0: out of the window, new again
    assert not recent.seen(b"c", 301.0)
    assert len(recent) == 3
    assert not recent.seen(b"d", 302.0)  # full: the oldest ("b") goes
    assert len(recent) == 3
    assert not recent.seen(b"b", 303.0)
    assert recent.seen(b"d", 303.5)
    # The collector benchmark's air (500 meters every 3 s) fills the 20,000 of a 300 s window.
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    big = _RecentContents(window_s=300.0, capacity=20_000)
    for n in range(50_000):
        big.seen(n.to_bytes(4, "little") * 10, n * 0.006)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(big) == 20_000
    assert used < 20_000 * 40  # bytes per telegram remembered (an OrderedDict of digests: ~200)


@pytest.mark.parametrize("capacity", [1, 7, 50, 300])
def test_recent_contents_answer_as_a_plain_model_does(capacity: int) -> None:
    """Against a list of (content, time): the table's probing and backward-shift deletion lose
    nothing and keep nothing, also when probe runs wrap around the end of the table."""
    import random
    from collections import deque

    from edge.radio import _RecentContents

    rng = random.Random(capacity)
    recent = _RecentContents(window_s=10.0, capacity=capacity)
    model: deque[tuple[bytes, float]] = deque()
    now = 0.0
    for _ in range(20_000):
        now += rng.choice((0.0, 0.01, 0.1, 0.5, 3.0))
        content = rng.randrange(3 * capacity + 5).to_bytes(2, "little")
        while model and (now - model[0][1] > 10.0 or len(model) >= capacity):
            model.popleft()
        expected = any(c == content for c, _ in model)
        if not expected:
            model.append((content, now))
        assert recent.seen(content, now) is expected
        assert len(recent) == len(model)
