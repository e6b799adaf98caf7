"""Worked examples for real life in a period (issue 8 point 6), the arithmetic written out by hand.

Period: March 2024, Europe/Stockholm (31 days; DST starts 31 March 02:00). Debitering examples use
1.25 kr/kWh excl. VAT and ROUND_HALF_UP to öre unless said otherwise.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from billing_builders import (
    CREATED,
    MARCH,
    D,
    apartment,
    at,
    debitering,
    invoice,
    make_input,
    point,
    reading,
    settings,
    simple_point,
)

from central.billing.engine import compute_run
from central.billing.export import GENERIC_CSV, render
from central.billing.model import (
    Approval,
    FaultPolicy,
    Medium,
    MediumConfig,
    MeterInstallation,
    MeterPoint,
    PriceEntry,
    PriceModel,
    ReadingSource,
    TenantPeriod,
)
from central.billing.runs import (
    BillingRun,
    LineKind,
    Payer,
    RunState,
    RunStopped,
    approve,
    correction_lines,
    lock,
    mark_exported,
)

T1_ALL = TenantPeriod("A001", "T1", date(2020, 1, 1))


def run_of(inp, run_id="R1", corrections=()) -> BillingRun:  # type: ignore[no-untyped-def]
    result = compute_run(inp, run_id, CREATED, "anna", corrections)
    assert isinstance(result, BillingRun), result
    return result


def consumption_lines(run: BillingRun):  # type: ignore[no-untyped-def]
    return [ln for ln in run.lines if ln.kind is LineKind.CONSUMPTION]


def test_meter_replaced_mid_period() -> None:
    # Old meter: 5000.000 on 1 March, removed 15 March 10:00 reading 5080.000 -> 80.000 kWh.
    # New meter: installed 15 March 10:00 reading 0.000, 1 April 95.500        -> 95.500 kWh.
    # Consumption 80.000 + 95.500 = 175.500 kWh; 175.500 × 1.25 = 219.375 -> 219.38 (half up).
    swap = at(date(2024, 3, 15), 10)
    old = MeterInstallation("m-old", at(date(2019, 1, 1)), swap, (
        reading("o1", MARCH[0], "5000.000"),
        reading("o2", date(2024, 3, 15), "5080.000", ReadingSource.MANUAL, hour=10),
    ))
    new = MeterInstallation("m-new", swap, None, (
        reading("n1", date(2024, 3, 15), "0.000", ReadingSource.MANUAL, hour=10),
        reading("n2", MARCH[1], "95.500"),
    ))
    inp = make_input(
        apartments=(apartment("A001", "70"),),
        meter_points=(MeterPoint("p1", Medium.HEAT, "kWh", "A001", (new, old)),),
        media=(debitering("1.25"),),
        tenants=(T1_ALL,),
    )
    (line,) = consumption_lines(run_of(inp))
    assert line.quantity == D("175.500")
    assert line.net == D("219.38")
    assert [(s.meter_id, s.start_value, s.end_value) for s in line.spans] == [
        ("m-old", D("5000.000"), D("5080.000")),
        ("m-new", D("0.000"), D("95.500")),
    ]
    assert [s.end_source for s in line.spans] == ["manual", "remote"]
    assert line.estimated is False


def test_tenant_moves_split_by_move_day_reading() -> None:
    # T1 moves out: move_out 16 March (lived through the 15th); T2 moves in 16 March.
    # A manual reading on the move day, 16 March 09:00: 1040.000.
    # T1: 1040 - 1000 = 40 kWh × 1.25 = 50.00 (1-16 March); T2: 1100 - 1040 = 60 kWh × 1.25 = 75.00.
    p = point("p1", "A001", [
        reading("r1", MARCH[0], "1000.000"),
        reading("r2", date(2024, 3, 16), "1040.000", ReadingSource.MANUAL, hour=9),
        reading("r3", MARCH[1], "1100.000"),
    ])
    inp = make_input(
        apartments=(apartment("A001", "70"),),
        meter_points=(p,),
        media=(debitering("1.25"),),
        tenants=(
            TenantPeriod("A001", "T1", date(2020, 1, 1), date(2024, 3, 16)),
            TenantPeriod("A001", "T2", date(2024, 3, 16)),
        ),
    )
    t1, t2 = consumption_lines(run_of(inp))
    assert (t1.tenant_ref, t1.period_from, t1.period_to, t1.quantity, t1.net) == (
        "T1", date(2024, 3, 1), date(2024, 3, 16), D("40.000"), D("50.00"))
    assert (t2.tenant_ref, t2.period_from, t2.period_to, t2.quantity, t2.net) == (
        "T2", date(2024, 3, 16), date(2024, 4, 1), D("60.000"), D("75.00"))
    assert t1.spans[0].end_value == D("1040.000")
    assert not t1.estimated
    assert not t2.estimated


def test_tenant_moves_split_by_days_without_reading() -> None:
    # No reading on 16 March: 1100.000 - 1000.000 = 100.000 kWh over 31 days.
    # T1 15 days: 100 × 15/31 = 48.387096... ; T2 16 days: 100 × 16/31 = 51.612903...
    # Floors at 0.001: 48.387 + 51.612 = 99.999; the missing 0.001 goes to the larger remainder
    # (T2: .903 > .096) -> T1 48.387, T2 51.613 (Σ 100.000).
    # Money: 48.387 × 1.25 = 60.48375 -> 60.48; 51.613 × 1.25 = 64.51625 -> 64.52.
    inp = make_input(
        apartments=(apartment("A001", "70"),),
        meter_points=(simple_point("p1", "A001", "1000.000", "1100.000"),),
        media=(debitering("1.25"),),
        tenants=(
            TenantPeriod("A001", "T1", date(2020, 1, 1), date(2024, 3, 16)),
            TenantPeriod("A001", "T2", date(2024, 3, 16)),
        ),
    )
    t1, t2 = consumption_lines(run_of(inp))
    assert (t1.tenant_ref, t1.quantity, t1.net) == ("T1", D("48.387"), D("60.48"))
    assert (t2.tenant_ref, t2.quantity, t2.net) == ("T2", D("51.613"), D("64.52"))
    for line in (t1, t2):
        assert line.estimated
        assert line.estimate_method is not None
        assert line.estimate_method.startswith("split by days")
    assert "15/31" in (t1.estimate_method or "")


def test_vacant_apartment_in_fordelning() -> None:
    # Pool 1000.00 (no fixed part). A001 (tenant T1) 300 kWh, A002 vacant 100 kWh, Σ 400.
    # A001: 300/400 × 1000 = 750.00 on T1's notice; A002: 100/400 × 1000 = 250.00 carried by the
    # property, outside VAT and not in the billing file. Σ = 1000.00.
    inp = make_input(
        apartments=(apartment("A001", "70"), apartment("A002", "50")),
        meter_points=(simple_point("p1", "A001", "0", "300"), simple_point("p2", "A002", "0", "100")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),),
        invoices=(invoice("1000.00"),),
        tenants=(T1_ALL,),
    )
    run = run_of(inp)
    a1, a2 = consumption_lines(run)
    assert (a1.payer, a1.net) == (Payer.TENANT, D("750.00"))
    assert (a2.payer, a2.tenant_ref, a2.net, a2.vat_class) == (Payer.PROPERTY, None, D("250.00"), "outside")
    assert "vakant" in a2.text
    assert [ln.object_number for ln in run.exportable()] == ["OBJ-A001"]
    (heat,) = run.summary.media
    assert heat.carried_by_property == D("250.00")
    assert heat.cost_minus_lines == D("0.00")


def test_estimated_reading_keeps_method_and_reason() -> None:
    # The end reading is central's estimate: 1 April 1080.000 (method/reason kept on the line).
    # 80.000 kWh × 1.25 = 100.00.
    p = point("p1", "A001", [
        reading("r1", MARCH[0], "1000.000"),
        reading("r2", MARCH[1], "1080.000", ReadingSource.ESTIMATED,
                method="same period last year", reason="no frames for 12 days"),
    ])
    inp = make_input(apartments=(apartment("A001", "70"),), meter_points=(p,), media=(debitering(),),
                     tenants=(T1_ALL,))
    (line,) = consumption_lines(run_of(inp))
    assert line.net == D("100.00")
    assert line.estimated
    assert line.source == "estimated"
    assert (line.estimate_method, line.estimate_reason) == ("same period last year", "no frames for 12 days")
    assert line.spans[0].end_source == "estimated"


def test_interpolated_boundaries_across_dst() -> None:
    # Start: 29 Feb 00:00 = 900, 2 March 00:00 = 930 -> 1 March 00:00 (half way) = 915.000.
    # End: 30 March 12:00 CET (11:00 UTC) = 1000, 1 April 12:00 CEST (10:00 UTC) = 1047. DST began
    # 31 March 02:00, so that is 47 real hours, and 1 April 00:00 CEST (31 March 22:00 UTC) lies
    # 35 real hours after the first: 1000 + 47 × 35/47 = 1035.000 (wall-clock time would say
    # 36/48 and 1035.250: wrong). Consumption 1035.000 - 915.000 = 120.000 kWh × 1.25 = 150.00.
    # Interpolation is a normal alignment, not an estimate.
    p = point("p1", "A001", [
        reading("a", date(2024, 2, 29), "900"),
        reading("b", date(2024, 3, 2), "930"),
        reading("c", date(2024, 3, 30), "1000", hour=12),
        reading("d", date(2024, 4, 1), "1047", hour=12),
    ])
    inp = make_input(apartments=(apartment("A001", "70"),), meter_points=(p,), media=(debitering(),),
                     tenants=(T1_ALL,))
    (line,) = consumption_lines(run_of(inp))
    assert line.spans[0].start_value == D("915.000")
    assert line.spans[0].end_value == D("1035.000")
    assert line.quantity == D("120.000")
    assert line.net == D("150.00")
    assert line.source == "interpolated"
    assert not line.estimated


def test_open_fault_holds_the_line_back() -> None:
    # 100 kWh × 1.25 = 125.00 computed, but fault F-17 blocks the point: held, not exported.
    inp = make_input(
        apartments=(apartment("A001", "70"),),
        meter_points=(simple_point("p1", "A001", "0", "100", faults=("F-17",)),),
        media=(debitering(),),
        tenants=(T1_ALL,),
    )
    run = run_of(inp)
    (line,) = consumption_lines(run)
    assert line.held
    assert line.net == D("125.00")
    assert line.hold_reason == "open fault F-17 blocks billing"
    assert run.exportable() == ()
    assert run.summary.held == D("125.00")
    assert run.summary.net == D("0")
    assert b"125" not in render(run, GENERIC_CSV)


def test_open_fault_billed_on_estimate_per_setting() -> None:
    inp = make_input(
        settings=settings(fault_policy=FaultPolicy.ESTIMATE),
        apartments=(apartment("A001", "70"),),
        meter_points=(simple_point("p1", "A001", "0", "100", faults=("F-17",)),),
        media=(debitering(),),
        tenants=(T1_ALL,),
    )
    (line,) = consumption_lines(run_of(inp))
    assert not line.held
    assert line.net == D("125.00")
    assert line.estimated
    assert "F-17" in (line.estimate_reason or "")


def test_correction_credits_and_rebills_in_a_later_run() -> None:
    # March went out with 1100 - 1000 = 100 kWh × 1.25 = 125.00. The end reading was wrong: 1080.
    # Recomputed March: 80 kWh × 1.25 = 100.00. The April run (R2) carries a credit of -125.00
    # pointing at March's line and a re-bill of 100.00; R1 itself is untouched.
    first = make_input(apartments=(apartment("A001", "70"),),
                       meter_points=(simple_point("p1", "A001", "1000", "1100"),),
                       media=(debitering(),), tenants=(T1_ALL,))
    r1 = run_of(first, "R1")
    when = datetime(2024, 4, 6, tzinfo=CREATED.tzinfo)
    r1 = lock(mark_exported(approve(r1, "bo", when), "bo", when, "abc"), "bo", when)
    fixed = make_input(apartments=(apartment("A001", "70"),),
                       meter_points=(simple_point("p1", "A001", "1000", "1080"),),
                       media=(debitering(),), tenants=(T1_ALL,))
    recomputed = run_of(fixed, "R1-recomputed")
    fixes = correction_lines(r1, recomputed, "R2")
    credit, rebill = fixes
    (original,) = consumption_lines(r1)
    assert (credit.kind, credit.net, credit.quantity, credit.corrects) == (
        LineKind.CREDIT, D("-125.00"), D("-100"), original.line_id)
    assert (rebill.kind, rebill.net, rebill.quantity, rebill.corrects) == (
        LineKind.REBILL, D("100.00"), D("80"), original.line_id)
    assert credit.period_from == date(2024, 3, 1)
    # April: 1080 -> 1150 = 70 kWh × 1.25 = 87.50, plus the two correction lines.
    april = make_input(
        period_from=date(2024, 4, 1), period_to=date(2024, 5, 1),
        apartments=(apartment("A001", "70"),),
        meter_points=(point("p1", "A001", [reading("x", date(2024, 4, 1), "1080"),
                                          reading("y", date(2024, 5, 1), "1150")]),),
        media=(debitering(),), tenants=(T1_ALL,),
    )
    r2 = run_of(april, "R2", fixes)
    assert sorted(ln.net for ln in r2.exportable()) == [D("-125.00"), D("87.50"), D("100.00")]
    assert r2.summary.net == D("62.50")
    assert r1.lines[0].net == D("125.00")  # history not overwritten
    assert r1.state is RunState.LOCKED
    # Same corrections again give the same line ids: an import can be idempotent.
    assert [ln.line_id for ln in correction_lines(r1, recomputed, "R2")] == [ln.line_id for ln in fixes]


def test_estimated_share_over_limit_stops_for_approval() -> None:
    # A001 (70 m²) has an estimated end reading, A002 (50 m²) is read remotely.
    # Estimated share 70 / 120 = 58.33 % > 25 %: the run stops with an approvable reason.
    p1 = point("p1", "A001", [reading("a", MARCH[0], "0"),
                               reading("b", MARCH[1], "300", ReadingSource.ESTIMATED, method="history")])
    inp = make_input(
        apartments=(apartment("A001", "70"), apartment("A002", "50")),
        meter_points=(p1, simple_point("p2", "A002", "0", "100")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),),
        invoices=(invoice("1000.00"),),
        tenants=(T1_ALL, TenantPeriod("A002", "T2", date(2020, 1, 1))),
    )
    stopped = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(stopped, RunStopped)
    (reason,) = stopped.reasons
    assert reason.code == "estimated_share_over_limit"
    assert reason.approvable
    assert stopped.needs_approval
    assert "58.33" in reason.detail
    assert stopped.preview is not None  # the approver sees the figures they are asked to approve
    assert sum(ln.net for ln in stopped.preview.lines) == D("1000.00")
    approved = make_input(**{**_fields(inp), "approvals": (
        Approval("estimated_share_over_limit", Medium.HEAT, "styrelsen", CREATED),)})
    run = run_of(approved)
    assert sum(ln.net for ln in run.lines) == D("1000.00")
    assert run.approvals == ("estimated_share_over_limit:heat by styrelsen at 2024-04-05T08:00:00+00:00",)
    (heat,) = run.summary.media
    assert heat.estimated_share == D("0.5833")


def test_under_the_limit_runs_without_approval() -> None:
    # 50 m² estimated of 250 m² = 20 % <= 25 %.
    p1 = point("p1", "A001", [reading("a", MARCH[0], "0"),
                               reading("b", MARCH[1], "30", ReadingSource.ESTIMATED, method="history")])
    inp = make_input(
        apartments=(apartment("A001", "50"), apartment("A002", "200")),
        meter_points=(p1, simple_point("p2", "A002", "0", "100")),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),),
        invoices=(invoice("1000.00"),),
    )
    assert isinstance(compute_run(inp, "R1", CREATED, "anna"), BillingRun)


def test_missing_reading_in_fordelning_stops_not_approvable() -> None:
    p1 = point("p1", "A001", [reading("a", MARCH[0], "0")])  # nothing after 1 March
    inp = make_input(
        apartments=(apartment("A001", "70"),),
        meter_points=(p1,),
        media=(MediumConfig(Medium.HEAT, PriceModel.FORDELNING, "kWh"),),
        invoices=(invoice("1000.00"),),
    )
    stopped = compute_run(inp, "R1", CREATED, "anna")
    assert isinstance(stopped, RunStopped)
    assert [r.code for r in stopped.reasons] == ["missing_readings"]
    assert not stopped.needs_approval
    assert stopped.preview is None


def test_price_change_mid_period_splits_by_interpolated_reading() -> None:
    # 1.00 kr/kWh until 16 March, 2.00 from 16 March. Readings 1 March 0, 15 March 00:00 140,
    # 17 March 00:00 160 (16 March 00:00 interpolated: 150.000), 1 April 310.
    # 150 kWh × 1.00 = 150.00; 160 kWh × 2.00 = 320.00.
    p = point("p1", "A001", [reading("a", MARCH[0], "0"), reading("b", date(2024, 3, 15), "140"),
                             reading("c", date(2024, 3, 17), "160"), reading("d", MARCH[1], "310")])
    prices = MediumConfig(Medium.HEAT, PriceModel.DEBITERING, "kWh", prices=(
        PriceEntry(date(2020, 1, 1), date(2024, 3, 16), D("1.00")),
        PriceEntry(date(2024, 3, 16), None, D("2.00")),
    ))
    inp = make_input(apartments=(apartment("A001", "70"),), meter_points=(p,), media=(prices,),
                     tenants=(T1_ALL,))
    a, b = consumption_lines(run_of(inp))
    assert (a.period_from, a.period_to, a.quantity, a.unit_price, a.net) == (
        date(2024, 3, 1), date(2024, 3, 16), D("150.000"), D("1.00"), D("150.00"))
    assert (b.period_from, b.period_to, b.quantity, b.unit_price, b.net) == (
        date(2024, 3, 16), date(2024, 4, 1), D("160.000"), D("2.00"), D("320.00"))


def test_debitering_reports_difference_to_real_cost() -> None:
    # Charged 100 kWh × 1.25 = 125.00 + fixed fee 30.00 × 1 month = 155.00; the invoice says the
    # property paid 180.00 (not VAT-registered: gross). Reported difference 25.00, not charged.
    inp = make_input(apartments=(apartment("A001", "70"),),
                     meter_points=(simple_point("p1", "A001", "0", "100"),),
                     media=(debitering("1.25", fee="30"),), tenants=(T1_ALL,),
                     invoices=(invoice("144.00", vat="36.00"),))
    run = run_of(inp)
    (heat,) = run.summary.media
    assert heat.total_lines == D("155.00")
    assert heat.cost == D("180.00")
    assert heat.cost_minus_lines == D("25.00")
    assert sum(ln.net for ln in run.lines) == D("155.00")


def _fields(inp: object) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(inp, f.name) for f in fields(inp)}  # type: ignore[arg-type]


_ = Decimal  # re-exported name kept for readers of the arithmetic above
