"""Yearly reconciliation: monthly a-conto advances, then one true-up per tenant and medium."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from billing_builders import CREATED, D, apartment, debitering, make_input, point, reading, settings

from central.billing import compute_run
from central.billing.model import Medium, TenantPeriod
from central.billing.periods import add_months
from central.billing.reconciliation import AcontoPlan, aconto_lines, reconciliation_lines, reconciliation_run
from central.billing.runs import BillingRun, LineKind, approve

YEAR = (date(2024, 1, 1), date(2025, 1, 1))
MOVE = date(2024, 7, 1)


def _year_run() -> BillingRun:
    # A001: 4200 kWh all year. A002: 1000 kWh until the move reading on 1 July, 2000 kWh after.
    inp = make_input(
        settings=settings(vat_registered=True),
        period_from=YEAR[0],
        period_to=YEAR[1],
        apartments=(apartment("A001", "70"), apartment("A002", "50")),
        meter_points=(
            point("h1", "A001", [reading("h1-s", YEAR[0], "0"), reading("h1-e", YEAR[1], "4200")]),
            point("h2", "A002", [reading("h2-s", YEAR[0], "0"), reading("h2-m", MOVE, "1000", hour=9),
                                 reading("h2-e", YEAR[1], "3000")]),
        ),
        media=(debitering("1.25"),),
        tenants=(
            TenantPeriod("A001", "T-1", date(2020, 1, 1)),
            TenantPeriod("A002", "T-X", date(2020, 1, 1), MOVE),
            TenantPeriod("A002", "T-Y", MOVE),
        ),
    )
    run = compute_run(inp, "R-2024", CREATED, "anna")
    assert isinstance(run, BillingRun), run
    return run


PLANS = (
    AcontoPlan("A001", "OBJ-A001", "1001", "T-1", Medium.HEAT, D("500.00"), YEAR[0]),
    AcontoPlan("A002", "OBJ-A002", "1002", "T-X", Medium.HEAT, D("300.00"), YEAR[0], MOVE),
    AcontoPlan("A002", "OBJ-A002", "1002", "T-Y", Medium.HEAT, D("300.00"), MOVE),
)


def _advances() -> list:  # type: ignore[type-arg]
    out = []
    month = YEAR[0]
    while month < YEAR[1]:
        out += aconto_lines(PLANS, month, f"R-{month:%Y-%m}", vat_rate=D("0.25"))
        month = add_months(month, 1)
    return out


def test_aconto_lines_per_month_with_vat_and_a_part_month_by_days() -> None:
    (a1, x) = aconto_lines(PLANS[:2], date(2024, 3, 1), "R-2024-03", vat_rate=D("0.25"))
    want = (LineKind.ACONTO, D("500.00"), D("125.00"), "vat25", "T-1")
    assert (a1.kind, a1.net, a1.vat, a1.vat_class, a1.tenant_ref) == want
    assert x.net == D("300.00")
    # A move on 16 June: T-X pays 15/30 of June, T-Y 15/30.
    plans = (
        AcontoPlan("A002", "OBJ-A002", "1002", "T-X", Medium.HEAT, D("300.00"), YEAR[0], date(2024, 6, 16)),
        AcontoPlan("A002", "OBJ-A002", "1002", "T-Y", Medium.HEAT, D("300.00"), date(2024, 6, 16)),
    )
    june = aconto_lines(plans, date(2024, 6, 1), "R-2024-06")
    assert [(ln.tenant_ref, ln.net, ln.vat) for ln in june] == [("T-X", D("150.00"), D("0.00")),
                                                               ("T-Y", D("150.00"), D("0.00"))]
    assert "× 15/30 dagar = 150.00" in june[0].arithmetic
    assert aconto_lines(plans, date(2024, 8, 1), "R-2024-08")[0].tenant_ref == "T-Y"


def test_true_up_is_actual_minus_advances_per_tenant_worked_example() -> None:
    year = _year_run()
    # Actual: T-1 4200 × 1.25 = 5250.00 (VAT 1312.50); T-X 1000 × 1.25 = 1250.00 (312.50);
    # T-Y 2000 × 1.25 = 2500.00 (625.00). Advances: T-1 12 × 500.00 = 6000.00 (1500.00);
    # T-X 6 × 300.00 = 1800.00 (450.00); T-Y 6 × 300.00 = 1800.00 (450.00).
    lines = reconciliation_lines(year, _advances(), "R-2024-Y")
    got = [(ln.tenant_ref, ln.net, ln.vat, ln.kind, ln.charge) for ln in lines]
    assert got == [
        ("T-1", D("-750.00"), D("-187.50"), LineKind.RECONCILIATION, "trueup.heat"),
        ("T-X", D("-550.00"), D("-137.50"), LineKind.RECONCILIATION, "trueup.heat"),
        ("T-Y", D("700.00"), D("175.00"), LineKind.RECONCILIATION, "trueup.heat"),
    ]
    assert lines[0].arithmetic == (
        "faktisk 5250.00 (moms 1312.50) - a conto 6000.00 (moms 1500.00) = -750.00 (moms -187.50)"
    )
    # Over the year each tenant paid exactly the actual charge and its VAT.
    advances = _advances()
    paid = {
        t: sum((a.net + a.vat for a in advances if a.tenant_ref == t), D(0)) for t in ("T-1", "T-X", "T-Y")
    }
    for ln in lines:
        actual = sum((x.gross for x in year.exportable() if x.tenant_ref == ln.tenant_ref), D(0))
        assert paid[ln.tenant_ref or ""] + ln.gross == actual


def test_reconciliation_run_is_a_normal_draft_and_deterministic() -> None:
    year = _year_run()
    a = reconciliation_run(year, _advances(), "R-2024-Y", CREATED, "anna")
    b = reconciliation_run(year, _advances(), "R-2024-Y", CREATED, "anna")
    assert a == b
    assert (a.summary.net, a.summary.vat, a.summary.line_count) == (D("-600.00"), D("-150.00"), 3)
    assert len({ln.line_id for ln in a.lines}) == 3
    assert approve(a, "bo", CREATED).state == "approved"
    assert a.exportable() == a.lines


def test_exact_advances_give_no_line_and_a_tenant_without_advances_pays_the_actual() -> None:
    year = _year_run()
    t1 = [ln for ln in _advances() if ln.tenant_ref == "T-1"]
    # 11 × 500.00 - 250.00 = 5250.00 and 11 × 125.00 - 62.50 = 1312.50: exactly the actual charge.
    exact = [*t1[:-1], replace(t1[-1], net=D("-250.00"), vat=D("-62.50"))]
    assert sum((ln.net for ln in exact), D(0)) == D("5250.00")
    assert sum((ln.vat for ln in exact), D(0)) == D("1312.50")
    lines = reconciliation_lines(year, exact, "R-2024-Y")
    # Heat is billed a conto in the property: T-X and T-Y paid nothing in advance, so they owe it all.
    assert [(ln.tenant_ref, ln.net, ln.vat) for ln in lines] == [
        ("T-X", D("1250.00"), D("312.50")),
        ("T-Y", D("2500.00"), D("625.00")),
    ]
    assert reconciliation_lines(year, [], "R-2024-Y") == ()  # nothing a conto: nothing to reconcile
