"""The built-in rules. Each docstring is the rule's description shown by the API (/api/checks).

Modelled on utilities' VEE practice (validation, estimation, editing): communication, device
self-diagnosis, register plausibility (backwards, stuck, spike), flow patterns (leak), heat-meter
sanity, clock, and failed/undecryptable frames.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from central.checks import MAIN_REGISTER, CollectorContext, Finding, MeterContext, rule

WATER = ("hot_water", "cold_water")

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


@rule(
    "communication_gap",
    severity="warning",
    params={"hours": 48.0, "hours_by_medium": {}},
)
async def communication_gap(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """No frame from the meter for longer than `hours` (per medium in `hours_by_medium`); a meter that
    never answered counts from its installation."""
    if ctx.meter.removed_at is not None and ctx.meter.removed_at <= ctx.now:
        return None  # a removed meter is expected to fall silent
    limit = float(p["hours_by_medium"].get(ctx.meter.medium, p["hours"]))
    last = ctx.meter.last_frame_at or ctx.meter.installed_at
    if last is None or ctx.now - last <= timedelta(hours=limit):
        return None
    return Finding(
        f"no frame for {_hours(ctx.now - last):.1f} h (limit {limit:g} h)",
        {
            "last_frame_at": ctx.meter.last_frame_at,
            "installed_at": ctx.meter.installed_at,
            "limit_hours": limit,
        },
    )


# Named flags (protocols.wmbus.status.meter_flags) -> severity; unknown flags are warnings.
FLAG_SEVERITY = {
    "busy": "info",
    "permanent_error": "critical",
    "burst": "critical",
    "sensor_error": "critical",
    "v1_communication_error": "critical",
    "v2_communication_error": "critical",
}


@rule("device_status", severity="warning", params={"ignore": ["busy"]})
async def device_status(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """The meter reports a problem itself in its latest read-out: status byte (application error,
    power low, permanent or temporary error) and the manufacturer's status register where its bits
    are public (leak, burst, dry, reverse flow, sensor errors), or a non-zero error-flags record."""
    flags = [f for f in await ctx.flags() if f not in p["ignore"]]
    if not flags:
        return None
    severity = max((FLAG_SEVERITY.get(f, "warning") for f in flags), key=SEVERITY_ORDER.__getitem__)
    return Finding(
        ", ".join(f.replace("_", " ") for f in flags),
        {"flags": flags, "status_byte": ctx.meter.last_status, "raw_frame_id": ctx.meter.last_raw_frame_id},
        severity,
    )


@rule("register_backwards", severity="warning", params={"days": 7, "rollover_fraction": 0.9})
async def register_backwards(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """The billing register (energy or volume) went down between two readings. A drop from near the
    register's maximum (a BCD field's range; else the next power of ten, never below 10 000 m³ or
    100 000 kWh) to near zero is reported as a rollover (info), anything else - a reset of a meter
    standing at 95 m³ included - as a fault."""
    since = ctx.now - timedelta(days=p["days"])
    series = await ctx.main_series(since)
    register = await ctx.main_register(since)
    for (t0, v0, f0), (t1, v1, f1) in pairwise(series):
        if v1 >= v0:
            continue
        top = register_capacity(register, v0, MAIN_REGISTER.get(ctx.meter.medium, ("", ""))[0])
        rollover = v0 >= top * Decimal(str(p["rollover_fraction"])) and v1 < top * (
            1 - Decimal(str(p["rollover_fraction"]))
        )
        evidence = {
            "before": {"at": t0, "value": str(v0), "raw_frame_id": f0},
            "after": {"at": t1, "value": str(v1), "raw_frame_id": f1},
        }
        if rollover:
            return Finding(f"register rolled over from {v0} to {v1}", evidence, "info")
        return Finding(f"register went backwards from {v0} to {v1}", evidence)
    return None


# Largest count + 1 of a BCD data field (DIF low nibble, EN 13757-3 table 4): the register wraps
# there. Binary fields wrap where the meter's display does, at a power of ten we cannot read.
_BCD_RANGE = {0x9: 10**2, 0xA: 10**4, 0xB: 10**6, 0xC: 10**8, 0xE: 10**12}
# No apartment meter counts fewer than this before it wraps (a 4-digit m³ display, 100 000 kWh).
MIN_CAPACITY = {"volume": Decimal(10**4), "energy": Decimal(10**8)}


def register_capacity(register: str | None, value: Decimal, quantity: str | None = None) -> Decimal:
    """Where a cumulative register wraps: a BCD field's range in the value's own unit (the stored
    value keeps the register's decimals, e.g. litres as m³ with three); otherwise the next power of
    ten above the value, at least ``MIN_CAPACITY`` for the quantity."""
    exponent = value.as_tuple().exponent
    if register and len(register) >= 2 and isinstance(exponent, int):
        raw_range = _BCD_RANGE.get(int(register[:2], 16) & 0x0F)
        if raw_range is not None:
            return Decimal(raw_range).scaleb(exponent)
    digits = len(str(int(value))) if value >= 1 else 1
    return max(Decimal(10) ** digits, MIN_CAPACITY.get(quantity or "", Decimal(0)))


@rule(
    "stuck_register",
    severity="warning",
    media=("hot_water", "cold_water", "electricity"),
    params={
        "days": 14.0,
        "min_readings": 3,
        "min_occupied_days": 3,
        "require_tenant": False,
        "standing_load_days": 14.0,
        "electricity_reference_days": 28.0,
        "electricity_min_share": "0.8",
    },
)
async def stuck_register(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """The billing register of an apartment's water or electricity meter has not moved for `days`
    while the apartment is lived in: its other water meter (hot for cold and the other way round;
    either for electricity) moved meanwhile, up to this meter's last reading, on at least
    `min_occupied_days` days (the morning people come home from a holiday one meter may tick before
    the other), and has no open leak-like fault of its own (continuous flow, spike, high consumption)
    nor flags other than a low battery in its latest read-out: a leak keeps a register moving in an
    empty flat. Where nothing moves the flat stands empty or its people are away; that is no meter
    fault. Once found, the fault stays while the register stands at the value it stuck at. Where no
    other water meter can tell (none, silent over the window, or flagged), a water meter is judged
    by the flat's electricity: it used at least `electricity_min_share` of its daily average of the
    `electricity_reference_days` before the stop, while this meter moved on most of those days -
    people away leave only the standing load. With `require_tenant` only apartments with a tenant
    reference are judged. An electricity meter also counts as stuck without that evidence when it
    grew in every interval of the `standing_load_days` before it stopped: a flat's standing load
    (fridge, standby) never stops dead, even when it stands empty. A register that went down before
    it stood still ran backwards (the backwards rule's finding), and heat is left out: no heat use
    in summer is normal."""
    if ctx.apartment is None or (p["require_tenant"] and not ctx.apartment.tenant_ref):
        return None
    series = await ctx.main_series(ctx.now - timedelta(days=float(p["days"]) * 1.5))
    if len(series) < int(p["min_readings"]):
        return None
    last_value = series[-1][1]
    last = series[-1][0]
    since = last
    for at, value, _f in reversed(series):
        if value != last_value:
            break
        since = at
    span = last - since
    if span < timedelta(days=float(p["days"])):
        return None
    if any(b[1] < a[1] for a, b in pairwise(series)) or await _has_open_fault(
        ctx, ctx.meter.id, ("register_backwards",)
    ):
        return None  # a register run down to where it stands is going backwards, not stuck
    held = await _open_fault(ctx, ctx.meter.id, ("stuck_register",))
    if held is not None:
        found = json.loads(held.evidence or "{}")
        if found.get("value") == str(last_value) and await _evidence_holds(ctx, found):
            # Still at the value it stuck at: people leaving on holiday do not unstick it.
            return Finding(f"register still unchanged at {last_value} since {found.get('since')}", found)
    moving, judged = await _apartment_meter_moved(ctx, since, last, int(p.get("min_occupied_days", 1)))
    evidence: dict[str, Any] = {
        "value": str(last_value),
        "since": since,
        "last": last,
        "tenant_ref": ctx.apartment.tenant_ref,
    }
    if moving is not None:
        return Finding(
            f"register unchanged at {last_value} for {span.days} days; meter {moving} of the apartment moved",
            {**evidence, "occupied_evidence_meter": moving},
        )
    if not judged and ctx.meter.medium in WATER:
        lived_in = await _electricity_as_before(ctx, p, since, last)
        if lived_in is not None:
            serial, share = lived_in
            return Finding(
                f"register unchanged at {last_value} for {span.days} days; electricity meter {serial} "
                f"of the apartment used {share:.0%} of its use before (no other water meter to tell)",
                {**evidence, "occupied_evidence_meter": serial, "electricity_share": str(share)},
            )
    return await _standing_load_stopped(ctx, p, since, last, last_value)


async def _standing_load_stopped(
    ctx: MeterContext, p: Mapping[str, Any], since: datetime, last: datetime, value: Decimal
) -> Finding | None:
    """An electricity register that grew in every interval before ``since`` and then stood still."""
    days = float(p.get("standing_load_days") or 0)
    if ctx.meter.medium != "electricity" or days <= 0:
        return None
    before = [
        (t, v)
        for t, v, _f in await ctx.main_series(since - timedelta(days=days * 1.5))
        if since - timedelta(days=days) <= t <= since
    ]
    if len(before) < int(p["min_readings"]) or before[-1][0] - before[0][0] < timedelta(days=days * 0.8):
        return None
    steps = [b[1] - a[1] for a, b in pairwise(before)]
    if min(steps) <= 0:
        return None
    return Finding(
        f"register unchanged at {value} for {(last - since).days} days after a standing load of at least "
        f"{min(steps)} per reading for {days:g} days",
        {"value": str(value), "since": since, "last": last, "standing_load_min_step": str(min(steps))},
    )


# Which meters of the same apartment show that people live there, per medium judged. Heat runs in
# an empty flat and electricity has standby loads; people who use water use both hot and cold.
OCCUPANCY_EVIDENCE = {
    "hot_water": ("cold_water",),
    "cold_water": ("hot_water",),
    "electricity": ("hot_water", "cold_water"),
}


async def _open_fault(ctx: MeterContext, meter_id: int, rules: tuple[str, ...]) -> Any:
    """The meter's open fault (not a note) of one of ``rules``, if any."""
    from sqlalchemy import select

    from central.faults import OPEN_STATES
    from central.models import Fault

    found = await ctx.session.execute(
        select(Fault)
        .where(Fault.meter_id == meter_id, Fault.state.in_(OPEN_STATES), Fault.severity != "info")
        .where(Fault.rule.in_(rules))
        .limit(1)
    )
    return found.scalars().first()


async def _has_open_fault(ctx: MeterContext, meter_id: int, rules: tuple[str, ...] | None = None) -> bool:
    """Whether the meter has an open fault of ``rules`` (by default: one that would keep its register
    moving in an empty flat)."""
    return await _open_fault(ctx, meter_id, rules or MOVING_FAULT_RULES) is not None


# Faults that say a register moves without anyone using water or power (a leak, a running toilet,
# a corrupted register); a low battery or an error flag says nothing about that.
MOVING_FAULT_RULES = ("continuous_flow", "spike", "consumption_vs_history", "consumption_vs_building")
# Flags of a meter's own read-out that leave its movement good evidence of people. Any other flag may
# be a leak: named (leak, burst) or in an error word whose bits are not public. With daily read-outs
# the continuous-flow rule has too few samples to see a leak; the meter's own flag is its first word.
HARMLESS_FLAGS = frozenset({"busy", "low_battery"})


async def _other_meters(ctx: MeterContext, media: tuple[str, ...]) -> list[Any]:
    from sqlalchemy import select

    from central.models import Meter, MeterPoint

    assert ctx.apartment is not None
    return list(
        (
            await ctx.session.execute(
                select(Meter)
                .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                .where(MeterPoint.apartment_id == ctx.apartment.id, Meter.id != ctx.meter.id)
                .where(Meter.removed_at.is_(None), Meter.medium.in_(media))
                .order_by(Meter.id)
            )
        ).scalars()
    )


async def _moves_by_itself(ctx: MeterContext, other_ctx: MeterContext) -> bool:
    """Whether a meter's register may be moving without anyone using water or power: an open
    leak-like fault, or flags in its latest read-out other than a low battery."""
    if await _has_open_fault(ctx, other_ctx.meter.id):
        return True
    return bool(set(await other_ctx.flags()) - HARMLESS_FLAGS)


async def _evidence_holds(ctx: MeterContext, found: Mapping[str, Any]) -> bool:
    """Whether the meter that showed the flat lived in is still not one that moves by itself."""
    serial = found.get("occupied_evidence_meter")
    for other in await _other_meters(ctx, tuple(MAIN_REGISTER)):
        if other.serial == serial:
            other_ctx = MeterContext(ctx.session, other, ctx.apartment, ctx.now, chunk=ctx.chunk)
            return not await _moves_by_itself(ctx, other_ctx)
    return serial is None  # the standing-load finding needs no other meter


async def _apartment_meter_moved(
    ctx: MeterContext, since: datetime, until: datetime, min_days: int
) -> tuple[str | None, bool]:
    """Serial of another meter in the same apartment whose billing register grew between ``since``
    and ``until`` (this meter's last reading: what happens after it says nothing of this meter) on
    at least ``min_days`` days (intervals between readings, counted by the day they end); and whether
    any such meter could tell at all (read over the window and not moving by itself)."""
    judged = False
    for other in await _other_meters(ctx, OCCUPANCY_EVIDENCE[ctx.meter.medium]):
        other_ctx = MeterContext(ctx.session, other, ctx.apartment, ctx.now, chunk=ctx.chunk)
        if await _moves_by_itself(ctx, other_ctx):
            continue  # a leaking or broken meter moves in an empty flat too: no evidence of people
        series = [r for r in await other_ctx.main_series(since) if r[0] <= until]
        if len(series) >= 2 and series[-1][0] - series[0][0] >= (until - since) * 0.8:
            judged = True
        days = {b[0].date() for a, b in pairwise(series) if b[1] > a[1]}
        if len(days) >= max(1, min_days):
            return other.serial, True
    return None, judged


async def _electricity_as_before(
    ctx: MeterContext, p: Mapping[str, Any], since: datetime, until: datetime
) -> tuple[str, Decimal] | None:
    """The apartment's electricity meter and the share of its daily use before ``since`` that it used
    from ``since`` to ``until``, when that share is at least ``electricity_min_share`` and this meter
    moved on most days of the reference window (people were at home then)."""
    days = float(p.get("electricity_reference_days") or 0)
    if days <= 0:
        return None
    reference = since - timedelta(days=days)
    own = [r for r in await ctx.main_series(reference) if r[0] <= since]
    if len(own) < 2 or own[-1][0] - own[0][0] < timedelta(days=days * 0.8):
        return None
    own_days = {b[0].date() for a, b in pairwise(own) if b[1] > a[1]}
    if len(own_days) < days * 0.7:
        return None  # no lived-in reference: away or empty before the stop too
    for other in await _other_meters(ctx, ("electricity",)):
        other_ctx = MeterContext(ctx.session, other, ctx.apartment, ctx.now, chunk=ctx.chunk)
        series = [r for r in await other_ctx.main_series(reference) if r[0] <= until]
        before = [r for r in series if r[0] <= since]
        during = [r for r in series if r[0] >= since]
        if len(before) < 2 or len(during) < 2:
            continue
        before_s = (before[-1][0] - before[0][0]).total_seconds()
        during_s = (during[-1][0] - during[0][0]).total_seconds()
        if before_s < days * 0.8 * 86400 or during_s < (until - since).total_seconds() * 0.8:
            continue
        rate_before = (before[-1][1] - before[0][1]) / Decimal(str(before_s))
        rate_during = (during[-1][1] - during[0][1]) / Decimal(str(during_s))
        if rate_before <= 0:
            continue
        share = (rate_during / rate_before).quantize(Decimal("0.001"))
        if share >= Decimal(str(p.get("electricity_min_share", "0.8"))):
            return other.serial, share
    return None


@rule(
    "continuous_flow",
    severity="warning",
    media=WATER,
    params={"hours": 24.0, "min_samples": 4, "coverage": 0.8},
)
async def continuous_flow(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Water never stops: over the last `hours` the minimum flow is above zero (or, without a flow
    register, the volume grew in every interval) - a leak or a running toilet."""
    window = timedelta(hours=float(p["hours"]))
    flows = await ctx.series("flow", "m3/h", ctx.now - window)
    series = flows or await ctx.main_series(ctx.now - window)
    if len(series) < int(p["min_samples"]) or series[-1][0] - series[0][0] < window * float(p["coverage"]):
        return None
    if flows:
        minimum = min(v for _t, v, _f in flows)
        if minimum <= 0:
            return None
        return Finding(
            f"flow never below {minimum} m3/h in {p['hours']:g} h",
            {"min_flow_m3h": str(minimum), "samples": len(flows), "from": flows[0][0], "to": flows[-1][0]},
        )
    steps = [b[1] - a[1] for a, b in pairwise(series)]
    if not steps or min(steps) <= 0:
        return None
    return Finding(
        f"volume grew in all {len(steps)} intervals over {p['hours']:g} h",
        {"min_step_m3": str(min(steps)), "samples": len(series), "from": series[0][0], "to": series[-1][0]},
    )


@rule(
    "spike",
    severity="critical",
    params={
        "max_rate_per_hour": {"cold_water": "5", "hot_water": "5", "electricity": "25000", "heat": "60000"}
    },
    blocks_billing=True,
)
async def spike(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Consumption between the last two readings faster than physically possible for an apartment
    meter (m3/h for water, Wh/h for energy), e.g. a corrupted or swapped register. A parameter
    `enabled: false` (any rule) switches a rule off."""
    limit = p["max_rate_per_hour"].get(ctx.meter.medium)
    if limit is None or ctx.apartment is None:  # the limits are for apartment meters, not main meters
        return None
    series = await ctx.main_series(ctx.now - timedelta(days=7))
    if len(series) < 2:
        return None
    (t0, v0, f0), (t1, v1, f1) = series[-2], series[-1]
    hours = Decimal(str(max((t1 - t0).total_seconds(), 60.0) / 3600))
    rate = (v1 - v0) / hours
    if rate <= Decimal(str(limit)):
        return None
    return Finding(
        f"consumption rate {rate:.3f} per hour exceeds {limit}",
        {
            "before": {"at": t0, "value": str(v0), "raw_frame_id": f0},
            "after": {"at": t1, "value": str(v1), "raw_frame_id": f1},
        },
    )


@rule(
    "heat_sanity",
    severity="warning",
    media=("heat",),
    params={"days": 2.0, "min_temperature_gap_k": "0.5", "min_energy_wh": "5000"},
)
async def heat_sanity(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Heat meter plausibility: flow temperature below return temperature (sensors swapped), or at
    least `min_energy_wh` of energy counted while no water volume passed. In summer a radiator
    circuit barely flows: one 1 kWh step of the energy register before the volume register's next
    step is resolution, not a fault."""
    latest = await ctx.latest_values()
    flow_t, return_t = latest.get("flow_temperature"), latest.get("return_temperature")
    if (
        flow_t is not None
        and return_t is not None
        and return_t - flow_t > Decimal(p["min_temperature_gap_k"])
    ):
        return Finding(
            f"flow temperature {flow_t} °C below return temperature {return_t} °C",
            {"flow_temperature": str(flow_t), "return_temperature": str(return_t)},
        )
    since = ctx.now - timedelta(days=float(p["days"]))
    energy = await ctx.series("energy", "Wh", since)
    volume = await ctx.series("volume", "m3", since)
    if len(energy) >= 2 and len(volume) >= 2:
        d_energy = energy[-1][1] - energy[0][1]
        d_volume = volume[-1][1] - volume[0][1]
        if d_energy >= Decimal(str(p.get("min_energy_wh", "0"))) and d_energy > 0 and d_volume == 0:
            return Finding(
                f"energy grew by {d_energy} Wh while volume stood still",
                {"energy": [str(energy[0][1]), str(energy[-1][1])], "volume": str(volume[-1][1])},
            )
    return None


@rule("wrong_clock", severity="warning", params={"max_skew_minutes": 60.0})
async def wrong_clock(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """The meter's own clock (date-time record of its latest telegram, taken as local time, UTC+1/+2)
    differs from the time the collector received the frame by more than `max_skew_minutes`."""
    received = ctx.meter.last_frame_at
    if received is None:
        return None
    clocks = [
        r.value
        for telegram in await ctx.readout_telegrams()
        for r in telegram.records
        if r.quantity == "datetime" and r.storage == 0 and isinstance(r.value, datetime)
    ]
    if not clocks:
        return None
    meter_time = clocks[0].replace(tzinfo=None)
    naive_utc = received.replace(tzinfo=None)
    # Meters keep local time (CET/CEST) without a zone: accept UTC+0..+2.
    skews = [abs((meter_time - timedelta(hours=h)) - naive_utc) for h in (0, 1, 2)]
    skew = min(skews)
    if skew <= timedelta(minutes=float(p["max_skew_minutes"])):
        return None
    return Finding(
        f"meter clock off by {skew.total_seconds() / 60:.0f} min",
        {
            "meter_time": meter_time.isoformat(),
            "received_at": received,
            "raw_frame_id": ctx.meter.last_raw_frame_id,
        },
    )


@rule("frame_failures", severity="warning", params={"hours": 24.0, "min_failures": 3, "min_ratio": 0.5})
async def frame_failures(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Many of the meter's frames (matched by meter or by its bus and primary address) failed to
    decode or were not answered in the last `hours`."""
    frames = await ctx.frames_since(ctx.now - timedelta(hours=float(p["hours"])))
    failed = [f for f in frames if f.status != "ok"]
    if len(failed) < int(p["min_failures"]) or len(failed) / max(len(frames), 1) < float(p["min_ratio"]):
        return None
    reasons = sorted({(f.reason or f.status)[:120] for f in failed})[:5]
    return Finding(
        f"{len(failed)} of {len(frames)} frames failed in {p['hours']:g} h",
        {"failed_frame_ids": [f.id for f in failed[-20:]], "reasons": reasons},
    )


@rule("decryption_failure", severity="critical", params={"hours": 24.0})
async def decryption_failure(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Frames of the meter could not be decrypted (missing or wrong key) in the last `hours`."""
    frames = await ctx.frames_since(ctx.now - timedelta(hours=float(p["hours"])))
    bad = [f for f in frames if f.status == "failed" and (f.reason or "").startswith("SecurityError")]
    if not bad or (frames and frames[-1].status == "ok"):
        return None
    return Finding(
        f"{len(bad)} frames could not be decrypted",
        {"frame_ids": [f.id for f in bad[-20:]], "reason": bad[-1].reason},
    )


@rule("collector_offline", severity="critical", scope="collector", params={"hours": 26.0})
async def collector_offline(ctx: CollectorContext, p: Mapping[str, Any]) -> Finding | None:
    """The collector said it went offline (last will) or has not been heard from for `hours`."""
    c = ctx.collector
    if c.state == "offline":
        return Finding(
            "collector is offline (last will)",
            {"last_status_at": c.last_status_at, "last_seen_at": c.last_seen_at},
        )
    if c.last_seen_at is not None and ctx.now - c.last_seen_at > timedelta(hours=float(p["hours"])):
        return Finding(
            f"collector silent for {_hours(ctx.now - c.last_seen_at):.1f} h",
            {"last_seen_at": c.last_seen_at, "limit_hours": p["hours"]},
        )
    return None


@rule("collector_alarm", severity="warning", scope="collector")
async def collector_alarm(ctx: CollectorContext, p: Mapping[str, Any]) -> Finding | None:
    """The collector itself reports a problem in its last status: an outbox that overflowed or is
    nearly full, a disk it cannot write (frames read but not stored), a serial port or radio stick
    gone. It clears when a status without alarms arrives."""
    c = ctx.collector
    try:
        status = json.loads(c.last_status) if c.last_status else {}
    except ValueError:
        return None  # a status that does not parse was refused at ingest; nothing to judge here
    alarms = [str(a) for a in status.get("alarms") or []] if isinstance(status, dict) else []
    if not alarms:
        return None
    shown = "; ".join(alarms[:3]) + (f" (+{len(alarms) - 3} more)" if len(alarms) > 3 else "")
    return Finding(f"collector reports: {shown}", {"alarms": alarms, "last_status_at": c.last_status_at})


@rule("after_removal", severity="warning")
async def after_removal(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Frames keep arriving from a meter after its removal date: the replacement was not registered,
    or the wrong meter was marked removed."""
    removed = ctx.meter.removed_at
    last = ctx.meter.last_frame_at
    if removed is None or last is None or last <= removed:
        return None
    return Finding(
        f"frame at {last:%Y-%m-%d %H:%M} after removal on {removed:%Y-%m-%d}",
        {"removed_at": removed, "last_frame_at": last, "raw_frame_id": ctx.meter.last_raw_frame_id},
    )


@rule(
    "sum_check",
    severity="warning",
    params={"days": 30.0, "max_loss": "0.15", "min_loss": "-0.02", "min_main_consumption": "1"},
)
async def sum_check(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """A property's main meter against the sum of the apartment meters of the same medium over the
    last `days`: the share lost between them must lie between `min_loss` and `max_loss` (pipe losses,
    common areas); outside the band a sub-meter or the main meter is wrong."""
    from sqlalchemy import select

    from central.consumption import consumption
    from central.models import Meter, MeterPoint

    meter = ctx.meter
    if ctx.apartment is not None or meter.meter_point_id is None or meter.medium not in MAIN_MEDIA:
        return None
    point = await ctx.session.get(MeterPoint, meter.meter_point_id)
    if point is None or point.apartment_id is not None:
        return None
    start, end = ctx.now - timedelta(days=float(p["days"])), ctx.now
    main = await consumption(ctx.session, meter, start, end, max_gap_days=float(p["days"]))
    if main["consumption"] is None or Decimal(main["consumption"]) < Decimal(p["min_main_consumption"]):
        return None
    subs = (
        await ctx.session.execute(
            select(Meter)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(MeterPoint.property_id == point.property_id, MeterPoint.apartment_id.is_not(None))
            .where(Meter.medium == meter.medium, Meter.removed_at.is_(None))
        )
    ).scalars()
    total = Decimal(0)
    missing: list[str] = []
    for sub in subs:
        part = await consumption(ctx.session, sub, start, end, max_gap_days=float(p["days"]))
        if part["consumption"] is None:
            missing.append(sub.serial)
        else:
            total += Decimal(part["consumption"])
    if missing:
        return None  # the communication checks report those; a partial sum proves nothing
    main_total = Decimal(main["consumption"])
    loss = (main_total - total) / main_total
    if Decimal(p["min_loss"]) <= loss <= Decimal(p["max_loss"]):
        return None
    return Finding(
        f"main meter {main_total} vs sub-meters {total}: loss {loss:.1%} outside "
        f"{Decimal(p['min_loss']):.0%}..{Decimal(p['max_loss']):.0%}",
        {"main": str(main_total), "sub_meters": str(total), "loss": str(loss.quantize(Decimal("0.0001")))},
    )


MAIN_MEDIA = frozenset({"heat", "hot_water", "cold_water", "electricity"})


# The comparison and installation-consistency rules live in their own modules; importing them here
# registers them wherever the built-in rules are loaded.
from central.checks import comparison as _comparison  # noqa: E402, F401
from central.checks import installation as _installation  # noqa: E402, F401
