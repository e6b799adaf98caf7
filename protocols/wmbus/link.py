"""Wireless M-Bus data link layer (EN 13757-4): frame formats A and B, C field, address, link mode.

A telegram arrives in one of three shapes: format A with a CRC after the 10-byte first block and after
every 16 bytes, format B with one or two CRCs and an L field that counts them, or with the CRCs already
removed (what the receiver sticks and ``rtl_wmbus`` print). :func:`parse_link` tells them apart by
length and CRC; a frame whose length says "CRC blocks" but whose CRC does not match is a
:class:`~protocols.errors.FrameError`, never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from protocols.errors import FrameError
from protocols.mbus.manufacturers import manufacturer_letters
from protocols.wmbus.crc import crc16_en13757

__all__ = [
    "C_FIELD_NAMES",
    "LINK_MODES",
    "FrameFormat",
    "LinkFrame",
    "add_crc_format_a",
    "add_crc_format_b",
    "c_field_name",
    "parse_link",
    "strip_crc",
]

FrameFormat = Literal["A", "B", "none"]

# The link modes a collector listens to (meter -> collector). C1 comes in both frame formats.
LINK_MODES: Final = ("T1", "C1", "S1")

# EN 13757-4 C field values seen from meters and collectors.
C_FIELD_NAMES: Final[dict[int, str]] = {
    0x00: "ACK",
    0x06: "CNF_IR",
    0x08: "RSP_UD",
    0x18: "RSP_UD",
    0x28: "RSP_UD",
    0x38: "RSP_UD",
    0x40: "SND_NKE",
    0x44: "SND_NR",
    0x46: "SND_IR",
    0x47: "ACC_NR",
    0x48: "ACC_DMD",
    0x53: "SND_UD",
    0x73: "SND_UD",
    0x5A: "REQ_UD1",
    0x7A: "REQ_UD1",
    0x5B: "REQ_UD2",
    0x7B: "REQ_UD2",
}

_FIRST_BLOCK: Final = 10  # L C M M A A A A A A
_BLOCK: Final = 16
_B_FIRST_CRC_AT: Final = 126  # format B: blocks 1 and 2 end at byte 128, CRC in the last two


def c_field_name(c_field: int) -> str:
    return C_FIELD_NAMES.get(c_field, f"C={c_field:02X}h")


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """One wM-Bus telegram at the link layer. ``data`` starts at the CI field, CRCs removed."""

    length: int
    c_field: int
    manufacturer: str
    manufacturer_code: int
    id: str
    version: int
    device_type: int
    data: bytes
    frame_format: FrameFormat
    link_mode: str | None
    raw: bytes

    @property
    def header(self) -> bytes:
        """The address part (M M A A A A V T) as sent, for IVs and signatures."""
        return self.stripped[2:10]

    @property
    def stripped(self) -> bytes:
        """The telegram without CRCs, L field recomputed: the form the sticks and wmbusmeters use."""
        return bytes((9 + len(self.data), self.c_field)) + self.address_bytes + self.data

    @property
    def address_bytes(self) -> bytes:
        return (
            self.manufacturer_code.to_bytes(2, "little")
            + bytes.fromhex(self.id)[::-1]
            + bytes((self.version, self.device_type))
        )

    @property
    def c_field_name(self) -> str:
        return c_field_name(self.c_field)


def _crc_ok(block: bytes, crc: bytes) -> bool:
    return crc16_en13757(block) == int.from_bytes(crc, "big")


def _format_a_length(l_field: int) -> int:
    data_after_first = l_field - 9
    blocks = 1 + (data_after_first + _BLOCK - 1) // _BLOCK if data_after_first > 0 else 1
    return l_field + 1 + 2 * blocks


def _strip_format_a(raw: bytes) -> bytes:
    """Remove format A CRCs; raise FrameError naming the first bad block."""
    if not _crc_ok(raw[:_FIRST_BLOCK], raw[_FIRST_BLOCK:12]):
        raise FrameError("CRC error in block 1 (frame format A)")
    out = bytearray(raw[:_FIRST_BLOCK])
    pos = 12
    block = 2
    n = len(raw)
    while pos < n:
        end = min(pos + _BLOCK, n - 2)
        if end <= pos:
            raise FrameError(f"frame format A block {block} has no data before its CRC")
        if not _crc_ok(raw[pos:end], raw[end : end + 2]):
            raise FrameError(f"CRC error in block {block} (frame format A)")
        out += raw[pos:end]
        pos = end + 2
        block += 1
    return bytes(out)


def _format_b_crcs_ok(raw: bytes) -> bool:
    n = len(raw)
    if n <= _B_FIRST_CRC_AT + 2:
        return _crc_ok(raw[:-2], raw[-2:])
    if not _crc_ok(raw[:_B_FIRST_CRC_AT], raw[_B_FIRST_CRC_AT:128]):
        return False
    return n > 130 and _crc_ok(raw[128:-2], raw[-2:])


def _strip_format_b(raw: bytes) -> bytes:
    """Remove format B CRCs and give the L field of the CRC-less telegram."""
    body = raw[:-2] if len(raw) <= 128 else raw[:_B_FIRST_CRC_AT] + raw[128:-2]
    return bytes((len(body) - 1,)) + body[1:]


def strip_crc(raw: bytes, frame_format: FrameFormat) -> bytes:
    """The CRC-less telegram (L recomputed) from a frame with CRCs of the given format."""
    if frame_format == "A":
        body = _strip_format_a(raw)
        return bytes((len(body) - 1,)) + body[1:]
    if frame_format == "B":
        if not _format_b_crcs_ok(raw):
            raise FrameError("CRC error (frame format B)")
        return _strip_format_b(raw)
    return raw


def add_crc_format_a(telegram: bytes) -> bytes:
    """Insert format A CRC blocks into a CRC-less telegram (L unchanged: format A does not count CRCs)."""
    if len(telegram) < _FIRST_BLOCK:
        raise FrameError("telegram shorter than the 10-byte first block")
    out = bytearray(telegram[:_FIRST_BLOCK])
    out += crc16_en13757(telegram[:_FIRST_BLOCK]).to_bytes(2, "big")
    for pos in range(_FIRST_BLOCK, len(telegram), _BLOCK):
        block = telegram[pos : pos + _BLOCK]
        out += block + crc16_en13757(block).to_bytes(2, "big")
    return bytes(out)


def add_crc_format_b(telegram: bytes) -> bytes:
    """Build a format B frame from a CRC-less telegram: L counts the CRC bytes."""
    body = telegram[1:]
    crc_bytes = 2 if len(body) + 1 + 2 <= 128 else 4
    length = len(body) + crc_bytes
    if length > 255:
        raise FrameError("telegram too long for frame format B")
    whole = bytes((length,)) + body
    if crc_bytes == 2:
        return whole + crc16_en13757(whole).to_bytes(2, "big")
    first, rest = whole[:_B_FIRST_CRC_AT], whole[_B_FIRST_CRC_AT:]
    return first + crc16_en13757(first).to_bytes(2, "big") + rest + crc16_en13757(rest).to_bytes(2, "big")


def _detect(raw: bytes, frame_format: FrameFormat | None) -> tuple[bytes, FrameFormat]:
    """Return the CRC-less telegram and the format the CRCs had."""
    l_field = raw[0]
    n = len(raw)
    if frame_format is not None:
        stripped = strip_crc(raw, frame_format)
        if frame_format == "none" and n != l_field + 1:
            stripped = raw[: l_field + 1] if n > l_field + 1 else raw
            if n < l_field + 1:
                raise FrameError(f"frame is {n} bytes but its L field says {l_field + 1}")
        return stripped, frame_format
    if n == _format_a_length(l_field):
        return strip_crc(raw, "A"), "A"
    if n == l_field + 1:
        # Either format B with its CRC(s) counted in L, or a telegram whose CRCs the receiver removed.
        if n >= 12 and _format_b_crcs_ok(raw):
            return _strip_format_b(raw), "B"
        return raw, "none"
    if n in (l_field - 1, l_field - 3) and n >= 11:
        # format B with CRCs removed by the receiver but L left counting them
        return bytes((n - 1,)) + raw[1:], "none"
    if n > l_field + 1 and l_field >= 9:
        # trailing bytes after the telegram (some receivers append RSSI or padding)
        return raw[: l_field + 1], "none"
    raise FrameError(f"frame is {n} bytes but its L field ({l_field}) says {l_field + 1} without CRCs")


def parse_link(
    raw: bytes, *, link_mode: str | None = None, frame_format: FrameFormat | None = None
) -> LinkFrame:
    """Parse one wM-Bus telegram. ``frame_format`` None detects A, B or CRC-less from the length.

    ``link_mode`` is what the receiver reports (T1, C1, S1); a frame that arrived in format B can only
    have been sent in C1, so that is filled in when the receiver did not say.
    """
    raw = bytes(raw)
    if len(raw) < 11:
        raise FrameError(f"wM-Bus telegram too short ({len(raw)} bytes; need L, C, address and CI)")
    telegram, fmt = _detect(raw, frame_format)
    if len(telegram) < 11:
        raise FrameError(f"wM-Bus telegram too short ({len(telegram)} bytes without CRCs)")
    code = telegram[2] | (telegram[3] << 8)
    if link_mode is None and fmt == "B":
        link_mode = "C1"
    return LinkFrame(
        length=telegram[0],
        c_field=telegram[1],
        manufacturer=manufacturer_letters(code),
        manufacturer_code=code,
        id=telegram[4:8][::-1].hex().upper(),
        version=telegram[8],
        device_type=telegram[9],
        data=telegram[10:],
        frame_format=fmt,
        link_mode=link_mode,
        raw=raw,
    )
