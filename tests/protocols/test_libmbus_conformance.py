"""Golden conformance against the libmbus corpus (EN 13757-2/-3 frames from real meters).

Every numeric record libmbus normalizes (Wh, m^3, W, m^3/h, °C, K, s, V, A) must agree with us in
value, unit, storage number, tariff and subunit, except the few where libmbus is wrong; those are
listed in ``LIBMBUS_WRONG`` with the reasoning and our answer is pinned in a test below.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from mbus_corpus import (
    NUMERIC_UNITS,
    as_decimal,
    error_frame_paths,
    frame_bytes,
    good_frame_paths,
    libmbus_records,
)

from protocols.decode import decode_frame_json
from protocols.errors import ProtocolError
from protocols.mbus import LinkParser, LongFrame, decode_long_frame

FRAMES = good_frame_paths()
ERRORS = error_frame_paths()

# (frame, libmbus record id) -> why libmbus is wrong. Our value for each is pinned below.
LIBMBUS_WRONG = {
    # DIF 3Ch/3Bh (BCD, "value during error state") with data BD EB DD DD: hex digits B, D, E are not
    # decimal digits. EN 13757-3:2018 annex A (type A) allows only a leading F as the minus sign;
    # meters use A-F to show error patterns on a display. libmbus multiplies the nibbles as if they
    # were digits and invents 13131113 W.
    ("ELS_Elster-F96-Plus.hex", 4): "non-BCD digits",
    ("ELS_Elster-F96-Plus.hex", 5): "non-BCD digits",
    ("abb_f95.hex", 2): "non-BCD digits",
    ("abb_f95.hex", 3): "non-BCD digits",
    # VIF ADh/BBh + VIFE 6Fh: EN 13757-3 table 15, E110 1f1b = "date/time of end of last ...":
    # the data field then holds a time point (type F for 32 bit), not power or flow. libmbus ignores
    # the VIFE and reports 0 W / 0 m^3/h. The data is all zero, i.e. no valid time point.
    ("landis+gyr_ultraheat_t230.hex", 19): "time point VIFE",
    ("landis+gyr_ultraheat_t230.hex", 20): "time point VIFE",
}


def _close(ours: Decimal, theirs: Decimal, real32: bool) -> bool:
    # libmbus prints 6 decimals of a double: compare to that resolution (relative for big values).
    # A real32 carries ~7 significant digits; we give the shortest decimal of the same float32.
    relative = Decimal("1e-6") if real32 else Decimal("1e-12")
    return abs(ours - theirs) <= max(Decimal("0.0000011"), abs(theirs) * relative)


def _comparisons() -> tuple[int, int, list[str]]:
    total = matched = 0
    mismatches: list[str] = []
    for path in FRAMES:
        telegram = decode_long_frame(frame_bytes(path))
        for lib in libmbus_records(path):
            if lib.unit not in NUMERIC_UNITS:
                continue
            total += 1
            ours = telegram.records[lib.index]
            theirs = as_decimal(lib.value)
            if (
                isinstance(ours.value, Decimal)
                and theirs is not None
                and _close(ours.value, theirs, ours.dif_vif[0] & 0x0F == 0x05)
                and ours.unit == NUMERIC_UNITS[lib.unit]
                and (ours.storage, ours.tariff, ours.subunit) == (lib.storage, lib.tariff, lib.subunit)
            ):
                matched += 1
            else:
                mismatches.append(f"{path.name}#{lib.index}")
    return total, matched, mismatches


def test_numeric_records_match_libmbus(capsys: pytest.CaptureFixture[str]) -> None:
    total, matched, mismatches = _comparisons()
    explained = {f"{name}#{index}" for name, index in LIBMBUS_WRONG}
    unexplained = [m for m in mismatches if m not in explained]
    rate = (matched + len(mismatches) - len(unexplained)) / total
    with capsys.disabled():
        print(
            f"\nlibmbus conformance: {matched}/{total} numeric records agree with libmbus "
            f"({matched / total:.2%}); {len(mismatches) - len(unexplained)} differ where libmbus is wrong "
            f"(pinned); correct: {rate:.2%}"
        )
    assert total > 500
    assert unexplained == []
    assert rate >= 0.99
    assert matched / total >= 0.985


def test_libmbus_wrong_cases_are_pinned() -> None:
    by_name = {p.name: decode_long_frame(frame_bytes(p)) for p in FRAMES}
    for (name, index), reason in LIBMBUS_WRONG.items():
        record = by_name[name].records[index]
        if reason == "non-BCD digits":
            assert record.value is None
            assert record.error is not None
            assert record.error.startswith("non-BCD digits")
            assert record.function == "error"
        else:
            assert record.value is None  # all-zero type F: no valid time point
            assert record.unit == "datetime"
            assert record.error is not None
            assert "invalid date/time" in record.error


@pytest.mark.parametrize("path", FRAMES, ids=lambda p: p.name)
def test_header_matches_libmbus(path: Path) -> None:
    import xml.etree.ElementTree as ET

    text = path.with_suffix(".norm.xml").read_bytes().decode("latin-1").split("?>", 1)[-1]
    slave = ET.fromstring(text).find("SlaveInformation")
    assert slave is not None
    telegram = decode_long_frame(frame_bytes(path))
    assert telegram.id == slave.findtext("Id", "").zfill(8)  # libmbus drops leading zeros
    assert telegram.access_number == int(slave.findtext("AccessNumber", "-1"))
    assert telegram.status == int(slave.findtext("Status", "-1"), 16)
    manufacturer = slave.findtext("Manufacturer")
    if manufacturer is not None:
        assert telegram.manufacturer == manufacturer
        assert telegram.version == int(slave.findtext("Version", "-1"))


@pytest.mark.parametrize("path", FRAMES, ids=lambda p: p.name)
def test_frame_through_link_parser_whole_chunked_bytewise(path: Path) -> None:
    raw = frame_bytes(path)
    expected = decode_long_frame(raw)
    for chunk in (len(raw), 7, 1):
        parser = LinkParser()
        out = []
        for i in range(0, len(raw), chunk):
            out.extend(parser.feed(raw[i : i + chunk]))
        assert len(out) == 1, out
        frame = out[0]
        assert isinstance(frame, LongFrame)
        assert frame.raw == raw
        assert parser.pending == 0
        assert decode_long_frame(frame) == expected


def test_all_frames_in_one_stream_with_noise() -> None:
    stream = bytearray()
    raws = [frame_bytes(p) for p in FRAMES]
    for raw in raws:
        stream += b"\x00\xff" + raw  # line noise between answers
    parser = LinkParser()
    frames = []
    for i in range(0, len(stream), 13):
        frames.extend(f for f in parser.feed(bytes(stream[i : i + 13])) if isinstance(f, LongFrame))
    assert [f.raw for f in frames] == raws


@pytest.mark.parametrize("path", ERRORS, ids=lambda p: p.name)
def test_error_frames_get_a_clear_error(path: Path) -> None:
    raw = frame_bytes(path)
    with pytest.raises(ProtocolError) as info:
        decode_long_frame(raw)
    message = str(info.value)
    assert len(message) > 15
    result = decode_frame_json(raw)
    assert result["ok"] is False
    assert result["error"] == message


def test_error_frame_reasons() -> None:
    reasons = {p.name: decode_frame_json(frame_bytes(p))["error"] for p in ERRORS}
    assert "too busy" in reasons["application_busy.hex"]
    assert "more than 10 DIFEs" in reasons["too_many_dife.hex"]
    assert "more than 10 VIFEs" in reasons["too_many_vife.hex"]
    assert "premature end" in reasons["premature_end_of_data1.hex"]
    assert "header needs 12 bytes" in reasons["too_short_header.hex"]
    assert "unimplemented CI" in reasons["unimplemented_ci.hex"]
    assert "plain text VIF" in reasons["too_long_var_vif.hex"]


def test_fixed_data_structure_frames() -> None:
    # CI 73h: libmbus shows 1 l and "135, reserved but historic" (unit code 3Eh = unit of counter 1,
    # historic value). EN 13757-3 annex (fixed structure): 3Eh on counter 2 = same unit, stored value.
    telegram = decode_long_frame(frame_bytes(Path(FRAMES[0]).parent / "manual_frame2.hex"))
    assert telegram.medium == "water"
    first, second = telegram.records
    assert (first.value, first.unit, first.storage) == (Decimal("0.001"), "m3", 0)
    assert (second.value, second.unit, second.storage) == (Decimal("0.135"), "m3", 1)
    telegram = decode_long_frame(frame_bytes(Path(FRAMES[0]).parent / "sen_pollusonic_2.hex"))
    assert telegram.records[0].value == Decimal(6531000)
    assert telegram.records[0].unit == "Wh"
    assert telegram.records[1].value == Decimal("0.069")
    assert telegram.records[1].unit == "m3"


def test_dates_decode_like_libmbus() -> None:
    telegram = decode_long_frame(frame_bytes(Path(FRAMES[0]).parent / "ACW_Itron-BM-plus-m.hex"))
    assert telegram.records[4].value == dt.datetime(2014, 3, 13, 11, 11)
    # libmbus prints the all-zero type G date as "2000-00-00": no such day, so no value
    assert telegram.records[2].value is None
