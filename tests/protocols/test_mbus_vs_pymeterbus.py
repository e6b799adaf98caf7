"""Differential test: pyMeterBus as an oracle for numeric values where it decodes the same record.

pyMeterBus scales with floats (54.321 becomes 54.32099999...) and trips on some frames, so it is
an oracle on values within float resolution, only for frames it decodes without error.
"""

from __future__ import annotations

from decimal import Decimal

import meterbus
import pytest
from mbus_corpus import frame_bytes, good_frame_paths

from protocols.mbus import decode_long_frame

UNITS = {"Wh": "Wh", "m^3": "m3", "W": "W", "m^3/h": "m3/h", "°C": "°C", "K": "K", "V": "V", "A": "A"}


def test_numeric_values_agree_with_pymeterbus(capsys: pytest.CaptureFixture[str]) -> None:
    compared = agreed = 0
    disagreements = []
    for path in good_frame_paths():
        raw = frame_bytes(path)
        try:
            theirs = meterbus.load(raw)
            their_records = list(theirs.records)
        except Exception:
            continue
        ours = decode_long_frame(raw).records
        if len(ours) != len(their_records):
            continue
        for mine, other in zip(ours, their_records, strict=True):
            unit = UNITS.get(str(other.unit))
            if unit is None or not isinstance(other.value, (int, Decimal)) or mine.unit != unit:
                continue
            if mine.error and mine.error.startswith("non-BCD"):
                continue  # hex digits in BCD: pyMeterBus, like libmbus, invents a number (pinned elsewhere)
            compared += 1
            assert isinstance(mine.value, Decimal)
            # a real32 holds ~7 significant digits: we print the shortest decimal of the same float32
            relative = Decimal("1e-7") if mine.dif_vif[0] & 0x0F == 0x05 else Decimal("1e-12")
            if abs(mine.value - Decimal(other.value)) <= abs(mine.value) * relative + Decimal("1e-9"):
                agreed += 1
            else:
                disagreements.append(f"{path.name}: ours {mine.value} {mine.unit}, pyMeterBus {other.value}")
    with capsys.disabled():
        print(f"\npyMeterBus differential: {agreed}/{compared} numeric records agree")
        for line in disagreements:
            print("  ", line)
    assert compared > 250
    assert disagreements == []
