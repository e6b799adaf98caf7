"""The fast paths added for speed give exactly what the plain definitions give.

``canonical_json`` writes JSON directly instead of ``json.dumps(to_jsonable(...))``; ``allocate``
scales Decimal weights by a power of ten instead of going through ``Fraction``; the benchmark's
portfolio is deterministic. Each is checked against the straightforward version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo

from billing_builders import CREATED
from hypothesis import given, settings
from hypothesis import strategies as st

from central.billing import compute_run
from central.billing.money import ORE, allocate
from central.billing.runs import BillingRun
from central.billing.serial import canonical_json, digest, to_jsonable
from central.billing.synthetic import build_property


def reference_json(value: object) -> bytes:
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Odd:
    b: str | None
    a: tuple[object, ...]
    c: dict[str, object]


def test_canonical_json_matches_json_dumps_on_a_whole_property_and_its_run() -> None:
    inp = build_property(7, 20)
    run = compute_run(inp, "R-7", CREATED, "bench")
    assert isinstance(run, BillingRun)
    assert canonical_json((inp, ())) == reference_json((inp, ()))
    assert canonical_json(run) == reference_json(run)


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-10**9, max_value=10**9)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), texts, decimals,
    st.dates(), st.datetimes(timezones=st.just(timezone(timedelta(hours=1)))), st.just(Colour.RED),
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=4),
        st.builds(Odd, st.one_of(st.none(), texts), st.lists(inner, max_size=3).map(tuple),
                  st.dictionaries(texts, inner, max_size=3)),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_canonical_json_matches_json_dumps_for_any_value(value: object) -> None:
    assert canonical_json(value) == reference_json(value)


def test_digest_is_sha256_of_the_canonical_bytes() -> None:
    import hashlib

    inp = build_property(1, 5)
    assert digest(inp) == hashlib.sha256(reference_json(inp)).hexdigest()


K = Hashable


def reference_allocate(
    total: Decimal, weights: Sequence[tuple[K, Decimal]], step: Decimal = ORE
) -> dict[K, Decimal]:
    """The original Fraction-based largest remainder."""
    units = int(total / step)
    sign = -1 if units < 0 else 1
    units = abs(units)
    exact = [Fraction(w) for _, w in weights]
    scale = math.lcm(*(w.denominator for w in exact))
    ints = [w.numerator * (scale // w.denominator) for w in exact]
    weight_sum = sum(ints)
    base = {}
    rem = []
    for (key, _), w in zip(weights, ints, strict=True):
        whole, rest = divmod(units * w, weight_sum)
        base[key] = whole
        rem.append((-rest, ("1", repr(key)), key))
    rem.sort(key=lambda r: (r[0], r[1]))
    for _, _, key in rem[: units - sum(base.values())]:
        base[key] += 1
    return {key: step * (sign * base[key]) for key, _ in weights}


weights_st = st.lists(
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False),
    min_size=1, max_size=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**7), 10**7), weights_st, st.data())
def test_allocate_matches_the_fraction_reference(
    cents: int, weights: list[Decimal], data: st.DataObject
) -> None:
    if sum(weights) == 0:
        weights[0] = Decimal(1)
    # mixed exponents, as area × days and shares give
    scaled = [w.quantize(Decimal(1).scaleb(-data.draw(st.integers(0, 4)))) for w in weights]
    if sum(scaled) == 0:
        scaled[0] = Decimal("0.5")
    keyed = [(f"a{i:03d}", w) for i, w in enumerate(scaled)]
    total = Decimal(cents) * ORE
    got = allocate(total, keyed)
    assert got == reference_allocate(total, keyed)
    assert sum(got.values()) == total


def test_benchmark_portfolio_is_deterministic_and_runs() -> None:
    a, b = build_property(11, 30), build_property(11, 30)
    assert canonical_json(a) == canonical_json(b)
    run = compute_run(a, "R-11", datetime(2024, 4, 5, tzinfo=UTC), "bench")
    run2 = compute_run(b, "R-11", datetime(2024, 4, 5, tzinfo=UTC), "bench")
    assert canonical_json(run) == canonical_json(run2)
    full = run if isinstance(run, BillingRun) else run.preview
    assert full is not None
    assert full.period_from == date(2024, 3, 1)
    heat = next(m for m in full.summary.media if m.medium == "heat")
    assert heat.cost_minus_lines == 0  # the fördelning pool is charged to the öre


@settings(max_examples=300, deadline=None)
@given(
    st.decimals(min_value=0, max_value=10**7, places=4, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-(10**4), max_value=10**5, places=3, allow_nan=False, allow_infinity=False),
    st.integers(1, 10**12),
    st.data(),
    st.integers(0, 4),
)
def test_interpolate_matches_the_decimal_computation(
    v0: Decimal, rise: Decimal, span: int, data: st.DataObject, decimals: int
) -> None:
    from decimal import ROUND_HALF_EVEN

    from central.billing.money import EXACT
    from central.billing.readings import interpolate

    part = data.draw(st.integers(0, span))
    v1 = v0 + rise
    step = Decimal(1).scaleb(-decimals)
    want = EXACT.add(v0, EXACT.divide(EXACT.multiply(EXACT.subtract(v1, v0), Decimal(part)), Decimal(span)))
    want = want.quantize(step, rounding=ROUND_HALF_EVEN, context=EXACT)
    got = interpolate(v0, v1, part, span, decimals)
    assert got == want
    assert got.as_tuple().exponent == want.as_tuple().exponent


def test_fast_builders_make_what_the_constructors_make() -> None:
    """What the run builds with ``fastinit.builder`` (lines, span views, consumptions) is what the
    plain constructor makes of the same fields: equal, same hash, same derived fields, frozen."""
    import dataclasses

    import pytest

    from central.billing.fastinit import builder
    from central.billing.readings import PointConsumption, consumption

    inp = build_property(3, 10)
    run = compute_run(inp, "R-3", CREATED, "bench")
    full = run if isinstance(run, BillingRun) else run.preview
    assert full is not None
    used = consumption(
        inp.meter_points[0], datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    )
    assert isinstance(used, PointConsumption)
    for obj in (full.lines[0], full.lines[0].spans[0], used, used.spans[0], used.spans[0].start):
        cls = type(obj)
        fields = dataclasses.fields(cls)
        plain = cls(**{f.name: getattr(obj, f.name) for f in fields if f.init})
        made = builder(cls)(*(getattr(obj, f.name) for f in fields))
        for other in (obj, made):
            assert type(other) is cls
            assert other == plain
            assert hash(other) == hash(plain)
            assert [repr(getattr(other, f.name)) for f in fields] == [
                repr(getattr(plain, f.name)) for f in fields
            ]
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.__setattr__(fields[0].name, None)
    with pytest.raises(TypeError):
        builder(Colour)


_ZONES = ["Europe/Stockholm", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC"]
_offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))


@settings(max_examples=400, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(
            st.none(),
            st.sampled_from(_ZONES).map(ZoneInfo),
            _offsets.map(timezone),
            st.just(UTC),
        ),
        allow_imaginary=True,
    ),
    st.booleans(),
)
def test_datetime_text_is_isoformat(value: datetime, fold: bool) -> None:
    """The digest's own datetime text (cached day, clock and offset parts) is ``isoformat``'s, for
    naive and aware values, odd offsets (seconds, microseconds), folds and gaps of real zones."""
    from central.billing.serial import _datetime_json

    value = value.replace(fold=int(fold))
    assert _datetime_json(value) == '"' + value.isoformat() + '"'
    assert canonical_json(value) == reference_json(value)


@dataclass(frozen=True, slots=True)
class _Amount:
    value: Decimal


_any_decimal = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.builds(lambda c, e: Decimal(c).scaleb(e), st.integers(-(10**30), 10**30), st.integers(-40, 40)),
)


@settings(max_examples=500, deadline=None)
@given(_any_decimal)
def test_decimal_text_is_format_f(value: Decimal) -> None:
    """``fmt`` and the digest write a Decimal through ``str`` when it has no exponent: the same text
    as ``format(value, 'f')`` for every exponent, sign, zero and special value."""
    from central.billing.money import fmt

    assert fmt(value) == f"{value:f}"
    canonical_json(_Amount(Decimal("1.5")))  # the encoder is written for the first value's types
    assert canonical_json(_Amount(value)) == ('{"value":"' + f"{value:f}" + '"}').encode()


@settings(max_examples=300, deadline=None)
@given(st.builds(lambda c, e: Decimal(c).scaleb(e), st.integers(-(10**15), 10**15), st.integers(-6, 2)))
def test_to_ore_matches_the_keyword_quantize(value: Decimal) -> None:
    from central.billing.money import EXACT, ORE, Rounding, to_ore

    for rule in Rounding:
        want = value.quantize(ORE, rounding=str(rule), context=EXACT)
        got = to_ore(value, rule)
        assert (str(got), got.as_tuple()) == (str(want), want.as_tuple())


def test_line_ids_are_make_line_id() -> None:
    """The engine writes line ids inline: they are ``make_line_id`` of the line's discriminators."""
    from central.billing.runs import make_line_id

    run = compute_run(build_property(5, 30), "R-5", CREATED, "bench")
    full = run if isinstance(run, BillingRun) else run.preview
    assert full is not None
    for ln in full.lines:
        want = make_line_id(
            "R-5", str(ln.kind), ln.charge, ln.apartment_id or "", ln.tenant_ref or "",
            ln.period_from.isoformat(), ln.point_id or "",
        )  # fmt: skip
        assert ln.line_id == want
