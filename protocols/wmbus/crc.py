"""CRC-16 of EN 13757-4 (polynomial 3D65h, initial 0, final complement), table driven.

The same CRC protects the radio link blocks, the extended link layer payload and names the compact
frame formats (the format signature is the CRC of the DIF/VIF list).
"""

from __future__ import annotations

from typing import Final

__all__ = ["crc16_en13757"]


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x3D65) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        out.append(crc)
    return tuple(out)


_TABLE: Final = _table()


def crc16_en13757(data: bytes) -> int:
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc ^ 0xFFFF
