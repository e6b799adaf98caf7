"""Consumption figures behind the pages: daily differences, gaps spread and marked estimated, buckets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from central.web.common import Table, cell
from central.web.data import change_percent, daily_from_readings, month_start, period_windows
from central.web.i18n import MESSAGES, pick_language, translator


def _at(day: int, month: int = 1) -> datetime:
    return datetime(2026, month, day, 2, 0, tzinfo=UTC)


def test_daily_consumption_spreads_gaps_and_marks_them_estimated() -> None:
    points = [
        (_at(1), Decimal(1000)),
        (_at(2), Decimal(4000)),
        (_at(5), Decimal(10000)),
        (_at(5).replace(hour=20), Decimal(10600)),
    ]
    series = daily_from_readings(points, "Wh")
    assert series.unit == "kWh"
    assert series.days == {
        date(2026, 1, 2): Decimal(3),
        date(2026, 1, 3): Decimal("2.2"),
        date(2026, 1, 4): Decimal("2.2"),
        date(2026, 1, 5): Decimal("2.2"),
    }  # the last reading of a day counts: 10600 Wh on the 5th
    assert series.estimated == {date(2026, 1, 3), date(2026, 1, 4), date(2026, 1, 5)}
    total, estimated = series.total(date(2026, 1, 1), date(2026, 2, 1))
    assert total == Decimal("9.6")
    assert estimated
    assert series.total(date(2026, 1, 2), date(2026, 1, 3)) == (Decimal(3), False)
    assert series.buckets("month") == [("2026-01", Decimal("9.6"), True)]


def test_replaced_meters_add_without_a_jump() -> None:
    old = daily_from_readings([(_at(1), Decimal("5.000")), (_at(2), Decimal("5.500"))], "m3")
    new = daily_from_readings([(_at(2), Decimal("0.010")), (_at(3), Decimal("0.400"))], "m3")
    old.add(new)
    assert old.unit == "m³"
    assert old.days == {date(2026, 1, 2): Decimal("0.500"), date(2026, 1, 3): Decimal("0.390")}


def test_periods_and_change() -> None:
    windows = period_windows(date(2026, 3, 15))
    assert windows["this_period"] == (date(2026, 2, 1), date(2026, 3, 1))
    assert windows["last_period"] == (date(2026, 1, 1), date(2026, 2, 1))
    assert windows["last_year"] == (date(2025, 2, 1), date(2025, 3, 1))
    assert month_start(date(2026, 1, 31), 1) == date(2025, 12, 1)
    assert change_percent(Decimal(110), Decimal(100)) == "+10%"
    assert change_percent(Decimal(1), Decimal(0)) == "–"


def test_csv_uses_semicolons_and_plain_text() -> None:
    table = Table("x", ["Lägenhet", "Förbrukning"], [[cell("1001", "/apartments/1"), "1,5; kWh"]])
    assert table.csv().splitlines() == ["Lägenhet;Förbrukning", '1001;"1,5; kWh"']


def test_languages() -> None:
    assert pick_language("en", "sv") == "en"
    assert pick_language("xx", "en") == "en"
    assert pick_language(None, None) == "sv"
    assert translator("en")("faults") == "Fault queue"
    assert translator("sv")("no-such-key") == "no-such-key"
    assert set(MESSAGES["sv"]) == set(MESSAGES["en"]), "every Swedish text has an English one"
