"""Receiver stick framings: iM871A HCI, Amber command frames, rtl_wmbus lines."""

from __future__ import annotations

import pytest
from wmbus_golden import GOLDEN

from protocols.errors import FrameError
from protocols.sticks import amber, imst
from protocols.sticks.rtlwmbus import parse_rtlwmbus_line
from protocols.wmbus import decode_wmbus

MC21 = bytes.fromhex(next(g.hex for g in GOLDEN if g.name == "kamstrup_mc21_plain_full"))


def test_x25_check_value() -> None:
    assert imst.crc16_x25(b"123456789") == 0x906E


def test_imst_telegram_with_rssi_through_noisy_stream() -> None:
    body = (
        bytes((imst.FLAG_CRC | imst.FLAG_RSSI | imst.RADIOLINK, imst.WMBUSMSG_IND, len(MC21) - 1)) + MC21[1:]
    )
    body += bytes((0xA0,))
    frame = b"\xa5" + body + imst.crc16_x25(body).to_bytes(2, "little")
    parser = imst.HciParser()
    stream = b"\x00\x13" + frame + imst.encode_hci(imst.DEVMGMT, imst.PING_RSP)
    out = []
    for i in range(len(stream)):
        out += parser.feed(stream[i : i + 1])
    assert [f.msg_id for f in out] == [imst.WMBUSMSG_IND, imst.PING_RSP]
    assert parser.dropped_bytes == 2
    assert parser.pending == 0
    telegram = imst.wmbus_telegram(out[0])
    assert telegram == MC21
    assert out[0].rssi == 0xA0
    assert imst.rssi_dbm(0xA0) == -43
    assert decode_wmbus(telegram).telegram.id == "44556677"
    corrupt = bytearray(frame)
    corrupt[10] ^= 1
    assert imst.HciParser().feed(bytes(corrupt)) == []


def test_imst_requests() -> None:
    assert imst.ping_request()[:4] == bytes((0xA5, 0x81, 0x01, 0x00))
    request = imst.set_link_mode_request("C1T1")
    assert request[4:10] == bytes((0x00, 0x02, 0x0A, 0x30, 0x01, 0x00))
    assert imst.HciParser().feed(request)[0].payload == request[4:10]
    with pytest.raises(ValueError, match="cannot listen"):
        imst.set_link_mode_request("X9")
    with pytest.raises(FrameError):
        imst.wmbus_telegram(imst.HciParser().feed(imst.reset_request())[0])


def test_amber_data_indication_with_rssi() -> None:
    frame = amber.encode_command(amber.CMD_DATA_IND, MC21[1:] + bytes((0xF0,)))
    parser = amber.AmberParser(rssi=True)
    frames = parser.feed(b"\x01\x02" + frame[:5]) + parser.feed(frame[5:])
    assert len(frames) == 1
    assert frames[0].rssi == 0xF0
    assert amber.rssi_dbm(0xF0) == -82
    assert amber.rssi_dbm(0x20) == -58
    assert amber.wmbus_telegram(frames[0]) == MC21
    bad = bytearray(frame)
    bad[-1] ^= 0xFF
    parser = amber.AmberParser()
    assert parser.feed(bytes(bad)) == []  # FFh inside resyncs too
    assert parser.checksum_errors >= 1  # FFh inside resyncs too


def test_amber_requests() -> None:
    assert amber.serial_number_request() == bytes.fromhex("FF0B00F4")
    assert amber.set_link_mode_request("C1T1") == bytes((0xFF, 0x04, 0x01, 0x09, 0xFF ^ 0x04 ^ 0x01 ^ 0x09))
    assert amber.xor_checksum(bytes.fromhex("FF0A020080")) == 0x77


def test_rtlwmbus_lines() -> None:
    # simulations/serial_aes.msg of wmbusmeters/wmbusmeters (GPL-3.0-or-later)
    line = (
        "C1;1;1;2020-01-23 10:25:13.000;97;148;76348799;0x2A442D2C998734761B168D2091D37CAC21E1D68CDAFF"
        "CD3DC452BD802913FF7B1706CA9E355D6C2701CC24"
    )
    parsed = parse_rtlwmbus_line(line)
    assert (parsed.link_mode, parsed.rssi, parsed.timestamp) == ("C1", 97, "2020-01-23 10:25:13.000")
    assert parsed.telegram[:2] == b"\x2a\x44"
    assert parse_rtlwmbus_line(MC21.hex()).telegram == MC21
    with pytest.raises(FrameError, match="CRC"):
        parse_rtlwmbus_line("T1;0;1;2020-01-23 10:25:13.000;97;148;76348799;0x2A44")
    with pytest.raises(FrameError):
        parse_rtlwmbus_line("T1;1;1;x;97;148;76348799;0xZZ")
