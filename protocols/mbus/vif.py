"""EN 13757-3 value information: primary VIF table, extension tables FBh/FDh and combinable VIFEs.

The tables are data, built once at import into 128-entry tuples indexed by the code without its
extension bit, so decoding a record is a tuple lookup. Each numeric entry says how to turn the raw
register into the normalized unit exactly: ``value = raw * multiplier * 10**exponent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

__all__ = [
    "COMBINABLE",
    "FB_TABLE",
    "FD_TABLE",
    "KIND_BINARY",
    "KIND_DATE",
    "KIND_DATETIME",
    "KIND_NUMBER",
    "KIND_PLAIN",
    "PRIMARY",
    "Combinable",
    "VifInfo",
]

KIND_NUMBER: Final = 0  # a measured or counted quantity: exact Decimal in the normalized unit
KIND_DATE: Final = 1  # a date (type G, or the date part of F)
KIND_DATETIME: Final = 2  # a point in time (types F, I, J by data size)
KIND_BINARY: Final = 3  # an identifier, flags or counter: int/str as sent, no scaling
KIND_PLAIN: Final = 4  # plain text VIF: the unit is in the telegram

_ONE: Final = Decimal(1)


@dataclass(frozen=True, slots=True)
class VifInfo:
    quantity: str
    unit: str
    exponent: int
    kind: int
    description: str
    multiplier: int = 1
    scale: Decimal = _ONE

    @staticmethod
    def number(quantity: str, unit: str, exponent: int, description: str, multiplier: int = 1) -> VifInfo:
        return VifInfo(
            quantity,
            unit,
            exponent,
            KIND_NUMBER,
            description,
            multiplier,
            Decimal(multiplier).scaleb(exponent),
        )


def _number(quantity: str, unit: str, exponent: int, description: str, multiplier: int = 1) -> VifInfo:
    return VifInfo.number(quantity, unit, exponent, description, multiplier)


def _binary(quantity: str, description: str) -> VifInfo:
    return VifInfo(quantity, "", 0, KIND_BINARY, description)


# seconds, minutes, hours, days: the nn of a duration VIF
_DURATION: Final = ((1, "seconds"), (60, "minutes"), (3600, "hours"), (86400, "days"))


def _build_primary() -> tuple[VifInfo | None, ...]:
    t: list[VifInfo | None] = [None] * 128
    for n in range(8):
        t[0x00 + n] = _number("energy", "Wh", n - 3, f"Energy (10^{n - 3} Wh)")
        t[0x08 + n] = _number("energy", "J", n, f"Energy (10^{n} J)")
        t[0x10 + n] = _number("volume", "m3", n - 6, f"Volume (10^{n - 6} m3)")
        t[0x18 + n] = _number("mass", "kg", n - 3, f"Mass (10^{n - 3} kg)")
        t[0x28 + n] = _number("power", "W", n - 3, f"Power (10^{n - 3} W)")
        t[0x30 + n] = _number("power", "J/h", n, f"Power (10^{n} J/h)")
        t[0x38 + n] = _number("flow", "m3/h", n - 6, f"Volume flow (10^{n - 6} m3/h)")
        t[0x40 + n] = _number("flow", "m3/min", n - 7, f"Volume flow (10^{n - 7} m3/min)")
        t[0x48 + n] = _number("flow", "m3/s", n - 9, f"Volume flow (10^{n - 9} m3/s)")
        t[0x50 + n] = _number("mass_flow", "kg/h", n - 3, f"Mass flow (10^{n - 3} kg/h)")
    for n, (mult, name) in enumerate(_DURATION):
        t[0x20 + n] = _number("on_time", "s", 0, f"On time ({name})", mult)
        t[0x24 + n] = _number("operating_time", "s", 0, f"Operating time ({name})", mult)
        t[0x70 + n] = _number("averaging_duration", "s", 0, f"Averaging duration ({name})", mult)
        t[0x74 + n] = _number("actuality_duration", "s", 0, f"Actuality duration ({name})", mult)
    for n in range(4):
        t[0x58 + n] = _number("flow_temperature", "°C", n - 3, f"Flow temperature (10^{n - 3} °C)")
        t[0x5C + n] = _number("return_temperature", "°C", n - 3, f"Return temperature (10^{n - 3} °C)")
        t[0x60 + n] = _number("temperature_difference", "K", n - 3, f"Temperature difference (10^{n - 3} K)")
        t[0x64 + n] = _number("external_temperature", "°C", n - 3, f"External temperature (10^{n - 3} °C)")
        t[0x68 + n] = _number("pressure", "bar", n - 3, f"Pressure (10^{n - 3} bar)")
    t[0x6C] = VifInfo("date", "date", 0, KIND_DATE, "Time point (date)")
    t[0x6D] = VifInfo("datetime", "datetime", 0, KIND_DATETIME, "Time point (date and time)")
    t[0x6E] = _number("hca", "HCA", 0, "Units for heat cost allocator")
    t[0x78] = _binary("fabrication_number", "Fabrication number")
    t[0x79] = _binary("enhanced_identification", "(Enhanced) identification")
    t[0x7A] = _binary("bus_address", "Bus address")
    t[0x7C] = VifInfo("plain_text", "", 0, KIND_PLAIN, "Plain text unit")
    t[0x7E] = _binary("any", "Any VIF")
    t[0x7F] = _binary("manufacturer_specific", "Manufacturer specific")
    return tuple(t)


def _build_fd() -> tuple[VifInfo | None, ...]:
    """EN 13757-3 table 14: main VIFE code extension table (after VIF FDh)."""
    t: list[VifInfo | None] = [None] * 128
    for n in range(4):
        t[0x00 + n] = _number("credit", "", n - 3, f"Credit (10^{n - 3} currency units)")
        t[0x04 + n] = _number("debit", "", n - 3, f"Debit (10^{n - 3} currency units)")
    names = {
        0x08: ("access_number", "Access number (transmission count)"),
        0x09: ("medium", "Medium"),
        0x0A: ("manufacturer", "Manufacturer"),
        0x0B: ("parameter_set_id", "Parameter set identification"),
        0x0C: ("model_version", "Model / version"),
        0x0D: ("hardware_version", "Hardware version"),
        0x0E: ("firmware_version", "Firmware version"),
        0x0F: ("software_version", "Software version"),
        0x10: ("customer_location", "Customer location"),
        0x11: ("customer", "Customer"),
        0x12: ("access_code_user", "Access code user"),
        0x13: ("access_code_operator", "Access code operator"),
        0x14: ("access_code_system_operator", "Access code system operator"),
        0x15: ("access_code_developer", "Access code developer"),
        0x16: ("password", "Password"),
        0x17: ("error_flags", "Error flags"),
        0x18: ("error_mask", "Error mask"),
        0x19: ("security_key", "Security key"),
        0x1A: ("digital_output", "Digital output"),
        0x1B: ("digital_input", "Digital input"),
        0x1C: ("baud_rate", "Baud rate"),
        0x1D: ("response_delay_time", "Response delay time (bit times)"),
        0x1E: ("retry", "Retry"),
        0x1F: ("remote_control", "Remote control"),
        0x20: ("first_storage_number", "First storage number for cyclic storage"),
        0x21: ("last_storage_number", "Last storage number for cyclic storage"),
        0x22: ("storage_block_size", "Size of storage block"),
        0x23: ("tariff_subunit_descriptor", "Descriptor for tariff and subunit"),
        0x28: ("storage_interval_months", "Storage interval (months)"),
        0x29: ("storage_interval_years", "Storage interval (years)"),
        0x2A: ("operator_specific", "Operator specific data"),
        0x2B: ("time_point_second", "Time point second"),
        0x38: ("tariff_period_months", "Period of tariff (months)"),
        0x39: ("tariff_period_years", "Period of tariff (years)"),
        0x3A: ("dimensionless", "Dimensionless"),
        0x3B: ("wmbus_container", "Data container for wireless M-Bus protocol"),
        0x60: ("reset_counter", "Reset counter"),
        0x61: ("cumulation_counter", "Cumulation counter"),
        0x62: ("control_signal", "Control signal"),
        0x63: ("day_of_week", "Day of week"),
        0x64: ("week_number", "Week number"),
        0x65: ("day_change_time", "Time point of day change"),
        0x66: ("parameter_activation_state", "State of parameter activation"),
        0x67: ("special_supplier_information", "Special supplier information"),
        0x71: ("rf_level", "RF level (dBm)"),
        0x72: ("daylight_saving", "Daylight saving"),
        0x73: ("listening_window", "Listening window management"),
        0x75: ("meter_stopped_count", "Number of times the meter was stopped"),
        0x76: ("manufacturer_container", "Data container for manufacturer specific protocol"),
    }
    for code, (quantity, description) in names.items():
        t[code] = _binary(quantity, description)
    for n, (mult, name) in enumerate(_DURATION):
        t[0x24 + n] = _number("storage_interval", "s", 0, f"Storage interval ({name})", mult)
        t[0x2C + n] = _number("duration_since_readout", "s", 0, f"Duration since last readout ({name})", mult)
        t[0x3C + n] = _number(
            "transmission_period", "s", 0, f"Period of nominal transmissions ({name})", mult
        )
        t[0x34 + n] = _number("tariff_period", "s", 0, f"Period of tariff ({name})", mult)
        if n:
            t[0x30 + n] = _number("tariff_duration", "s", 0, f"Duration of tariff ({name})", mult)
    t[0x30] = VifInfo("tariff_start", "datetime", 0, KIND_DATETIME, "Start (date/time) of tariff")
    for n in range(16):
        t[0x40 + n] = _number("voltage", "V", n - 9, f"Voltage (10^{n - 9} V)")
        t[0x50 + n] = _number("current", "A", n - 12, f"Current (10^{n - 12} A)")
    # hours, days, then months/years which have no fixed length in seconds
    for n, (mult, name) in enumerate(((3600, "hours"), (86400, "days"))):
        t[0x68 + n] = _number(
            "duration_since_cumulation", "s", 0, f"Duration since last cumulation ({name})", mult
        )
        t[0x6C + n] = _number("battery_operating_time", "s", 0, f"Operating time battery ({name})", mult)
    t[0x6A] = _binary("duration_since_cumulation_months", "Duration since last cumulation (months)")
    t[0x6B] = _binary("duration_since_cumulation_years", "Duration since last cumulation (years)")
    t[0x6E] = _binary("battery_operating_time_months", "Operating time battery (months)")
    t[0x6F] = _binary("battery_operating_time_years", "Operating time battery (years)")
    t[0x70] = VifInfo("battery_change", "datetime", 0, KIND_DATETIME, "Date and time of battery change")
    t[0x74] = _number("remaining_battery_life", "s", 0, "Remaining battery life time (days)", 86400)
    return tuple(t)


# Exact SI conversions of the non-metric volume units in table FBh (NIST: 1 US gal = 3.785411784 L,
# 1 ft3 = 28.316846592 L), so they land in the m3 vocabulary without rounding.
_US_GALLON_M3: Final = Decimal("0.003785411784")
_CUBIC_FOOT_M3: Final = Decimal("0.028316846592")


def _build_fb() -> tuple[VifInfo | None, ...]:
    """EN 13757-3 table 12: main VIFE code extension table (after VIF FBh)."""
    t: list[VifInfo | None] = [None] * 128
    for n in range(2):
        t[0x00 + n] = _number("energy", "Wh", n - 1 + 6, f"Energy (10^{n - 1} MWh)")
        t[0x08 + n] = _number("energy", "J", n - 1 + 9, f"Energy (10^{n - 1} GJ)")
        t[0x10 + n] = _number("volume", "m3", n + 2, f"Volume (10^{n + 2} m3)")
        t[0x18 + n] = _number("mass", "kg", n + 2 + 3, f"Mass (10^{n + 2} t)")
        t[0x28 + n] = _number("power", "W", n - 1 + 6, f"Power (10^{n - 1} MW)")
        t[0x30 + n] = _number("power", "J/h", n - 1 + 9, f"Power (10^{n - 1} GJ/h)")
    t[0x21] = VifInfo("volume", "m3", 0, KIND_NUMBER, "Volume (0.1 ft3)", 1, _CUBIC_FOOT_M3 / 10)
    t[0x22] = VifInfo("volume", "m3", 0, KIND_NUMBER, "Volume (0.1 US gallon)", 1, _US_GALLON_M3 / 10)
    t[0x23] = VifInfo("volume", "m3", 0, KIND_NUMBER, "Volume (US gallon)", 1, _US_GALLON_M3)
    t[0x24] = VifInfo(
        "flow", "m3/min", 0, KIND_NUMBER, "Volume flow (0.001 US gallon/min)", 1, _US_GALLON_M3 / 1000
    )
    t[0x25] = VifInfo("flow", "m3/min", 0, KIND_NUMBER, "Volume flow (US gallon/min)", 1, _US_GALLON_M3)
    t[0x26] = VifInfo("flow", "m3/h", 0, KIND_NUMBER, "Volume flow (US gallon/h)", 1, _US_GALLON_M3)
    # Fahrenheit has no exact decimal conversion to °C; it stays in its own unit.
    for n in range(4):
        t[0x58 + n] = _number("flow_temperature", "°F", n - 3, f"Flow temperature (10^{n - 3} °F)")
        t[0x5C + n] = _number("return_temperature", "°F", n - 3, f"Return temperature (10^{n - 3} °F)")
        t[0x60 + n] = _number(
            "temperature_difference", "°F", n - 3, f"Temperature difference (10^{n - 3} °F)"
        )
        t[0x64 + n] = _number("external_temperature", "°F", n - 3, f"External temperature (10^{n - 3} °F)")
        t[0x70 + n] = _number(
            "temperature_limit", "°F", n - 3, f"Cold/warm temperature limit (10^{n - 3} °F)"
        )
        t[0x74 + n] = _number(
            "temperature_limit", "°C", n - 3, f"Cold/warm temperature limit (10^{n - 3} °C)"
        )
    for n in range(8):
        t[0x78 + n] = _number("max_power_count", "W", n - 3, f"Cumulative count max power (10^{n - 3} W)")
    return tuple(t)


PRIMARY: Final = _build_primary()
FD_TABLE: Final = _build_fd()
FB_TABLE: Final = _build_fb()


# -- combinable (orthogonal) VIFEs, EN 13757-3 table 15 ----------------------------------------------

C_ERROR: Final = 0  # record-level error code from the slave
C_PER: Final = 1  # "per" unit: changes the unit
C_FACTOR: Final = 2  # multiplicative correction: changes the value
C_TIME_OF: Final = 3  # "date/time of ...": the data is a time point
C_QUALIFIER: Final = 4  # describes the value, unit unchanged
C_MANUFACTURER: Final = 5  # the following VIFEs and data are manufacturer specific
C_EXTENSION: Final = 6  # next VIFE comes from extension table FCh
C_PULSE: Final = 7  # "increment per pulse": the value is a pulse weight in the VIF's unit


@dataclass(frozen=True, slots=True)
class Combinable:
    kind: int
    text: str
    exponent: int = 0


def _build_combinable() -> tuple[Combinable, ...]:
    t: dict[int, Combinable] = {}
    errors = {
        0x00: "none",
        0x01: "too many DIFEs",
        0x02: "storage number not implemented",
        0x03: "unit number not implemented",
        0x04: "tariff number not implemented",
        0x05: "function not implemented",
        0x06: "data class not implemented",
        0x07: "data size not implemented",
        0x0B: "too many VIFEs",
        0x0C: "illegal VIF-group",
        0x0D: "illegal VIF-exponent",
        0x0E: "VIF/DIF mismatch",
        0x0F: "unimplemented action",
        0x15: "no data available (undefined value)",
        0x16: "data overflow",
        0x17: "data underflow",
        0x18: "data error",
        0x1C: "premature end of record",
    }
    for code in range(0x20):
        t[code] = Combinable(C_ERROR, errors.get(code, f"reserved error code {code:02X}h"))
    per = {
        0x20: "s", 0x21: "min", 0x22: "h", 0x23: "d", 0x24: "week", 0x25: "month", 0x26: "year",
        0x27: "revolution", 0x2C: "l", 0x2D: "m3", 0x2E: "kg", 0x2F: "K", 0x30: "kWh", 0x31: "GJ",
        0x32: "kW", 0x33: "K*l", 0x34: "V", 0x35: "A",
    }  # fmt: skip
    for code, unit in per.items():
        t[code] = Combinable(C_PER, unit)
    # E010 100p / 101p: the record is the increment per pulse (a pulse weight), still in the VIF unit
    for code, text in ((0x28, "input 0"), (0x29, "input 1"), (0x2A, "output 0"), (0x2B, "output 1")):
        t[code] = Combinable(C_PULSE, f"increment per {text} pulse")
    t[0x36] = Combinable(C_PER, "*s")
    t[0x37] = Combinable(C_PER, "*s/V")
    t[0x38] = Combinable(C_PER, "*s/A")
    t[0x39] = Combinable(C_TIME_OF, "start date/time of")
    t[0x3A] = Combinable(C_QUALIFIER, "uncorrected unit")
    t[0x3B] = Combinable(C_QUALIFIER, "accumulation only if positive")
    t[0x3C] = Combinable(C_QUALIFIER, "accumulation of abs value only if negative")
    t[0x3D] = Combinable(C_QUALIFIER, "non-metric unit")
    t[0x3E] = Combinable(C_QUALIFIER, "value at base conditions")
    t[0x3F] = Combinable(C_QUALIFIER, "OBIS declaration")
    for upper, word in ((0, "lower"), (1, "upper")):
        u = upper << 3
        t[0x40 | u] = Combinable(C_QUALIFIER, f"{word} limit value")
        t[0x41 | u] = Combinable(C_QUALIFIER, f"number of exceeds of {word} limit")
        for f in range(2):
            for b in range(2):
                code = 0x42 | u | (f << 2) | b
                first = "first" if f == 0 else "last"
                begin = "begin" if b == 0 else "end"
                t[code] = Combinable(C_TIME_OF, f"date/time of {begin} of {first} {word} limit exceed")
        for f in range(2):
            for nn in range(4):
                first = "first" if f == 0 else "last"
                t[0x50 | u | (f << 2) | nn] = Combinable(
                    C_QUALIFIER, f"duration of {first} {word} limit exceed"
                )
    for f in range(2):
        for nn in range(4):
            first = "first" if f == 0 else "last"
            t[0x60 | (f << 2) | nn] = Combinable(C_QUALIFIER, f"duration of {first}")
    t[0x68] = Combinable(C_QUALIFIER, "value during lower limit exceed")
    t[0x6C] = Combinable(C_QUALIFIER, "value during upper limit exceed")
    t[0x69] = Combinable(C_QUALIFIER, "leakage values")
    t[0x6D] = Combinable(C_QUALIFIER, "leakage values")
    t[0x6A] = Combinable(C_TIME_OF, "date/time of first begin")
    t[0x6B] = Combinable(C_TIME_OF, "date/time of first end")
    t[0x6E] = Combinable(C_TIME_OF, "date/time of last begin")
    t[0x6F] = Combinable(C_TIME_OF, "date/time of last end")
    for n in range(8):
        t[0x70 + n] = Combinable(C_FACTOR, f"multiplicative correction factor 10^{n - 6}", n - 6)
    for n in range(4):
        t[0x78 + n] = Combinable(C_QUALIFIER, f"additive correction constant 10^{n - 3} unit of VIF")
    t[0x7C] = Combinable(C_EXTENSION, "extension of combinable VIFE")
    t[0x7D] = Combinable(C_FACTOR, "multiplicative correction factor 10^3", 3)
    t[0x7E] = Combinable(C_QUALIFIER, "future value")
    t[0x7F] = Combinable(C_MANUFACTURER, "manufacturer specific VIFEs and data follow")
    return tuple(t.get(code, Combinable(C_QUALIFIER, f"reserved VIFE {code:02X}h")) for code in range(128))


COMBINABLE: Final = _build_combinable()
