"""IMST iM871A (WiMOD HCI over 57600 baud): frame codec and stream parser, no I/O.

Frame: A5h, control/endpoint (high nibble flags: 20h timestamp, 40h RSSI, 80h CRC; low nibble
endpoint), message id, payload length, payload, [timestamp 4], [RSSI 1], [CRC16 2, LSB first].
The CRC is CRC-16/X-25 (CCITT reflected, init FFFFh, complemented) over everything after A5h.
A received radio telegram (RADIOLINK, 03h) carries the wM-Bus telegram from its C field on: the
stick removes L and the CRCs, so :func:`wmbus_telegram` puts the L field back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.errors import FrameError
from protocols.sticks._stream import StartByteBuffer

__all__ = [
    "DEVMGMT",
    "LINK_MODE_CODES",
    "RADIOLINK",
    "HciFrame",
    "HciParser",
    "crc16_x25",
    "encode_hci",
    "get_device_info_request",
    "ping_request",
    "reset_request",
    "rssi_dbm",
    "set_link_mode_request",
    "wmbus_telegram",
]

SOF: Final = 0xA5
DEVMGMT: Final = 0x01
RADIOLINK: Final = 0x02
RADIOLINKTEST: Final = 0x03
HWTEST: Final = 0x04
_ENDPOINTS: Final = frozenset((DEVMGMT, RADIOLINK, RADIOLINKTEST, HWTEST))

FLAG_TIMESTAMP: Final = 0x20
FLAG_RSSI: Final = 0x40
FLAG_CRC: Final = 0x80

PING_REQ: Final = 0x01
PING_RSP: Final = 0x02
SET_CONFIG_REQ: Final = 0x03
SET_CONFIG_RSP: Final = 0x04
RESET_REQ: Final = 0x07
RESET_RSP: Final = 0x08
GET_DEVICEINFO_REQ: Final = 0x0F
GET_DEVICEINFO_RSP: Final = 0x10
WMBUSMSG_IND: Final = 0x03

# iM871A radio modes for listening (meter -> collector); "C1T1" listens to both at once.
LINK_MODE_CODES: Final[dict[str, int]] = {
    "S1": 0x00,
    "S1m": 0x01,
    "S2": 0x02,
    "T1": 0x03,
    "T2": 0x04,
    "C1": 0x06,  # C1 frame format A; the stick receives format B too
    "C1T1": 0x0A,
}

_MAX_PAYLOAD: Final = 255
_MAX_FRAME: Final = 4 + _MAX_PAYLOAD + 4 + 1 + 2


def _x25_table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_X25: Final = _x25_table()


def crc16_x25(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _X25[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


@dataclass(frozen=True, slots=True)
class HciFrame:
    endpoint: int
    msg_id: int
    payload: bytes
    timestamp: int | None
    rssi: int | None
    raw: bytes

    @property
    def is_telegram(self) -> bool:
        return self.endpoint == RADIOLINK and self.msg_id == WMBUSMSG_IND


def rssi_dbm(rssi: int) -> int:
    """Coarse dBm from the iM871A RSSI byte (linear fit of the Si1002 RSSI curve: 45 -> -100 dBm,
    205 -> -20 dBm, 230 and above -> 0 dBm), as wmbusmeters does."""
    if rssi >= 230:
        return 0
    return -100 + (rssi - 45) // 2


def encode_hci(endpoint: int, msg_id: int, payload: bytes = b"", *, crc: bool = True) -> bytes:
    if len(payload) > _MAX_PAYLOAD:
        raise FrameError(f"HCI payload too long ({len(payload)} bytes)")
    body = bytes(((FLAG_CRC if crc else 0) | endpoint, msg_id, len(payload))) + payload
    if crc:
        body += crc16_x25(body).to_bytes(2, "little")
    return bytes((SOF,)) + body


def ping_request() -> bytes:
    return encode_hci(DEVMGMT, PING_REQ)


def reset_request() -> bytes:
    return encode_hci(DEVMGMT, RESET_REQ)


def get_device_info_request() -> bytes:
    return encode_hci(DEVMGMT, GET_DEVICEINFO_REQ)


def set_link_mode_request(link_mode: str, *, rssi: bool = True) -> bytes:
    """SET_CONFIG in RAM only: radio mode, RSSI attached to each telegram, no timestamp."""
    code = LINK_MODE_CODES.get(link_mode)
    if code is None:
        raise ValueError(f"iM871A cannot listen to link mode {link_mode!r}")
    # NVM flag 0 (temporary), IIFlag1 02h (radio mode), mode, IIFlag2 30h (RSSI, timestamp), values
    payload = bytes((0x00, 0x02, code, 0x30, 0x01 if rssi else 0x00, 0x00))
    return encode_hci(DEVMGMT, SET_CONFIG_REQ, payload)


def wmbus_telegram(frame: HciFrame) -> bytes:
    """The wM-Bus telegram (CRC-less, with its L field) carried by a WMBUSMSG_IND frame."""
    if not frame.is_telegram:
        raise FrameError(f"HCI frame {frame.endpoint:02X}/{frame.msg_id:02X}h is not a received telegram")
    return bytes((len(frame.payload),)) + frame.payload


class HciParser(StartByteBuffer):
    """Stream parser: feed bytes as they arrive, get whole frames. Garbage before A5h and frames with
    a bad CRC are dropped and counted (``dropped_bytes``, ``crc_errors``); memory stays bounded."""

    def __init__(self) -> None:
        super().__init__(SOF)
        self.crc_errors = 0

    def feed(self, data: bytes) -> list[HciFrame]:
        buf = self._buffer
        buf += data
        frames: list[HciFrame] = []
        while buf and self._align():
            if len(buf) < 4:
                break
            control = buf[1]
            endpoint = control & 0x0F
            if endpoint not in _ENDPOINTS or control & 0x10:
                self.dropped_bytes += 1
                del buf[:1]
                continue
            length = 4 + buf[3] + (4 if control & FLAG_TIMESTAMP else 0) + (1 if control & FLAG_RSSI else 0)
            total = length + (2 if control & FLAG_CRC else 0)
            if len(buf) < total:
                break
            raw = bytes(buf[:total])
            if control & FLAG_CRC and crc16_x25(raw[1:length]) != int.from_bytes(raw[length:total], "little"):
                self.crc_errors += 1
                self.dropped_bytes += 1
                del buf[:1]  # resynchronise on the next A5h
                continue
            del buf[:total]
            pos = 4 + raw[3]
            timestamp = rssi = None
            if control & FLAG_TIMESTAMP:
                timestamp = int.from_bytes(raw[pos : pos + 4], "little")
                pos += 4
            if control & FLAG_RSSI:
                rssi = raw[pos]
            frames.append(HciFrame(endpoint, raw[2], raw[4 : 4 + raw[3]], timestamp, rssi, raw))
        if len(buf) > _MAX_FRAME:
            self.dropped_bytes += len(buf) - _MAX_FRAME
            del buf[: len(buf) - _MAX_FRAME]
        return frames
