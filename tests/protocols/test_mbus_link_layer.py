"""EN 13757-2 link layer: frame parsing, the stream parser and the frames a master sends."""

from __future__ import annotations

import pytest

from protocols.errors import FrameError
from protocols.mbus import (
    ADDRESS_NETWORK_LAYER,
    ControlFrame,
    Garbage,
    LinkParser,
    LongFrame,
    ShortFrame,
    SingleChar,
    ack,
    application_reset,
    manufacturer_code,
    manufacturer_letters,
    parse_frame,
    req_ud1,
    req_ud2,
    rsp_ud,
    select_secondary,
    set_baud_rate,
    snd_nke,
)

LONG = bytes.fromhex("681c1c680802727856341224400107550000000313153100da023b13018b6004c716")


def test_master_frames_are_byte_exact() -> None:
    assert snd_nke(5) == bytes.fromhex("1040054516")
    assert req_ud2(5, fcb=False) == bytes.fromhex("105b056016")
    assert req_ud2(5, fcb=True) == bytes.fromhex("107b058016")
    assert req_ud1(1, fcb=False) == bytes.fromhex("105a015b16")
    assert ack() == b"\xe5"
    # application reset: SND_UD, CI 50h, optional subcode
    assert application_reset(1) == bytes.fromhex("6803036853015" + "0a416")
    assert application_reset(1, 0x10) == bytes.fromhex("680404685301501" + "0b416")
    # baud rate switch to 9600: CI BDh
    assert set_baud_rate(1, 9600) == bytes.fromhex("68030368530" + "1bd1116")
    with pytest.raises(ValueError, match="baud"):
        set_baud_rate(1, 1234)
    with pytest.raises(ValueError):
        snd_nke(256)


def test_select_secondary_with_wildcards() -> None:
    # libmbus order: id digits, manufacturer (high byte first), version, medium; wire is little-endian
    frame = select_secondary("123456782C2D0104")
    parsed = parse_frame(frame)
    assert isinstance(parsed, LongFrame)
    assert parsed.address == ADDRESS_NETWORK_LAYER
    assert parsed.ci == 0x52
    assert parsed.control == 0x53
    assert parsed.data == bytes.fromhex("785634122d2c0104")
    wild = parse_frame(select_secondary("1FFFFFFFFFFFFFFF"))
    assert isinstance(wild, LongFrame)
    assert wild.data == bytes.fromhex("ffffff1fffffffff")
    with pytest.raises(ValueError):
        select_secondary("123")
    with pytest.raises(ValueError):
        select_secondary("G" * 16)


def test_manufacturer_codes() -> None:
    assert manufacturer_code("KAM") == 0x2C2D
    assert manufacturer_letters(0x2C2D) == "KAM"
    for letters in ("ABB", "ELS", "ZRI", "AAA", "ZZZ"):
        assert manufacturer_letters(manufacturer_code(letters)) == letters
    with pytest.raises(ValueError):
        manufacturer_code("K4M")


def test_parse_every_frame_type() -> None:
    assert isinstance(parse_frame(b"\xe5"), SingleChar)
    short = parse_frame(req_ud2(7, fcb=True))
    assert isinstance(short, ShortFrame)
    assert (short.control, short.address, short.from_master) == (0x7B, 7, True)
    ctrl = parse_frame(set_baud_rate(3, 2400))
    assert isinstance(ctrl, ControlFrame)
    assert ctrl.ci == 0xBB
    long = parse_frame(LONG)
    assert isinstance(long, LongFrame)
    assert (long.control, long.address, long.ci, long.from_master) == (0x08, 0x02, 0x72, False)
    assert long.raw == LONG
    assert rsp_ud(2, 0x72, long.data) == LONG


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\xe5\xe5", "extra"),
        (bytes.fromhex("105b056116"), "checksum"),
        (bytes.fromhex("105b056017"), "stop byte"),
        (bytes.fromhex("105b05"), "5 bytes"),
        (LONG[:-1], "length field"),
        (LONG[:-1] + b"\x17", "stop byte"),
        (LONG[:-2] + b"\x00\x16", "checksum"),
        (LONG[:2] + b"\x1d" + LONG[3:], "differ"),
        (LONG[:3] + b"\x69" + LONG[4:], "second start"),
        (bytes.fromhex("680202680801" + "0b0916"), "minimum"),
        (b"\x42\x00", "start byte"),
    ],
)
def test_parse_frame_errors_are_clear(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        parse_frame(raw)


def test_stream_parser_resynchronises_after_garbage_and_collisions() -> None:
    parser = LinkParser()
    stream = b"\x00\x11" + LONG[:10] + b"\xff" + b"\xe5" + LONG + snd_nke(1)
    out = parser.feed(stream)
    frames = [x for x in out if not isinstance(x, Garbage)]
    garbage = [x for x in out if isinstance(x, Garbage)]
    assert frames[0] == SingleChar()
    assert isinstance(frames[1], LongFrame)
    assert frames[1].raw == LONG
    assert isinstance(frames[2], ShortFrame)
    assert frames[2].from_master  # an echo of our own request is recognisable
    dropped = b"".join(g.raw for g in garbage)
    assert dropped == b"\x00\x11" + LONG[:10] + b"\xff"
    assert all(g.reason for g in garbage)
    assert parser.pending == 0


def test_stream_parser_waits_for_partial_frames_and_flushes() -> None:
    parser = LinkParser()
    assert parser.feed(LONG[:5]) == []
    assert parser.pending == 5
    assert parser.feed(LONG[5:20]) == []
    out = parser.feed(LONG[20:])
    assert len(out) == 1
    assert isinstance(out[0], LongFrame)
    # a truncated answer is given up on at the end of the answer window
    assert parser.feed(LONG[:12]) == []
    flushed = parser.flush()
    assert flushed
    assert all(isinstance(x, Garbage) for x in flushed)
    assert b"".join(x.raw for x in flushed if isinstance(x, Garbage)) == LONG[:12]
    assert parser.pending == 0


def test_stream_parser_finds_frame_hidden_behind_fake_start() -> None:
    # a stray 68h whose "length" bytes differ is dropped at once, not waited on
    parser = LinkParser()
    out = parser.feed(b"\x68\x10\x11" + LONG)
    assert isinstance(out[-1], LongFrame)
    assert isinstance(out[0], Garbage)
    assert "differ" in out[0].reason
    # a fake frame with plausible header but a bad checksum: the real frame inside is still found
    fake = b"\x68\x05\x05\x68" + LONG[:7]
    parser = LinkParser()
    out = parser.feed(fake + LONG)
    assert [x.raw for x in out if isinstance(x, LongFrame)] == [LONG]


def test_stream_parser_memory_is_bounded() -> None:
    parser = LinkParser()
    for _ in range(200):
        parser.feed(b"\x68\xff\xff\x68" + b"\x00" * 50)
        assert parser.pending <= 261
