"""Link layer CRC handling, compact frame cache, AFL fragments, status flags."""

from __future__ import annotations

from decimal import Decimal

import pytest
from wmbus_golden import GOLDEN, OMS_KEY

from protocols.errors import DecodeError, FrameError, SecurityError, UnsupportedError
from protocols.wmbus import (
    FormatCache,
    FormatUnknownError,
    FragmentPendingError,
    FragmentReassembler,
    add_crc_format_a,
    add_crc_format_b,
    decode_wmbus,
    parse_link,
)
from protocols.wmbus.status import kamstrup_water_durations

GOLD = {g.name: g for g in GOLDEN}


def _raw(name: str) -> bytes:
    return bytes.fromhex(GOLD[name].hex)


def test_format_a_crc_is_checked_and_removed() -> None:
    raw = _raw("oms_gas_mode5_crc_a")
    link = parse_link(raw)
    assert link.frame_format == "A"
    assert link.length == 0x2E
    assert len(link.stripped) == link.length + 1
    assert add_crc_format_a(link.stripped) == raw
    bad = bytearray(raw)
    bad[20] ^= 0x01
    with pytest.raises(FrameError, match="CRC error in block 2"):
        parse_link(bytes(bad))


def test_format_b_crc_is_checked_and_roundtrips() -> None:
    raw = _raw("oms_water_format_b")
    link = parse_link(raw)
    assert link.frame_format == "B"
    assert link.link_mode == "C1"
    assert add_crc_format_b(link.stripped) == raw
    long_telegram = bytes((200,)) + raw[1:10] + bytes(range(191))
    b = add_crc_format_b(long_telegram)
    assert len(b) == b[0] + 1
    assert parse_link(b).data == long_telegram[10:]
    assert parse_link(b, frame_format="B").frame_format == "B"
    bad = bytearray(b)
    bad[150] ^= 0x80
    with pytest.raises(FrameError, match="CRC error"):
        parse_link(bytes(bad), frame_format="B")


def test_link_mode_and_c_field_named() -> None:
    link = parse_link(_raw("kamstrup_mc21_ctr_full"), link_mode="C1")
    assert (link.link_mode, link.c_field_name, link.manufacturer, link.id) == (
        "C1",
        "SND_NR",
        "KAM",
        "76348799",
    )
    assert (link.version, link.device_type) == (0x1B, 0x16)
    assert parse_link(_raw("axioma_qalcosonic_e3"), link_mode="T1").link_mode == "T1"


def test_bad_crc_frame_is_never_decoded() -> None:
    raw = bytearray(_raw("oms_gas_mode5_crc_a"))
    raw[-1] ^= 0xFF
    with pytest.raises(FrameError):
        decode_wmbus(bytes(raw), {"12345678": bytes.fromhex("0102030405060708090A0B0C0D0E0F11")})


def test_length_mismatch_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="L field"):
        parse_link(bytes.fromhex("4044") + bytes(20))
    with pytest.raises(FrameError, match="too short"):
        parse_link(b"\x0a\x44")


def test_compact_frame_before_full_frame_is_format_unknown() -> None:
    with pytest.raises(FormatUnknownError, match="format unknown") as info:
        decode_wmbus(_raw("kamstrup_mc21_plain_compact"), formats=FormatCache())
    assert "44556677" in str(info.value)
    with pytest.raises(FormatUnknownError):
        decode_wmbus(_raw("kamstrup_mc21_plain_compact"))


def test_compact_frame_uses_layout_of_same_model_and_verifies_crc() -> None:
    formats = FormatCache()
    decode_wmbus(_raw("kamstrup_mc21_plain_full"), formats=formats)
    assert len(formats) == 1
    w = decode_wmbus(_raw("kamstrup_mc21_plain_compact"), formats=formats)
    assert w.compact
    assert w.telegram.records[1].value == Decimal("20.015")
    # a layout of another model does not apply
    other = FormatCache()
    decode_wmbus(_raw("kamstrup_mc302_full"), formats=other)
    with pytest.raises(FormatUnknownError):
        decode_wmbus(_raw("kamstrup_mc21_plain_compact"), formats=other)


def test_format_cache_is_bounded() -> None:
    formats = FormatCache(max_formats=2)
    for name in ("kamstrup_mc21_plain_full", "kamstrup_mc302_full", "kamstrup_mc603"):
        decode_wmbus(_raw(name), formats=formats)
    assert len(formats) == 2


def _fragments() -> list[bytes]:
    """The OMS mode 7 example split into two AFL fragments (MCL, MCR and MAC in the first)."""
    link = parse_link(_raw("oms_gas_mode7_afl_ell"))
    data = link.data
    ell, afl, tpl = data[:3], data[3:20], data[20:]
    assert afl[:2] == b"\x90\x0f"
    first_fc = (0x2C00 | 0x4000 | 1).to_bytes(2, "little")
    first = ell + b"\x90\x0f" + first_fc + afl[4:] + tpl[:20]
    second = ell + b"\x90\x02" + (2).to_bytes(2, "little") + tpl[20:]
    head = link.stripped[1:10]
    return [bytes((9 + len(part),)) + head + part for part in (first, second)]


def test_afl_fragments_are_reassembled_and_mac_checked() -> None:
    keys = {"12345678": bytes.fromhex(OMS_KEY)}
    first, second = _fragments()
    fragments = FragmentReassembler()
    with pytest.raises(FragmentPendingError, match="fragment 1"):
        decode_wmbus(first, keys, fragments=fragments)
    assert len(fragments) == 1
    w = decode_wmbus(second, keys, fragments=fragments)
    assert w.telegram.records[0].value == Decimal("28504.27")
    assert len(fragments) == 0
    with pytest.raises(UnsupportedError, match="reassembler"):
        decode_wmbus(first, keys)
    # a lost first fragment: the second alone fails the MAC rather than giving values
    fragments = FragmentReassembler()
    with pytest.raises(DecodeError):
        decode_wmbus(second, keys, fragments=fragments)


def test_mode7_mac_mismatch_is_reported_before_decryption() -> None:
    raw = bytearray(parse_link(_raw("oms_gas_mode7_afl_ell")).stripped)
    raw[-1] ^= 0x01  # last encrypted byte: CBC would still give 2F2F, the MAC catches it
    with pytest.raises(SecurityError, match="MAC mismatch"):
        decode_wmbus(bytes(raw), {"12345678": bytes.fromhex(OMS_KEY)})


def test_key_of_wrong_length_names_meter() -> None:
    with pytest.raises(SecurityError, match="key for meter 76348799 is not 16 bytes"):
        decode_wmbus(_raw("kamstrup_mc21_ctr_full"), {"76348799": b"\x01" * 8})


def test_plain_data_with_a_configured_key_is_refused() -> None:
    # the telegram says "encrypted" but was decrypted upstream: with a key configured, not accepted
    with pytest.raises(SecurityError, match="carries plain data"):
        decode_wmbus(_raw("kamstrup_mc21_plain_full"), {"44556677": bytes(16)})
    with pytest.raises(SecurityError, match="carries plain data"):
        decode_wmbus(_raw("diehl_hydrus_mode5_decrypted"), {"64646464": bytes(16)})


def test_status_flags() -> None:
    assert decode_wmbus(_raw("kamstrup_mc21_plain_full")).flags == ()
    assert kamstrup_water_durations(0x0071)["dry"] == "22-31 days"
    hca = decode_wmbus(_raw("oms_hca_mode5_partial"), {"55667788": bytes.fromhex(OMS_KEY)})
    assert hca.telegram.status == 0x04
    assert hca.flags == ("low_battery",)
