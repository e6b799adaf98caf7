"""Status and error bits mapped to named flags, as data: the meter-function checks read the flags.

Two sources: the TPL status byte every OMS meter sends (EN 13757-7 / OMS vol. 2: bits 0-1 application
status, bit 2 power low, bit 3 permanent error, bit 4 temporary error), and manufacturer-specific
registers where the public record is clear:

* Kamstrup water meters (Multical 21, flowIQ 2101/2200; device types 06h/16h): the 16-bit info code
  record ``02 FF 20`` (bits: dry, reverse, leak, burst; then 3-bit durations), as documented by
  Kamstrup and used by wmbusmeters' ``multical21`` driver.
* Kamstrup heat/cooling meters (Multical 302/403/603/803): the 32-bit info code ``04 FF 22``
  (Multical 603 technical description 7.7.2, as in wmbusmeters' ``kamheat`` driver).

Diehl/Sappel (HYD, DME, SAP), Axioma Qalcosonic (AXI) and Elvaco (ELV) meters report through the
standard TPL status and the standard error-flags record (VIF FD 17h); no public bit table for their
error-flags word is clear enough to name bits, so a non-zero word is reported as ``error_flags`` with
its value for the technician.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from protocols.mbus.application import Record

__all__ = [
    "DURATIONS",
    "MANUFACTURER_TABLES",
    "TPL_STATUS_BITS",
    "StatusTable",
    "meter_flags",
]

# TPL status byte: bits 0-1 are a two-bit code, the rest single bits (bits 5-7 manufacturer specific)
TPL_APPLICATION_STATUS: Final = {1: "busy", 2: "application_error", 3: "alarm"}
TPL_STATUS_BITS: Final = ((0x04, "low_battery"), (0x08, "permanent_error"), (0x10, "temporary_error"))


@dataclass(frozen=True, slots=True)
class StatusTable:
    """Named bits of one manufacturer register, found by its DIF/VIF bytes."""

    manufacturer: str
    device_types: frozenset[int]
    dif_vif: bytes
    bits: tuple[tuple[int, str], ...]
    source: str


KAMSTRUP_WATER_INFO: Final = StatusTable(
    "KAM",
    frozenset((0x06, 0x07, 0x16)),
    bytes.fromhex("02FF20"),
    ((0x0001, "dry"), (0x0002, "reverse"), (0x0004, "leak"), (0x0008, "burst")),
    "Kamstrup Multical 21 / flowIQ info codes",
)

KAMSTRUP_HEAT_INFO: Final = StatusTable(
    "KAM",
    frozenset((0x04, 0x0A, 0x0B, 0x0C, 0x0D)),
    bytes.fromhex("04FF22"),
    (
        (0x00000001, "voltage_interrupted"),
        (0x00000002, "low_battery"),
        (0x00000004, "sensor_error"),
        (0x00000008, "t1_above_range"),
        (0x00000010, "t2_above_range"),
        (0x00000020, "t1_below_range"),
        (0x00000040, "t2_below_range"),
        (0x00000080, "temperature_difference_wrong_polarity"),
        (0x00000100, "air"),
        (0x00000200, "reverse"),
        (0x00000800, "flow_increased"),
        (0x00001000, "leak"),
        (0x00002000, "leak"),
        (0x00004000, "external_alarm"),
        (0x00008000, "external_alarm"),
        (0x00010000, "v1_communication_error"),
        (0x00020000, "v1_wrong_pulse_figure"),
        (0x00040000, "leak"),
        (0x00080000, "leak"),
        (0x00100000, "t3_above_range"),
        (0x00200000, "t3_below_range"),
        (0x00400000, "v2_communication_error"),
        (0x00800000, "v2_wrong_pulse_figure"),
        (0x01000000, "air"),
        (0x02000000, "reverse"),
        (0x08000000, "flow_increased"),
        (0x10000000, "burst"),
        (0x20000000, "burst"),
        (0x40000000, "leak"),
        (0x80000000, "leak"),
    ),
    "Kamstrup Multical 302/403/603/803 info codes",
)

MANUFACTURER_TABLES: Final = (KAMSTRUP_WATER_INFO, KAMSTRUP_HEAT_INFO)

# Kamstrup water info code bits 4-15: how long dry / reversed / leaking / bursting (3 bits each)
DURATIONS: Final = (
    "",
    "1-8 hours",
    "9-24 hours",
    "2-3 days",
    "4-7 days",
    "8-14 days",
    "15-21 days",
    "22-31 days",
)
KAMSTRUP_WATER_DURATIONS: Final = (("dry", 4), ("reverse", 7), ("leak", 10), ("burst", 13))

_ERROR_FLAGS_VIF: Final = b"\xfd\x17"


def kamstrup_water_durations(info: int) -> dict[str, str]:
    """How long each Multical 21 / flowIQ condition has lasted, from the info code."""
    return {name: DURATIONS[(info >> shift) & 0x07] for name, shift in KAMSTRUP_WATER_DURATIONS}


def meter_flags(
    manufacturer: str, device_type: int, status: int, records: Iterable[Record]
) -> tuple[str, ...]:
    """Named flags from the TPL status byte and the manufacturer's status register (sorted, unique)."""
    flags: set[str] = set()
    application = TPL_APPLICATION_STATUS.get(status & 0x03)
    if application:
        flags.add(application)
    flags.update(name for bit, name in TPL_STATUS_BITS if status & bit)
    tables = [
        t for t in MANUFACTURER_TABLES if t.manufacturer == manufacturer and device_type in t.device_types
    ]
    for record in records:
        value = record.value
        if not isinstance(value, int) or record.storage:
            continue
        for table in tables:
            if record.dif_vif == table.dif_vif:
                flags.update(name for bit, name in table.bits if value & bit)
        if record.dif_vif[1:3] == _ERROR_FLAGS_VIF and value:
            flags.add("error_flags")
    return tuple(sorted(flags))
