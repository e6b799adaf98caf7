"""EN 13757-3 records: every data type, DIFE chains, VIF tables and VIFEs, round-tripped via the encoder."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from protocols.decode import decode_frame_json, decode_frame_json_line
from protocols.errors import DecodeError, SecurityError, UnsupportedError
from protocols.mbus import LongFrame, decode_long_frame, decode_user_data, parse_frame
from protocols.mbus.encode import data_record, rsp_ud_frame, storage_dif, variable_data


def _records(*records: bytes, **kw: object) -> tuple:  # type: ignore[type-arg]
    frame = rsp_ud_frame(1, "12345678", "KAM", 0x1B, 0x04, 0x2A, 0x00, records, **kw)  # type: ignore[arg-type]
    telegram = decode_long_frame(frame)
    assert telegram.id == "12345678"
    assert telegram.manufacturer == "KAM"
    assert (telegram.version, telegram.medium, telegram.device_type) == (0x1B, "heat", 4)
    assert telegram.access_number == 0x2A
    return telegram.records


@pytest.mark.parametrize(
    ("dif", "raw", "expected"),
    [
        (0x01, -5, Decimal(-5000)),  # int8, signed (EN 13757-3 type B)
        (0x02, 1234, Decimal(1234000)),
        (0x03, -70000, Decimal(-70000000)),
        (0x04, 123456789, Decimal(123456789000)),
        (0x06, 2**40, Decimal(2**40) * 1000),
        (0x07, -(2**60), Decimal(-(2**60)) * 1000),
        (0x09, 42, Decimal(42000)),  # BCD 2
        (0x0A, 1234, Decimal(1234000)),
        (0x0B, 123456, Decimal(123456000)),
        (0x0C, 12345678, Decimal(12345678000)),
        (0x0E, 123456789012, Decimal(123456789012000)),
        (0x0C, -1234567, Decimal(-1234567000)),  # negative BCD: leading F nibble
        (0x0D, 12345, Decimal(12345000)),  # LVAR positive BCD
        (0x0D, -12345, Decimal(-12345000)),  # LVAR negative BCD
    ],
)
def test_integer_and_bcd_types_in_kwh(dif: int, raw: int, expected: Decimal) -> None:
    (record,) = _records(data_record(dif, 0x06, raw))  # VIF 06h: energy in kWh (10^3 Wh)
    assert record.value == expected
    assert isinstance(record.value, Decimal)
    assert (record.unit, record.quantity, record.function) == ("Wh", "energy", "instantaneous")


def test_real32_is_exact_shortest_decimal() -> None:
    (record,) = _records(data_record(0x05, 0x5B, 21.5367))  # flow temperature, °C
    assert record.value == Decimal("21.5367")
    assert record.unit == "°C"
    assert record.quantity == "flow_temperature"


@pytest.mark.parametrize(
    ("vif", "unit", "quantity", "raw", "value"),
    [
        (0x13, "m3", "volume", 54321, Decimal("54.321")),
        (0x0E, "J", "energy", 7, Decimal(7000000)),
        (0x1B, "kg", "mass", 3, Decimal(3)),
        (0x2B, "W", "power", 3, Decimal(3)),
        (0x3B, "m3/h", "flow", 1500, Decimal("1.5")),
        (0x5A, "°C", "flow_temperature", 653, Decimal("65.3")),
        (0x5E, "°C", "return_temperature", 412, Decimal("41.2")),
        (0x61, "K", "temperature_difference", 2412, Decimal("24.12")),
        (0x67, "°C", "external_temperature", 5, Decimal(5)),
        (0x69, "bar", "pressure", 31, Decimal("0.31")),
        (0x22, "s", "on_time", 2, Decimal(7200)),  # hours -> seconds
        (0x27, "s", "operating_time", 3, Decimal(259200)),  # days -> seconds
        (0x6E, "HCA", "hca", 812, Decimal(812)),
    ],
)
def test_primary_vif_units_are_normalized(
    vif: int, unit: str, quantity: str, raw: int, value: Decimal
) -> None:
    (record,) = _records(data_record(0x04, vif, raw))
    assert (record.value, record.unit, record.quantity) == (value, unit, quantity)


def test_extension_tables_fd_and_fb() -> None:
    volts, amps, mwh, errors = _records(
        data_record(0x02, b"\xfd\x48", 2301),  # FD 48h: 10^-1 V
        data_record(0x02, b"\xfd\x59", 1234),  # FD 59h: 10^-3 A
        data_record(0x04, b"\xfb\x01", 17),  # FB 01h: 10^0 MWh
        data_record(0x02, b"\xfd\x17", 0x0104),  # error flags
    )
    assert (volts.value, volts.unit) == (Decimal("230.1"), "V")
    assert (amps.value, amps.unit) == (Decimal("1.234"), "A")
    assert (mwh.value, mwh.unit) == (Decimal(17000000), "Wh")
    assert (errors.value, errors.quantity) == (0x0104, "error_flags")


def test_dife_chain_storage_tariff_subunit() -> None:
    dib = storage_dif(0x04, storage=37, tariff=5, subunit=2, function=1)
    (record,) = _records(data_record(dib, 0x13, 5))
    assert (record.storage, record.tariff, record.subunit, record.function) == (37, 5, 2, "maximum")
    assert record.dif_vif == dib + b"\x13"
    (record,) = _records(data_record(storage_dif(0x04, function=3), 0x13, 5))
    assert record.function == "error"


def test_combinable_vifes() -> None:
    corrected, per_hour, error, start = _records(
        data_record(0x02, 0x13, 25, vife=b"\x74"),  # x 10^-2: 25 l * 0.01
        data_record(0x02, 0x06, 3, vife=b"\x22"),  # kWh per hour
        data_record(0x02, 0x13, 0, vife=b"\x16"),  # error: data overflow
        data_record(0x04, 0x06, dt.datetime(2024, 1, 31, 23, 59), vife=b"\x39"),  # start date/time of
    )
    assert corrected.value == Decimal("0.00025")
    assert corrected.unit == "m3"
    assert per_hour.unit == "Wh/h"
    assert error.error == "data overflow"
    assert start.value == dt.datetime(2024, 1, 31, 23, 59)
    assert start.unit == "datetime"


def test_dates_and_times() -> None:
    date_g, date_f, date_i = _records(
        data_record(0x02, 0x6C, dt.date(2023, 12, 31)),
        data_record(0x04, 0x6D, dt.datetime(2024, 2, 29, 13, 45)),
        data_record(0x06, 0x6D, dt.datetime(2024, 2, 29, 13, 45, 17)),
    )
    assert (date_g.value, date_g.unit) == (dt.date(2023, 12, 31), "date")
    assert (date_f.value, date_f.unit) == (dt.datetime(2024, 2, 29, 13, 45), "datetime")
    assert date_i.value == dt.datetime(2024, 2, 29, 13, 45, 17)
    (time_j,) = _records(bytes.fromhex("036d" + "1e2d0d"))
    assert time_j.value == dt.time(13, 45, 30)


def test_strings_plain_text_and_manufacturer_specific() -> None:
    text, plain, mfr = _records(
        data_record(0x0D, b"\xfd\x11", "customer-7"),
        bytes.fromhex("02fc03" + "485225" + "74" + "d411"),  # plain text unit "%RH", x 10^-2
        data_record(0x01, b"\xff\x01", 9),
    )
    assert text.value == "customer-7"
    assert text.quantity == "customer"
    assert (plain.value, plain.unit) == (Decimal("45.64"), "%RH")
    assert mfr.manufacturer_specific
    assert mfr.value == 9


def test_filler_more_records_follow_and_manufacturer_data() -> None:
    frame = rsp_ud_frame(
        1, "00000001", "ELV", 1, 7, 0, 0, [b"\x2f\x2f", data_record(0x04, 0x13, 1), b"\x2f"],
        more_follow=True, manufacturer_data=b"\x01\x02",
    )  # fmt: skip
    telegram = decode_long_frame(frame)
    assert len(telegram.records) == 1
    assert telegram.more_records_follow is True
    assert telegram.manufacturer_data == b"\x01\x02"
    assert telegram.medium == "water"


def test_short_header_and_no_header_for_wireless_reuse() -> None:
    records = data_record(0x04, 0x13, 77)
    telegram = decode_user_data(0x7A, bytes((5, 0, 0, 0)) + records, id="87654321", manufacturer="KAM",
                                version=1, device_type=0x16)  # fmt: skip
    assert (telegram.id, telegram.medium, telegram.access_number) == ("87654321", "cold_water", 5)
    assert telegram.records[0].value == Decimal("0.077")
    assert decode_user_data(0x78, records).records[0].value == Decimal("0.077")


def test_errors_are_typed() -> None:
    with pytest.raises(UnsupportedError, match="CI field 51h"):
        decode_user_data(0x51, b"")
    with pytest.raises(DecodeError, match="premature end"):
        decode_user_data(0x78, b"\x04\x13\x01")
    with pytest.raises(DecodeError, match="reserved DIF"):
        decode_user_data(0x78, b"\x3f")
    # security mode 5 announced and data that does not decode: the key is what is missing
    header = variable_data("12345678", "KAM", 1, 4, 1, 0, [], signature=0x0510)
    with pytest.raises(SecurityError, match="encrypted"):
        decode_user_data(0x72, header + bytes(range(0x90, 0xA0)))


def test_decode_frame_json_shape_and_line_agree() -> None:
    import json

    frame = rsp_ud_frame(
        3,
        "00001234",
        "KAM",
        2,
        4,
        9,
        0,
        [data_record(0x0C, 0x06, 1234), data_record(0x04, 0x6D, dt.datetime(2024, 5, 1, 0, 0))],
    )
    obj = decode_frame_json(frame)
    assert obj == {
        "ok": True, "link": "mbus", "id": "00001234", "manufacturer": "KAM", "version": 2, "medium": "heat",
        "access_number": 9, "status": 0, "error": None,
        "records": [
            {"value": 1234000, "unit": "Wh", "quantity": "energy", "function": "instantaneous", "storage": 0,
             "tariff": 0, "subunit": 0, "dif_vif": "0c06"},
            {"value": "2024-05-01T00:00:00", "unit": "datetime", "quantity": "datetime",
             "function": "instantaneous", "storage": 0, "tariff": 0, "subunit": 0, "dif_vif": "046d"},
        ],
    }  # fmt: skip
    ok, line = decode_frame_json_line(frame)
    assert ok
    assert json.loads(line) == obj
    assert "telegram too short" in decode_frame_json(b"\x44\x01")["error"]  # now decoded as wM-Bus
    assert decode_frame_json(b"")["ok"] is False


def test_parse_frame_returns_long_frame_for_rsp_ud() -> None:
    frame = rsp_ud_frame(3, "00001234", "KAM", 2, 4, 9, 0, [])
    assert isinstance(parse_frame(frame), LongFrame)
