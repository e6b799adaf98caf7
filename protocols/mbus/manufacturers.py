"""Manufacturer (FLAG association) codes: three letters packed into 15 bits, 5 bits per letter.

``code = (L1 - 64) * 32**2 + (L2 - 64) * 32 + (L3 - 64)``, sent little-endian on the wire.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MANUFACTURER_NAMES", "manufacturer_code", "manufacturer_letters", "manufacturer_name"]

MANUFACTURER_NAMES: Final[dict[str, str]] = {
    "ABB": "ABB",
    "ACW": "Itron (Actaris water)",
    "AMT": "Aquametro",
    "APA": "Apator",
    "BMT": "BMETERS",
    "DME": "Diehl Metering",
    "DWZ": "Lorenz",
    "EDC": "EDC",
    "EFE": "Engelmann",
    "ELS": "Elster",
    "ELV": "Elvaco",
    "EMH": "EMH Metering",
    "EMU": "EMU Elektronik",
    "FIN": "Finder",
    "GAV": "Carlo Gavazzi",
    "GWF": "GWF MessSysteme",
    "HYD": "Diehl Hydrometer",
    "ITW": "Itron",
    "KAM": "Kamstrup",
    "LAS": "Landis+Gyr (Siemens)",
    "LSE": "Landis+Gyr",
    "LUG": "Landis+Gyr Ultraheat",
    "NZR": "NZR",
    "QDS": "Qundis",
    "REL": "Relay",
    "SEN": "Sensus",
    "SBC": "Saia-Burgess",
    "SLB": "Schlumberger",
    "SON": "Sontex",
    "SPX": "Sensus (SPX)",
    "TCH": "Techem",
    "WEP": "Weptech",
    "WZG": "Neuwerk (Modularis)",
    "ZRI": "Zenner",
}


def manufacturer_code(letters: str) -> int:
    """``'KAM'`` -> ``0x2C2D``."""
    if len(letters) != 3 or not all("A" <= ch <= "Z" for ch in letters.upper()):
        raise ValueError(f"manufacturer code must be three letters A-Z, got {letters!r}")
    up = letters.upper()
    return ((ord(up[0]) - 64) << 10) | ((ord(up[1]) - 64) << 5) | (ord(up[2]) - 64)


def manufacturer_letters(code: int) -> str:
    """``0x2C2D`` -> ``'KAM'``. Values outside A-Z (bit 15 set, zero letters) come back as ``'@'`` etc."""
    return chr(((code >> 10) & 0x1F) + 64) + chr(((code >> 5) & 0x1F) + 64) + chr((code & 0x1F) + 64)


def manufacturer_name(letters: str) -> str:
    return MANUFACTURER_NAMES.get(letters.upper(), "")
