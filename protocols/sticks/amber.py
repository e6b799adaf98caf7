"""Amber (Würth Elektronik) AMB8465 / AMB8665 wM-Bus sticks in command mode, 9600 baud; no I/O.

Frame: FFh, command, payload length, payload, XOR checksum of all bytes before it. A received
telegram is CMD_DATA_IND (03h) with the telegram from its C field on (L and CRCs removed by the
stick) and, when RSSI output is on, one RSSI byte at the end of the payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.errors import FrameError
from protocols.sticks._stream import StartByteBuffer

__all__ = [
    "CMD_DATA_IND",
    "LINK_MODE_CODES",
    "AmberFrame",
    "AmberParser",
    "encode_command",
    "reset_request",
    "rssi_dbm",
    "serial_number_request",
    "set_link_mode_request",
    "wmbus_telegram",
    "xor_checksum",
]

SOF: Final = 0xFF
CMD_DATA_REQ: Final = 0x00
CMD_DATA_IND: Final = 0x03
CMD_SET_MODE_REQ: Final = 0x04
CMD_RESET_REQ: Final = 0x05
CMD_SET_REQ: Final = 0x09
CMD_GET_REQ: Final = 0x0A
CMD_SERIALNO_REQ: Final = 0x0B
RESPONSE: Final = 0x80  # a confirmation has the request's command with bit 7 set

# Receive modes that hear meters (Amber manual): C1+T1 together is "C2/T2 other"
LINK_MODE_CODES: Final[dict[str, int]] = {
    "S1": 0x03,  # S2 receives S1 and S1-m
    "T1": 0x08,  # T2 other
    "C1": 0x0E,  # C2 other
    "C1T1": 0x09,  # C2/T2 other
}

_MAX_FRAME: Final = 4 + 255


def xor_checksum(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def rssi_dbm(rssi: int) -> int:
    """Amber RSSI byte (two's complement, half dB steps, offset -74 dBm) to dBm."""
    signed = rssi - 256 if rssi >= 128 else rssi
    return int(signed / 2) - 74


@dataclass(frozen=True, slots=True)
class AmberFrame:
    command: int
    payload: bytes
    rssi: int | None
    raw: bytes

    @property
    def is_telegram(self) -> bool:
        return self.command == CMD_DATA_IND


def encode_command(command: int, payload: bytes = b"") -> bytes:
    if len(payload) > 255:
        raise FrameError(f"Amber payload too long ({len(payload)} bytes)")
    body = bytes((SOF, command, len(payload))) + payload
    return body + bytes((xor_checksum(body),))


def set_link_mode_request(link_mode: str) -> bytes:
    """CMD_SET_MODE_REQ (volatile): what the stick listens to."""
    code = LINK_MODE_CODES.get(link_mode)
    if code is None:
        raise ValueError(f"Amber stick cannot listen to link mode {link_mode!r}")
    return encode_command(CMD_SET_MODE_REQ, bytes((code,)))


def reset_request() -> bytes:
    return encode_command(CMD_RESET_REQ)


def serial_number_request() -> bytes:
    return encode_command(CMD_SERIALNO_REQ)


def wmbus_telegram(frame: AmberFrame) -> bytes:
    """The wM-Bus telegram (CRC-less, with its L field) of a CMD_DATA_IND frame."""
    if not frame.is_telegram:
        raise FrameError(f"Amber frame {frame.command:02X}h is not a received telegram")
    body = frame.payload[:-1] if frame.rssi is not None else frame.payload
    return bytes((len(body),)) + body


class AmberParser(StartByteBuffer):
    """Stream parser for command-mode frames; bad checksums and garbage are dropped and counted."""

    def __init__(self, *, rssi: bool = True) -> None:
        super().__init__(SOF)
        self._rssi = rssi
        self.checksum_errors = 0

    def feed(self, data: bytes) -> list[AmberFrame]:
        buf = self._buffer
        buf += data
        frames: list[AmberFrame] = []
        while buf and self._align():
            if len(buf) < 3:
                break
            total = 4 + buf[2]
            if len(buf) < total:
                break
            raw = bytes(buf[:total])
            if xor_checksum(raw[:-1]) != raw[-1]:
                self.checksum_errors += 1
                self.dropped_bytes += 1
                del buf[:1]
                continue
            del buf[:total]
            payload = raw[3:-1]
            rssi = payload[-1] if self._rssi and raw[1] == CMD_DATA_IND and payload else None
            frames.append(AmberFrame(raw[1], payload, rssi, raw))
        if len(buf) > _MAX_FRAME:
            self.dropped_bytes += len(buf) - _MAX_FRAME
            del buf[: len(buf) - _MAX_FRAME]
        return frames
