"""Build EN 13757-3 answers: data records, the variable data block and a whole RSP_UD.

The simulator uses this to answer like a real meter; the tests use it to round-trip the decoder.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable
from decimal import Decimal

from protocols.mbus.link import rsp_ud
from protocols.mbus.manufacturers import manufacturer_code

__all__ = [
    "data_record",
    "encode_date_g",
    "encode_datetime_f",
    "encode_datetime_i",
    "rsp_ud_frame",
    "storage_dif",
    "variable_data",
]

_INT_SIZES = {0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x6: 6, 0x7: 8}
_BCD_DIGITS = {0x9: 2, 0xA: 4, 0xB: 6, 0xC: 8, 0xE: 12}


def storage_dif(
    data_field: int, storage: int = 0, tariff: int = 0, subunit: int = 0, function: int = 0
) -> bytes:
    """DIF (+ DIFEs) for a data field with storage number, tariff, subunit and function (0..3)."""
    if not 0 <= data_field <= 0x0F or not 0 <= function <= 3:
        raise ValueError("data_field is 0..15 and function 0..3")
    if storage < 0 or tariff < 0 or subunit < 0:
        raise ValueError("storage, tariff and subunit are non-negative")
    dif = data_field | (function << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes = []
    while storage or tariff or subunit:
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage >>= 4
        tariff >>= 2
        subunit >>= 1
    if len(difes) > 10:
        raise ValueError("more than 10 DIFEs needed")
    if difes:
        dif |= 0x80
        for i in range(len(difes) - 1):
            difes[i] |= 0x80
    return bytes((dif, *difes))


def _bcd(value: int, digits: int) -> bytes:
    negative = value < 0
    text = str(abs(value)).rjust(digits, "0")
    if len(text) > digits or (negative and len(str(-value)) >= digits):
        raise ValueError(f"{value} does not fit in {digits} BCD digits")
    if negative:
        text = "F" + text[1:]
    return bytes.fromhex(text)[::-1]


def encode_date_g(value: dt.date) -> bytes:
    year = value.year % 100
    return bytes(((value.day & 0x1F) | ((year & 0x07) << 5), (value.month & 0x0F) | ((year & 0x78) << 1)))


def encode_datetime_f(value: dt.datetime) -> bytes:
    year = value.year % 100
    # EN 13757-3:2013: year = 1900 + 100 * hundred + yy, where hundred 0 with yy 00-80 means 20yy
    hundred = 0 if 1981 <= value.year <= 2080 else (value.year - year - 1900) // 100
    if not 0 <= hundred <= 3:
        raise ValueError(f"year {value.year} cannot be encoded in type F")
    return bytes(
        (
            value.minute & 0x3F,
            (value.hour & 0x1F) | ((hundred & 0x03) << 5),
            (value.day & 0x1F) | ((year & 0x07) << 5),
            (value.month & 0x0F) | ((year & 0x78) << 1),
        )
    )


def encode_datetime_i(value: dt.datetime) -> bytes:
    year = value.year % 100
    return bytes(
        (
            value.second & 0x3F,
            value.minute & 0x3F,
            (value.hour & 0x1F) | (((value.isoweekday()) & 0x07) << 5),
            (value.day & 0x1F) | ((year & 0x07) << 5),
            (value.month & 0x0F) | ((year & 0x78) << 1),
            value.isocalendar()[1] & 0x3F,
        )
    )


def data_record(
    dif: int | bytes,
    vif: int | bytes,
    value: int | str | dt.date | dt.datetime | Decimal | float | bytes | None,
    *,
    dife: bytes = b"",
    vife: bytes = b"",
) -> bytes:
    """Encode one record. ``dif`` may be a DIF byte or DIF+DIFEs from :func:`storage_dif`.

    ``value`` is the raw register (before VIF scaling): int for integer/BCD fields, float/Decimal for
    real32, str/bytes for LVAR, date/datetime for VIF 6Ch/6Dh (type G, F or I by the data field).
    The extension bits of DIF/VIF are set here when DIFEs/VIFEs follow.
    """
    dib = bytes((dif,)) if isinstance(dif, int) else bytes(dif)
    if dife:
        dib = bytes((dib[0] | 0x80,)) + dib[1:] + bytes(dife)
    field = dib[0] & 0x0F
    vib = bytes((vif,)) if isinstance(vif, int) else bytes(vif)
    if vife:
        vib = bytes((vib[0] | 0x80,)) + vib[1:] + bytes(vife)
    head = dib + vib
    if field in (0x0, 0x8):
        return head
    if isinstance(value, dt.datetime):
        if field == 0x4:
            return head + encode_datetime_f(value)
        if field == 0x6:
            return head + encode_datetime_i(value)
        raise ValueError("a datetime needs data field 4 (type F) or 6 (type I)")
    if isinstance(value, dt.date):
        if field == 0x2:
            return head + encode_date_g(value)
        raise ValueError("a date needs data field 2 (type G)")
    if field == 0xD:
        if isinstance(value, str):
            text = value.encode("latin-1")
            if len(text) > 0xBF:
                raise ValueError("LVAR strings are at most 191 characters")
            return head + bytes((len(text),)) + text[::-1]
        if isinstance(value, bytes):
            if len(value) > 15:
                raise ValueError("LVAR binary up to 15 bytes supported here")
            return head + bytes((0xE0 + len(value),)) + value
        if isinstance(value, int):
            digits = len(str(abs(value)))
            nbytes = (digits + 1) // 2
            body = bytes.fromhex(str(abs(value)).rjust(nbytes * 2, "0"))[::-1]
            return head + bytes(((0xD0 if value < 0 else 0xC0) + nbytes,)) + body
        raise TypeError("LVAR value must be str, bytes or int")
    if field == 0x5:
        if not isinstance(value, (int, float, Decimal)):
            raise TypeError("real32 value must be a number")
        return head + struct.pack("<f", float(value))
    if not isinstance(value, int):
        raise TypeError(f"data field {field:X}h needs an int value, got {type(value).__name__}")
    if field in _BCD_DIGITS:
        return head + _bcd(value, _BCD_DIGITS[field])
    if field in _INT_SIZES:
        return head + value.to_bytes(_INT_SIZES[field], "little", signed=True)
    raise ValueError(f"data field {field:X}h cannot be encoded")


def variable_data(  # noqa: PLR0917 - field order of the telegram header
    ident: str,
    manufacturer: str,
    version: int,
    medium: int,
    access_number: int,
    status: int,
    records: Iterable[bytes],
    *,
    more_follow: bool = False,
    manufacturer_data: bytes = b"",
    signature: int = 0,
) -> bytes:
    """CI 72h user data: 12-byte header + records + optional 0Fh/1Fh and manufacturer data."""
    if len(ident) != 8 or not ident.isdigit():
        raise ValueError(f"identification number must be 8 digits, got {ident!r}")
    header = (
        bytes.fromhex(ident)[::-1]
        + manufacturer_code(manufacturer).to_bytes(2, "little")
        + bytes((version & 0xFF, medium & 0xFF, access_number & 0xFF, status & 0xFF))
        + signature.to_bytes(2, "little")
    )
    body = b"".join(records)
    if more_follow:
        body += b"\x1f" + manufacturer_data
    elif manufacturer_data:
        body += b"\x0f" + manufacturer_data
    return header + body


def rsp_ud_frame(  # noqa: PLR0917 - field order of the telegram header
    address: int,
    ident: str,
    manufacturer: str,
    version: int,
    medium: int,
    access_number: int,
    status: int,
    records: Iterable[bytes],
    *,
    more_follow: bool = False,
    manufacturer_data: bytes = b"",
    acd: bool = False,
    dfc: bool = False,
) -> bytes:
    """A whole RSP_UD long frame with CI 72h, as a meter answers REQ_UD2."""
    data = variable_data(
        ident, manufacturer, version, medium, access_number, status, records,
        more_follow=more_follow, manufacturer_data=manufacturer_data,
    )  # fmt: skip
    return rsp_ud(address, 0x72, data, acd=acd, dfc=dfc)
