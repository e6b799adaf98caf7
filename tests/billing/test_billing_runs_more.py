"""Chained corrections, quarterly runs, stops that need data, held debitering lines, serialisation."""

from __future__ import annotations

import json
from datetime import date, datetime

from billing_builders import (
    CREATED,
    D,
    apartment,
    debitering,
    invoice,
    make_input,
    point,
    reading,
    settings,
    simple_point,
)

from central.billing import compute_run
from central.billing.model import (
    BillingInput,
    FixedCost,
    FixedKey,
    Frequency,
    Medium,
    MediumConfig,
    PriceModel,
    TenantPeriod,
)
from central.billing.runs import (
    BillingLine,
    BillingRun,
    LineKind,
    RunStopped,
    approve,
    correction_lines,
    mark_exported,
)
from central.billing.serial import canonical_json, to_jsonable

T1 = TenantPeriod("A001", "T1", date(2020, 1, 1))
WHEN = datetime(2024, 4, 6, tzinfo=CREATED.tzinfo)


def _run(inp: BillingInput, run_id: str, corrections: tuple[BillingLine, ...] = ()) -> BillingRun:
    r = compute_run(inp, run_id, CREATED, "anna", corrections)
    assert isinstance(r, BillingRun), r
    return mark_exported(approve(r, "bo", WHEN), "bo", WHEN, "x")


def _march(end: str) -> BillingInput:
    return make_input(apartments=(apartment("A001", "70"),),
                      meter_points=(simple_point("p1", "A001", "1000", end),),
                      media=(debitering(),), tenants=(T1,))


def test_a_second_correction_credits_what_was_billed_so_far() -> None:
    # R1 billed March 100 kWh = 125.00. R2 (April) credited -125.00 and re-billed 80 kWh = 100.00.
    # Now March is found to be 90 kWh = 112.50: billed so far 125.00 - 125.00 + 100.00 = 100.00,
    # so R3 credits -100.00 and re-bills 112.50. April's own line in R2 is not touched.
    r1 = _run(_march("1100"), "R1")
    first_fix = correction_lines(r1, _run(_march("1080"), "X"), "R2")
    april = make_input(period_from=date(2024, 4, 1), period_to=date(2024, 5, 1),
                       apartments=(apartment("A001", "70"),),
                       meter_points=(point("p1", "A001", [reading("x", date(2024, 4, 1), "1080"),
                                                          reading("y", date(2024, 5, 1), "1150")]),),
                       media=(debitering(),), tenants=(T1,))
    r2 = _run(april, "R2", first_fix)
    second_fix = correction_lines([r1, r2], _run(_march("1090"), "Y"), "R3")
    assert [(ln.kind, ln.net, ln.period_from) for ln in second_fix] == [
        (LineKind.CREDIT, D("-100.00"), date(2024, 3, 1)),
        (LineKind.REBILL, D("112.50"), date(2024, 3, 1)),
    ]
    # Nothing changed -> nothing to correct.
    assert correction_lines(r1, _run(_march("1100"), "Z"), "R2") == ()


def test_quarterly_run_fixed_fee_and_costs_times_three_months() -> None:
    # Q1 2024 (91 days). Fixed fee 30.00/month × 3 = 90.00; 200 kWh × 1.25 = 250.00;
    # samfällighetsavgift 50.00/month × 3 = 150.00 (one apartment: all of it).
    inp = make_input(
        settings=settings(frequency=Frequency.QUARTERLY, lag_months=2),
        period_from=date(2024, 1, 1), period_to=date(2024, 4, 1),
        apartments=(apartment("A001", "70"),),
        meter_points=(point("p1", "A001", [reading("a", date(2024, 1, 1), "0"),
                                           reading("b", date(2024, 4, 1), "200")]),),
        media=(debitering("1.25", fee="30"),), tenants=(T1,),
        fixed_costs=(FixedCost("samf", "Samfällighetsavgift", D("50.00"), FixedKey.AREA),),
    )
    r = compute_run(inp, "Q1", CREATED, "anna")
    assert isinstance(r, BillingRun)
    assert sorted((ln.kind.value, ln.net) for ln in r.lines) == [
        ("consumption", D("250.00")), ("fixed_cost", D("150.00")), ("fixed_fee", D("90.00"))]


def test_fordelning_without_invoice_or_share_stops() -> None:
    inp = make_input(apartments=(apartment("A001", "70"),),
                     meter_points=(simple_point("p1", "A001", "0", "1"),),
                     media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),))
    r = compute_run(inp, "R", CREATED, "anna")
    assert isinstance(r, RunStopped)
    assert [x.code for x in r.reasons] == ["missing_cost"]
    inp = make_input(apartments=(apartment("A001", "70"),),
                     meter_points=(simple_point("p1", "A001", "0", "1"),),
                     media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh", fixed_key_share=D("0.5"),
                                         fixed_key=FixedKey.SHARE),),
                     invoices=(invoice("10.00"),))
    r = compute_run(inp, "R", CREATED, "anna")
    assert isinstance(r, RunStopped)
    assert [x.code for x in r.reasons] == ["missing_share"]


def test_debitering_missing_reading_is_held_not_guessed() -> None:
    inp = make_input(apartments=(apartment("A001", "70"),),
                     meter_points=(point("p1", "A001", [reading("a", date(2024, 3, 1), "0")]),),
                     media=(debitering(),), tenants=(T1,))
    r = compute_run(inp, "R", CREATED, "anna")
    assert isinstance(r, BillingRun)
    (line,) = r.lines
    assert (line.held, line.quantity, line.net) == (True, None, D("0"))
    assert "no usable reading" in (line.hold_reason or "")
    assert r.exportable() == ()


def test_run_serialises_to_plain_json_without_floats() -> None:
    r = compute_run(_march("1123.456"), "R1", CREATED, "anna")
    assert isinstance(r, BillingRun)
    data = json.loads(canonical_json(r))
    assert data["lines"][0]["net"] == "154.32"
    assert data["lines"][0]["spans"][0]["end_value"] == "1123.456"
    assert data["state"] == "draft"
    assert to_jsonable(r)["summary"]["net"] == "154.32"
    assert "e" not in data["lines"][0]["quantity"].lower()
