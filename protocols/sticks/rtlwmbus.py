"""Lines printed by ``rtl_wmbus`` (an RTL-SDR wM-Bus demodulator), read from stdin or a pipe.

``T1;1;1;2019-04-03 19:00:42.000;97;148;88888888;0x6e44...``: link mode, CRC ok, 3-of-6 decoding ok,
time, RSSI, link quality, meter id, telegram hex (CRCs removed). A plain hex line is accepted too.
A line whose CRC flag is 0 is a :class:`FrameError`: a bad CRC is reported, never decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import FrameError

__all__ = ["RtlWmbusLine", "parse_rtlwmbus_line"]

_RSSI_RE = re.compile(r"-?[0-9]{1,6}")


@dataclass(frozen=True, slots=True)
class RtlWmbusLine:
    link_mode: str | None
    timestamp: str | None
    rssi: int | None
    telegram: bytes


def _hex(text: str) -> bytes:
    text = text.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise FrameError("rtl_wmbus line does not end in a hex telegram") from None


def parse_rtlwmbus_line(line: str) -> RtlWmbusLine:
    text = line.strip()
    if not text:
        raise FrameError("empty rtl_wmbus line")
    if ";" not in text:
        return RtlWmbusLine(None, None, None, _hex(text))
    fields = text.split(";")
    if len(fields) < 3:
        raise FrameError("rtl_wmbus line has too few fields")
    mode = fields[0].strip() or None
    if fields[1].strip() != "1" or fields[2].strip() not in ("1", ""):
        raise FrameError(f"rtl_wmbus reports a CRC or decoding error ({mode or 'unknown mode'} telegram)")
    telegram = _hex(fields[-1])
    if not telegram:
        raise FrameError("rtl_wmbus line carries no telegram")
    timestamp = fields[3].strip() or None if len(fields) > 4 else None
    rssi = None
    # ASCII digits only: str.isdigit() also accepts "²" and "--5", which int() refuses
    if len(fields) > 5 and (match := _RSSI_RE.fullmatch(fields[4].strip())):
        rssi = int(match.group())
    return RtlWmbusLine(mode, timestamp, rssi, telegram)
