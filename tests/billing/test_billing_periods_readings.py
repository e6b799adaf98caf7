"""Periods and lag; alignment of registers to period boundaries; supplier-invoice interpretation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from billing_builders import MARCH, D, at, point, reading

from central.billing.invoices import analyse_costs, main_meter_difference
from central.billing.model import (
    Frequency,
    InvoiceLine,
    InvoiceLineKind,
    Medium,
    MeterInstallation,
    ReadingSource,
    SupplierInvoice,
)
from central.billing.periods import (
    BillingPeriod,
    add_months,
    notice_month,
    period_containing,
    period_for_notice,
)
from central.billing.readings import Missing, consumption, value_at


def test_periods_monthly_and_quarterly() -> None:
    feb = BillingPeriod(date(2024, 2, 1), date(2024, 3, 1))
    assert period_containing(date(2024, 2, 29), Frequency.MONTHLY) == feb
    q = period_containing(date(2024, 11, 5), Frequency.QUARTERLY)
    assert q == BillingPeriod(date(2024, 10, 1), date(2025, 1, 1))
    assert (q.days, q.months) == (92, 3)
    assert add_months(date(2024, 12, 1), 1) == date(2025, 1, 1)
    assert add_months(date(2024, 1, 1), -1) == date(2023, 12, 1)
    with pytest.raises(ValueError, match="first"):
        add_months(date(2024, 1, 2), 1)


@pytest.mark.parametrize(("lag", "notice", "billed"), [
    (1, date(2024, 5, 1), (date(2024, 4, 1), date(2024, 5, 1))),
    (2, date(2024, 5, 1), (date(2024, 3, 1), date(2024, 4, 1))),
    (5, date(2024, 5, 1), (date(2023, 12, 1), date(2024, 1, 1))),
])
def test_monthly_lag(lag: int, notice: date, billed: tuple[date, date]) -> None:
    period = period_for_notice(notice, Frequency.MONTHLY, lag)
    assert period == BillingPeriod(*billed)
    assert notice_month(period, lag) == notice


def test_quarterly_lag_bills_on_one_notice_in_three() -> None:
    # Q1 (January-March) with lag 2 goes on the May notice; June and July carry no quarter.
    q1 = BillingPeriod(date(2024, 1, 1), date(2024, 4, 1))
    assert notice_month(q1, 2) == date(2024, 5, 1)
    assert period_for_notice(date(2024, 5, 1), Frequency.QUARTERLY, 2) == q1
    assert period_for_notice(date(2024, 6, 1), Frequency.QUARTERLY, 2) is None
    assert period_for_notice(date(2024, 7, 1), Frequency.QUARTERLY, 2) is None


def test_exact_reading_wins_and_keeps_its_source() -> None:
    p = point("p", "A", [reading("a", MARCH[0], "10.5", ReadingSource.MANUAL)])
    v = value_at(p.installations[0], at(MARCH[0]))
    assert v is not None
    assert (v.value, v.source, v.estimated, v.reading_ids) == (D("10.5"), "manual", False, ("a",))


def test_extrapolation_is_an_estimate_and_limited() -> None:
    # 29 March 00:00 CET = 1000, 30 March 00:00 CET = 1010 (10 per 24 h). 1 April 00:00 CEST is
    # 47 real hours after 30 March 00:00 CET (DST): 1010 + 10 × 47/24 = 1029.58333.. -> 1029.583.
    inst = point("p", "A", [reading("a", date(2024, 3, 29), "1000"),
                            reading("b", date(2024, 3, 30), "1010")]).installations[0]
    v = value_at(inst, at(MARCH[1]))
    assert v is not None
    assert (v.value, v.source, v.estimated, v.method) == (D("1029.583"), "extrapolated", True, "extrapolated")
    assert value_at(inst, at(date(2024, 4, 10)), max_extrapolation_days=7) is None


def test_extrapolation_skips_a_second_reading_of_the_same_instant() -> None:
    # 30 March read twice (a manual reading beside the remote one): the line runs through 29 March
    # and the last of 30 March as above, not through two readings 0 s apart (no slope: it divided by
    # zero).
    twice = [reading("a", date(2024, 3, 29), "1000"), reading("b", date(2024, 3, 30), "1010"),
             reading("c", date(2024, 3, 30), "1010", ReadingSource.MANUAL)]
    v = value_at(point("p", "A", twice).installations[0], at(MARCH[1]))
    assert v is not None
    assert (v.value, v.reading_ids) == (D("1029.583"), ("a", "c"))
    # before the first readings: 29 March twice, then 30 March
    early = [reading("a", date(2024, 3, 29), "1000"), reading("b", date(2024, 3, 29), "1000"),
             reading("c", date(2024, 3, 30), "1010")]
    v = value_at(point("p", "A", early).installations[0], at(date(2024, 3, 27)))
    assert v is not None
    assert (v.value, v.source, v.reading_ids) == (D("980.000"), "extrapolated", ("a", "c"))
    # only one instant, read twice: nothing to extrapolate from
    once = [reading("a", date(2024, 3, 30), "1010"), reading("b", date(2024, 3, 30), "1010")]
    assert value_at(point("p", "A", once).installations[0], at(MARCH[1])) is None
    assert value_at(point("p", "A", once).installations[0], at(date(2024, 3, 27))) is None


def test_interpolating_from_an_estimated_reading_is_an_estimate() -> None:
    inst = point("p", "A", [reading("a", date(2024, 2, 29), "0"),
                            reading("b", date(2024, 3, 2), "20", ReadingSource.ESTIMATED,
                                    method="building average", reason="meter silent")]).installations[0]
    v = value_at(inst, at(MARCH[0]))
    assert v is not None
    assert v.value == D("10.000")
    assert v.estimated
    assert v.method == "interpolated from estimated reading (building average)"
    assert v.reason == "meter silent"


def test_register_going_backwards_is_missing_not_negative() -> None:
    p = point("p", "A", [reading("a", MARCH[0], "100"), reading("b", MARCH[1], "90")])
    got = consumption(p, at(MARCH[0]), at(MARCH[1]))
    assert isinstance(got, Missing)
    assert "backwards" in got.reason


def test_gap_between_removal_and_installation_is_missing() -> None:
    old = MeterInstallation("old", at(date(2020, 1, 1)), at(date(2024, 3, 10)),
                            (reading("a", MARCH[0], "1"), reading("b", date(2024, 3, 10), "2")))
    new = MeterInstallation("new", at(date(2024, 3, 12)), None,
                            (reading("c", date(2024, 3, 12), "0"), reading("d", MARCH[1], "5")))
    p = point("p", "A", [])
    p = type(p)(p.id, p.medium, p.unit, p.apartment_id, (old, new))
    got = consumption(p, at(MARCH[0]), at(MARCH[1]))
    assert isinstance(got, Missing)
    assert "part of the interval" in got.reason


def test_supplier_invoice_interpretation_with_arithmetic() -> None:
    # District heating, March: fixed fee 1 500.00 + energy 18 000 kWh 12 600.00 + flow 420.00
    # + power 2 100.00 = net 16 620.00; VAT 4 155.00 (25 %); gross 20 775.00.
    # VAT-registered: pool = net 16 620.00. Main meter 20 000 kWh: 16 620 / 20 000 = 0.8310 kr/kWh.
    inv = SupplierInvoice("F-2024-03", "Fjärrvärme AB", Medium.HEAT, MARCH[0], MARCH[1], (
        InvoiceLine(InvoiceLineKind.FIXED_FEE, D("1500.00")),
        InvoiceLine(InvoiceLineKind.ENERGY, D("12600.00"), D("18000"), "kWh"),
        InvoiceLine(InvoiceLineKind.FLOW, D("420.00")),
        InvoiceLine(InvoiceLineKind.POWER, D("2100.00")),
        InvoiceLine(InvoiceLineKind.VAT, D("4155.00")),
    ))
    a = analyse_costs((inv,), Medium.HEAT, BillingPeriod(*MARCH), vat_registered=True,
                      main_quantity=D("20000"), unit="kWh")
    assert a is not None
    assert (a.net, a.vat, a.gross, a.pool, a.unit_price) == (
        D("16620.00"), D("4155.00"), D("20775.00"), D("16620.00"), D("0.8310"))
    assert dict(a.by_kind)[InvoiceLineKind.ENERGY] == D("12600.00")
    assert a.arithmetic[-1] == "price per kWh = 16620.00 / 20000 = 0.8310"
    # Without a main meter the invoice's own energy quantity is used: 16 620 / 18 000 = 0.9233.
    b = analyse_costs((inv,), Medium.HEAT, BillingPeriod(*MARCH), vat_registered=False,
                      main_quantity=None, unit="kWh")
    assert b is not None
    assert (b.pool, b.main_quantity, b.unit_price) == (D("20775.00"), D("18000"), D("1.1542"))
    # Main 20 000 vs apartments 17 250: difference 2 750 kWh = 13.75 %.
    assert main_meter_difference(D("20000"), D("17250")) == (D("2750"), D("13.75"))


def test_invoice_straddling_the_period_counts_pro_rata() -> None:
    # Invoice 15 Feb - 15 March (29 days), energy 2 900.00: March has 14 of its days:
    # 2 900 × 14/29 = 1 400.00.
    inv = SupplierInvoice("F", "S", Medium.HEAT, date(2024, 2, 15), date(2024, 3, 15),
                          (InvoiceLine(InvoiceLineKind.ENERGY, D("2900.00"), D("1000"), "kWh"),))
    a = analyse_costs((inv,), Medium.HEAT, BillingPeriod(*MARCH), vat_registered=True,
                      main_quantity=None, unit="kWh")
    assert a is not None
    assert a.net == Decimal("1400.00")
    assert a.main_quantity is None  # a partial invoice's quantity is not the period's
    assert a.invoices[0].days_in_period == 14
