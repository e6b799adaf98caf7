"""The billing run: inputs -> lines per apartment (and tenant) with the arithmetic, plus a summary.

Pure and deterministic: no clock, no database, no randomness; ids come from the caller and hashes.

How one medium is computed:

1. Each apartment's period is cut into *segments*, one per tenant (and one per vacant stretch),
   at the move dates from the tenant periods.
2. For each meter point the period is cut at the move dates and (debitering) the price-change
   dates. A price change and the period ends are *hard* boundaries: the register is aligned to
   local midnight (see ``readings``). A move date is hard when a real reading was taken that day
   (the split is "by readings": the first such reading is the cut); otherwise it is *soft* and the
   consumption between the hard boundaries around it is split by days (largest remainder at the
   reading resolution), and the pieces are flagged ``estimated`` with method "split by days".
   So a period spanning a price change is split by the (interpolated) readings at the change date.
3. debitering: one line per (point, segment, price): net = quantity × unit price rounded to öre by
   the property's rounding rule; a fixed fee per apartment and month split over its segments by
   days. The difference to the real cost from the supplier invoices is reported, never charged.
4. fördelning: the pool (invoice cost) is split into a fixed part (``fixed_key_share`` by the fixed
   key × days in the segment) and a consumption part (by own consumption); the main-meter difference
   is handled by the medium's rule. Every split is a largest-remainder allocation, so Σ lines ==
   pool to the öre. If Σ consumption is 0 the consumption part is split by the fixed key instead
   (noted in the summary): a pool is always distributed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise

from .fastinit import builder
from .invoices import CostAnalysis, analyse_costs, main_meter_difference
from .model import (
    Apartment,
    BillingInput,
    DifferenceRule,
    FaultPolicy,
    FixedKey,
    Medium,
    MediumConfig,
    MeterPoint,
    PriceEntry,
    PriceModel,
    TenantPeriod,
    VatRounding,
)
from .money import EXACT, ORE, ZERO, allocate, fmt, mul, ore_context, quantize_step, to_ore
from .periods import BillingPeriod, boundary
from .readings import MeterSpan, Missing, PointConsumption, consumption, move_reading
from .runs import (
    AuditEntry,
    BillingLine,
    BillingRun,
    LineKind,
    MediumSummary,
    Payer,
    PropertySummary,
    RunState,
    RunStopped,
    SpanView,
    StopReason,
)
from .serial import digest

__all__ = ["MEDIUM_TEXT", "Segment", "compute_run", "segments_of"]

MEDIUM_TEXT = {
    Medium.HEAT: "Värme",
    Medium.HOT_WATER: "Varmvatten",
    Medium.COLD_WATER: "Kallvatten",
    Medium.ELECTRICITY: "El",
    Medium.ROOM_TEMPERATURE: "Rumstemperatur",
}


def sv(value: Decimal) -> str:
    """A number as Swedish text prints it (decimal comma), for the line texts."""
    return fmt(value).replace(".", ",")


_SOURCE_RANK = {"remote": 0, "manual": 1, "interpolated": 2, "extrapolated": 3, "estimated": 4}
_KIND_ORDER = {k: i for i, k in enumerate(LineKind)}


@dataclass(frozen=True, slots=True)
class Segment:
    apartment: Apartment
    tenant_ref: str | None  # None: vacant
    start: date
    end: date
    key: tuple[str, str] = field(init=False, compare=False, repr=False)  # (apartment id, start)

    def __post_init__(self) -> None:
        # Looked up for every piece and weight of a run: computed once, not per access.
        object.__setattr__(self, "key", (self.apartment.id, self.start.isoformat()))

    @property
    def days(self) -> int:
        return (self.end - self.start).days


_new_segment = builder(Segment)  # with its key: (apartment id, start), as __post_init__ sets it


def segments_of(
    apartment: Apartment, tenants: Iterable[TenantPeriod], period: BillingPeriod
) -> list[Segment]:
    """The apartment's period cut at move dates; gaps between tenants are vacant segments."""
    stays = sorted(
        (t for t in tenants if t.apartment_id == apartment.id),
        key=lambda t: (t.move_in, t.tenant_ref),
    )
    out: list[Segment] = []
    cursor = period.start
    for stay in stays:
        lo = max(stay.move_in, cursor)
        hi = min(stay.move_out or period.end, period.end)
        if hi <= lo:
            continue
        if lo > cursor:
            out.append(_new_segment(apartment, None, cursor, lo, (apartment.id, cursor.isoformat())))
        out.append(_new_segment(apartment, stay.tenant_ref, lo, hi, (apartment.id, lo.isoformat())))
        cursor = hi
    if cursor < period.end:
        out.append(_new_segment(apartment, None, cursor, period.end, (apartment.id, cursor.isoformat())))
    return out


@dataclass(frozen=True, slots=True)
class _Piece:
    """A point's consumption over one elementary interval [start, end) of the period."""

    point: MeterPoint
    start: date
    end: date
    quantity: Decimal
    hard: PointConsumption  # the consumption between the hard boundaries around the piece
    split_days: tuple[int, int] | None  # (days here, days between the hard boundaries)


_new_piece = builder(_Piece)


def _pieces(point: MeterPoint, cuts: list[date], price_cuts: set[date], run: _Run) -> list[_Piece] | Missing:
    s = run.inp.settings
    if len(cuts) == 2:
        # The common case: no move and no price change in the period, one piece between its ends.
        lo, hi = cuts[0], cuts[1]
        used = consumption(
            point,
            run.boundary(lo),
            run.boundary(hi),
            s.reading_decimals,
            s.max_extrapolation_days,
            run.boundary_utc(lo),
            run.boundary_utc(hi),
        )
        return used if isinstance(used, Missing) else [_new_piece(point, lo, hi, used.quantity, used, None)]
    instants: list[datetime | None] = []
    for i, day in enumerate(cuts):
        if i in (0, len(cuts) - 1) or day in price_cuts:
            instants.append(run.boundary(day))
        else:
            instants.append(move_reading(point, day, s.timezone))
    hard = [i for i, t in enumerate(instants) if t is not None]
    out: list[_Piece] = []
    for a, b in pairwise(hard):
        ta, tb = instants[a], instants[b]
        assert ta is not None
        assert tb is not None
        used = consumption(point, ta, tb, s.reading_decimals, s.max_extrapolation_days)
        if isinstance(used, Missing):
            return used
        if b == a + 1:
            out.append(_Piece(point, cuts[a], cuts[b], used.quantity, used, None))
            continue
        total = used.quantity
        step = quantize_step(max(s.reading_decimals, -int(total.as_tuple().exponent)))
        total_days = (cuts[b] - cuts[a]).days
        parts = allocate(total, [(k, Decimal((cuts[k + 1] - cuts[k]).days)) for k in range(a, b)], step)
        for k in range(a, b):
            days = (cuts[k + 1] - cuts[k]).days
            out.append(_Piece(point, cuts[k], cuts[k + 1], parts[k], used, (days, total_days)))
    return out


def _span_views(pieces: list[_Piece]) -> tuple[SpanView, ...]:
    if len(pieces) == 1 and len(pieces[0].hard.spans) == 1:
        return (_view(pieces[0].point.id, pieces[0].hard.spans[0]),)
    seen: dict[tuple[str, str, datetime], SpanView] = {}
    for piece in pieces:
        for span in piece.hard.spans:
            key = (piece.point.id, span.meter_id, span.start.at)
            if key not in seen:
                seen[key] = _view(piece.point.id, span)
    return tuple(seen.values())


_new_view = builder(SpanView)


def _view(point_id: str, span: MeterSpan) -> SpanView:
    return _new_view(
        point_id,
        span.meter_id,
        span.start.at,
        span.start.value,
        span.start.source,
        span.end.at,
        span.end.value,
        span.end.source,
        tuple(dict.fromkeys(span.start.reading_ids + span.end.reading_ids)),
    )


@dataclass(frozen=True, slots=True)
class _Flags:
    source: str
    estimated: bool  # any estimate at all (readings or split by days): printed on the line
    reading_estimated: bool  # the consumption itself is an estimate: counts toward the pool limit
    method: str | None
    reason: str | None
    held: bool
    hold_reason: str | None


_NO_FLAGS = _Flags("", False, False, None, None, False, None)


_PLAIN_FLAGS = {src: _Flags(src, False, False, None, None, False, None) for src in _SOURCE_RANK}


def _flags(pieces: list[_Piece], inp: BillingInput) -> _Flags:
    if len(pieces) == 1:
        # The common case: one piece read (or interpolated) at both ends, nothing estimated or held.
        p = pieces[0]
        if p.split_days is None and not p.hard.estimated and not p.point.blocking_faults:
            source = "remote"
            for span in p.hard.spans:
                for src in (span.start.source, span.end.source):
                    if _SOURCE_RANK.get(src, 4) > _SOURCE_RANK[source]:
                        source = src
            plain = _PLAIN_FLAGS.get(source)
            if plain is not None:
                return plain
    source = "remote"
    method: str | None = None
    reason: str | None = None
    reading_est = False
    for piece in pieces:
        for span in piece.hard.spans:
            for value in (span.start, span.end):
                if _SOURCE_RANK.get(value.source, 4) > _SOURCE_RANK.get(source, 4):
                    source = value.source
        if piece.hard.estimated:
            reading_est = True
            method, reason = piece.hard.estimate_note()
    split = [p for p in pieces if p.split_days is not None]
    if split and method is None:
        d, total = split[0].split_days or (0, 0)
        method, reason = f"split by days {d}/{total}", "no reading on the move date"
    faults = sorted({f for p in pieces for f in p.point.blocking_faults})
    held, hold_reason = False, None
    if faults:
        note = f"open fault {', '.join(faults)} blocks billing"
        if inp.settings.fault_policy is FaultPolicy.HOLD:
            held, hold_reason = True, note
        else:
            reading_est = True
            method = method or "billed on the readings at hand"
            reason = note if reason is None else f"{reason}; {note}"
    return _Flags(source, reading_est or bool(split), reading_est, method, reason, held, hold_reason)


class _Run:
    """What every step of one run shares: the input, the run id and the precomputed settings."""

    __slots__ = (
        "_boundaries", "_boundaries_utc", "inp", "ore", "rounding", "run_id", "vat_name", "vat_rate",
    )  # fmt: skip

    def __init__(self, inp: BillingInput, run_id: str) -> None:
        s = inp.settings
        self._boundaries: dict[date, datetime] = {}
        self._boundaries_utc: dict[date, datetime] = {}
        self.inp = inp
        self.run_id = run_id
        self.rounding = s.rounding
        self.ore = ore_context(s.rounding)  # ore.quantize(x, ORE) is to_ore(x, rounding)
        self.vat_rate = s.vat_rate if s.vat_registered else ZERO
        self.vat_name = f"vat{fmt((s.vat_rate * 100).normalize())}"

    def boundary(self, day: date) -> datetime:
        """Local midnight starting ``day`` (the same object for every meter: built once)."""
        at = self._boundaries.get(day)
        if at is None:
            at = self._boundaries[day] = boundary(day, self.inp.settings.timezone)
        return at

    def boundary_utc(self, day: date) -> datetime:
        """``boundary(day)`` in UTC (the readings are compared in UTC)."""
        at = self._boundaries_utc.get(day)
        if at is None:
            at = self._boundaries_utc[day] = self.boundary(day).astimezone(UTC)
        return at

    def vat(self, kind: LineKind, payer: Payer, taxable_cost: bool) -> tuple[str, Decimal]:
        """(VAT class, rate) of a line (see the package note: who pays decides the supply)."""
        if payer is Payer.PROPERTY:
            return "outside", ZERO  # the owner's own cost: no supply, no VAT
        if payer is Payer.RENT:
            return "exempt", ZERO  # part of the rent, which is exempt
        taxable = taxable_cost if kind is LineKind.FIXED_COST else True
        if taxable and self.inp.settings.vat_registered:
            return self.vat_name, self.vat_rate
        return "exempt", ZERO


def _payer(seg: Segment, medium: Medium | None) -> Payer:
    if seg.tenant_ref is None:
        return Payer.PROPERTY
    if medium is not None and medium in seg.apartment.rent_included:
        return Payer.RENT
    return Payer.TENANT


_new_line = builder(BillingLine)  # every field, in declaration order (see fastinit)
_KIND_TEXT = {kind: str(kind) for kind in LineKind}
_SHA256 = hashlib.sha256()


def _line(
    run: _Run,
    *,
    kind: LineKind,
    charge: str,
    medium: Medium | None,
    seg: Segment | None,
    quantity: Decimal | None,
    unit: str,
    unit_price: Decimal | None,
    net: Decimal,
    text: str,
    arithmetic: str,
    spans: tuple[SpanView, ...] = (),
    flags: _Flags | None = None,
    point_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
    payer: Payer | None = None,
    taxable_cost: bool = False,
) -> BillingLine:
    """The finished line (VAT per line, stable line id): built once, never copied on the hot path."""
    f = flags or _NO_FLAGS
    apt = seg.apartment if seg is not None else None
    vacant = seg is not None and seg.tenant_ref is None
    payer = payer or (_payer(seg, medium) if seg else Payer.PROPERTY)
    period_from = start or (seg.start if seg else run.inp.period_from)
    tenant_ref = seg.tenant_ref if seg else None
    vat_class, rate = run.vat(kind, payer, taxable_cost)
    # make_line_id(run_id, str(kind), charge, apartment, tenant, start, point), inlined
    sha = _SHA256.copy()
    sha.update(
        "\x1f".join((
            run.run_id, _KIND_TEXT[kind], charge, apt.id if apt else "", tenant_ref or "",
            period_from.isoformat(), point_id or "",
        )).encode("utf-8")
    )  # fmt: skip
    line_id = f"{run.run_id}-{sha.digest()[:8].hex()}"
    return _new_line(
        line_id,
        run.run_id,
        kind,
        charge,
        medium,
        apt.id if apt else None,
        apt.object_number if apt else "",
        apt.number if apt else "",
        tenant_ref,
        payer,
        period_from,
        end or (seg.end if seg else run.inp.period_to),
        quantity,
        unit,
        unit_price,
        net,
        vat_class,
        rate,
        run.ore.quantize(EXACT.multiply(net, rate), ORE),  # to_ore(mul(net, rate), rounding)
        spans,
        f.source,
        f.estimated,
        f.method,
        f.reason,
        f.held,
        f.hold_reason,
        text + (" (vakant)" if vacant else ""),
        arithmetic,
        None,  # corrects
        point_id,
    )


_Weights = list[tuple[tuple[str, str], Decimal]]


@dataclass
class _MediumResult:
    lines: list[BillingLine]
    summary: MediumSummary | None
    stops: list[StopReason]


def _key_weight(seg: Segment, key: FixedKey) -> Decimal | None:
    days = Decimal(seg.days)
    if key is FixedKey.AREA:
        return mul(seg.apartment.area_m2, days)
    if key is FixedKey.COUNT:
        return days
    if seg.apartment.share is None:
        return None
    return mul(seg.apartment.share, days)


def _price_at(prices: tuple[PriceEntry, ...], day: date) -> PriceEntry | None:
    for entry in prices:
        if entry.valid_from <= day and (entry.valid_to is None or day < entry.valid_to):
            return entry
    return None


def _main_quantity(points: list[MeterPoint], inp: BillingInput, period: BillingPeriod) -> Decimal | None:
    if not points:
        return None
    s = inp.settings
    total = ZERO
    for point in points:
        used = consumption(
            point,
            boundary(period.start, s.timezone),
            boundary(period.end, s.timezone),
            s.reading_decimals,
            s.max_extrapolation_days,
        )
        if isinstance(used, Missing):
            return None
        total += used.quantity
    return total


def _medium(
    cfg: MediumConfig, run: _Run, period: BillingPeriod, segs: dict[str, list[Segment]]
) -> _MediumResult:
    inp = run.inp
    s = inp.settings
    points = sorted((p for p in inp.meter_points if p.medium == cfg.medium), key=lambda p: p.id)
    apt_points: dict[str, list[MeterPoint]] = defaultdict(list)
    for p in points:
        if p.apartment_id is not None:
            apt_points[p.apartment_id].append(p)
    mains = [p for p in points if p.apartment_id is None]
    price_cuts: set[date] = set()
    stops: list[StopReason] = []
    lines: list[BillingLine] = []
    notes: list[str] = []
    if cfg.model is PriceModel.DEBITERING:
        if _price_at(cfg.prices, period.start) is None:
            stops.append(StopReason("missing_price", cfg.medium, f"no price valid on {period.start}", False))
            return _MediumResult([], None, stops)
        price_cuts = {
            d
            for e in cfg.prices
            for d in (e.valid_from, e.valid_to)
            if d is not None and period.start < d < period.end
        }
    # Consumption pieces per apartment segment.
    seg_pieces: dict[tuple[str, str], list[_Piece]] = defaultdict(list)
    missing: dict[str, Missing] = {}
    plain_cuts = [period.start, period.end]  # no move, no price change: shared, never modified
    for apt_id in sorted(apt_points):
        apt_segs = segs.get(apt_id)
        if not apt_segs:
            continue
        if len(apt_segs) == 1 and not price_cuts:
            cuts = plain_cuts
        else:
            cuts = sorted({period.start, period.end, *price_cuts, *(g.start for g in apt_segs)})
        for point in apt_points[apt_id]:
            got = _pieces(point, cuts, price_cuts, run)
            if isinstance(got, Missing):
                missing[point.id] = got
                continue
            if len(apt_segs) == 1:
                seg_pieces[apt_segs[0].key].extend(got)
                continue
            for piece in got:
                seg = next(g for g in apt_segs if g.start <= piece.start < g.end)
                seg_pieces[seg.key].append(piece)
    seg_by_key = {g.key: g for gs in segs.values() for g in gs}
    metered = [seg_by_key[k] for k in sorted(seg_pieces)]
    apartments_qty = sum((p.quantity for k in seg_pieces for p in seg_pieces[k]), ZERO)
    main_qty = _main_quantity(mains, inp, period)
    analysis = analyse_costs(
        inp.invoices,
        cfg.medium,
        period,
        vat_registered=s.vat_registered,
        main_quantity=main_qty,
        unit=cfg.unit,
        rounding=s.rounding,
    )
    if main_qty is None and analysis is not None:
        main_qty = analysis.main_quantity
    diff_qty, diff_pct = main_meter_difference(main_qty, apartments_qty)
    # Estimated share of the metered area.
    est_area, all_area = ZERO, ZERO
    faults_estimate = s.fault_policy is FaultPolicy.ESTIMATE
    for apt_id in sorted(apt_points):
        apt_segs = segs.get(apt_id)
        if not apt_segs:
            continue
        apt = apt_segs[0].apartment
        all_area += apt.area_m2
        # A point without readings, an estimated consumption, or (fault policy "estimate") a
        # blocking fault: one pass over the (usually single) segment's pieces, no generators.
        estimated = bool(missing) and any(pt.id in missing for pt in apt_points[apt_id])
        if not estimated:
            for g in apt_segs:
                for piece in seg_pieces.get(g.key, ()):
                    if piece.hard.estimated or (faults_estimate and piece.point.blocking_faults):
                        estimated = True
        if estimated:
            est_area += apt.area_m2
    est_share = EXACT.divide(est_area, all_area).quantize(Decimal("0.0001")) if all_area else ZERO
    name = MEDIUM_TEXT[cfg.medium]
    if cfg.model is PriceModel.DEBITERING:
        for point_id, miss in sorted(missing.items()):
            point = next(p for p in points if p.id == point_id)
            for seg in segs.get(point.apartment_id or "", []):
                flags = _Flags("", False, False, None, None, True, miss.reason)
                lines.append(
                    _line(
                        run,
                        kind=LineKind.CONSUMPTION,
                        charge=str(cfg.medium),
                        medium=cfg.medium,
                        seg=seg,
                        quantity=None,
                        unit=cfg.unit,
                        unit_price=None,
                        net=ZERO,
                        text=f"{name}: mätvärde saknas",
                        arithmetic=miss.reason,
                        flags=flags,
                        point_id=point_id,
                    )
                )
            notes.append(f"point {point_id} held: {miss.reason}")
        price_texts: dict[Decimal, tuple[str, str]] = {}  # a price list has a few prices, every line one
        charge = str(cfg.medium)
        prices_at: dict[date, PriceEntry | None] = {}  # nearly every line starts on the first
        for seg in metered:
            seg_list = seg_pieces[seg.key]
            if len(seg_list) == 1:  # one meter point, no price change: nothing to group
                groups = [((seg_list[0].point.id, seg_list[0].start), seg_list)]
            else:
                by_point: dict[tuple[str, date], list[_Piece]] = defaultdict(list)
                for piece in seg_list:
                    by_point[(piece.point.id, piece.start)].append(piece)
                groups = sorted(by_point.items())
            for (point_id, start), group in groups:
                if start in prices_at:
                    price = prices_at[start]
                else:
                    price = prices_at[start] = _price_at(cfg.prices, start)
                if price is None:
                    stops.append(StopReason("missing_price", cfg.medium, f"no price valid on {start}", False))
                    continue
                qty = ZERO + group[0].quantity if len(group) == 1 else sum((p.quantity for p in group), ZERO)
                net = to_ore(mul(qty, price.unit_price), s.rounding)
                flags = _flags(group, inp)
                split = group[0].split_days
                price_fmt, price_sv = price_texts.get(price.unit_price) or price_texts.setdefault(
                    price.unit_price, (fmt(price.unit_price), sv(price.unit_price))
                )
                arith = f"{fmt(qty)} {cfg.unit} × {price_fmt} = {fmt(net)}"
                if split is not None:
                    whole = fmt(group[0].hard.quantity)
                    arith = f"{whole} {cfg.unit} × {split[0]}/{split[1]} days = {fmt(qty)}; {arith}"
                lines.append(
                    _line(
                        run,
                        kind=LineKind.CONSUMPTION,
                        charge=charge,
                        medium=cfg.medium,
                        seg=seg,
                        quantity=qty,
                        unit=cfg.unit,
                        unit_price=price.unit_price,
                        net=net,
                        text=f"{name} {sv(qty)} {cfg.unit} à {price_sv} kr",
                        arithmetic=arith,
                        spans=_span_views(group),
                        flags=flags,
                        point_id=point_id,
                        start=start,
                        end=group[-1].end,
                    )
                )
        # The price list's fixed fee per apartment and month, over the apartment's segments by days.
        fee_entry = _price_at(cfg.prices, period.start)
        fee = fee_entry.fixed_fee_per_month if fee_entry else ZERO
        if fee:
            total = to_ore(fee * period.months, s.rounding)
            months = Decimal(period.months)
            head = f"{fmt(fee)} × {period.months} mån = {fmt(total)}; "
            for apt_id in sorted(apt_points):
                apt_segs = segs.get(apt_id, [])
                if not apt_segs:
                    continue
                if len(apt_segs) == 1:  # what allocate gives one weight: the whole (öre) total
                    parts = {apt_segs[0].key: total}
                else:
                    parts = allocate(total, [(g.key, Decimal(g.days)) for g in apt_segs])
                lines.extend(
                    _line(
                        run,
                        kind=LineKind.FIXED_FEE,
                        charge=f"fee.{cfg.medium}",
                        medium=cfg.medium,
                        seg=g,
                        quantity=months,
                        unit="mån",
                        unit_price=fee,
                        net=parts[g.key],
                        text=f"{name} fast avgift",
                        arithmetic=f"{head}{g.days}/{period.days} days = {fmt(parts[g.key])}",
                    )
                    for g in apt_segs
                )
        cost = analysis.pool if analysis else None
    else:
        if missing:
            for point_id, miss in sorted(missing.items()):
                detail = f"point {point_id}: {miss.reason}"
                stops.append(StopReason("missing_readings", cfg.medium, detail, False))
            return _MediumResult([], None, stops)
        if analysis is None:
            stops.append(StopReason("missing_cost", cfg.medium, "no supplier invoice for the period", False))
            return _MediumResult([], None, stops)
        cost = to_ore(analysis.pool, s.rounding)
        lines.extend(_fordelning(cfg, run, segs, metered, seg_pieces, cost, main_qty, diff_qty, stops, notes))
        if est_share > s.estimated_share_limit:
            code = "estimated_share_over_limit"
            detail = (
                f"estimated consumption on {fmt(est_area)} of {fmt(all_area)} m² = {fmt(est_share * 100)} % "
                f"> limit {fmt(s.estimated_share_limit * 100)} %"
            )
            if any(a.code == code and a.medium in (cfg.medium, None) for a in inp.approvals):
                notes.append(f"approved: {detail}")
            else:
                stops.append(StopReason(code, cfg.medium, detail, True))
    total_lines = sum((ln.net for ln in lines), ZERO)
    summary = MediumSummary(
        medium=cfg.medium,
        model=str(cfg.model),
        unit=cfg.unit,
        cost=cost,
        cost_arithmetic=analysis.arithmetic if analysis else (),
        main_quantity=main_qty,
        apartments_quantity=apartments_qty,
        difference_quantity=diff_qty,
        difference_percent=diff_pct,
        difference_rule=str(cfg.difference_rule) if cfg.model is PriceModel.FORDELNING else None,
        charged_tenants=sum((ln.net for ln in lines if ln.payer is Payer.TENANT), ZERO),
        carried_by_property=sum((ln.net for ln in lines if ln.payer is not Payer.TENANT), ZERO),
        held=sum((ln.net for ln in lines if ln.held), ZERO),
        total_lines=total_lines,
        cost_minus_lines=None if cost is None else cost - total_lines,
        estimated_share=est_share,
        notes=tuple(notes),
    )
    return _MediumResult(lines, summary, stops)


def _fordelning(  # noqa: PLR0917 - one private step of _medium, sharing its working state
    cfg: MediumConfig,
    run: _Run,
    segs: dict[str, list[Segment]],
    metered: list[Segment],
    seg_pieces: dict[tuple[str, str], list[_Piece]],
    cost: Decimal,
    main_qty: Decimal | None,
    diff_qty: Decimal | None,
    stops: list[StopReason],
    notes: list[str],
) -> list[BillingLine]:
    inp = run.inp
    s = inp.settings
    name = MEDIUM_TEXT[cfg.medium]
    every = [g for apt_id in sorted(segs) for g in segs[apt_id]]

    def key_weights(over: list[Segment]) -> _Weights | None:
        out = []
        for g in over:
            w = _key_weight(g, cfg.fixed_key)
            if w is None:
                stops.append(
                    StopReason(
                        "missing_share", cfg.medium, f"apartment {g.apartment.id} has no andelstal", False
                    )
                )
                return None
            out.append((g.key, w))
        return out

    def split(total: Decimal, weights: _Weights | None) -> dict[tuple[str, str], Decimal]:
        if weights is None or total == 0 or not weights:
            return {}
        if sum((w for _, w in weights), ZERO) == 0:
            return {}
        return allocate(total, weights)

    fixed_part = to_ore(mul(cost, cfg.fixed_key_share), s.rounding)
    cons_part = cost - fixed_part
    qty = {g.key: sum((p.quantity for p in seg_pieces[g.key]), ZERO) for g in metered}
    total_qty = sum(qty.values(), ZERO)
    diff_cost = ZERO
    if cfg.difference_rule is not DifferenceRule.CONSUMPTION and main_qty and diff_qty and diff_qty > 0:
        diff_cost = to_ore(EXACT.divide(mul(cons_part, diff_qty), main_qty), s.rounding)
    elif diff_qty is not None and diff_qty < 0:
        notes.append(f"Σ apartments exceeds the main meter by {fmt(-diff_qty)} {cfg.unit}: check the meters")
    apt_cons = cons_part - diff_cost
    pct = fmt(cfg.fixed_key_share * 100)
    note = f"pool {fmt(cost)} = fixed part {fmt(fixed_part)} ({pct} % by {cfg.fixed_key})"
    note += f" + consumption part {fmt(cons_part)}"
    if diff_cost:
        note += f" (of which main-meter difference {fmt(diff_cost)} by rule {cfg.difference_rule})"
    notes.append(note)
    if total_qty > 0:
        c_share = split(apt_cons, list(qty.items()))
    else:
        c_share = split(apt_cons, key_weights(metered) if metered else key_weights(every))
        if apt_cons:
            notes.append(f"Σ consumption is 0: consumption part split by {cfg.fixed_key} instead")
    f_share = split(fixed_part, key_weights(every))
    d_share: dict[tuple[str, str], Decimal] = {}
    lines: list[BillingLine] = []
    if diff_cost and cfg.difference_rule is DifferenceRule.AREA:
        d_share = split(diff_cost, [(g.key, mul(g.apartment.area_m2, Decimal(g.days))) for g in every])
    elif diff_cost and cfg.difference_rule is DifferenceRule.ASSOCIATION:
        lines.append(
            _line(
                run,
                kind=LineKind.COMMON,
                charge=f"common.{cfg.medium}",
                medium=cfg.medium,
                seg=None,
                quantity=diff_qty,
                unit=cfg.unit,
                unit_price=None,
                net=diff_cost,
                text=f"{name}: gemensam förbrukning och förluster (föreningen)",
                arithmetic=f"{fmt(cons_part)} × {fmt(diff_qty or ZERO)} / {fmt(main_qty or ZERO)}"
                f" = {fmt(diff_cost)}",
            )
        )
    if stops and any(r.code == "missing_share" for r in stops):
        return []
    # Texts every line of the pool repeats, written once.
    charge = str(cfg.medium)
    key_text = str(cfg.fixed_key)
    by_consumption = f" / {fmt(total_qty)} {cfg.unit} × {fmt(apt_cons)} = "
    by_key = f"{key_text} share of {fmt(apt_cons)} = "
    fixed_text = f" days share of {fmt(fixed_part)} = "
    head = f"{name} fördelning"
    for g in every:
        c, f, d = c_share.get(g.key, ZERO), f_share.get(g.key, ZERO), d_share.get(g.key, ZERO)
        pieces = seg_pieces.get(g.key, [])
        if not pieces and not (c or f or d):
            continue
        parts = []
        own = qty.get(g.key)
        if own is not None and total_qty > 0:
            parts.append(f"{fmt(own)}{by_consumption}{fmt(c)}")
        elif c:
            parts.append(f"{by_key}{fmt(c)}")
        if f:
            parts.append(f"{key_text} × {g.days}{fixed_text}{fmt(f)}")
        if d:
            parts.append(f"area × {g.days} days share of difference {fmt(diff_cost)} = {fmt(d)}")
        net = c + f + d
        flags = _flags(pieces, inp) if pieces else None
        lines.append(
            _line(
                run,
                kind=LineKind.CONSUMPTION,
                charge=charge,
                medium=cfg.medium,
                seg=g,
                quantity=own,
                unit=cfg.unit,
                unit_price=None,
                net=net,
                text=head + (f" {sv(own)} {cfg.unit}" if own is not None else ""),
                arithmetic="; ".join(parts) + f"; Σ {fmt(net)}",
                spans=_span_views(pieces),
                flags=flags,
            )
        )
    return lines


def _fixed_costs(
    run: _Run, period: BillingPeriod, segs: dict[str, list[Segment]]
) -> tuple[list[BillingLine], list[tuple[str, Decimal]], list[StopReason]]:
    inp = run.inp
    s = inp.settings
    every = [g for apt_id in sorted(segs) for g in segs[apt_id]]
    lines: list[BillingLine] = []
    totals: list[tuple[str, Decimal]] = []
    stops: list[StopReason] = []
    for cost in sorted(inp.fixed_costs, key=lambda c: c.id):
        lo = max(cost.valid_from or period.start, period.start)
        hi = min(cost.valid_to or period.end, period.end)
        if hi <= lo:
            continue
        days = (hi - lo).days
        full = mul(cost.amount_per_month, Decimal(period.months))
        if days != period.days:
            full = EXACT.divide(mul(full, Decimal(days)), Decimal(period.days))
        total = to_ore(full, s.rounding)
        active = [
            g
            if lo <= g.start and g.end <= hi
            else Segment(g.apartment, g.tenant_ref, max(g.start, lo), min(g.end, hi))
            for g in every
            if g.start < hi and g.end > lo
        ]
        weights = []
        for g in active:
            w = _key_weight(g, cost.key)
            if w is None:
                detail = f"{cost.name}: apartment {g.apartment.id} has no andelstal"
                stops.append(StopReason("missing_share", None, detail, False))
                break
            weights.append((g.key, w))
        else:
            parts = allocate(total, weights) if total and weights else {}
            totals.append((cost.id, total))
            charge = f"cost.{cost.id}"
            head = (
                f"{fmt(cost.amount_per_month)} × {period.months} mån"
                + (f" × {days}/{period.days} days" if days != period.days else "")
                + f" = {fmt(total)}; {cost.key} × "
            )
            for g in active:
                amount = parts.get(g.key, ZERO)
                payer = Payer.PROPERTY if g.tenant_ref is None else Payer.TENANT
                lines.append(
                    _line(
                        run,
                        kind=LineKind.FIXED_COST,
                        charge=charge,
                        medium=None,
                        seg=g,
                        quantity=None,
                        unit="",
                        unit_price=None,
                        net=amount,
                        text=cost.name,
                        arithmetic=f"{head}{g.days} days share = {fmt(amount)}",
                        payer=payer,
                        taxable_cost=cost.taxable,
                    )
                )
    return lines, totals, stops


def _total_vat(lines: list[BillingLine], run: _Run) -> list[BillingLine]:
    """``VatRounding.TOTAL``: the lines carry VAT per line (see ``_line``); re-split it per payer."""
    s = run.inp.settings
    rate = run.vat_rate
    out = list(lines)
    if s.vat_rounding is VatRounding.TOTAL:
        groups: dict[tuple[str, str, bool], list[int]] = defaultdict(list)
        for i, line in enumerate(out):
            if line.vat_rate and not line.held:  # a held line's VAT waits with it
                groups[(line.object_number, line.tenant_ref or "", line.net < 0)].append(i)
        for idxs in groups.values():
            net = sum((out[i].net for i in idxs), ZERO)
            vat = to_ore(mul(net, rate), s.rounding)
            weights = [(i, abs(out[i].net)) for i in idxs]
            parts = allocate(vat, weights) if any(w for _, w in weights) else dict.fromkeys(idxs, ZERO)
            for i in idxs:
                out[i] = replace(out[i], vat=parts[i])
    return out


def compute_run(
    inp: BillingInput,
    run_id: str,
    created_at: datetime,
    created_by: str,
    corrections: tuple[BillingLine, ...] = (),
) -> BillingRun | RunStopped:
    """Compute a draft run; or a ``RunStopped`` saying what must be fixed or approved first."""
    period = BillingPeriod(inp.period_from, inp.period_to)
    input_digest = digest((inp, corrections))
    run = _Run(inp, run_id)
    stays: dict[str, list[TenantPeriod]] = defaultdict(list)
    for stay in inp.tenants:
        stays[stay.apartment_id].append(stay)
    segs = {
        a.id: segments_of(a, stays.get(a.id, ()), period) for a in sorted(inp.apartments, key=lambda a: a.id)
    }
    lines: list[BillingLine] = []
    stops: list[StopReason] = []
    summaries: list[MediumSummary] = []
    for cfg in sorted(inp.media, key=lambda c: str(c.medium)):
        res = _medium(cfg, run, period, segs)
        lines.extend(res.lines)
        stops.extend(res.stops)
        if res.summary is not None:
            summaries.append(res.summary)
    cost_lines, cost_totals, cost_stops = _fixed_costs(run, period, segs)
    lines.extend(cost_lines)
    stops.extend(cost_stops)
    if stops and not all(r.approvable for r in stops):
        return RunStopped(
            run_id, inp.settings.property_id, period.start, period.end, input_digest, tuple(stops)
        )
    final = _total_vat(lines, run)
    final.extend(corrections)
    final.sort(
        key=lambda ln: (
            ln.object_number,
            ln.period_from,
            _KIND_ORDER[ln.kind],
            ln.charge,
            ln.point_id or "",
            ln.line_id,
        )
    )
    ids = [ln.line_id for ln in final]
    if len(set(ids)) != len(ids):
        raise AssertionError("duplicate line id")  # a bug in the discriminators above, never data
    out = tuple(final)
    exportable = [ln for ln in out if ln.payer is Payer.TENANT and not ln.held]
    net = sum((ln.net for ln in exportable), ZERO)
    vat = sum((ln.vat for ln in exportable), ZERO)
    summary = PropertySummary(
        property_id=inp.settings.property_id,
        media=tuple(summaries),
        fixed_costs=tuple(cost_totals),
        net=net,
        vat=vat,
        gross=net + vat,
        held=sum((ln.net for ln in out if ln.held), ZERO),
        line_count=len(out),
    )
    approvals = tuple(
        f"{a.code}:{a.medium or '*'} by {a.by} at {a.at.isoformat()}"
        for a in sorted(inp.approvals, key=lambda a: (a.code, str(a.medium), a.by))
    )
    result = BillingRun(
        run_id=run_id,
        property_id=inp.settings.property_id,
        period_from=period.start,
        period_to=period.end,
        input_digest=input_digest,
        lines=out,
        summary=summary,
        state=RunState.DRAFT,
        audit=(AuditEntry(created_at, created_by, "computed", f"input sha256={input_digest}"),),
        approvals=approvals,
    )
    if stops:
        # Only approvable reasons are left: the figures go along so the approver sees what they approve.
        return RunStopped(
            run_id, inp.settings.property_id, period.start, period.end, input_digest, tuple(stops), result
        )
    return result


__all__ += ["CostAnalysis"]
