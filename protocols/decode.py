"""One entry point from raw frame bytes to the ``imd decode --json`` object.

``decode_frame_json`` never raises for bad bytes: every failure is an ``{"ok": false, "error": ...}``
object with a readable reason. The object holds only JSON-native types (``json.dumps`` works):
numeric values are ints when integral, else floats whose shortest repr is the exact decimal value
for anything up to 15 significant digits (every BCD register; billing uses the exact ``Decimal``
from :func:`protocols.mbus.decode_long_frame`, not this summary).

Link detection is a table (:data:`LINK_DECODERS`): wired M-Bus and wireless M-Bus (``protocols.wmbus``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from protocols.errors import DecodeError, ProtocolError
from protocols.mbus.application import Record, RecordValue, Telegram, decode_user_data
from protocols.mbus.link import ControlFrame, LongFrame, ShortFrame, SingleChar, parse_frame

if TYPE_CHECKING:
    from protocols.wmbus.compact import FormatCache

__all__ = [
    "LINK_DECODERS",
    "decode_frame_json",
    "decode_frame_json_line",
    "detect_link",
    "json_value",
    "record_json",
    "telegram_json",
    "telegram_json_line",
]

Keys = Mapping[str, bytes]
LinkDecoder = Callable[[bytes, "Keys | None"], Telegram]

_WIRED_STARTS: Final = frozenset((0x68, 0x10, 0xE5))


def _decode_wired(raw: bytes, keys: Keys | None) -> Telegram:
    frame = parse_frame(raw)
    if isinstance(frame, LongFrame):
        return decode_user_data(frame.ci, frame.data, raw=frame.raw)
    if isinstance(frame, SingleChar):
        raise DecodeError("single character E5h (acknowledge) carries no data")
    if isinstance(frame, ShortFrame):
        raise DecodeError(f"short frame (C={frame.control:02X}h, A={frame.address}) carries no data")
    if isinstance(frame, ControlFrame):
        return decode_user_data(frame.ci, b"", raw=frame.raw)
    raise DecodeError("not a data frame")  # pragma: no cover - Frame is a closed union


def _decode_wireless(raw: bytes, keys: Keys | None, formats: FormatCache | None = None) -> Telegram:
    # imported on first use: the wired path does not pay for loading the AES library
    from protocols.wmbus.telegram import decode_wmbus_telegram

    return decode_wmbus_telegram(raw, keys, formats)


# link name -> decoder(raw, keys)
LINK_DECODERS: dict[str, LinkDecoder] = {
    "mbus": _decode_wired,
    "wmbus": _decode_wireless,
}


def detect_link(raw: bytes) -> str:
    """Wired frames start with 68h (68 L L 68), 10h (5 bytes) or E5h (1 byte); the rest is wireless.

    A wM-Bus telegram is at least 11 bytes and may well start with 10h or 68h (its L field), so the
    start byte alone decides only for short input; a long frame must also show its second 68h.
    """
    if not raw or raw[0] not in _WIRED_STARTS:
        return "wmbus"
    if len(raw) < 11 or (raw[0] == 0x68 and raw[3] == 0x68 and raw[1] == raw[2]):
        return "mbus"
    return "wmbus"


def _decode(link: str, raw: bytes, keys: Keys | None, formats: FormatCache | None) -> Telegram:
    if formats is not None and link == "wmbus":
        return _decode_wireless(raw, keys, formats)
    return LINK_DECODERS[link](raw, keys)


def json_value(value: RecordValue) -> int | float | str | None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        integral = value.to_integral_value()
        return int(integral) if integral == value else float(value)
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return value.isoformat()


def record_json(record: Record) -> dict[str, Any]:
    return {
        "value": json_value(record.value),
        "unit": record.unit,
        "quantity": record.quantity,
        "function": record.function,
        "storage": record.storage,
        "tariff": record.tariff,
        "subunit": record.subunit,
        "dif_vif": record.dif_vif.hex(),
    }


def telegram_json(telegram: Telegram, link: str = "mbus") -> dict[str, Any]:
    return {
        "ok": True,
        "link": link,
        "id": telegram.id,
        "manufacturer": telegram.manufacturer,
        "version": telegram.version,
        "medium": telegram.medium,
        "access_number": telegram.access_number,
        "status": telegram.status,
        "records": [record_json(r) for r in telegram.records],
        "error": None,
    }


def decode_frame_json(
    raw: bytes, keys: Mapping[str, bytes] | None = None, formats: FormatCache | None = None
) -> dict[str, Any]:
    """Decode one frame into the ``imd decode --json`` object; never raises for bad input bytes.

    ``formats`` (wireless only) learns compact frame layouts from full frames across calls.
    """
    raw = bytes(raw)
    if not raw:
        return {"ok": False, "link": None, "error": "empty frame"}
    link = detect_link(raw)
    try:
        telegram = _decode(link, raw, keys, formats)
    except ProtocolError as exc:
        return {"ok": False, "link": link, "error": str(exc)}
    return telegram_json(telegram, link)


# -- the same object as one JSON text, built directly (the hot path of ``imd decode --json``) ------

_dumps = json.dumps
_quoted: dict[str, str] = {}


def _q(text: str) -> str:
    """JSON string literal, cached: units, quantities and functions come from a small vocabulary."""
    out = _quoted.get(text)
    if out is None:
        out = _dumps(text, ensure_ascii=False)
        if len(_quoted) < 4096:  # plain-text units are free text: keep the cache bounded
            _quoted[text] = out
    return out


def _json_number_or_string(value: RecordValue) -> str:
    if isinstance(value, Decimal):
        # exact: the decimal digits as decoded, e.g. 54.321 or 0.000 (never float rounding)
        return format(value, "f") if value.is_finite() else "null"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return _dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return f'"{value.hex()}"'
    return f'"{value.isoformat()}"'


def telegram_json_line(telegram: Telegram, link: str = "mbus") -> str:
    """:func:`telegram_json` as JSON text. Numbers keep their exact decimal digits."""
    q = _q
    value_text = _json_number_or_string
    decimal = Decimal
    parts = []
    cached = _quoted.get
    for dv, _d, value, unit, quantity, function, storage, tariff, subunit, _t, _e, _m in telegram.records:
        # exact decimal digits, e.g. 54.321 or 0.000
        text = format(value, "f") if type(value) is decimal and value.is_finite() else value_text(value)
        unit_text = cached(unit) or q(unit)
        quantity_text = cached(quantity) or q(quantity)
        parts.append(
            f'{{"value": {text}, "unit": {unit_text}, "quantity": {quantity_text}, "function": "{function}", '
            f'"storage": {storage}, "tariff": {tariff}, "subunit": {subunit}, "dif_vif": "{dv.hex()}"}}'
        )
    records = ", ".join(parts)
    return (
        f'{{"ok": true, "link": "{link}", "id": {q(telegram.id)}, '
        f'"manufacturer": {q(telegram.manufacturer)}, "version": {telegram.version}, '
        f'"medium": "{telegram.medium}", '
        f'"access_number": {telegram.access_number}, "status": {telegram.status}, '
        f'"records": [{records}], "error": null}}'
    )


def decode_frame_json_line(
    raw: bytes, keys: Mapping[str, bytes] | None = None, formats: FormatCache | None = None
) -> tuple[bool, str]:
    """:func:`decode_frame_json` as ``(ok, JSON text)``; never raises for bad input bytes."""
    raw = bytes(raw)
    if not raw:
        return False, _dumps({"ok": False, "link": None, "error": "empty frame"})
    link = detect_link(raw)
    try:
        telegram = _decode(link, raw, keys, formats)
    except ProtocolError as exc:
        return False, _dumps({"ok": False, "link": link, "error": str(exc)}, ensure_ascii=False)
    return True, telegram_json_line(telegram, link)
