"""Compact frames (CI 79h/7Bh/73h): the record headers are left out and named by a format signature.

The signature is the EN 13757-4 CRC of the concatenated DIF/VIF bytes of the full frame; the second
word of a compact frame is the CRC of the full record stream (headers and data), so a layout we apply
is verified, not guessed. :class:`FormatCache` is a plain object the caller keeps (one per collector
or per decode run): it learns layouts from full frames and never does I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from protocols.errors import DecodeError
from protocols.mbus.application import Record
from protocols.wmbus.crc import crc16_en13757

__all__ = ["FormatCache", "FormatUnknownError", "expand_compact", "format_signature"]

# DIF data field -> data length; None: LVAR; -1: special function (no more headers)
_DATA_LENGTH: Final = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, -1)

# (manufacturer, version, device type, signature): the same model sends the same layout
FormatKey = tuple[str, int, int, int]


class FormatUnknownError(DecodeError):
    """A compact frame whose layout has not been learned from a full frame yet."""


def format_signature(headers: Iterable[bytes]) -> int:
    return crc16_en13757(b"".join(headers))


class FormatCache:
    """Layouts (record header lists) learned from full frames, bounded (least recently used out)."""

    def __init__(self, max_formats: int = 1024) -> None:
        self._layouts: OrderedDict[FormatKey, tuple[bytes, ...]] = OrderedDict()
        self._max = max_formats

    def __len__(self) -> int:
        return len(self._layouts)

    def learn(self, manufacturer: str, version: int, device_type: int, records: Iterable[Record]) -> int:
        """Remember the layout of a decoded full frame; return its signature."""
        headers = tuple(r.dif_vif for r in records)
        signature = format_signature(headers)
        key = (manufacturer, version, device_type, signature)
        self._layouts[key] = headers
        self._layouts.move_to_end(key)
        while len(self._layouts) > self._max:
            self._layouts.popitem(last=False)
        return signature

    def layout(
        self, manufacturer: str, version: int, device_type: int, signature: int
    ) -> tuple[bytes, ...] | None:
        return self._layouts.get((manufacturer, version, device_type, signature))


def expand_compact(headers: tuple[bytes, ...], data: bytes, data_crc: int) -> bytes:
    """Rebuild the full record stream from a learned layout and the compact data; verify its CRC."""
    out = bytearray()
    pos = 0
    n = len(data)
    for header in headers:
        field = header[0] & 0x0F
        length = _DATA_LENGTH[field]
        if length is None:
            if pos >= n:
                raise DecodeError("compact frame data ends before a variable length record")
            lvar = data[pos]
            if lvar < 0xC0:
                length = 1 + lvar
            elif lvar < 0xE0:
                length = 1 + (lvar & 0x0F)
            elif lvar <= 0xEF:
                length = 1 + lvar - 0xE0
            else:
                raise DecodeError(f"compact frame has an unsupported LVAR {lvar:02X}h")
        elif length < 0:
            length = n - pos
        if pos + length > n:
            raise DecodeError("compact frame data is shorter than its learned layout")
        out += header
        out += data[pos : pos + length]
        pos += length
    out += data[pos:]
    if crc16_en13757(bytes(out)) != data_crc:
        raise DecodeError("compact frame data does not match the learned layout (full frame CRC differs)")
    return bytes(out)
