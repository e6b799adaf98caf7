"""Wireless M-Bus (EN 13757-4 link, EN 13757-7 / OMS security): pure decoding, no I/O.

:func:`decode_wmbus` is the entry point; :class:`FormatCache` and :class:`FragmentReassembler` are
the state a caller keeps between telegrams (compact frame layouts, AFL fragments).
"""

from __future__ import annotations

from protocols.wmbus.compact import FormatCache, FormatUnknownError, format_signature
from protocols.wmbus.crc import crc16_en13757
from protocols.wmbus.layers import Afl, Ell, FragmentReassembler, Tpl
from protocols.wmbus.link import (
    LINK_MODES,
    LinkFrame,
    add_crc_format_a,
    add_crc_format_b,
    c_field_name,
    parse_link,
)
from protocols.wmbus.status import meter_flags
from protocols.wmbus.telegram import (
    FragmentPendingError,
    Keys,
    WirelessTelegram,
    decode_wmbus,
    decode_wmbus_telegram,
)

__all__ = [
    "LINK_MODES",
    "Afl",
    "Ell",
    "FormatCache",
    "FormatUnknownError",
    "FragmentPendingError",
    "FragmentReassembler",
    "Keys",
    "LinkFrame",
    "Tpl",
    "WirelessTelegram",
    "add_crc_format_a",
    "add_crc_format_b",
    "c_field_name",
    "crc16_en13757",
    "decode_wmbus",
    "decode_wmbus_telegram",
    "format_signature",
    "meter_flags",
    "parse_link",
]
