"""EN 13757-3 application layer: data records and the telegram header, for wired and wireless M-Bus.

``decode_user_data(ci, data)`` is the one record decoder; ``decode_long_frame`` feeds it from a
wired RSP_UD. Numeric register values come out as exact :class:`~decimal.Decimal` in a normalized
unit (``Wh``, ``m3``, ``W``, ``°C`` ...), never as floats.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, NamedTuple

from protocols.errors import DecodeError, FrameError, SecurityError, UnsupportedError
from protocols.mbus.link import ControlFrame, LongFrame, parse_frame
from protocols.mbus.manufacturers import manufacturer_letters
from protocols.mbus.vif import (
    C_ERROR,
    C_EXTENSION,
    C_FACTOR,
    C_MANUFACTURER,
    C_PER,
    C_PULSE,
    C_TIME_OF,
    COMBINABLE,
    FB_TABLE,
    FD_TABLE,
    KIND_BINARY,
    KIND_DATE,
    KIND_DATETIME,
    KIND_NUMBER,
    KIND_PLAIN,
    PRIMARY,
    VifInfo,
)

__all__ = [
    "APPLICATION_ERRORS",
    "FUNCTIONS",
    "MEDIUM_NAMES",
    "Record",
    "RecordValue",
    "Telegram",
    "decode_long_frame",
    "decode_user_data",
    "medium_name",
]

RecordValue = Decimal | int | str | dt.datetime | dt.date | dt.time | bytes | None

FUNCTIONS: Final = ("instantaneous", "maximum", "minimum", "error")

# EN 13757-3 table 3 (device type / medium). Stable snake_case names: they go into JSON and the DB.
MEDIUM_NAMES: Final[dict[int, str]] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat",
    0x05: "steam",
    0x06: "warm_water",
    0x07: "water",
    0x08: "heat_cost_allocator",
    0x09: "compressed_air",
    0x0A: "cooling_outlet",
    0x0B: "cooling_inlet",
    0x0C: "heat_inlet",
    0x0D: "heat_cooling",
    0x0E: "bus_system_component",
    0x0F: "unknown",
    0x14: "calorific_value",
    0x15: "hot_water",
    0x16: "cold_water",
    0x17: "dual_register_water",
    0x18: "pressure",
    0x19: "ad_converter",
    0x1A: "smoke_detector",
    0x1B: "room_sensor",
    0x1C: "gas_detector",
    0x20: "breaker",
    0x21: "valve",
    0x25: "customer_unit",
    0x28: "waste_water",
    0x29: "garbage",
    0x2A: "carbon_dioxide",
    0x31: "communication_controller",
    0x32: "unidirectional_repeater",
    0x33: "bidirectional_repeater",
    0x36: "radio_converter_system",
    0x37: "radio_converter_meter",
    0x38: "wired_adapter",
}

# EN 13757-3 "application errors" reported by a slave with CI 70h.
APPLICATION_ERRORS: Final[dict[int, str]] = {
    0: "unspecified error",
    1: "unimplemented CI-field",
    2: "buffer too long, truncated",
    3: "too many records",
    4: "premature end of record",
    5: "more than 10 DIFEs",
    6: "more than 10 VIFEs",
    7: "reserved",
    8: "application too busy for handling readout request",
    9: "too many readouts",
}

MAX_DIFE: Final = 10
MAX_VIFE: Final = 10


def medium_name(code: int) -> str:
    return MEDIUM_NAMES.get(code, f"reserved_{code:02x}")


class Record(NamedTuple):
    """One data record. ``value`` is exact: Decimal in ``unit`` for numeric registers.

    Immutable and slot-less like a frozen slotted dataclass, but a NamedTuple: a telegram holds
    dozens of records and building a frozen dataclass costs ~5 us per record (one
    ``object.__setattr__`` per field), which alone made decoding slower than the 10x-pyMeterBus
    goal allows. Use ``record._replace(...)`` where a dataclass would use ``dataclasses.replace``.
    """

    dif_vif: bytes
    data: bytes
    value: RecordValue
    unit: str
    quantity: str
    function: str
    storage: int
    tariff: int
    subunit: int
    description: str = ""
    error: str | None = None
    manufacturer_specific: bool = False


@dataclass(frozen=True, slots=True)
class Telegram:
    ci: int
    id: str
    manufacturer: str
    version: int
    medium: str
    device_type: int
    access_number: int
    status: int
    signature: int
    records: tuple[Record, ...]
    more_records_follow: bool
    manufacturer_data: bytes
    raw: bytes


# -- data types ---------------------------------------------------------------------------------

# DIF data field -> data length in bytes (None: variable length, -1: special function)
_DATA_LENGTH: Final = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, -1)
_BCD_FIELDS: Final = frozenset((0x9, 0xA, 0xB, 0xC, 0xE))
_REAL: Final = struct.Struct("<f")


def _bcd(data: bytes) -> int | None:
    """BCD, least significant byte first; a leading F nibble means negative (EN 13757-3 annex A type A).

    Other hex digits A-F are not numbers: meters use them for display-style error codes; ``None``.
    """
    text = data[::-1].hex()
    try:
        return int(text)
    except ValueError:
        pass
    if text[0] == "f":
        try:
            return -int(text[1:])
        except ValueError:
            return None
    return None


def _real32(raw: bytes) -> Decimal:
    """The shortest decimal that is the same float32: a real32 carries ~7 significant digits, not 17."""
    real = _REAL.unpack(raw)[0]
    if real != real or real in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN test
        return Decimal(repr(real))
    for digits in (6, 7, 8):
        text = f"{real:.{digits}g}"
        if _REAL.pack(float(text)) == raw:
            return Decimal(text)
    return Decimal(f"{real:.9g}")


def _date_g(b: bytes) -> dt.date | str:
    day = b[0] & 0x1F
    month = b[1] & 0x0F
    year = ((b[1] & 0xF0) >> 1) | ((b[0] & 0xE0) >> 5)
    year += 2000 if year < 81 else 1900
    try:
        return dt.date(year, month, day)
    except ValueError:
        return f"{year:04d}-{month:02d}-{day:02d}"


def _full_year(two_digit: int, hundred: int) -> int:
    """EN 13757-3:2013 annex A: year = 1900 + 100 * hundred-year + yy; with hundred-year 0, meters
    of the older two-digit kind mean 2000-2080 by 00-80 (the standard's compatibility rule)."""
    if hundred == 0:
        return two_digit + (2000 if two_digit <= 80 else 1900)
    return 1900 + 100 * hundred + two_digit


def _datetime_f(b: bytes, want_date: bool = False) -> dt.datetime | dt.date | str:
    minute = b[0] & 0x3F
    hour = b[1] & 0x1F
    day = b[2] & 0x1F
    month = b[3] & 0x0F
    year = _full_year(((b[3] & 0xF0) >> 1) | ((b[2] & 0xE0) >> 5), (b[1] >> 5) & 0x03)
    try:
        if want_date:
            return dt.date(year, month, day)
        return dt.datetime(year, month, day, hour, minute)
    except ValueError:
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00"


def _datetime_i(b: bytes) -> dt.datetime | str:
    second = b[0] & 0x3F
    minute = b[1] & 0x3F
    hour = b[2] & 0x1F
    day = b[3] & 0x1F
    month = b[4] & 0x0F
    year = ((b[4] & 0xF0) >> 1) | ((b[3] & 0xE0) >> 5)
    year += 2000 if year < 81 else 1900
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def _time_j(b: bytes) -> dt.time | str:
    try:
        return dt.time(b[2] & 0x1F, b[1] & 0x3F, b[0] & 0x3F)
    except ValueError:
        return f"{b[2] & 0x1F:02d}:{b[1] & 0x3F:02d}:{b[0] & 0x3F:02d}"


def _time_point(data: bytes, want_date: bool) -> RecordValue:
    """Decode a time point by its size: G (2), J (3), F (4), I (6) bytes; other sizes stay bytes."""
    n = len(data)
    if n == 2:
        return _date_g(data)
    if n == 4:
        return _datetime_f(data, want_date)
    if n == 6:
        return _datetime_i(data)
    if n == 3:
        return _time_j(data)
    return data


# -- record decoding ----------------------------------------------------------------------------

_EMPTY_INFO: Final = VifInfo("", "", 0, KIND_BINARY, "")


def _unknown(table: str, code: int) -> VifInfo:
    return VifInfo("reserved", "", 0, KIND_BINARY, f"reserved VIF {table}{code:02X}h")


def _decode_records(data: bytes, pos: int) -> tuple[tuple[Record, ...], bool, bytes]:
    """Decode the data records from ``pos`` to the end; return records, more-follow and manufacturer data."""
    records: list[Record] = []
    append = records.append
    n = len(data)
    primary = PRIMARY
    new_record = tuple.__new__  # C-level NamedTuple construction from all fields
    while pos < n:
        start = pos
        dif = data[pos]
        pos += 1
        field = dif & 0x0F
        if field == 0x0F:
            if dif == 0x2F:  # idle filler between records
                continue
            if dif in (0x0F, 0x1F):
                return tuple(records), dif == 0x1F, data[pos:]
            raise DecodeError(f"reserved DIF special function {dif:02X}h at offset {start}")
        storage = (dif >> 6) & 1
        tariff = 0
        subunit = 0
        if dif & 0x80:
            shift_s = 1
            shift_t = 0
            count = 0
            while True:
                if pos >= n:
                    raise DecodeError(f"premature end of data in DIFE chain of record at offset {start}")
                dife = data[pos]
                pos += 1
                count += 1
                if count > MAX_DIFE:
                    raise DecodeError(f"more than {MAX_DIFE} DIFEs in record at offset {start}")
                storage |= (dife & 0x0F) << shift_s
                tariff |= ((dife >> 4) & 0x03) << shift_t
                subunit |= ((dife >> 6) & 0x01) << (count - 1)
                shift_s += 4
                shift_t += 2
                if not dife & 0x80:
                    break
        if pos >= n:
            raise DecodeError(f"premature end of data: record at offset {start} has no VIF")
        vif = data[pos]
        pos += 1
        code = vif & 0x7F
        info: VifInfo | None
        plain_unit = ""
        manufacturer_specific = False
        if vif in (0xFD, 0xFB):
            if pos >= n:
                raise DecodeError(f"premature end of data after VIF {vif:02X}h at offset {start}")
            ext = data[pos]
            pos += 1
            table = FD_TABLE if vif == 0xFD else FB_TABLE
            info = table[ext & 0x7F] or _unknown(f"{vif:02X}h ", ext & 0x7F)
            more = ext & 0x80
        else:
            info = primary[code]
            if info is None:
                info = _unknown("", code)
            more = vif & 0x80
            if code == 0x7C:  # plain text unit: length, then ASCII least significant character first
                if pos >= n:
                    raise DecodeError(f"premature end of data in plain text VIF at offset {start}")
                length = data[pos]
                pos += 1
                if pos + length > n:
                    raise DecodeError(f"plain text VIF of record at offset {start} runs past the end")
                plain_unit = data[pos : pos + length][::-1].decode("latin-1")
                pos += length
            elif code == 0x7F:
                manufacturer_specific = True
        scale = info.scale
        kind = info.kind
        unit = plain_unit or info.unit
        description = info.description
        error: str | None = None
        time_of = False
        quantity = info.quantity
        # measured quantities are Decimal in their unit; identifiers and counters stay int
        as_decimal = kind in (KIND_NUMBER, KIND_PLAIN)
        if more:
            count = 0
            extension = False
            while True:
                if pos >= n:
                    raise DecodeError(f"premature end of data in VIFE chain of record at offset {start}")
                vife = data[pos]
                pos += 1
                count += 1
                if count > MAX_VIFE:
                    raise DecodeError(f"more than {MAX_VIFE} VIFEs in record at offset {start}")
                if manufacturer_specific or extension:
                    # after 7Fh/FFh (or an FCh-table VIFE we do not interpret) the VIFEs are opaque
                    extension = False
                    if not vife & 0x80:
                        break
                    continue
                comb = COMBINABLE[vife & 0x7F]
                ckind = comb.kind
                if ckind == C_FACTOR:
                    scale = scale.scaleb(comb.exponent)
                    as_decimal = True
                elif ckind == C_ERROR:
                    if vife & 0x7F:
                        error = comb.text
                elif ckind == C_PER:
                    unit = f"{unit}{comb.text[1:]}" if comb.text[0] == "*" else f"{unit}/{comb.text}"
                elif ckind == C_TIME_OF:
                    time_of = True
                elif ckind == C_PULSE:
                    quantity = f"{quantity}_per_pulse"
                elif ckind == C_MANUFACTURER:
                    manufacturer_specific = True
                elif ckind == C_EXTENSION:
                    extension = True
                description = f"{description}, {comb.text}"
                if not vife & 0x80:
                    break
        header_end = pos
        length_or_none = _DATA_LENGTH[field]
        value: RecordValue
        if length_or_none is None:
            if pos >= n:
                raise DecodeError(f"premature end of data: record at offset {start} has no LVAR byte")
            lvar = data[pos]
            pos += 1
            if lvar < 0xC0:
                end = pos + lvar
                if end > n:
                    raise DecodeError(f"variable length data of record at offset {start} runs past the end")
                raw = data[pos:end]
                value = raw[::-1].decode("latin-1")
            elif lvar < 0xE0 and (lvar & 0x0F) < 10:
                end = pos + (lvar & 0x0F)
                if end > n:
                    raise DecodeError(f"variable length BCD of record at offset {start} runs past the end")
                raw = data[pos:end]
                number = _bcd(raw) if raw else 0
                if number is not None and lvar >= 0xD0:
                    number = -number
                value = (Decimal(number) * scale if as_decimal else number) if number is not None else None
                if number is None:
                    error = error or "invalid BCD digit"
            elif 0xE0 <= lvar <= 0xF6:
                size = (
                    lvar - 0xE0
                    if lvar <= 0xEF
                    else (4 * (lvar - 0xEC) if lvar <= 0xF4 else (48 if lvar == 0xF5 else 64))
                )
                end = pos + size
                if end > n:
                    raise DecodeError(f"variable length binary of record at offset {start} runs past the end")
                raw = data[pos:end]
                value = raw
            else:
                raise DecodeError(f"reserved LVAR {lvar:02X}h in record at offset {start}")
            pos = end
        else:
            end = pos + length_or_none
            if end > n:
                raise DecodeError(
                    f"premature end of data: record at offset {start} needs {length_or_none} data bytes, "
                    f"{n - pos} left"
                )
            raw = data[pos:end]
            pos = end
            if length_or_none == 0:
                value = None
            elif time_of or kind in (KIND_DATE, KIND_DATETIME):
                value = _time_point(raw, kind == KIND_DATE and not time_of)
                if type(value) is str:
                    error = error or f"invalid date/time {value}"
                    value = None
                if time_of:
                    unit = (
                        "date"
                        if isinstance(value, dt.date) and not isinstance(value, dt.datetime)
                        else "datetime"
                    )
            elif field in _BCD_FIELDS:
                number = _bcd(raw)
                if number is None:
                    value = None
                    error = error or f"non-BCD digits {raw[::-1].hex().upper()}"
                else:
                    value = Decimal(number) * scale if as_decimal else number
            elif field == 0x05:
                value = _real32(raw) * scale
            else:
                number = int.from_bytes(raw, "little", signed=True)
                value = Decimal(number) * scale if as_decimal else number
        append(
            new_record(
                Record,
                (
                    data[start:header_end],
                    data[header_end:end],
                    value,
                    unit,
                    quantity,
                    FUNCTIONS[(dif >> 4) & 0x03],
                    storage,
                    tariff,
                    subunit,
                    description,
                    error,
                    manufacturer_specific,
                ),
            )
        )
    return tuple(records), False, b""


# -- headers ------------------------------------------------------------------------------------


def _security_mode(signature: int) -> int:
    # OMS / EN 13757-7: the configuration word carries the security mode in bits 8..12.
    return (signature >> 8) & 0x1F


def _bcd_id(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def _fixed(ci: int, data: bytes, raw: bytes) -> Telegram:
    """Fixed data structure (EN 13757-3 annex, CI 73h LSB first / 77h MSB first): two counters."""
    if len(data) != 16:
        raise DecodeError(f"fixed data structure must be 16 bytes, got {len(data)}")
    msb_first = ci == 0x77
    ident_raw = data[0:4]
    if msb_first:
        ident_raw = ident_raw[::-1]
    access, status = data[4], data[5]
    m0, m1 = data[6], data[7]
    if msb_first:
        m0, m1 = m1, m0
    medium = ((m1 >> 6) << 2) | (m0 >> 6)
    records = []
    for index, (code, counter) in enumerate(((m0 & 0x3F, data[8:12]), (m1 & 0x3F, data[12:16]))):
        unit_code = code
        body = counter[::-1] if msb_first else counter
        # status bit 7 says the counters are binary rather than BCD
        number = int.from_bytes(body, "little") if status & 0x80 else _bcd(body)
        storage = 0
        if unit_code == 0x3E and index == 1:  # "same unit as counter 1, historic value"
            unit_code = m0 & 0x3F
            storage = 1
        quantity, unit, exponent = _FIXED_UNITS.get(unit_code, ("reserved", "", 0))
        value: RecordValue = None if number is None else Decimal(number).scaleb(exponent)
        records.append(
            Record(b"", counter, value, unit, quantity, "instantaneous", storage, 0, 0,
                   f"fixed structure counter {index + 1} (unit code {unit_code:02X}h)",
                   None if number is not None else "invalid BCD digit")
        )  # fmt: skip
    return Telegram(ci, _bcd_id(ident_raw), "", 0, medium_name(medium), medium, access, status, 0,
                    tuple(records), False, b"", raw)  # fmt: skip


def _build_fixed_units() -> dict[int, tuple[str, str, int]]:
    units: dict[int, tuple[str, str, int]] = {}
    for i in range(9):
        units[0x02 + i] = ("energy", "Wh", i)
        units[0x0B + i] = ("energy", "J", i + 3)
        units[0x14 + i] = ("power", "W", i)
        units[0x1D + i] = ("power", "J/h", i + 3)
        units[0x26 + i] = ("volume", "m3", i - 6)
        units[0x2F + i] = ("flow", "m3/h", i - 6)
    units[0x38] = ("temperature", "°C", -3)
    units[0x39] = ("hca", "HCA", 0)
    units[0x3F] = ("dimensionless", "", 0)
    return units


_FIXED_UNITS: Final = _build_fixed_units()


def decode_user_data(
    ci: int,
    data: bytes,
    *,
    id: str = "",
    manufacturer: str = "",
    version: int = 0,
    device_type: int = 0xFF,
    raw: bytes = b"",
) -> Telegram:
    """Decode application data by CI field. For short/no-header CIs the identity comes from the caller
    (the wireless link layer); a long header overrides it."""
    data = bytes(data)
    if ci in (0x72, 0x76):
        if len(data) < 12:
            raise DecodeError(f"variable data header needs 12 bytes, got {len(data)}")
        ident_raw = data[0:4]
        man = data[4] | (data[5] << 8)
        signature = data[10] | (data[11] << 8)
        if ci == 0x76:
            ident_raw = ident_raw[::-1]
            man = data[5] | (data[4] << 8)
            signature = data[11] | (data[10] << 8)
        records, more, mdata = _records_or_security_error(signature, data, 12)
        return Telegram(ci, _bcd_id(ident_raw), manufacturer_letters(man), data[6], medium_name(data[7]),
                        data[7], data[8], data[9], signature, records, more, mdata, raw or data)  # fmt: skip
    if ci == 0x7A:
        if len(data) < 4:
            raise DecodeError(f"short header needs 4 bytes, got {len(data)}")
        signature = data[2] | (data[3] << 8)
        records, more, mdata = _records_or_security_error(signature, data, 4)
        return Telegram(ci, id, manufacturer, version, medium_name(device_type), device_type,
                        data[0], data[1], signature, records, more, mdata, raw or data)  # fmt: skip
    if ci == 0x78:
        records, more, mdata = _decode_records(data, 0)
        return Telegram(ci, id, manufacturer, version, medium_name(device_type), device_type, 0, 0, 0,
                        records, more, mdata, raw or data)  # fmt: skip
    if ci in (0x73, 0x77):
        return _fixed(ci, data, raw or data)
    if ci == 0x70:
        if data:
            code = data[0]
            reason = APPLICATION_ERRORS.get(code, f"reserved error code {code}")
            raise DecodeError(f"meter reports application error {code}: {reason}")
        raise DecodeError("meter reports an application error (no error code given)")
    if ci == 0x71:
        raise UnsupportedError("alarm status telegram (CI 71h) is not decoded")
    raise UnsupportedError(f"CI field {ci:02X}h is not supported")


_ENCRYPTION_MODES: Final = frozenset((5, 7, 8, 9, 10, 13))


def _records_or_security_error(
    signature: int, data: bytes, header: int
) -> tuple[tuple[Record, ...], bool, bytes]:
    """Decode records; if that fails and the configuration word announces encryption, say so instead.

    Wired meters put arbitrary values into the signature word, so a security mode alone is no proof of
    encryption: plain records that decode are accepted. Decrypted data (opened by the wireless layer
    with the meter key) starts with 2F 2F and decodes normally.
    """
    mode = _security_mode(signature)
    try:
        return _decode_records(data, header)
    except DecodeError:
        if mode in _ENCRYPTION_MODES and data[header : header + 2] != b"\x2f\x2f":
            raise SecurityError(
                f"application data is encrypted (security mode {mode}); the meter key is needed"
            ) from None
        raise


def decode_long_frame(frame: LongFrame | ControlFrame | bytes) -> Telegram:
    """Decode a wired RSP_UD long frame (or its raw bytes) into a :class:`Telegram`.

    A control frame (no data) is accepted too: with CI 70h it is a slave's bare application error.
    """
    if isinstance(frame, ControlFrame):
        return decode_user_data(frame.ci, b"", raw=frame.raw)
    if not isinstance(frame, LongFrame):
        parsed = parse_frame(frame)
        if isinstance(parsed, ControlFrame):
            return decode_user_data(parsed.ci, b"", raw=parsed.raw)
        if not isinstance(parsed, LongFrame):
            kind = type(parsed).__name__
            raise FrameError(f"expected a long frame with user data, got a {kind}")
        frame = parsed
    return decode_user_data(frame.ci, frame.data, raw=frame.raw)
