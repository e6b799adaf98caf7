"""CRUD of the installation register: properties, buildings, apartments, meter points, meters (with
replacement), collectors, and consumption per period with estimates.

Roles: admin and staff write everything; a technician may create meters and collectors (field work);
board members and residents read what their scope shows (their properties; their apartment) and get
404 for anything else, so the API does not reveal what exists elsewhere. Lists are paginated
(``limit``/``offset``, total in ``X-Total-Count``) and filterable. Every change is written to the
audit log; key changes are logged as "set"/"cleared", never with key material.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.api.deps import PrincipalDep, SessionDep, StateDep, require_roles
from central.auth import Principal
from central.checks import MAIN_REGISTER
from central.estimation import FALLBACKS, EstimationLimits, point_consumption, property_consumption
from central.models import (
    Apartment,
    AuditLog,
    BillingLineRecord,
    Building,
    Collector,
    Meter,
    MeterPoint,
    Property,
    RawFrame,
    Reading,
    Tenancy,
    utcnow,
)
from central.queries import collector_dict, meter_dict
from central.reading_months import note_readings
from protocols.site import Medium

router = APIRouter()  # mounted under /api by central.api.routes
Editor = Annotated[Principal, Depends(require_roles("admin", "staff"))]
FieldWorker = Annotated[Principal, Depends(require_roles("admin", "staff", "technician"))]
Limit = Annotated[int, Query(ge=1, le=10_000, description="page size")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
MEDIA = tuple(m.value for m in Medium)
MANUAL_REGISTER = "manual"  # register of readings entered by hand (removal/installation readings)


def _paged(response: Response, total: int, limit: int, offset: int) -> None:
    response.headers["X-Total-Count"] = str(total)
    response.headers["X-Limit"] = str(limit)
    response.headers["X-Offset"] = str(offset)


async def _page(session: AsyncSession, query: Any, response: Response, limit: int, offset: int) -> list[Any]:
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    _paged(response, total, limit, offset)
    return list((await session.execute(query.limit(limit).offset(offset))).all())


def _audit(
    session: AsyncSession, who: Principal, action: str, entity: str, entity_id: Any, **detail: Any
) -> None:
    session.add(
        AuditLog(
            at=utcnow(),
            actor=who.username,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            detail=json.dumps(detail, default=str),
        )
    )


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, detail=f"{name}: give a time zone (e.g. Z)")


def _decimal(name: str, value: str | None, *, positive: bool = False) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise HTTPException(422, detail=f"{name}: not a decimal number: {value!r}") from None
    if not number.is_finite() or (positive and number <= 0) or number < 0:
        raise HTTPException(422, detail=f"{name}: must be {'above' if positive else 'at least'} zero")
    return number


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {what} visible to you")


def _conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=detail)


async def _delete_unless_used(
    session: AsyncSession,
    who: Principal,
    obj: Any,
    *,
    kind: str,
    ref: int | str,
    dependants: tuple[tuple[str, Any, Any], ...],
) -> Response:
    """Delete ``obj`` unless rows still point at it: 409 naming them, else delete, audit, commit."""
    for name, model, column in dependants:
        query = select(func.count()).select_from(model).where(column == obj.id)
        if (await session.execute(query)).scalar_one():
            raise _conflict(f"{kind} {ref} still has {name}; delete them first")
    await session.delete(obj)
    _audit(session, who, f"{kind}.delete", kind, ref)
    await session.commit()
    return Response(status_code=204)


def _sees_property(who: Principal, property_id: int) -> bool:
    return who.sees_all or property_id in who.property_ids


def _sees_apartment(who: Principal, apartment: Apartment) -> bool:
    if who.role == "resident":
        return apartment.id == who.apartment_id
    return _sees_property(who, apartment.property_id)


async def _property(session: AsyncSession, who: Principal, key: str) -> Property:
    prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one_or_none()
    if prop is None or not _sees_property(who, prop.id):
        raise _not_found(f"property {key}")
    return prop


# -- properties -------------------------------------------------------------------------------------


class PropertyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(
        min_length=1, max_length=64, pattern=r"^[^/\s][^/]*$", description="fastighetsbeteckning"
    )
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=200)
    city: str = Field(default="", max_length=100)


class PropertyChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)


def property_dict(p: Property) -> dict[str, Any]:
    return {"id": p.key, "ref": p.id, "name": p.name, "address": p.address, "city": p.city}


@router.post("/properties", status_code=201, tags=["properties"])
async def create_property(who: Editor, session: SessionDep, body: PropertyIn) -> dict[str, Any]:
    if (await session.execute(select(Property.id).where(Property.key == body.key))).first():
        raise _conflict(f"key: property {body.key!r} exists already")
    prop = Property(**body.model_dump())
    session.add(prop)
    await session.flush()
    _audit(session, who, "property.create", "property", prop.key, **body.model_dump())
    await session.commit()
    return property_dict(prop)


@router.get("/properties/{key}", tags=["properties"])
async def get_property(who: PrincipalDep, session: SessionDep, key: str) -> dict[str, Any]:
    prop = await _property(session, who, key)
    item = property_dict(prop)
    counts = {}
    for name, model in (("buildings", Building), ("apartments", Apartment), ("meter_points", MeterPoint)):
        query = select(func.count()).select_from(model).where(model.property_id == prop.id)
        counts[name] = (await session.execute(query)).scalar_one()
    item["counts"] = counts
    return item


@router.patch("/properties/{key}", tags=["properties"])
async def change_property(who: Editor, session: SessionDep, key: str, body: PropertyChange) -> dict[str, Any]:
    prop = await _property(session, who, key)
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise HTTPException(422, detail=f"{name}: may not be null")
        setattr(prop, name, value)
    _audit(session, who, "property.update", "property", prop.key, **changes)
    await session.commit()
    return property_dict(prop)


@router.delete("/properties/{key}", status_code=204, tags=["properties"])
async def delete_property(who: Editor, session: SessionDep, key: str) -> Response:
    prop = await _property(session, who, key)
    dependants = (
        ("buildings", Building, Building.property_id),
        ("apartments", Apartment, Apartment.property_id),
        ("meter points", MeterPoint, MeterPoint.property_id),
    )
    return await _delete_unless_used(session, who, prop, kind="property", ref=key, dependants=dependants)


# -- buildings --------------------------------------------------------------------------------------


class BuildingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=200)


class BuildingChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=200)


def building_dict(b: Building, prop: Property) -> dict[str, Any]:
    return {"ref": b.id, "id": b.key, "property": prop.key, "name": b.name, "address": b.address}


async def _building(session: AsyncSession, who: Principal, ref: int) -> tuple[Building, Property]:
    row = (
        await session.execute(
            select(Building, Property)
            .join(Property, Building.property_id == Property.id)
            .where(Building.id == ref)
        )
    ).first()
    if row is None or not _sees_property(who, row[1].id):
        raise _not_found(f"building {ref}")
    return row[0], row[1]


@router.get("/properties/{key}/buildings", tags=["properties"])
async def list_buildings(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    key: str,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    prop = await _property(session, who, key)
    rows = await _page(
        session,
        select(Building).where(Building.property_id == prop.id).order_by(Building.key),
        response,
        limit,
        offset,
    )
    return [building_dict(b, prop) for (b,) in rows]


@router.post("/properties/{key}/buildings", status_code=201, tags=["properties"])
async def create_building(who: Editor, session: SessionDep, key: str, body: BuildingIn) -> dict[str, Any]:
    prop = await _property(session, who, key)
    exists = await session.execute(
        select(Building.id).where(Building.property_id == prop.id, Building.key == body.key)
    )
    if exists.first():
        raise _conflict(f"key: building {body.key!r} exists already in {prop.key}")
    building = Building(property_id=prop.id, **body.model_dump())
    session.add(building)
    await session.flush()
    _audit(session, who, "building.create", "building", building.id, property=prop.key, **body.model_dump())
    await session.commit()
    return building_dict(building, prop)


@router.get("/buildings/{ref}", tags=["properties"])
async def get_building(who: PrincipalDep, session: SessionDep, ref: int) -> dict[str, Any]:
    building, prop = await _building(session, who, ref)
    return building_dict(building, prop)


@router.patch("/buildings/{ref}", tags=["properties"])
async def change_building(who: Editor, session: SessionDep, ref: int, body: BuildingChange) -> dict[str, Any]:
    building, prop = await _building(session, who, ref)
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise HTTPException(422, detail=f"{name}: may not be null")
        setattr(building, name, value)
    _audit(session, who, "building.update", "building", building.id, **changes)
    await session.commit()
    return building_dict(building, prop)


@router.delete("/buildings/{ref}", status_code=204, tags=["properties"])
async def delete_building(who: Editor, session: SessionDep, ref: int) -> Response:
    building, _prop = await _building(session, who, ref)
    dependants = (("apartments", Apartment, Apartment.building_id),)
    return await _delete_unless_used(session, who, building, kind="building", ref=ref, dependants=dependants)


# -- apartments -------------------------------------------------------------------------------------


class ApartmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object_number: str = Field(min_length=1, max_length=64)
    number: str = Field(min_length=1, max_length=16, description="lägenhetsnummer")
    building: str = Field(min_length=1, max_length=64, description="building key")
    area_m2: str = Field(description="exact decimal, > 0")
    share: str | None = None
    address: str = Field(default="", max_length=200)
    tenant_ref: str | None = Field(default=None, max_length=64)


class ApartmentChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str | None = Field(default=None, min_length=1, max_length=16)
    building: str | None = Field(default=None, min_length=1, max_length=64)
    area_m2: str | None = None
    share: str | None = None
    address: str | None = Field(default=None, max_length=200)
    tenant_ref: str | None = Field(default=None, max_length=64)


def apartment_dict(a: Apartment, b: Building | None, prop: Property) -> dict[str, Any]:
    return {
        "ref": a.id,
        "property": prop.key,
        "object_number": a.object_number,
        "number": a.number,
        "building": b.key if b else None,
        "area_m2": str(a.area_m2),
        "share": str(a.share) if a.share is not None else None,
        "address": a.address,
        "tenant_ref": a.tenant_ref,
    }


async def _apartment(session: AsyncSession, who: Principal, ref: int) -> tuple[Apartment, Property]:
    row = (
        await session.execute(
            select(Apartment, Property)
            .join(Property, Apartment.property_id == Property.id)
            .where(Apartment.id == ref)
        )
    ).first()
    if row is None or not _sees_apartment(who, row[0]):
        raise _not_found(f"apartment {ref}")
    return row[0], row[1]


async def _building_by_key(session: AsyncSession, prop: Property, key: str) -> Building:
    building = (
        await session.execute(select(Building).where(Building.property_id == prop.id, Building.key == key))
    ).scalar_one_or_none()
    if building is None:
        raise HTTPException(422, detail=f"building: no building {key!r} in {prop.key}")
    return building


@router.post("/properties/{key}/apartments", status_code=201, tags=["properties"])
async def create_apartment(who: Editor, session: SessionDep, key: str, body: ApartmentIn) -> dict[str, Any]:
    prop = await _property(session, who, key)
    building = await _building_by_key(session, prop, body.building)
    exists = await session.execute(
        select(Apartment.id).where(
            Apartment.property_id == prop.id, Apartment.object_number == body.object_number
        )
    )
    if exists.first():
        raise _conflict(f"object_number: apartment {body.object_number!r} exists already in {prop.key}")
    apartment = Apartment(
        property_id=prop.id,
        building_id=building.id,
        object_number=body.object_number,
        number=body.number,
        area_m2=_decimal("area_m2", body.area_m2, positive=True),
        share=_decimal("share", body.share),
        address=body.address,
        tenant_ref=body.tenant_ref,
    )
    session.add(apartment)
    await session.flush()
    _audit(
        session, who, "apartment.create", "apartment", apartment.id, property=prop.key, **body.model_dump()
    )
    await session.commit()
    return apartment_dict(apartment, building, prop)


@router.get("/apartments/{ref}", tags=["properties"])
async def get_apartment(who: PrincipalDep, session: SessionDep, ref: int) -> dict[str, Any]:
    apartment, prop = await _apartment(session, who, ref)
    return apartment_dict(apartment, await session.get(Building, apartment.building_id), prop)


@router.patch("/apartments/{ref}", tags=["properties"])
async def change_apartment(
    who: Editor, session: SessionDep, ref: int, body: ApartmentChange
) -> dict[str, Any]:
    apartment, prop = await _apartment(session, who, ref)
    changes = body.model_dump(exclude_unset=True)
    for name in ("number", "area_m2", "building", "address"):
        if name in changes and changes[name] is None:
            raise HTTPException(422, detail=f"{name}: may not be null")
    if "building" in changes:
        apartment.building_id = (await _building_by_key(session, prop, changes["building"])).id
    if "area_m2" in changes:
        apartment.area_m2 = _decimal("area_m2", changes["area_m2"], positive=True)  # type: ignore[assignment]
    if "share" in changes:
        apartment.share = _decimal("share", changes["share"])
    for name in ("number", "address", "tenant_ref"):
        if name in changes:
            setattr(apartment, name, changes[name])
    _audit(session, who, "apartment.update", "apartment", apartment.id, **changes)
    await session.commit()
    return apartment_dict(apartment, await session.get(Building, apartment.building_id), prop)


@router.delete("/apartments/{ref}", status_code=204, tags=["properties"])
async def delete_apartment(who: Editor, session: SessionDep, ref: int) -> Response:
    apartment, _prop = await _apartment(session, who, ref)
    dependants = (
        ("meter points", MeterPoint, MeterPoint.apartment_id),
        ("tenancies", Tenancy, Tenancy.apartment_id),
        ("billing lines", BillingLineRecord, BillingLineRecord.apartment_id),
    )
    return await _delete_unless_used(
        session, who, apartment, kind="apartment", ref=ref, dependants=dependants
    )


# -- meter points -----------------------------------------------------------------------------------


class MeterPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    property: str = Field(min_length=1, max_length=64)
    apartment: str | None = Field(default=None, description="object number; none: a property's main meter")
    medium: Medium
    name: str = Field(default="", max_length=100)


class MeterPointChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=100)


def _point_scope(query: Any, who: Principal) -> Any:
    if who.sees_all:
        return query
    if who.role == "board":
        return query.where(MeterPoint.property_id.in_(who.property_ids or {-1}))
    if who.role == "resident" and who.apartment_id is not None:
        return query.where(MeterPoint.apartment_id == who.apartment_id)
    return query.where(MeterPoint.id == -1)


def point_dict(
    p: MeterPoint, prop: Property, apt: Apartment | None, meters: list[Meter] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "ref": p.id,
        "property": prop.key,
        "apartment": apt.object_number if apt else None,
        "medium": p.medium,
        "name": p.name,
    }
    if meters is not None:
        item["meters"] = [
            {
                "id": m.serial,
                "manufacturer": m.manufacturer,
                "installed_at": m.installed_at,
                "removed_at": m.removed_at,
            }
            for m in meters
        ]
    return item


def _point_base() -> Any:
    return (
        select(MeterPoint, Property, Apartment)
        .join(Property, MeterPoint.property_id == Property.id)
        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
    )


async def _point(
    session: AsyncSession, who: Principal, ref: int
) -> tuple[MeterPoint, Property, Apartment | None]:
    row = (await session.execute(_point_scope(_point_base(), who).where(MeterPoint.id == ref))).first()
    if row is None:
        raise _not_found(f"meter point {ref}")
    return row[0], row[1], row[2]


async def _point_meters(session: AsyncSession, point_id: int) -> list[Meter]:
    rows = await session.execute(
        select(Meter).where(Meter.meter_point_id == point_id).order_by(Meter.installed_at, Meter.id)
    )
    return list(rows.scalars())


@router.get("/meter-points", tags=["meter points"])
async def list_points(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    property: str | None = None,
    apartment: Annotated[str | None, Query(description="object number")] = None,
    medium: str | None = None,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    if medium is not None and medium not in MEDIA:
        raise HTTPException(422, detail=f"medium: one of {', '.join(MEDIA)}")
    query = _point_scope(_point_base(), who)
    if property is not None:
        query = query.where(Property.key == property)
    if apartment is not None:
        query = query.where(Apartment.object_number == apartment)
    if medium is not None:
        query = query.where(MeterPoint.medium == medium)
    rows = await _page(session, query.order_by(MeterPoint.id), response, limit, offset)
    return [point_dict(p, prop, apt) for p, prop, apt in rows]


async def _apartment_by_number(session: AsyncSession, prop: Property, number: str) -> Apartment:
    apt = (
        await session.execute(
            select(Apartment).where(Apartment.property_id == prop.id, Apartment.object_number == number)
        )
    ).scalar_one_or_none()
    if apt is None:
        raise HTTPException(422, detail=f"apartment: no apartment {number!r} in {prop.key}")
    return apt


@router.post("/meter-points", status_code=201, tags=["meter points"])
async def create_point(who: Editor, session: SessionDep, body: MeterPointIn) -> dict[str, Any]:
    prop = await _property(session, who, body.property)
    apt = await _apartment_by_number(session, prop, body.apartment) if body.apartment else None
    point = MeterPoint(
        property_id=prop.id, apartment_id=apt.id if apt else None, medium=body.medium.value, name=body.name
    )
    session.add(point)
    await session.flush()
    _audit(session, who, "meter_point.create", "meter_point", point.id, **body.model_dump(mode="json"))
    await session.commit()
    return point_dict(point, prop, apt, [])


@router.get("/meter-points/{ref}", tags=["meter points"])
async def get_point(who: PrincipalDep, session: SessionDep, ref: int) -> dict[str, Any]:
    """A meter point with every meter ever installed on it (its history across replacements)."""
    point, prop, apt = await _point(session, who, ref)
    return point_dict(point, prop, apt, await _point_meters(session, point.id))


@router.patch("/meter-points/{ref}", tags=["meter points"])
async def change_point(who: Editor, session: SessionDep, ref: int, body: MeterPointChange) -> dict[str, Any]:
    point, prop, apt = await _point(session, who, ref)
    if body.name is not None:
        point.name = body.name
    _audit(session, who, "meter_point.update", "meter_point", ref, **body.model_dump(exclude_unset=True))
    await session.commit()
    return point_dict(point, prop, apt, await _point_meters(session, point.id))


@router.delete("/meter-points/{ref}", status_code=204, tags=["meter points"])
async def delete_point(who: Editor, session: SessionDep, ref: int) -> Response:
    point, _prop, _apt = await _point(session, who, ref)
    if await _point_meters(session, ref):
        raise _conflict(f"meter point {ref} has meter history; it is kept for billing traceability")
    await session.delete(point)
    _audit(session, who, "meter_point.delete", "meter_point", ref)
    await session.commit()
    return Response(status_code=204)


# -- consumption with estimates ---------------------------------------------------------------------


def _limits(
    max_interpolation_gap_days: float,
    max_boundary_offset_days: float,
    comparable_area_tolerance: str,
    min_comparable: int,
    fallbacks: str | None,
) -> EstimationLimits:
    chosen = FALLBACKS if fallbacks is None else tuple(f.strip() for f in fallbacks.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FALLBACKS]
    if unknown:
        raise HTTPException(
            422, detail=f"fallbacks: unknown {', '.join(unknown)}; use {', '.join(FALLBACKS)}"
        )
    tolerance = _decimal("comparable_area_tolerance", comparable_area_tolerance)
    assert tolerance is not None
    return EstimationLimits(
        max_interpolation_gap=timedelta(days=max_interpolation_gap_days),
        max_boundary_offset=timedelta(days=max_boundary_offset_days),
        comparable_area_tolerance=tolerance,
        min_comparable=min_comparable,
        fallbacks=chosen,
    )


class LimitsQuery(BaseModel):
    max_interpolation_gap_days: float = Field(10.0, gt=0, le=366)
    max_boundary_offset_days: float = Field(2.0, ge=0, le=60)
    comparable_area_tolerance: str = "0.25"
    min_comparable: int = Field(3, ge=1, le=1000)
    fallbacks: str | None = Field(None, description="comma-separated order; empty: interpolation only")

    @field_validator("comparable_area_tolerance")
    @classmethod
    def _tolerance(cls, value: str) -> str:
        try:
            Decimal(value)
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
        return value


def _period(start: datetime, end: datetime) -> None:
    _aware("start", start)
    _aware("end", end)
    if end <= start:
        raise HTTPException(422, detail="end: must be after start")
    if end - start > timedelta(days=366 * 3):
        raise HTTPException(422, detail="end: a period of at most three years")


@router.get("/meter-points/{ref}/consumption", tags=["meter points"])
async def point_consumption_endpoint(
    *,
    who: PrincipalDep,
    session: SessionDep,
    ref: int,
    start: datetime,
    end: datetime,
    q: Annotated[LimitsQuery, Query()],
) -> dict[str, Any]:
    """Consumption of the point's billing register over [start, end), across meter replacements. Each
    figure carries its method: measured, interpolated (short gap / boundary alignment), installation
    (removal or installation reading), or an estimate for a long gap: same_period_last_year,
    comparable_apartments (median per m²), building_average. Estimates are computed, never stored."""
    _period(start, end)
    limits = _limits(
        q.max_interpolation_gap_days,
        q.max_boundary_offset_days,
        q.comparable_area_tolerance,
        q.min_comparable,
        q.fallbacks,
    )
    point, _prop, _apt = await _point(session, who, ref)
    result = (await point_consumption(session, point, start, end, limits)).as_dict()
    result["limits"] = limits.describe()
    return result


@router.get("/consumption", tags=["meter points"])
async def consumption_per_period(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    property: str,
    start: datetime,
    end: datetime,
    medium: str | None = None,
    apartment: Annotated[str | None, Query(description="object number")] = None,
    q: Annotated[LimitsQuery, Query()],
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Consumption per meter point of a property over [start, end), estimated where readings are
    missing and flagged with the method (see ``/meter-points/{ref}/consumption``)."""
    _period(start, end)
    if medium is not None and medium not in MEDIA:
        raise HTTPException(422, detail=f"medium: one of {', '.join(MEDIA)}")
    limits = _limits(
        q.max_interpolation_gap_days,
        q.max_boundary_offset_days,
        q.comparable_area_tolerance,
        q.min_comparable,
        q.fallbacks,
    )
    prop = await _property(session, who, property)
    apartment_id = None
    if who.role == "resident":
        apartment_id = who.apartment_id
    if apartment is not None:
        apt = await _apartment_by_number(session, prop, apartment)
        if apartment_id is not None and apt.id != apartment_id:
            raise _not_found(f"apartment {apartment}")
        apartment_id = apt.id
    results = await property_consumption(
        session, prop.id, start, end, limits, medium=medium, apartment_id=apartment_id
    )
    _paged(response, len(results), limit, offset)
    return [r.as_dict() for r in results[offset : offset + limit]]


# -- meters -----------------------------------------------------------------------------------------


class MeterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^\d{8}$", description="identification number, 8 digits")
    manufacturer: str = Field(pattern=r"^[A-Za-z]{3}$")
    medium: Medium
    version: int | None = Field(default=None, ge=0, le=255)
    device_type: int | None = Field(default=None, ge=0, le=255)
    model: str = Field(default="", max_length=100)
    link: str = Field(default="mbus", pattern=r"^(mbus|wmbus)$")
    bus: str | None = Field(default=None, max_length=64)
    primary_address: int | None = Field(default=None, ge=0, le=250)
    meter_point: int | None = Field(default=None, description="meter point ref; or property + apartment")
    property: str | None = None
    apartment: str | None = Field(default=None, description="object number")
    installed_at: datetime | None = None
    installation_reading: str | None = Field(default=None, description="billing register at installation")
    key: str | None = Field(
        default=None, pattern=r"^[0-9A-Fa-f]{32}$", description="AES-128 key, 32 hex digits"
    )


class Replacement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    removed_at: datetime
    removal_reading: str | None = Field(default=None, description="old meter's billing register at removal")
    new: MeterIn


async def _find_meter(session: AsyncSession, who: Principal, serial: str, manufacturer: str | None) -> Meter:
    if not serial.isdigit() or len(serial) > 16:
        raise HTTPException(422, detail="meter id: digits only (8 digits)")
    query = (
        select(Meter)
        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .where(Meter.serial == serial)
    )
    if manufacturer:
        query = query.where(Meter.manufacturer == manufacturer.upper())
    if not who.sees_all:
        query = _point_scope(query, who)
    rows = list((await session.execute(query)).scalars())
    if not rows:
        raise _not_found(f"meter {serial}")
    if len(rows) > 1:
        raise _conflict(f"meter id {serial} exists for several manufacturers; add ?manufacturer=")
    return rows[0]


async def _manual_reading(session: AsyncSession, meter: Meter, at: datetime, value: str, name: str) -> None:
    """A reading entered by hand (at installation or removal), beside the telegram readings."""
    main = MAIN_REGISTER.get(meter.medium)
    if main is None:
        raise HTTPException(422, detail=f"{name}: medium {meter.medium} has no billing register")
    number = _decimal(name, value)
    exists = await session.execute(
        select(Reading.id).where(
            Reading.meter_id == meter.id, Reading.register == MANUAL_REGISTER, Reading.read_at == at
        )
    )
    if exists.first():
        raise _conflict(f"{name}: meter {meter.serial} has a manual reading at {at.isoformat()} already")
    session.add(
        Reading(
            meter_id=meter.id,
            register=MANUAL_REGISTER,
            read_at=at,
            quantity=main[0],
            unit=main[1],
            value=number,
        )
    )
    await note_readings(
        session, [(meter.id, MANUAL_REGISTER, at, main[0], main[1], "instantaneous", 0, 0, 0, number)]
    )


async def _new_meter(
    session: AsyncSession, state: Any, who: Principal, body: MeterIn, point: MeterPoint | None
) -> tuple[Meter, Property | None]:
    _aware("installed_at", body.installed_at)
    manufacturer = body.manufacturer.upper()
    exists = await session.execute(
        select(Meter.id).where(Meter.serial == body.id, Meter.manufacturer == manufacturer)
    )
    if exists.first():
        raise _conflict(f"id: meter {body.id} of {manufacturer} exists already")
    prop: Property | None = None
    if point is None and body.meter_point is not None:
        point, prop, _apt = await _point(session, who, body.meter_point)
    elif point is None and body.property is not None:
        prop = await _property(session, who, body.property)
        apt = await _apartment_by_number(session, prop, body.apartment) if body.apartment else None
        candidates = (
            await session.execute(
                select(MeterPoint).where(
                    MeterPoint.property_id == prop.id,
                    MeterPoint.medium == body.medium.value,
                    MeterPoint.apartment_id == apt.id if apt else MeterPoint.apartment_id.is_(None),
                )
            )
        ).scalars()
        point = None
        for candidate in candidates:
            if not any(m.removed_at is None for m in await _point_meters(session, candidate.id)):
                point = candidate
                break
        if point is None:
            point = MeterPoint(
                property_id=prop.id,
                apartment_id=apt.id if apt else None,
                medium=body.medium.value,
                name=body.medium.value,
            )
            session.add(point)
            await session.flush()
    elif body.apartment is not None:
        raise HTTPException(422, detail="apartment: name the property too")
    if point is not None:
        if point.medium != body.medium.value:
            raise HTTPException(422, detail=f"medium: the meter point measures {point.medium}")
        busy = [m for m in await _point_meters(session, point.id) if m.removed_at is None]
        if busy:
            raise _conflict(
                f"meter_point: meter {busy[0].serial} is installed on it; replace it "
                f"(POST /api/meters/{busy[0].serial}/replace) or remove it first"
            )
        prop = prop or await session.get(Property, point.property_id)
    meter = Meter(
        serial=body.id,
        manufacturer=manufacturer,
        medium=body.medium.value,
        version=body.version,
        device_type=body.device_type,
        model=body.model,
        link=body.link,
        bus=body.bus,
        primary_address=body.primary_address,
        meter_point_id=point.id if point else None,
        installed_at=body.installed_at,
        key_encrypted=state.keybox.encrypt(body.key) if body.key else None,
    )
    session.add(meter)
    await session.flush()
    if body.installation_reading is not None:
        if body.installed_at is None:
            raise HTTPException(422, detail="installation_reading: give installed_at too")
        await _manual_reading(
            session, meter, body.installed_at, body.installation_reading, "installation_reading"
        )
    detail = body.model_dump(mode="json", exclude={"key"})
    _audit(
        session,
        who,
        "meter.create",
        "meter",
        f"{meter.serial}/{meter.manufacturer}",
        **detail,
        key="set" if body.key else "none",
    )
    if body.key:
        _audit(session, who, "key.set", "meter_key", f"{meter.serial}/{meter.manufacturer}")
    return meter, prop


async def _meter_view(session: AsyncSession, meter: Meter) -> dict[str, Any]:
    point = await session.get(MeterPoint, meter.meter_point_id) if meter.meter_point_id else None
    apt = await session.get(Apartment, point.apartment_id) if point and point.apartment_id else None
    prop = await session.get(Property, point.property_id) if point else None
    return meter_dict(meter, point, apt, prop)


@router.post("/meters", status_code=201, tags=["meters"])
async def create_meter(
    who: FieldWorker, state: StateDep, session: SessionDep, body: MeterIn
) -> dict[str, Any]:
    """Register a meter, on a meter point (``meter_point``) or in a property/apartment (a free point of
    its medium there is used, or a new one made). The key is stored encrypted and never returned."""
    meter, _prop = await _new_meter(session, state, who, body, None)
    await session.commit()
    return await _meter_view(session, meter)


@router.post("/meters/{serial}/replace", status_code=201, tags=["meters"])
async def replace_meter(
    *,
    who: Editor,
    state: StateDep,
    session: SessionDep,
    serial: str,
    body: Replacement,
    manufacturer: str | None = None,
) -> dict[str, Any]:
    """Replace a meter: the old one gets its removal date (and removal reading), the new one is
    installed on the same meter point from that instant (with its installation reading), so the point
    keeps its history and consumption runs old -> new across the change."""
    _aware("removed_at", body.removed_at)
    old = await _find_meter(session, who, serial, manufacturer)
    if old.removed_at is not None:
        raise _conflict(f"meter {serial} was removed already on {old.removed_at.isoformat()}")
    if old.meter_point_id is None:
        raise HTTPException(422, detail=f"meter {serial} is on no meter point; place it first")
    if old.installed_at is not None and body.removed_at <= old.installed_at:
        raise HTTPException(422, detail="removed_at: before the old meter's installation")
    if body.new.medium.value != old.medium:
        raise HTTPException(422, detail=f"new.medium: the meter point measures {old.medium}")
    if body.new.meter_point is not None or body.new.property is not None or body.new.apartment is not None:
        raise HTTPException(
            422, detail="new: the new meter takes the old one's meter point; leave the place out"
        )
    if body.new.installed_at is not None and body.new.installed_at != body.removed_at:
        raise HTTPException(422, detail="new.installed_at: leave it out; it is removed_at")
    point = await session.get(MeterPoint, old.meter_point_id)
    assert point is not None
    old.removed_at = body.removed_at
    if body.removal_reading is not None:
        await _manual_reading(session, old, body.removed_at, body.removal_reading, "removal_reading")
    _audit(
        session,
        who,
        "meter.remove",
        "meter",
        f"{old.serial}/{old.manufacturer}",
        removed_at=body.removed_at,
        removal_reading=body.removal_reading,
        replaced_by=body.new.id,
    )
    await session.flush()
    new_body = body.new.model_copy(update={"installed_at": body.removed_at})
    new, _prop = await _new_meter(session, state, who, new_body, point)
    await session.commit()
    return {"removed": await _meter_view(session, old), "installed": await _meter_view(session, new)}


@router.delete("/meters/{serial}", status_code=204, tags=["meters"])
async def delete_meter(
    who: Editor, session: SessionDep, serial: str, manufacturer: str | None = None
) -> Response:
    """Delete a meter registered by mistake. A meter with readings or frames is history: give it a
    removal date instead (409)."""
    meter = await _find_meter(session, who, serial, manufacturer)
    for model, column in ((Reading, Reading.meter_id), (RawFrame, RawFrame.meter_id)):
        if (
            await session.execute(select(func.count()).select_from(model).where(column == meter.id))
        ).scalar_one():
            raise _conflict(f"meter {serial} has readings or frames; set removed_at instead (PATCH)")
    from central.models import Fault

    if (
        await session.execute(select(func.count()).select_from(Fault).where(Fault.meter_id == meter.id))
    ).scalar_one():
        raise _conflict(f"meter {serial} has faults; set removed_at instead (PATCH)")
    await session.delete(meter)
    _audit(
        session,
        who,
        "meter.delete",
        "meter",
        f"{meter.serial}/{meter.manufacturer}",
        key="deleted" if meter.key_encrypted else "none",
    )
    await session.commit()
    return Response(status_code=204)


# -- collectors -------------------------------------------------------------------------------------


class CollectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    property: str | None = None


class CollectorChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    property: str | None = Field(description="property key; null: none")


async def _collector(session: AsyncSession, who: Principal, ident: str) -> Collector:
    collector = await session.get(Collector, ident)
    if collector is None:
        raise _not_found(f"collector {ident}")
    if not who.sees_all:
        if who.role != "board":
            raise _not_found(f"collector {ident}")
        carried = await session.execute(
            select(func.count())
            .select_from(RawFrame)
            .join(Meter, RawFrame.meter_id == Meter.id)
            .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
            .where(RawFrame.collector_id == ident, MeterPoint.property_id.in_(who.property_ids or {-1}))
        )
        if collector.property_id not in who.property_ids and not carried.scalar_one():
            raise _not_found(f"collector {ident}")
    return collector


@router.post("/collectors", status_code=201, tags=["collectors"])
async def create_collector(who: FieldWorker, session: SessionDep, body: CollectorIn) -> dict[str, Any]:
    if await session.get(Collector, body.id) is not None:
        raise _conflict(f"id: collector {body.id!r} exists already")
    prop = await _property(session, who, body.property) if body.property else None
    collector = Collector(id=body.id, property_id=prop.id if prop else None, state="unknown")
    session.add(collector)
    _audit(session, who, "collector.create", "collector", body.id, property=body.property)
    await session.commit()
    return collector_dict(collector, utcnow())


@router.get("/collectors/{ident}", tags=["collectors"])
async def get_collector(who: PrincipalDep, session: SessionDep, ident: str) -> dict[str, Any]:
    return collector_dict(await _collector(session, who, ident), utcnow())


@router.patch("/collectors/{ident}", tags=["collectors"])
async def change_collector(
    who: Editor, session: SessionDep, ident: str, body: CollectorChange
) -> dict[str, Any]:
    collector = await _collector(session, who, ident)
    prop = await _property(session, who, body.property) if body.property else None
    collector.property_id = prop.id if prop else None
    _audit(session, who, "collector.update", "collector", ident, property=body.property)
    await session.commit()
    return collector_dict(collector, utcnow())


@router.delete("/collectors/{ident}", status_code=204, tags=["collectors"])
async def delete_collector(who: Editor, session: SessionDep, ident: str) -> Response:
    collector = await _collector(session, who, ident)
    from central.models import CommandRecord, Fault

    for model, column, what in (
        (RawFrame, RawFrame.collector_id, "frames; they are kept forever"),
        (Fault, Fault.collector_id, "faults"),
        (CommandRecord, CommandRecord.collector_id, "commands"),
    ):
        if (
            await session.execute(select(func.count()).select_from(model).where(column == ident))
        ).scalar_one():
            raise _conflict(f"collector {ident} has {what}")
    await session.delete(collector)
    _audit(session, who, "collector.delete", "collector", ident)
    await session.commit()
    return Response(status_code=204)


__all__ = ["MANUAL_REGISTER", "router"]
