"""Installation consistency: the register of which meter sits where agrees with what the meters say.

Billing puts a meter's consumption on an apartment for the time the meter is installed there; when
readings fall outside that time, one meter is on two apartments at once, or an apartment lacks a
meter for a medium its property bills, the billing basis would be wrong, so these findings block
billing of the meter until handled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select

from central.checks import CollectorContext, Finding, MeterContext, rule
from central.models import Apartment, Meter, MeterPoint, RawFrame, Reading


@rule("installation_period", severity="warning", params={"tolerance_hours": 24.0}, blocks_billing=True)
async def installation_period(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """Readings of the meter dated before its installation or after its removal (beyond
    `tolerance_hours`, for read-outs on the day of the change): the dates in the register are wrong,
    or the readings belong to another meter point's time."""
    meter = ctx.meter
    tolerance = timedelta(hours=float(p["tolerance_hours"]))
    outside = []
    if meter.installed_at is not None:
        outside.append(Reading.read_at < meter.installed_at - tolerance)
    if meter.removed_at is not None:
        outside.append(Reading.read_at > meter.removed_at + tolerance)
    if not outside:
        return None
    span = ctx.chunk.reading_spans.get(meter.id) if ctx.chunk is not None else None
    if span is not None and (span[0] is None or _inside(meter, span[0], span[1], tolerance)):
        return None  # the chunk's first and last readings lie inside: nothing to count
    count, first, last = (
        await ctx.session.execute(
            select(func.count(), func.min(Reading.read_at), func.max(Reading.read_at)).where(
                Reading.meter_id == meter.id, or_(*outside)
            )
        )
    ).one()
    if not count:
        return None
    return Finding(
        f"{count} readings outside the installation period",
        {
            "installed_at": meter.installed_at,
            "removed_at": meter.removed_at,
            "readings": count,
            "first": first,
            "last": last,
        },
    )


def _inside(meter: Meter, first: datetime, last: datetime | None, tolerance: timedelta) -> bool:
    after_installation = meter.installed_at is None or first >= meter.installed_at - tolerance
    before_removal = meter.removed_at is None or last is None or last <= meter.removed_at + tolerance
    return after_installation and before_removal


def _overlap(a: Meter, b: Meter) -> bool:
    a_start, b_start = a.installed_at, b.installed_at
    a_end, b_end = a.removed_at, b.removed_at
    return (a_end is None or b_start is None or b_start < a_end) and (
        b_end is None or a_start is None or a_start < b_end
    )


@rule("double_installation", severity="critical", blocks_billing=True)
async def double_installation(ctx: MeterContext, p: Mapping[str, Any]) -> Finding | None:
    """One meter on two apartments at once: the same identification number is registered (under
    another record, e.g. another manufacturer code) on a meter point of a different apartment for an
    overlapping time, or another meter is installed on the same meter point at the same time (a
    replacement whose old meter was never marked removed)."""
    meter = ctx.meter
    if meter.meter_point_id is None:
        return None
    related: list[tuple[Meter, MeterPoint]]
    if ctx.chunk is not None and meter.id in ctx.chunk.meters:
        related = ctx.chunk.related_to(meter)
    else:
        rows = await ctx.session.execute(
            select(Meter, MeterPoint)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(Meter.id != meter.id)
            .where(or_(Meter.serial == meter.serial, Meter.meter_point_id == meter.meter_point_id))
        )
        related = [(m, p) for m, p in rows.all()]
    own_apartment = ctx.apartment.id if ctx.apartment else None
    conflicts = []
    for other, point in related:
        if not _overlap(meter, other):
            continue
        if other.meter_point_id == meter.meter_point_id:
            conflicts.append({"meter": other.serial, "manufacturer": other.manufacturer, "same_point": True})
        elif point.apartment_id is not None and point.apartment_id != own_apartment:
            apartment = await ctx.session.get(Apartment, point.apartment_id)
            conflicts.append(
                {
                    "meter": other.serial,
                    "manufacturer": other.manufacturer,
                    "apartment": apartment.object_number if apartment else None,
                }
            )
    if not conflicts:
        return None
    what = "another meter on the same meter point" if conflicts[0].get("same_point") else "also on apartment"
    return Finding(f"installed twice at once: {what} ({len(conflicts)})", {"conflicts": conflicts})


@rule(
    "apartment_without_meter",
    severity="warning",
    scope="collector",
    params={"billed_media": None, "min_share": 0.5},
)
async def apartment_without_meter(ctx: CollectorContext, p: Mapping[str, Any]) -> Finding | None:
    """Apartments of the collector's properties without an installed meter for a medium the property
    bills. Billed media are `billed_media` when given, else every medium that at least `min_share` of
    the property's apartments have a meter for. Reported on the collector (a fault belongs to a meter
    or a collector) whose frames carry the property's meters."""
    session = ctx.session
    props = {ctx.collector.property_id} if ctx.collector.property_id is not None else set()
    carried = await session.execute(
        select(MeterPoint.property_id)
        .join(Meter, Meter.meter_point_id == MeterPoint.id)
        .join(RawFrame, RawFrame.id == Meter.last_raw_frame_id)
        .where(RawFrame.collector_id == ctx.collector.id)
        .distinct()
    )
    props |= set(carried.scalars())
    if not props:
        return None
    missing: list[dict[str, Any]] = []
    for property_id in sorted(props):
        apartments = {
            a.id: a
            for a in (
                await session.execute(select(Apartment).where(Apartment.property_id == property_id))
            ).scalars()
        }
        if not apartments:
            continue
        has: dict[str, set[int]] = defaultdict(set)
        rows = await session.execute(
            select(MeterPoint.medium, MeterPoint.apartment_id)
            .join(Meter, Meter.meter_point_id == MeterPoint.id)
            .where(MeterPoint.property_id == property_id, MeterPoint.apartment_id.is_not(None))
            .where(or_(Meter.removed_at.is_(None), Meter.removed_at > ctx.now))
            .where(or_(Meter.installed_at.is_(None), Meter.installed_at <= ctx.now))
        )
        for medium, apartment_id in rows.all():
            if apartment_id is not None:
                has[medium].add(apartment_id)
        billed = p["billed_media"] or [
            m for m, apts in has.items() if len(apts) >= len(apartments) * float(p["min_share"])
        ]
        missing.extend(
            {"apartment": apartments[apartment_id].object_number, "medium": medium}
            for medium in sorted(billed)
            for apartment_id in sorted(set(apartments) - has.get(medium, set()))
        )
    if not missing:
        return None
    return Finding(
        f"{len(missing)} apartment(s) without a meter for a billed medium",
        {"missing": missing[:200], "count": len(missing)},
    )
