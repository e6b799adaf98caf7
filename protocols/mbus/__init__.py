"""Wired M-Bus: EN 13757-2 link layer (:mod:`.link`) and EN 13757-3 application layer (:mod:`.application`).

The common names are re-exported here; the modules hold the rest.
"""

from __future__ import annotations

from protocols.mbus.application import (
    Record,
    RecordValue,
    Telegram,
    decode_long_frame,
    decode_user_data,
    medium_name,
)
from protocols.mbus.link import (
    ADDRESS_BROADCAST_NO_REPLY,
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK_LAYER,
    ControlFrame,
    Frame,
    Garbage,
    LinkParser,
    LongFrame,
    ShortFrame,
    SingleChar,
    ack,
    application_reset,
    parse_frame,
    req_ud1,
    req_ud2,
    rsp_ud,
    select_secondary,
    set_baud_rate,
    snd_nke,
)
from protocols.mbus.manufacturers import manufacturer_code, manufacturer_letters

__all__ = [
    "ADDRESS_BROADCAST_NO_REPLY",
    "ADDRESS_BROADCAST_REPLY",
    "ADDRESS_NETWORK_LAYER",
    "ControlFrame",
    "Frame",
    "Garbage",
    "LinkParser",
    "LongFrame",
    "Record",
    "RecordValue",
    "ShortFrame",
    "SingleChar",
    "Telegram",
    "ack",
    "application_reset",
    "decode_long_frame",
    "decode_user_data",
    "manufacturer_code",
    "manufacturer_letters",
    "medium_name",
    "parse_frame",
    "req_ud1",
    "req_ud2",
    "rsp_ud",
    "select_secondary",
    "set_baud_rate",
    "snd_nke",
]
