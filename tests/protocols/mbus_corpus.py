"""Load the libmbus corpus copy and compare our decode with libmbus's normalized XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
TEST_FRAMES = CORPUS / "test-frames"
ERROR_FRAMES = CORPUS / "error-frames"

# libmbus unit -> our normalized unit, for the numeric units the issue compares
NUMERIC_UNITS = {
    "Wh": "Wh",
    "m^3": "m3",
    "W": "W",
    "m^3/h": "m3/h",
    "°C": "°C",
    "K": "K",
    "s": "s",
    "V": "V",
    "A": "A",
}


@dataclass(frozen=True)
class LibmbusRecord:
    index: int
    function: str
    storage: int
    tariff: int
    subunit: int
    unit: str
    quantity: str
    value: str


def frame_bytes(path: Path) -> bytes:
    return bytes.fromhex(path.read_text())


def good_frame_paths() -> list[Path]:
    return sorted(TEST_FRAMES.glob("*.hex"))


def error_frame_paths() -> list[Path]:
    return sorted(ERROR_FRAMES.glob("*.hex"))


def libmbus_records(hex_path: Path) -> list[LibmbusRecord]:
    xml_path = hex_path.with_suffix(".norm.xml")
    text = xml_path.read_bytes().decode("latin-1")
    text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    root = ET.fromstring(text)
    return [
        LibmbusRecord(
            int(rec.get("id", "0")),
            rec.findtext("Function", ""),
            int(rec.findtext("StorageNumber", "0") or 0),
            int(rec.findtext("Tariff", "0") or 0),
            int(rec.findtext("Device", "0") or 0),
            rec.findtext("Unit", ""),
            rec.findtext("Quantity", ""),
            rec.findtext("Value", ""),
        )
        for rec in root.iter("DataRecord")
    ]


def as_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.strip())
    except ArithmeticError:
        return None
