"""Any bytes -> a result or a ProtocolError, for every new decoder and framing; imd decode on wM-Bus."""

from __future__ import annotations

import contextlib
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from wmbus_golden import GOLDEN

from imd.decode_cli import decode_lines, parse_keys
from protocols.decode import decode_frame_json, decode_frame_json_line
from protocols.errors import ProtocolError
from protocols.sticks import amber, imst
from protocols.sticks.rtlwmbus import parse_rtlwmbus_line
from protocols.wmbus import FormatCache, FragmentReassembler, decode_wmbus, parse_link

SEEDS = [bytes.fromhex(g.hex) for g in GOLDEN]
# the OMS mode 5 example uses another key for the same meter id as the mode 7 ones: left out here
BATCH = [g for g in GOLDEN if g.name != "oms_gas_mode5_crc_a"]
KEYS = {g.key_id: bytes.fromhex(g.key) for g in BATCH if g.key_id and g.key}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        choice = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if choice == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif choice == 1 and data:
            del data[pos]
        elif choice == 2:
            data.insert(pos, draw(st.integers(0, 255)))
        else:
            data[0] = len(data) - 1 if data else 0  # keep L consistent so deeper layers are reached
    return bytes(data)


frames = st.one_of(st.binary(max_size=300), mutated())


@settings(max_examples=400, deadline=None)
@given(frames)
def test_decode_wmbus_never_raises_other_errors(raw: bytes) -> None:
    formats = FormatCache()
    fragments = FragmentReassembler()
    reasons = []
    for keys in (None, KEYS):
        try:
            decode_wmbus(raw, keys, formats=formats, fragments=fragments)
        except ProtocolError as exc:
            reasons.append(str(exc))
    assert all(reasons), "every ProtocolError carries a reason"
    with contextlib.suppress(ProtocolError):
        parse_link(raw)
    obj = decode_frame_json(raw, KEYS)
    ok, _ = decode_frame_json_line(raw, KEYS)
    assert ok is obj["ok"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_stick_parsers_never_raise_and_stay_bounded(data: bytes) -> None:
    hci = imst.HciParser()
    amb = amber.AmberParser()
    for i in range(0, len(data), 37):
        for frame in hci.feed(data[i : i + 37]):
            if frame.is_telegram:
                imst.wmbus_telegram(frame)
        for aframe in amb.feed(data[i : i + 37]):
            if aframe.is_telegram:
                amber.wmbus_telegram(aframe)
        assert hci.pending <= 266
        assert amb.pending <= 259


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_rtlwmbus_lines_never_raise_other_errors(line: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rtlwmbus_line(line)


def test_imd_decode_json_wireless_with_keys() -> None:
    keys = parse_keys([f"{k}={v.hex().upper()}" for k, v in KEYS.items()])
    out = io.StringIO()
    failed = decode_lines([g.hex for g in BATCH] + ["2A442D2C99"], keys, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert failed == 1
    assert len(lines) == len(BATCH) + 1
    assert all(obj["ok"] and obj["link"] == "wmbus" for obj in lines[:-1])
    mc21 = next(obj for obj, g in zip(lines, BATCH, strict=False) if g.name == "kamstrup_mc21_ctr_compact")
    assert mc21["id"] == "76348799"
    assert mc21["records"][1]["value"] == 6.409
    assert lines[-1]["ok"] is False


def test_imd_decode_missing_key_names_meter_not_key() -> None:
    out = io.StringIO()
    mc21 = next(g for g in GOLDEN if g.name == "kamstrup_mc21_ctr_full")
    assert decode_lines([mc21.hex], None, out) == 1
    assert json.loads(out.getvalue())["error"] == "key missing for meter 76348799"
    out = io.StringIO()
    decode_lines([mc21.hex], {"76348799": bytes(16)}, out, as_json=False)
    assert "decryption failed for meter 76348799 (wrong key?)" in out.getvalue()
    assert (mc21.key or "").lower() not in out.getvalue().lower()


def test_rtlwmbus_rssi_field_takes_ascii_digits_only() -> None:
    """Found by ``make fuzz``: "²" and "--5" pass str.isdigit() but not int(); no RSSI, no crash."""
    telegram = SEEDS[0].hex()
    for rssi in ("51²147", "--5", "-", "٣"):
        line = parse_rtlwmbus_line(f"T1;1;1;2019-04-03 19:00:42.000;{rssi};148;12345678;0x{telegram}")
        assert line.rssi is None
        assert line.telegram == SEEDS[0]
    assert parse_rtlwmbus_line(f"T1;1;1;2019-04-03 19:00:42.000;-97;148;12345678;0x{telegram}").rssi == -97


def test_rtlwmbus_rssi_with_a_control_character_is_dropped() -> None:
    """Found by ``make fuzz``: "-1\\x1f" strips to "-1" but int() of the unstripped field fails."""
    line = parse_rtlwmbus_line(f"S1;1;1;2019-04-03 19:00:42.000;-1\x1f;11;12345678;0x{SEEDS[0].hex()}")
    assert line.rssi == -1
