"""Any bytes give a frame/telegram or a typed ProtocolError, never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mbus_corpus import frame_bytes, good_frame_paths

from protocols.decode import decode_frame_json, decode_frame_json_line
from protocols.errors import ProtocolError
from protocols.mbus import LinkParser, decode_long_frame, decode_user_data, parse_frame
from protocols.mbus.link import long_frame

CORPUS = [frame_bytes(p) for p in good_frame_paths()]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A real frame with some user-data bytes changed, re-framed with a valid checksum."""
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    data = bytearray(raw[7:-2])
    for _ in range(draw(st.integers(1, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return long_frame(raw[4], raw[5], raw[6], bytes(data[:cut] if draw(st.booleans()) else data))


def _decode(raw: bytes) -> None:
    try:
        decode_long_frame(raw)
    except ProtocolError as exc:
        message = str(exc)
        assert message, "every ProtocolError carries a reason"


@SETTINGS
@given(st.binary(max_size=300))
def test_parse_frame_any_bytes(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_frame(raw)


@SETTINGS
@given(st.binary(max_size=300))
def test_decode_long_frame_any_bytes(raw: bytes) -> None:
    _decode(raw)


@SETTINGS
@given(mutated_frames())
def test_decode_mutated_real_frames(raw: bytes) -> None:
    _decode(raw)
    obj = decode_frame_json(raw)
    assert obj["ok"] in (True, False)
    ok, _line = decode_frame_json_line(raw)
    assert ok is obj["ok"]


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=260))
def test_decode_user_data_any_bytes(ci: int, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_user_data(ci, data)


@SETTINGS
@given(st.binary(max_size=300))
def test_decode_frame_json_never_raises(raw: bytes) -> None:
    obj = decode_frame_json(raw)
    assert obj["ok"] or obj["error"]


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=12), st.sampled_from(CORPUS))
def test_link_parser_any_stream(chunks: list[bytes], frame: bytes) -> None:
    parser = LinkParser()
    for chunk in chunks:
        parser.feed(chunk)
        assert parser.pending <= 261
    parser.flush()
    assert parser.pending == 0
    # after any garbage, a whole frame is still found
    out = parser.feed(b"\x00" + frame)
    assert any(getattr(x, "raw", None) == frame for x in out)
