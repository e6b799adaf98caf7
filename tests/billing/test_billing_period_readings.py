"""``period_readings`` (what the store hands the run: the readings around the period, not the weeks
loaded on each side) gives the same run as the full readings: same lines, same summary, same stop
reasons; only the input digest differs, as the input does."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from decimal import Decimal

from billing_builders import CREATED, TZ, apartment, make_input, settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from central.billing import compute_run
from central.billing.model import (
    BillingInput,
    FaultPolicy,
    Medium,
    MediumConfig,
    MeterInstallation,
    MeterPoint,
    PriceEntry,
    PriceModel,
    Reading,
    ReadingSource,
    TenantPeriod,
)
from central.billing.readings import period_readings
from central.billing.runs import BillingRun, RunStopped
from central.billing.serial import canonical_json
from central.billing.synthetic import build_property

D = Decimal
START = datetime(2024, 3, 1, tzinfo=TZ)


def _without_digest(result: BillingRun | RunStopped) -> bytes:
    if isinstance(result, RunStopped):
        preview = result.preview
        if preview is not None:
            preview = dataclasses.replace(preview, input_digest="", audit=())
        return canonical_json(dataclasses.replace(result, input_digest="", preview=preview))
    return canonical_json(dataclasses.replace(result, input_digest="", audit=()))


def _same_run(inp: BillingInput) -> BillingInput:
    trimmed = period_readings(inp)
    a = compute_run(inp, "R-T", CREATED, "test")
    b = compute_run(trimmed, "R-T", CREATED, "test")
    assert _without_digest(a) == _without_digest(b)
    return trimmed


def _count(inp: BillingInput) -> int:
    return sum(len(i.readings) for p in inp.meter_points for i in p.installations)


# A reading: hours from 1 March 00:00 local (-45 days .. +76 days), source, a bump of its value
# (so a register may go backwards), minutes; the value otherwise rises with the instant.
_SOURCES = [ReadingSource.REMOTE, ReadingSource.REMOTE, ReadingSource.MANUAL, ReadingSource.ESTIMATED]
_EDGES = [-170, -30, -1, 0, 1, 743, 744, 745, 770, 900]  # hours: at, next to and a week off the ends
_reading = st.tuples(
    st.one_of(st.integers(-45 * 24, 76 * 24), st.sampled_from(_EDGES)),
    st.sampled_from(_SOURCES),
    st.integers(0, 3),
    st.integers(0, 7),
)


def _readings(pid: str, rows: list[tuple[int, ReadingSource, int, int]]) -> tuple[Reading, ...]:
    out = []
    seen = set()
    for n, (hours, source, bump, minute) in enumerate(rows):
        at = (START + timedelta(hours=hours, minutes=minute * 7 if minute < 6 else 0)).astimezone(TZ)
        if at in seen:  # two readings of one instant: extrapolating from them divides by zero
            continue
        seen.add(at)
        value = D(100_000 + hours * 3 + bump) / 10
        est = {}
        if source is ReadingSource.ESTIMATED:
            est = {"method": "same period last year", "reason": "no frames"}
        out.append(Reading(f"{pid}-{n % 5}-{hours}", at, value, source, **est))
    return tuple(out)


@hsettings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(_reading, max_size=14), min_size=4, max_size=4),
    st.integers(2, 28),
    st.one_of(st.integers(-60, 800), st.sampled_from([0, 1, 743, 744])),
    st.booleans(),
    st.booleans(),
)
def test_a_run_of_the_period_readings_is_the_run_of_all(
    series: list[list[tuple[int, ReadingSource, int, int]]],
    move_day: int,
    swap_hours: int,
    estimate: bool,
    in_order: bool,
) -> None:
    """Random read-outs (gaps, unsorted, estimated, outside the installation, on the boundaries)
    on four points: a tenant moving on ``move_day``, a price change on the 20th, a meter replaced
    ``swap_hours`` after the period starts (before it, inside it, after it)."""
    if in_order:  # as the database gives them (the slice path), else any order (sorting path)
        series = [
            sorted(rows, key=lambda row: row[0] * 60 + (row[3] * 7 if row[3] < 6 else 0)) for rows in series
        ]
    move = date(2024, 3, move_day)
    swap = (START + timedelta(hours=swap_hours)).astimezone(TZ)
    apts = (apartment("A001", "50"), apartment("A002", "70"))
    points = [
        MeterPoint("P1", Medium.HEAT, "kWh", "A001", (
            MeterInstallation("m1", datetime(2020, 1, 1, tzinfo=TZ), None, _readings("P1", series[0])),
        )),
        MeterPoint("P2", Medium.HEAT, "kWh", "A002", (
            MeterInstallation("m2", datetime(2020, 1, 1, tzinfo=TZ), swap, _readings("P2", series[1])),
            MeterInstallation("m3", swap, None, _readings("P3", series[2])),
        )),
        MeterPoint("P4", Medium.COLD_WATER, "m3", "A001", (
            MeterInstallation("m4", datetime(2020, 1, 1, tzinfo=TZ), None, _readings("P4", series[3])),
        )),
    ]  # fmt: skip
    prices = (
        PriceEntry(date(2020, 1, 1), date(2024, 3, 20), D("1.25"), D("40")),
        PriceEntry(date(2024, 3, 20), None, D("1.50"), D("40")),
    )
    inp = make_input(
        settings=settings(fault_policy=FaultPolicy.ESTIMATE if estimate else FaultPolicy.HOLD),
        apartments=apts,
        meter_points=tuple(points),
        media=(
            MediumConfig(Medium.HEAT, PriceModel.DEBITERING, "kWh", prices=prices),
            MediumConfig(Medium.COLD_WATER, PriceModel.DEBITERING, "m3", prices=prices),
        ),
        tenants=(
            TenantPeriod("A001", "T1", date(2019, 1, 1), move),
            TenantPeriod("A001", "T2", move, None),
            TenantPeriod("A002", "T3", date(2019, 1, 1), None),
        ),
    )
    _same_run(inp)


def test_weeks_of_daily_readings_on_the_benchmark_portfolio() -> None:
    """A property of the benchmark portfolio (moves, replaced meters, estimated readings) with a
    read-out every 6 hours from 45 days before the period to 45 days after: the same run from a
    few readings per meter."""
    base = build_property(11, 60)
    assert any(t.move_out is not None for t in base.tenants)
    lo = datetime(2024, 3, 1, tzinfo=TZ) - timedelta(days=45)
    points = []
    for p in base.meter_points:
        installs = []
        for inst in p.installations:
            extra = []
            first = inst.readings[0]
            for k in range(4 * 121):
                at = (lo + timedelta(hours=6 * k, minutes=13)).astimezone(TZ)
                if at < inst.installed_at or (inst.removed_at is not None and at > inst.removed_at):
                    continue
                # a register rising 0.01 per hour through the first stored reading
                rise = D(int((at - first.at).total_seconds()) // 36) / 100
                value = first.value + rise.quantize(D("0.001"))
                extra.append(Reading(f"{first.id}-x{k}", at, value))
            installs.append(dataclasses.replace(inst, readings=(*extra, *inst.readings)))
        points.append(dataclasses.replace(p, installations=tuple(installs)))
    dense = dataclasses.replace(base, meter_points=tuple(points))
    trimmed = _same_run(dense)
    assert _count(dense) > 480 * len(dense.meter_points)
    assert _count(trimmed) < 140 * len(dense.meter_points)


def test_cutting_twice_cuts_nothing_more() -> None:
    inp = period_readings(build_property(3, 10))
    assert period_readings(inp) == inp
    assert canonical_json(period_readings(inp)) == canonical_json(inp)


def test_a_month_of_daily_read_outs_comes_down_to_the_readings_around_its_ends() -> None:
    """No move, no price change, no replacement: the read-out either side of each end (the two
    that interpolation of the end takes; nothing read right at midnight)."""
    days = [START + timedelta(days=k, hours=2) for k in range(-10, 42)]
    readings = tuple(Reading(f"r{k}", at, D(1000 + k)) for k, at in enumerate(days))
    point = MeterPoint("P1", Medium.HEAT, "kWh", "A001", (
        MeterInstallation("m1", datetime(2020, 1, 1, tzinfo=TZ), None, readings),
    ))  # fmt: skip
    inp = make_input(
        settings=settings(),
        apartments=(apartment("A001", "50"),),
        meter_points=(point,),
        media=(
            MediumConfig(
                Medium.HEAT,
                PriceModel.DEBITERING,
                "kWh",
                prices=(PriceEntry(date(2020, 1, 1), None, D("1.25")),),
            ),
        ),
    )
    kept = _same_run(inp).meter_points[0].installations[0].readings
    # 1 March 02:00 is readings[10]; 1 April 00:00 falls between 31 March and 1 April 02:00
    assert [r.id for r in kept] == ["r9", "r10", "r40", "r41"]


def _series(step_hours: int, minute: int, gaps: set[int]) -> list[datetime]:
    """Read-outs every ``step_hours`` from 60 days before START to 76 days after, but ``gaps``."""
    count = (136 * 24) // step_hours
    return [
        (START + timedelta(days=-60, hours=k * step_hours, minutes=minute)).astimezone(TZ)
        for k in range(count)
        if k not in gaps
    ]


def _fetch_and_cut(
    times: list[datetime],
    installed: datetime,
    removal: datetime | None,
    instants: list[datetime],
    margin: timedelta,
) -> tuple[set[datetime] | None, set[datetime] | None]:
    """(the cut of a fetch within ``margin`` of each instant, or None when the margin did not hold;
    the cut of every reading)."""
    from datetime import UTC

    from central.billing.readings import nearest_instants, usable_instants

    near = [t for t in times if any(abs(t.astimezone(UTC) - i) <= margin for i in instants)]
    every = nearest_instants(usable_instants(times, installed, removal), instants)
    return nearest_instants(usable_instants(near, installed, removal), instants, margin), every


@hsettings(max_examples=500, deadline=None)
@given(
    st.integers(3, 60),
    st.integers(0, 59),
    st.sets(st.integers(0, 1100), max_size=40),
    st.one_of(st.none(), st.integers(-60, 800)),
    st.booleans(),
    st.integers(1, 120),
    st.lists(st.integers(-100, 900), max_size=3),
)
def test_a_fetch_the_margin_holds_keeps_what_the_wide_fetch_keeps(
    step_hours: int,
    minute: int,
    gaps: set[int],
    install_hours: int | None,
    removed: bool,
    margin_hours: int,
    more: list[int],
) -> None:
    """The store's shortcut: fetch only the readings within a margin of each instant; when
    ``nearest_instants`` says the margin held the neighbours, the cut is the cut of everything.
    Regular read-outs with gaps, a meter installed long ago or during the window, removed or not."""
    from datetime import UTC

    installed = (
        datetime(2020, 1, 1, tzinfo=TZ) if install_hours is None else START + timedelta(hours=install_hours)
    )
    removal = installed + timedelta(days=9) if removed and install_hours is not None else None
    ends = [START, datetime(2024, 4, 1, tzinfo=TZ), *(START + timedelta(hours=h) for h in more)]
    instants = sorted({t.astimezone(UTC) for t in ends})
    fetched, every = _fetch_and_cut(
        _series(step_hours, minute, gaps), installed, removal, instants, timedelta(hours=margin_hours)
    )
    if fetched is not None:
        assert fetched == every


def test_daily_read_outs_hold_their_neighbours_within_two_days() -> None:
    """The case the store's margin is sized for (and the property test's answered branch, surely
    taken): daily read-outs, a meter installed long ago, the period's ends and a move on the 15th."""
    from datetime import UTC

    instants = sorted(
        t.astimezone(UTC)
        for t in (START, datetime(2024, 3, 15, 9, tzinfo=TZ), datetime(2024, 4, 1, tzinfo=TZ))
    )
    fetched, every = _fetch_and_cut(
        _series(24, 7, {30, 31}), datetime(2020, 1, 1, tzinfo=TZ), None, instants, timedelta(days=2)
    )
    assert fetched is not None
    assert fetched == every
    assert len(every) == 6  # one either side of each of the three instants, none read right then


def test_what_alignment_looks_at_is_what_is_kept() -> None:
    """``nearest_positions`` per instant: the reading taken right then and nothing else; else the
    nearest on each side; with one side only, the two nearest there (what extrapolation draws its
    line through). With a margin, a one-sided instant is refused (nothing says what lies beyond
    the fetch) and so is a neighbour farther out than the margin."""
    from datetime import UTC

    from central.billing.readings import nearest_positions

    t = [datetime(2024, 3, d, 2, tzinfo=UTC) for d in (1, 2, 3, 5, 6)]
    assert nearest_positions(t, [t[2]]) == {2}  # read right then
    assert nearest_positions(t, [t[2] + timedelta(hours=1)]) == {2, 3}  # between the 3rd and the 5th
    assert nearest_positions(t, [t[-1] + timedelta(days=1)]) == {3, 4}  # after the last: two before
    assert nearest_positions(t, [t[0] - timedelta(days=1)]) == {0, 1}  # before the first: two after
    assert nearest_positions(t[:1], [t[0] + timedelta(days=1)]) == {0}  # one reading: nothing to draw
    assert nearest_positions([], [t[0]]) == set()
    day = timedelta(hours=26)
    assert nearest_positions(t, [t[2]], day) == {2}
    assert nearest_positions(t, [t[1] + timedelta(hours=1)], day) == {1, 2}
    assert nearest_positions(t, [t[2] + timedelta(hours=1)], day) is None  # the 5th is 47 h out
    assert nearest_positions(t, [t[-1] + timedelta(hours=1)], day) is None  # nothing after
