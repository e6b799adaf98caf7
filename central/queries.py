"""Read-side queries shared by the REST API and the dashboard, always scoped to a principal.

Scoping lives here, once: a board member sees meters on their properties' meter points, a resident
only those on their apartment, and nobody outside the global roles sees unassigned meters.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.auth import Principal
from central.models import Apartment, Building, Collector, Meter, MeterPoint, Property, RawFrame, Reading

# What the meter list shows as "latest values": the current registers, not history or ids.
HIDDEN_QUANTITIES = frozenset(
    {
        "fabrication_number",
        "model_version",
        "bus_address",
        "error_flags",
        "access_number",
        "on_time",
        "operating_time",
        "averaging_duration",
        "actuality_duration",
    }
)


def scope_meters(query: Any, who: Principal) -> Any:
    """Restrict a query that already joins MeterPoint (outer) to what ``who`` may see."""
    if who.sees_all:
        return query
    if who.role == "board":
        return query.where(MeterPoint.property_id.in_(who.property_ids or {-1}))
    if who.role == "resident" and who.apartment_id is not None:
        return query.where(MeterPoint.apartment_id == who.apartment_id)
    return query.where(false())  # any other role sees nothing


def scope_properties(query: Any, who: Principal) -> Any:
    if who.sees_all:
        return query
    return query.where(Property.id.in_(who.property_ids or {-1}))


def _meter_base() -> Any:
    return (
        select(Meter, MeterPoint, Apartment, Property)
        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
        .outerjoin(Property, MeterPoint.property_id == Property.id)
    )


def value_dict(r: Reading) -> dict[str, Any]:
    return {
        "quantity": r.quantity,
        "unit": r.unit,
        "value": format(r.value, "f"),  # exact, plain notation (no exponent)
        "function": r.function,
        "storage": r.storage,
        "tariff": r.tariff,
        "subunit": r.subunit,
        "register": r.register,
        "read_at": r.read_at,
    }


def meter_dict(
    meter: Meter, point: MeterPoint | None, apartment: Apartment | None, prop: Property | None
) -> dict[str, Any]:
    return {
        "id": meter.serial,
        "ref": meter.id,
        "manufacturer": meter.manufacturer,
        "version": meter.version,
        "device_type": meter.device_type,
        "medium": meter.medium,
        "model": meter.model,
        "link": meter.link,
        "bus": meter.bus,
        "primary_address": meter.primary_address,
        "property": prop.key if prop else None,
        "apartment": apartment.object_number if apartment else None,
        "apartment_number": apartment.number if apartment else None,
        "meter_point": point.id if point else None,
        "installed_at": meter.installed_at,
        "removed_at": meter.removed_at,
        "has_key": meter.key_encrypted is not None,
        "auto_registered": meter.auto_registered,
        "last_frame_at": meter.last_frame_at,
        "last_reading_at": meter.last_reading_at,
        "status_byte": meter.last_status,
        "values": [],
    }


# A meter may answer one read-out in several telegrams (more records follow): the latest values are
# the newest reading of each register within this window before the meter's last reading.
READOUT_WINDOW = timedelta(minutes=15)
QUANTITY_ORDER = {
    q: n
    for n, q in enumerate(
        (
            "energy",
            "volume",
            "power",
            "flow",
            "flow_temperature",
            "return_temperature",
            "temperature_difference",
        )
    )
}


async def latest_values(session: AsyncSession, meters: list[Meter]) -> dict[int, list[Reading]]:
    """The current registers (storage 0, instantaneous) of each meter's latest read-out, main ones first."""
    recent = [m for m in meters if m.last_reading_at is not None]
    out: dict[int, list[Reading]] = defaultdict(list)
    for start in range(0, len(recent), 100):
        chunk = recent[start : start + 100]
        rows = await session.execute(
            select(Reading)
            .where(
                or_(
                    *(
                        and_(Reading.meter_id == m.id, Reading.read_at >= at - READOUT_WINDOW)
                        for m in chunk
                        if (at := m.last_reading_at) is not None
                    )
                )
            )
            .where(Reading.storage == 0, Reading.subunit == 0, Reading.function == "instantaneous")
            .order_by(Reading.meter_id, Reading.read_at.desc(), Reading.id)
        )
        seen: set[tuple[int, str]] = set()
        for r in rows.scalars():
            if r.quantity in HIDDEN_QUANTITIES or not r.unit or (r.meter_id, r.register) in seen:
                continue
            seen.add((r.meter_id, r.register))
            out[r.meter_id].append(r)
    for values in out.values():
        values.sort(key=lambda r: (QUANTITY_ORDER.get(r.quantity, 99), r.tariff, len(r.register), r.register))
    return out


async def list_meters(
    session: AsyncSession,
    who: Principal,
    *,
    property_key: str | None = None,
    medium: str | None = None,
    apartment: str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of meters in ``ref`` (meter id) order: the primary key, so a page costs an index walk
    of ``offset + limit`` rows whatever the filters; ``after`` (the last ``ref`` seen) pages by key
    without walking the skipped rows at all."""
    where: list[Any] = []
    if property_key is not None:
        where.append(Property.key == property_key)
    if medium is not None:
        where.append(Meter.medium == medium)
    if apartment is not None:
        where.append(Apartment.object_number == apartment)
    query = scope_meters(_meter_base(), who).where(*where)
    # The count joins only what the filters and the scope need (a bare count of meters for staff).
    counted = select(func.count()).select_from(Meter)
    if where or not who.sees_all:
        counted = counted.outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
    if property_key is not None:
        counted = counted.outerjoin(Property, MeterPoint.property_id == Property.id)
    if apartment is not None:
        counted = counted.outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
    total = (await session.execute(scope_meters(counted, who).where(*where))).scalar_one()
    if after is not None:
        query = query.where(Meter.id > after)
    rows = (await session.execute(query.order_by(Meter.id).limit(limit).offset(offset))).all()
    values = await latest_values(session, [row[0] for row in rows])
    items = []
    for meter, point, apt, prop in rows:
        item = meter_dict(meter, point, apt, prop)
        item["values"] = [value_dict(r) for r in values.get(meter.id, [])]
        items.append(item)
    return items, total


async def find_meter(
    session: AsyncSession, who: Principal, serial: str, manufacturer: str | None = None
) -> list[tuple[Meter, MeterPoint | None, Apartment | None, Property | None]]:
    query = scope_meters(_meter_base(), who).where(Meter.serial == serial)
    if manufacturer is not None:
        query = query.where(Meter.manufacturer == manufacturer.upper())
    return [tuple(row) for row in (await session.execute(query)).all()]


async def meter_readings(
    session: AsyncSession,
    meter_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    quantity: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> tuple[list[Reading], int]:
    query = select(Reading).where(Reading.meter_id == meter_id)
    if since is not None:
        query = query.where(Reading.read_at >= since)
    if until is not None:
        query = query.where(Reading.read_at < until)
    if quantity is not None:
        query = query.where(Reading.quantity == quantity)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(Reading.read_at.desc(), Reading.id).limit(limit).offset(offset)
    )
    return list(rows.scalars()), total


def frame_dict(f: RawFrame) -> dict[str, Any]:
    return {
        "id": f.id,
        "collector": f.collector_id,
        "sequence": f.sequence,
        "received_at": f.received_at,
        "ingested_at": f.ingested_at,
        "link": f.link,
        "port": f.port,
        "address": f.address,
        "rssi": f.rssi,
        "collector_status": f.collector_status,
        "status": f.status,
        "reason": f.reason,
        "meter_ref": f.meter_id,
        "raw": f.raw.hex(),
    }


async def list_frames(
    session: AsyncSession,
    who: Principal,
    *,
    meter_id: int | None = None,
    collector: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    query = select(RawFrame)
    if not who.sees_all:
        # Frames of meters the principal may see; unmatched frames are for global roles only.
        query = scope_meters(
            query.join(Meter, RawFrame.meter_id == Meter.id).outerjoin(
                MeterPoint, Meter.meter_point_id == MeterPoint.id
            ),
            who,
        )
    if meter_id is not None:
        query = query.where(RawFrame.meter_id == meter_id)
    if collector is not None:
        query = query.where(RawFrame.collector_id == collector)
    if status is not None:
        query = query.where(RawFrame.status == status)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(RawFrame.received_at.desc(), RawFrame.id.desc()).limit(limit).offset(offset)
    )
    return [frame_dict(f) for f in rows.scalars()], total


def collector_dict(c: Collector, now: datetime) -> dict[str, Any]:
    age = (now - c.last_seen_at).total_seconds() if c.last_seen_at else None
    return {
        "id": c.id,
        "state": c.state,
        "last_seen_at": c.last_seen_at,
        "last_seen_age_s": round(age, 1) if age is not None else None,
        "last_status_at": c.last_status_at,
        "last_sequence": c.last_sequence,
        "version": c.version,
        "property_ref": c.property_id,
    }


async def list_collectors(session: AsyncSession, who: Principal, now: datetime) -> list[dict[str, Any]]:
    query = select(Collector).order_by(Collector.id)
    if not who.sees_all:
        if who.role != "board":
            return []
        # A board sees the collectors that carry frames of meters on its properties.
        on_props = (
            select(RawFrame.collector_id)
            .join(Meter, RawFrame.meter_id == Meter.id)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(MeterPoint.property_id.in_(who.property_ids or {-1}))
            .distinct()
        )
        query = query.where(
            (Collector.property_id.in_(who.property_ids or {-1})) | Collector.id.in_(on_props)
        )
    return [collector_dict(c, now) for c in (await session.execute(query)).scalars()]


async def list_properties(session: AsyncSession, who: Principal) -> list[dict[str, Any]]:
    props = list(
        (await session.execute(scope_properties(select(Property), who).order_by(Property.key))).scalars()
    )
    # All their buildings in one query, not one per property.
    buildings: dict[int, list[Building]] = defaultdict(list)
    if props:
        rows = await session.execute(
            select(Building).where(Building.property_id.in_([p.id for p in props])).order_by(Building.key)
        )
        for b in rows.scalars():
            buildings[b.property_id].append(b)
    return [
        {
            "id": p.key,
            "name": p.name,
            "address": p.address,
            "city": p.city,
            "buildings": [{"id": b.key, "name": b.name, "address": b.address} for b in buildings[p.id]],
        }
        for p in props
    ]


async def list_apartments(
    session: AsyncSession, who: Principal, property_key: str, *, limit: int = 1000, offset: int = 0
) -> tuple[list[dict[str, Any]], int] | None:
    prop = (
        await session.execute(scope_properties(select(Property), who).where(Property.key == property_key))
    ).scalar_one_or_none()
    if prop is None:
        return None
    query = (
        select(Apartment, Building)
        .join(Building, Apartment.building_id == Building.id)
        .where(Apartment.property_id == prop.id)
    )
    if who.role == "resident":
        query = query.where(Apartment.id == who.apartment_id)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(query.order_by(Apartment.number).limit(limit).offset(offset))
    items = [
        {
            "object_number": a.object_number,
            "number": a.number,
            "building": b.key,
            "area_m2": str(a.area_m2),
            "share": str(a.share) if a.share is not None else None,
            "address": a.address,
            "tenant_ref": a.tenant_ref,
        }
        for a, b in rows.all()
    ]
    return items, total
