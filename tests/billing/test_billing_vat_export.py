"""VAT rounding, run states, the debiteringsfil profiles, determinism and OCR references."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from billing_builders import CREATED, D, apartment, debitering, make_input, settings, simple_point

from central.billing import compute_run, render
from central.billing.export import (
    EXCEL_CSV,
    FIXED_WIDTH_CP1252,
    GENERIC_CSV,
    ExportError,
    canonical_file,
    load_profile,
    profile_from_dict,
)
from central.billing.model import Apartment, FixedCost, FixedKey, Medium, TenantPeriod, VatRounding
from central.billing.money import Rounding
from central.billing.ocr import OcrError, is_valid_ocr, luhn_digit, ocr_reference
from central.billing.runs import BillingRun, RunState, RunStateError, approve, lock, mark_exported
from central.billing.serial import canonical_json

T1 = TenantPeriod("A001", "T-1001", date(2020, 1, 1))


def three_media(**kw: object):  # type: ignore[no-untyped-def]
    # Each medium: 8.008 units × 1.25 = 10.01 net.
    return make_input(
        settings=settings(vat_registered=True, **kw),
        apartments=(apartment("A001", "70"),),
        meter_points=(
            simple_point("h", "A001", "0", "8.008"),
            simple_point("w", "A001", "0", "8.008", medium=Medium.HOT_WATER, unit="m3"),
            simple_point("c", "A001", "0", "8.008", medium=Medium.COLD_WATER, unit="m3"),
        ),
        media=(debitering(), debitering(medium=Medium.HOT_WATER, unit="m3"),
               debitering(medium=Medium.COLD_WATER, unit="m3")),
        tenants=(T1,),
    )


def run_of(inp, run_id: str = "R-2024-03") -> BillingRun:  # type: ignore[no-untyped-def]
    r = compute_run(inp, run_id, CREATED, "anna")
    assert isinstance(r, BillingRun), r
    return r


def test_vat_per_line_half_up() -> None:
    # 10.01 × 25 % = 2.5025 -> 2.50 on each line; Σ VAT 7.50 on Σ net 30.03.
    run = run_of(three_media())
    assert [(ln.net, ln.vat, ln.vat_class) for ln in run.lines] == [(D("10.01"), D("2.50"), "vat25")] * 3
    assert (run.summary.net, run.summary.vat, run.summary.gross) == (D("30.03"), D("7.50"), D("37.53"))


def test_vat_per_total_split_back_by_largest_remainder() -> None:
    # Σ net 30.03 × 25 % = 7.5075 -> 7.51 once per tenant; split over three equal nets: 2.50 each
    # and the spare öre to the first line (equal remainders: the smallest key, cold water's line).
    run = run_of(three_media(vat_rounding=VatRounding.TOTAL))
    vats = {ln.charge: ln.vat for ln in run.lines}
    assert vats == {"cold_water": D("2.51"), "heat": D("2.50"), "hot_water": D("2.50")}
    assert run.summary.vat == D("7.51")


def test_vat_rounding_rule_is_configurable() -> None:
    # 2.5025 rounded down -> 2.50; 10.01 is exact. With HALF_EVEN on 0.125 -> 0.12 vs HALF_UP 0.13:
    # 0.4 units × 1.25 = 0.50 net; VAT 0.125.
    def one(rounding: Rounding) -> Decimal:
        inp = make_input(settings=settings(vat_registered=True, rounding=rounding),
                         apartments=(apartment("A001", "70"),),
                         meter_points=(simple_point("h", "A001", "0", "0.4"),),
                         media=(debitering(),), tenants=(T1,))
        (line,) = run_of(inp).lines
        assert line.net == D("0.50")
        return line.vat

    assert one(Rounding.HALF_UP) == D("0.13")
    assert one(Rounding.HALF_EVEN) == D("0.12")
    assert one(Rounding.DOWN) == D("0.12")


def test_not_vat_registered_and_rent_included_are_exempt() -> None:
    run = run_of(make_input(apartments=(apartment("A001", "70"),),
                            meter_points=(simple_point("h", "A001", "0", "8"),),
                            media=(debitering(),), tenants=(T1,)))
    assert [(ln.vat_class, ln.vat) for ln in run.lines] == [("exempt", D("0"))]
    flat = Apartment("A001", "OBJ-A001", "1001", D("70"), rent_included=(Medium.HEAT,))
    run = run_of(make_input(settings=settings(vat_registered=True), apartments=(flat,),
                            meter_points=(simple_point("h", "A001", "0", "8"),),
                            media=(debitering(),), tenants=(T1,)))
    (line,) = run.lines
    assert (line.payer, line.vat_class, line.vat) == ("rent", "exempt", D("0"))
    assert run.exportable() == ()


def test_fixed_cost_vat_follows_its_flag() -> None:
    inp = make_input(settings=settings(vat_registered=True), apartments=(apartment("A001", "70"),),
                     tenants=(T1,), fixed_costs=(
                         FixedCost("samf", "Samfällighetsavgift", D("100.00"), FixedKey.AREA),
                         FixedCost("svc", "Serviceavgift mätning", D("20.00"), FixedKey.COUNT, taxable=True),
                     ))
    run = run_of(inp)
    assert {(ln.charge, ln.vat_class, ln.vat) for ln in run.lines} == {
        ("cost.samf", "exempt", D("0.00")), ("cost.svc", "vat25", D("5.00")),
    }


def test_run_states_and_audit() -> None:
    run = run_of(three_media())
    assert run.state is RunState.DRAFT
    t = datetime(2024, 4, 6, 9, tzinfo=CREATED.tzinfo)
    with pytest.raises(RunStateError):
        mark_exported(run, "bo", t, "x")
    done = lock(mark_exported(approve(run, "bo", t, "ok"), "eva", t, "ab12"), "eva", t)
    assert done.state is RunState.LOCKED
    assert [(a.action, a.by) for a in done.audit] == [
        ("computed", "anna"), ("approved", "bo"), ("exported", "eva"), ("locked", "eva")]
    assert done.audit[2].note == "sha256=ab12"
    with pytest.raises(RunStateError):
        approve(done, "bo", t)
    assert run.state is RunState.DRAFT  # the draft value itself is unchanged


def test_generic_csv_golden() -> None:
    inp = make_input(settings=settings(vat_registered=True), apartments=(apartment("A001", "70"),),
                     meter_points=(simple_point("h", "A001", "1000.000", "1123.456"),),
                     media=(debitering("1.2500"),), tenants=(T1,))
    out = render(run_of(inp), GENERIC_CSV).decode("utf-8").split("\r\n")
    assert out[0].startswith("property_id;object_number;apartment_number;tenant_ref;charge_code;period_from;")
    # 123.456 kWh × 1.2500 = 154.32 (154.32 exactly: 154.3200); VAT 38.58; gross 192.90.
    fields = out[1].split(";")
    assert fields[:15] == [
        "P1", "OBJ-A001", "1001", "T-1001", "heat.vat25", "2024-03-01", "2024-03-31", "123,456", "kWh",
        "1,2500", "154,32", "0,25", "38,58", "192,90", "1000,000",
    ]
    assert fields[15:20] == ["1123,456", "2024-03-01", "2024-04-01", "remote", "0"]
    assert fields[21] == "R-2024-03"
    assert fields[22].startswith("R-2024-03-")
    assert out[2] == ""


def test_same_inputs_same_bytes() -> None:
    def build() -> BillingRun:
        inp = make_input(
            settings=settings(vat_registered=True),
            apartments=(apartment("A002", "50"), apartment("A001", "70")),
            meter_points=(simple_point("h2", "A002", "0", "33.333"),
                          simple_point("h1", "A001", "0", "66.667")),
            media=(debitering(),),
            tenants=(TenantPeriod("A002", "T-2", date(2020, 1, 1)), T1),
            fixed_costs=(FixedCost("samf", "Samfällighetsavgift", D("99.99"), FixedKey.AREA),),
        )
        return run_of(inp)

    a, b = build(), build()
    for profile in (GENERIC_CSV, EXCEL_CSV, FIXED_WIDTH_CP1252):
        assert render(a, profile) == render(b, profile)
    assert canonical_json(a) == canonical_json(b)
    assert a.input_digest == b.input_digest


def test_excel_profile() -> None:
    run = run_of(three_media())
    data = render(run, EXCEL_CSV)
    assert data.startswith(b"\xef\xbb\xbf")  # BOM
    text = data.decode("utf-8-sig")
    rows = text.split("\r\n")
    assert rows[0].startswith("Fastighet;Objektnummer;Lägenhetsnummer;")
    # ="..." keeps leading zeros and stops Excel turning 1001 into a number; CSV-quoted it is
    # "=""OBJ-A001""", which Excel un-quotes to the formula ="OBJ-A001".
    assert rows[1].startswith('P1;"=""OBJ-A001""";"=""1001""";')
    assert rows[-2].split(";")[10] == "30,03"  # trailer: Σ net
    assert rows[-2].split(";")[13] == "37,53"  # Σ gross
    assert rows[-2].startswith("Summa;")


def test_fixed_width_cp1252_profile() -> None:
    run = run_of(three_media())
    data = render(run, FIXED_WIDTH_CP1252)
    records = data.split(b"\r\n")[:-1]
    header, *lines = records
    assert header.startswith(b"HP1          R-2024-03")
    # H(1) property(12) run(24) from(8) to(8) = 53, then the line count (6, zero-padded).
    assert header[53:59] == b"000003"
    assert len({len(r) for r in lines}) == 1
    assert lines[0][19:27] == b"KV      "  # D(1) object(12) apt(6), then the profile's code
    assert b"V\xe4rme" in data  # cp1252 ä
    assert int(header[59:73].strip().replace(b",", b"")) == 3003


def test_profile_from_toml_and_errors() -> None:
    profile = load_profile('''
name = "hogia_like"
encoding = "cp1252"
delimiter = ";"
decimal_separator = ","
column_headers = false
date_format = "%Y%m%d"
columns = [
  {field = "object_number"},
  {field = "charge_code"},
  {field = "period_from"},
  {field = "net", decimals = 2},
  {field = "text"},
]
[charge_codes]
"heat.vat25" = "101"
''')
    run = run_of(make_input(settings=settings(vat_registered=True), apartments=(apartment("A001", "70"),),
                            meter_points=(simple_point("h", "A001", "0", "100"),),
                            media=(debitering(),), tenants=(T1,)))
    assert render(run, profile) == "OBJ-A001;101;20240301;125,00;Värme 100 kWh à 1,25 kr\r\n".encode("cp1252")
    with pytest.raises(ExportError, match="unknown field"):
        profile_from_dict({"name": "x", "columns": ["no_such_field"]})
    with pytest.raises(ExportError, match="unknown settings"):
        profile_from_dict({"name": "x", "columns": [], "colour": "red"})
    bad = profile_from_dict({"name": "x", "encoding": "cp1252", "columns": ["tenant_ref"]})
    odd = run_of(make_input(apartments=(apartment("A001", "70"),),
                            meter_points=(simple_point("h", "A001", "0", "1"),), media=(debitering(),),
                            tenants=(TenantPeriod("A001", "Őrs", date(2020, 1, 1)),)))
    with pytest.raises(ExportError, match="cp1252"):
        render(odd, bad)


def test_canonical_header_totals() -> None:
    f = canonical_file(run_of(three_media()))
    h = f.header
    assert (h.line_count, h.net, h.vat, h.gross) == (3, D("30.03"), D("7.50"), D("37.53"))
    assert len({ln.line_id for ln in f.lines}) == 3


def test_ocr_luhn_and_length_digit() -> None:
    assert luhn_digit("7992739871") == "3"  # the textbook Luhn example
    assert ocr_reference("1234567") == "12345674"
    # Length digit: 7 digits + length + check = 9 -> "9"; Luhn of 12345679 is 0.
    assert ocr_reference(1234567, length_digit=True) == "123456790"
    assert is_valid_ocr("123456790", length_digit=True)
    assert not is_valid_ocr("123456791", length_digit=True)
    assert not is_valid_ocr("12345675")
    with pytest.raises(OcrError):
        ocr_reference("12a")
    with pytest.raises(OcrError):
        ocr_reference("1" * 25)
