"""EN 13757-2 link layer: frames, a sans-IO stream parser and the frames a master sends.

Frame formats (EN 13757-2 / IEC 60870-5-2 FT1.2):

- single character ``E5`` (acknowledge),
- short frame ``10 C A CS 16``,
- control frame ``68 03 03 68 C A CI CS 16``,
- long frame ``68 L L 68 C A CI data... CS 16`` with ``L = 3 + len(data)``.

The checksum is the arithmetic sum (mod 256) of C, A, CI and the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.errors import FrameError

__all__ = [
    "ACK",
    "ADDRESS_BROADCAST_NO_REPLY",
    "ADDRESS_BROADCAST_REPLY",
    "ADDRESS_NETWORK_LAYER",
    "ADDRESS_UNCONFIGURED",
    "BAUD_RATE_CI",
    "CI_APPLICATION_RESET",
    "CI_SELECT_SECONDARY",
    "CONTROL_REQ_UD1",
    "CONTROL_REQ_UD2",
    "CONTROL_RSP_UD",
    "CONTROL_SND_NKE",
    "CONTROL_SND_UD",
    "FCB_BIT",
    "FCV_BIT",
    "ControlFrame",
    "Frame",
    "Garbage",
    "LinkParser",
    "LongFrame",
    "ShortFrame",
    "SingleChar",
    "ack",
    "application_reset",
    "control_frame",
    "long_frame",
    "parse_frame",
    "req_ud1",
    "req_ud2",
    "rsp_ud",
    "select_secondary",
    "set_baud_rate",
    "short_frame",
    "snd_nke",
    "snd_ud",
]

ACK: Final = 0xE5
START_SHORT: Final = 0x10
START_LONG: Final = 0x68
STOP: Final = 0x16

ADDRESS_UNCONFIGURED: Final = 0
ADDRESS_NETWORK_LAYER: Final = 253
ADDRESS_BROADCAST_REPLY: Final = 254
ADDRESS_BROADCAST_NO_REPLY: Final = 255

# C field bits (master -> slave): PRM (0x40) set, FCB toggles between requests, FCV says FCB is valid.
PRM_BIT: Final = 0x40
FCB_BIT: Final = 0x20
FCV_BIT: Final = 0x10
# C field bits (slave -> master): access demand, data flow control.
ACD_BIT: Final = 0x20
DFC_BIT: Final = 0x10

CONTROL_SND_NKE: Final = 0x40
CONTROL_SND_UD: Final = 0x53
CONTROL_REQ_UD2: Final = 0x5B
CONTROL_REQ_UD1: Final = 0x5A
CONTROL_RSP_UD: Final = 0x08

CI_APPLICATION_RESET: Final = 0x50
CI_SELECT_SECONDARY: Final = 0x52
# EN 13757-3 table "CI field codes": B8h..BFh switch the slave's baud rate.
BAUD_RATE_CI: Final[dict[int, int]] = {
    300: 0xB8,
    600: 0xB9,
    1200: 0xBA,
    2400: 0xBB,
    4800: 0xBC,
    9600: 0xBD,
    19200: 0xBE,
    38400: 0xBF,
}


@dataclass(frozen=True, slots=True)
class SingleChar:
    """The single character acknowledge ``E5``."""

    raw: bytes = b"\xe5"


@dataclass(frozen=True, slots=True)
class ShortFrame:
    control: int
    address: int
    raw: bytes

    @property
    def from_master(self) -> bool:
        return bool(self.control & PRM_BIT)


@dataclass(frozen=True, slots=True)
class ControlFrame:
    control: int
    address: int
    ci: int
    raw: bytes

    @property
    def from_master(self) -> bool:
        return bool(self.control & PRM_BIT)


@dataclass(frozen=True, slots=True)
class LongFrame:
    control: int
    address: int
    ci: int
    data: bytes
    raw: bytes

    @property
    def from_master(self) -> bool:
        return bool(self.control & PRM_BIT)


Frame = SingleChar | ShortFrame | ControlFrame | LongFrame


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes the stream parser dropped, and why."""

    raw: bytes
    reason: str


_SINGLE = SingleChar()


def parse_frame(raw: bytes) -> Frame:
    """Parse exactly one whole frame; raise :class:`FrameError` saying what is wrong."""
    raw = bytes(raw)
    n = len(raw)
    if n == 0:
        raise FrameError("empty frame")
    start = raw[0]
    if start == ACK:
        if n != 1:
            raise FrameError(f"single character E5 followed by {n - 1} extra byte(s)")
        return _SINGLE
    if start == START_SHORT:
        if n != 5:
            raise FrameError(f"short frame must be 5 bytes, got {n}")
        if raw[4] != STOP:
            raise FrameError(f"short frame stop byte is {raw[4]:02X}h, expected 16h")
        if (raw[1] + raw[2]) & 0xFF != raw[3]:
            raise FrameError(
                f"short frame checksum mismatch: got {raw[3]:02X}h, computed {(raw[1] + raw[2]) & 0xFF:02X}h"
            )
        return ShortFrame(raw[1], raw[2], raw)
    if start == START_LONG:
        if n < 9:
            raise FrameError(f"long frame too short: {n} bytes, at least 9 needed")
        length = raw[1]
        if raw[2] != length:
            raise FrameError(f"long frame length fields differ: {length:02X}h and {raw[2]:02X}h")
        if raw[3] != START_LONG:
            raise FrameError(f"long frame second start byte is {raw[3]:02X}h, expected 68h")
        if length < 3:
            raise FrameError(f"long frame length field {length} is below the minimum of 3")
        if n != length + 6:
            raise FrameError(f"long frame length field says {length + 6} bytes in total, got {n}")
        if raw[-1] != STOP:
            raise FrameError(f"long frame stop byte is {raw[-1]:02X}h, expected 16h")
        checksum = sum(raw[4:-2]) & 0xFF
        if checksum != raw[-2]:
            raise FrameError(f"long frame checksum mismatch: got {raw[-2]:02X}h, computed {checksum:02X}h")
        if length == 3:
            return ControlFrame(raw[4], raw[5], raw[6], raw)
        return LongFrame(raw[4], raw[5], raw[6], raw[7:-2], raw)
    raise FrameError(f"unknown start byte {start:02X}h (expected E5h, 10h or 68h)")


class LinkParser:
    """Sans-IO M-Bus stream parser: feed bytes as they arrive, get frames and dropped garbage.

    A frame is only accepted when its stop byte and checksum are right; on a bad candidate the
    parser drops one byte and resynchronises on the next start byte, so a frame hidden behind a
    collision or an echo is still found. At most one maximal frame (261 bytes) is ever buffered.
    Call :meth:`flush` when the answer window has expired to give up on an incomplete frame.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Garbage]:
        self._buf += data
        return self._parse(eof=False)

    def flush(self) -> list[Frame | Garbage]:
        """The stream ended (timeout): resolve what is buffered, dropping incomplete frames."""
        return self._parse(eof=True)

    def _parse(self, eof: bool) -> list[Frame | Garbage]:
        buf = self._buf
        out: list[Frame | Garbage] = []
        pos = 0
        n = len(buf)
        junk_start = -1
        junk_reason = ""

        def drop(at: int, reason: str) -> None:
            nonlocal junk_start, junk_reason
            if junk_start >= 0 and junk_reason != reason:
                out.append(Garbage(bytes(buf[junk_start:at]), junk_reason))
                junk_start = -1
            if junk_start < 0:
                junk_start = at
                junk_reason = reason

        def flush_junk(at: int) -> None:
            nonlocal junk_start
            if junk_start >= 0:
                out.append(Garbage(bytes(buf[junk_start:at]), junk_reason))
                junk_start = -1

        while pos < n:
            start = buf[pos]
            if start == ACK:
                flush_junk(pos)
                out.append(_SINGLE)
                pos += 1
                continue
            if start == START_SHORT:
                if n - pos < 5:
                    if eof:
                        drop(pos, "incomplete short frame")
                        pos += 1
                        continue
                    break
                c, a, cs, stop = buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]
                if stop != STOP:
                    drop(pos, "short frame without stop byte")
                elif (c + a) & 0xFF != cs:
                    drop(pos, "short frame checksum mismatch")
                else:
                    flush_junk(pos)
                    out.append(ShortFrame(c, a, bytes(buf[pos : pos + 5])))
                    pos += 5
                    continue
                pos += 1
                continue
            if start == START_LONG:
                avail = n - pos
                if avail >= 2 and buf[pos + 1] < 3:
                    drop(pos, "long frame length below 3")
                    pos += 1
                    continue
                if avail >= 3 and buf[pos + 2] != buf[pos + 1]:
                    drop(pos, "long frame length fields differ")
                    pos += 1
                    continue
                if avail >= 4 and buf[pos + 3] != START_LONG:
                    drop(pos, "long frame without second start byte")
                    pos += 1
                    continue
                if avail < 4 or avail < buf[pos + 1] + 6:
                    if eof:
                        drop(pos, "incomplete long frame")
                        pos += 1
                        continue
                    break
                length = buf[pos + 1]
                end = pos + length + 6
                if buf[end - 1] != STOP:
                    drop(pos, "long frame without stop byte")
                elif sum(buf[pos + 4 : end - 2]) & 0xFF != buf[end - 2]:
                    drop(pos, "long frame checksum mismatch")
                else:
                    flush_junk(pos)
                    raw = bytes(buf[pos:end])
                    if length == 3:
                        out.append(ControlFrame(raw[4], raw[5], raw[6], raw))
                    else:
                        out.append(LongFrame(raw[4], raw[5], raw[6], raw[7:-2], raw))
                    pos = end
                    continue
                pos += 1
                continue
            drop(pos, "not a frame start byte")
            pos += 1
        flush_junk(pos)
        del buf[:pos]
        return out


# -- builders ------------------------------------------------------------------------------------


def _check_address(address: int) -> None:
    if not 0 <= address <= 255:
        raise ValueError(f"M-Bus address must be 0..255, got {address}")


def short_frame(control: int, address: int) -> bytes:
    _check_address(address)
    return bytes((START_SHORT, control, address, (control + address) & 0xFF, STOP))


def long_frame(control: int, address: int, ci: int, data: bytes = b"") -> bytes:
    _check_address(address)
    if len(data) > 252:
        raise ValueError(f"long frame user data is at most 252 bytes, got {len(data)}")
    body = bytes((control, address, ci)) + bytes(data)
    length = len(body)
    return bytes((START_LONG, length, length, START_LONG)) + body + bytes((sum(body) & 0xFF, STOP))


def control_frame(control: int, address: int, ci: int) -> bytes:
    return long_frame(control, address, ci)


def _fcb(control: int, fcb: bool) -> int:
    return control | FCB_BIT if fcb else control


def snd_nke(address: int) -> bytes:
    """SND_NKE: link reset; the slave answers E5 and resets its FCB expectation."""
    return short_frame(CONTROL_SND_NKE, address)


def req_ud2(address: int, fcb: bool) -> bytes:
    """REQ_UD2 (class 2 data) with FCV set; toggle ``fcb`` for each new telegram of a readout."""
    return short_frame(_fcb(CONTROL_REQ_UD2, fcb), address)


def req_ud1(address: int, fcb: bool) -> bytes:
    """REQ_UD1 (class 1 / alarm data) with FCV set."""
    return short_frame(_fcb(CONTROL_REQ_UD1, fcb), address)


def snd_ud(address: int, ci: int, data: bytes = b"", fcb: bool = False) -> bytes:
    return long_frame(_fcb(CONTROL_SND_UD, fcb), address, ci, data)


def select_secondary(mask: str) -> bytes:
    """SND_UD to address 253 selecting by secondary address; ``F`` nibbles are wildcards.

    ``mask`` is 16 hex characters in the order libmbus prints secondary addresses: 8 identification
    digits, the manufacturer code as 4 hex digits (high byte first, e.g. ``2C2D`` for KAM), version
    and medium as 2 hex digits each. On the wire each field is little-endian.
    """
    mask = mask.strip().upper()
    if len(mask) != 16 or any(ch not in "0123456789ABCDEF" for ch in mask):
        raise ValueError(f"secondary address mask must be 16 hex characters, got {mask!r}")
    ident = bytes.fromhex(mask[0:8])[::-1]
    manufacturer = bytes.fromhex(mask[8:12])[::-1]
    tail = bytes.fromhex(mask[12:16])
    return snd_ud(ADDRESS_NETWORK_LAYER, CI_SELECT_SECONDARY, ident + manufacturer + tail)


def application_reset(address: int, subcode: int | None = None) -> bytes:
    """SND_UD with CI 50h, optionally with the one-byte application reset subcode."""
    data = b"" if subcode is None else bytes((subcode & 0xFF,))
    return snd_ud(address, CI_APPLICATION_RESET, data)


def set_baud_rate(address: int, baud: int) -> bytes:
    """SND_UD switching the baud rate (control frame, CI B8h..BFh); the slave acks at the old rate."""
    try:
        ci = BAUD_RATE_CI[baud]
    except KeyError:
        raise ValueError(f"unsupported baud rate {baud}; one of {sorted(BAUD_RATE_CI)}") from None
    return snd_ud(address, ci)


def rsp_ud(address: int, ci: int, data: bytes, acd: bool = False, dfc: bool = False) -> bytes:
    """RSP_UD from a slave (used by the simulator)."""
    control = CONTROL_RSP_UD | (ACD_BIT if acd else 0) | (DFC_BIT if dfc else 0)
    return long_frame(control, address, ci, data)


def ack() -> bytes:
    return b"\xe5"
