"""The zero-sum promise: Σ lines == pool to the öre for any consumptions, costs and keys."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from billing_builders import CREATED, MARCH, apartment, invoice, make_input, simple_point
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.billing.engine import compute_run
from central.billing.model import (
    Apartment,
    DifferenceRule,
    FixedCost,
    FixedKey,
    Medium,
    MediumConfig,
    PriceModel,
    TenantPeriod,
)
from central.billing.money import ORE, allocate
from central.billing.runs import BillingRun, LineKind, Payer

ore_amounts = st.integers(min_value=-10**9, max_value=10**9).map(lambda n: Decimal(n) * ORE)
weights = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)


@given(total=ore_amounts, ws=st.lists(weights, min_size=1, max_size=30))
def test_allocate_sums_to_total_and_stays_within_one_ore(total: Decimal, ws: list[Decimal]) -> None:
    if sum(ws) == 0:
        with pytest.raises(ValueError, match="zero"):
            allocate(total, list(enumerate(ws)))
        return
    parts = allocate(total, list(enumerate(ws)))
    assert sum(parts.values()) == total
    w_sum = sum(Fraction(w) for w in ws)
    for i, w in enumerate(ws):
        exact = Fraction(total) * Fraction(w) / w_sum
        assert abs(Fraction(parts[i]) - exact) < Fraction(1, 100)
        assert parts[i] == parts[i].quantize(ORE)


def test_allocate_ties_go_to_the_smallest_id() -> None:
    # 0.10 over three equal weights: 0.0333... each; floors 0.03 × 3 = 0.09; the last öre goes to
    # the smallest key among the equal remainders, whatever the order given.
    assert allocate(Decimal("0.10"), [("c", Decimal(1)), ("a", Decimal(1)), ("b", Decimal(1))]) == {
        "c": Decimal("0.03"), "a": Decimal("0.04"), "b": Decimal("0.03"),
    }
    # Negative totals (a credit) mirror the positive split.
    assert allocate(Decimal("-0.10"), [("a", Decimal(1)), ("b", Decimal(1)), ("c", Decimal(1))]) == {
        "a": Decimal("-0.04"), "b": Decimal("-0.03"), "c": Decimal("-0.03"),
    }


def test_allocate_refuses_fractions_of_an_ore() -> None:
    with pytest.raises(ValueError, match="whole number"):
        allocate(Decimal("0.005"), [("a", Decimal(1))])


apartment_st = st.tuples(
    st.decimals(min_value=Decimal("10.0"), max_value=Decimal("250.0"), places=1),  # area
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("9.999"), places=3),  # andelstal
    st.one_of(st.just(Decimal(0)), st.decimals(min_value=0, max_value=20000, places=3)),  # consumption
    st.sampled_from(["whole", "vacant", "moves"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    apts=st.lists(apartment_st, min_size=1, max_size=7),
    cost=st.integers(min_value=0, max_value=5 * 10**7).map(lambda n: Decimal(n) * ORE),
    fixed_share=st.sampled_from([Decimal(0), Decimal("0.3"), Decimal("0.5"), Decimal(1)]),
    key=st.sampled_from(list(FixedKey)),
    rule=st.sampled_from(list(DifferenceRule)),
    main_extra=st.one_of(st.none(), st.decimals(min_value=-50, max_value=5000, places=3)),
    fixed_cost=st.integers(min_value=0, max_value=10**6).map(lambda n: Decimal(n) * ORE),
)
def test_fordelning_is_zero_sum(
    apts: list[tuple[Decimal, Decimal, Decimal, str]],
    cost: Decimal,
    fixed_share: Decimal,
    key: FixedKey,
    rule: DifferenceRule,
    main_extra: Decimal | None,
    fixed_cost: Decimal,
) -> None:
    apartments: list[Apartment] = []
    points = []
    tenants = []
    for i, (area, share, used, occupancy) in enumerate(apts):
        aid = f"A{i:03d}"
        apartments.append(apartment(aid, str(area), str(share)))
        points.append(simple_point(f"p{i}", aid, "1000.000", str(Decimal("1000.000") + used)))
        if occupancy == "whole":
            tenants.append(TenantPeriod(aid, f"T{i}", date(2020, 1, 1)))
        elif occupancy == "moves":
            tenants.append(TenantPeriod(aid, f"T{i}", date(2020, 1, 1), date(2024, 3, 11)))
            tenants.append(TenantPeriod(aid, f"U{i}", date(2024, 3, 20)))
    total_used = sum((a[2] for a in apts), Decimal(0))
    if main_extra is not None:
        points.append(simple_point("main", None, "0", str(max(total_used + main_extra, Decimal(0)))))
    inp = make_input(
        apartments=tuple(apartments),
        meter_points=tuple(points),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh", fixed_key_share=fixed_share,
                            fixed_key=key, difference_rule=rule),),
        invoices=(invoice(str(cost)),),
        tenants=tuple(tenants),
        fixed_costs=(FixedCost("samf", "Samfällighetsavgift", fixed_cost, key),),
    )
    run = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(run, BillingRun)
    heat = [ln for ln in run.lines if ln.medium is Medium.HEAT]
    assert sum(ln.net for ln in heat) == cost  # the nollsummespel, to the öre
    fixed = [ln for ln in run.lines if ln.kind is LineKind.FIXED_COST]
    assert sum(ln.net for ln in fixed) == fixed_cost
    for ln in run.lines:
        assert ln.net == ln.net.quantize(ORE)
        assert ln.vat == 0  # not VAT-registered
    (summary,) = run.summary.media
    assert summary.cost_minus_lines == 0
    assert summary.charged_tenants + summary.carried_by_property == cost
    assert run.summary.net == sum(ln.net for ln in run.lines if ln.payer is Payer.TENANT)


def test_zero_total_consumption_falls_back_to_the_key() -> None:
    # Nobody used any heat (summer, say) but the invoice has a fixed fee of 900.00: the pool is
    # still distributed, by area (the medium's fixed key): 60/(60+30) × 900 = 600.00, 300.00.
    inp = make_input(
        apartments=(apartment("A001", "60"), apartment("A002", "30")),
        meter_points=(simple_point("p1", "A001", "5", "5"), simple_point("p2", "A002", "7", "7")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),),
        invoices=(invoice("900.00"),),
    )
    run = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(run, BillingRun)
    assert [ln.net for ln in run.lines] == [Decimal("600.00"), Decimal("300.00")]
    assert any("Σ consumption is 0" in n for n in run.summary.media[0].notes)


def test_fixed_key_part_and_difference_by_area() -> None:
    # Pool 1000.00, 30 % by area: fixed part 300.00, consumption part 700.00.
    # Main meter 500 kWh, apartments 300 + 100 = 400 kWh: difference 100 kWh = 20.00 %.
    # Rule AREA: difference cost 700 × 100/500 = 140.00 by area; 560.00 by consumption.
    # A001 (60 m², 300 kWh): 560 × 300/400 = 420.00; 300 × 60/90 = 200.00; 140 × 60/90 = 93.333.. -> 93.33
    # A002 (30 m², 100 kWh): 560 × 100/400 = 140.00; 300 × 30/90 = 100.00; 140 × 30/90 = 46.666.. -> 46.67
    # (the leftover öre of 93.33 + 46.66 goes to the larger remainder, A002's .666).
    # Σ 713.33 + 286.67 = 1000.00.
    inp = make_input(
        apartments=(apartment("A001", "60"), apartment("A002", "30")),
        meter_points=(simple_point("p1", "A001", "0", "300"), simple_point("p2", "A002", "0", "100"),
                      simple_point("main", None, "1000", "1500")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh", fixed_key_share=Decimal("0.3"),
                            difference_rule=DifferenceRule.AREA),),
        invoices=(invoice("1000.00"),),
    )
    run = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(run, BillingRun)
    assert [ln.net for ln in run.lines] == [Decimal("713.33"), Decimal("286.67")]
    (heat,) = run.summary.media
    assert (heat.main_quantity, heat.apartments_quantity) == (Decimal("500"), Decimal("400"))
    assert (heat.difference_quantity, heat.difference_percent) == (Decimal("100"), Decimal("20.00"))
    assert "price per kWh = 1000.00 / 500 = 2.0000" in heat.cost_arithmetic


def test_difference_carried_by_association() -> None:
    # Same figures, rule ASSOCIATION, no fixed part: 1000 × 100/500 = 200.00 on the association's
    # common line; 800.00 by consumption: 600.00 and 200.00.
    inp = make_input(
        apartments=(apartment("A001", "60"), apartment("A002", "30")),
        meter_points=(simple_point("p1", "A001", "0", "300"), simple_point("p2", "A002", "0", "100"),
                      simple_point("main", None, "1000", "1500")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh",
                            difference_rule=DifferenceRule.ASSOCIATION),),
        invoices=(invoice("1000.00"),),
    )
    run = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(run, BillingRun)
    nets = {(ln.kind, ln.object_number): ln.net for ln in run.lines}
    assert nets == {
        (LineKind.COMMON, ""): Decimal("200.00"),
        (LineKind.CONSUMPTION, "OBJ-A001"): Decimal("600.00"),
        (LineKind.CONSUMPTION, "OBJ-A002"): Decimal("200.00"),
    }
    common = next(ln for ln in run.lines if ln.kind is LineKind.COMMON)
    assert common.payer is Payer.PROPERTY


def test_fixed_cost_keys_worked_example() -> None:
    # Samfällighetsavgift 100.00/month for March, by andelstal 1.5 : 1.0 : 0.5 (Σ 3.0):
    # 50.00, 33.333.. -> 33.33, 16.666.. -> 16.67 (A003's remainder .666 beats A002's .333). Σ 100.00.
    inp = make_input(
        apartments=(apartment("A001", "60", "1.5"), apartment("A002", "30", "1.0"),
                    apartment("A003", "10", "0.5")),
        fixed_costs=(FixedCost("samf", "Samfällighetsavgift", Decimal("100.00"), FixedKey.SHARE),),
        tenants=tuple(TenantPeriod(a, f"T{a}", date(2020, 1, 1)) for a in ("A001", "A002", "A003")),
    )
    run = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(run, BillingRun)
    assert [ln.net for ln in run.lines] == [Decimal("50.00"), Decimal("33.33"), Decimal("16.67")]
    assert run.summary.fixed_costs == (("samf", Decimal("100.00")),)
    assert all(ln.vat_class == "exempt" for ln in run.lines)
    assert MARCH[0] == run.period_from
