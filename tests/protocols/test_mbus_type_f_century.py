"""Type F date/time and the "hundred year" bits (EN 13757-3:2013, annex A).

year = 1900 + 100 * hundred + yy; with hundred = 0, yy 00-80 means 2000-2080 (compatibility with
two-digit meters). The OMS example frame sets hundred = 1 with yy = 08: 2008, as libmbus decodes it.
An earlier version added the hundreds to the 2000 base and gave 2108.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from protocols.mbus.application import decode_long_frame
from protocols.mbus.encode import encode_datetime_f

CORPUS = Path(__file__).parent / "corpus" / "test-frames"


def test_oms_frame_date_is_2008() -> None:
    raw = bytes.fromhex(CORPUS.joinpath("oms_frame1.hex").read_text().replace(" ", "").strip())
    telegram = decode_long_frame(raw)
    stamps = [r.value for r in telegram.records if isinstance(r.value, dt.datetime)]
    assert dt.datetime(2008, 5, 31, 23, 50) in stamps


@pytest.mark.parametrize("year", [1981, 1999, 2000, 2026, 2080, 2081, 2099, 2108, 2180])
def test_type_f_round_trip_over_centuries(year: int) -> None:
    from protocols.mbus.application import _datetime_f

    stamp = dt.datetime(year, 6, 15, 12, 30)
    assert _datetime_f(encode_datetime_f(stamp)) == stamp
