"""Changing meters (installation/removal dates, apartment, key) and reading consumption; the audit log.

A replacement is two changes: the old meter gets ``removed_at``, the new one is placed in the same
apartment and takes over the free meter point of that medium, so the point keeps its history.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from central.api.deps import PrincipalDep, SessionDep, StateDep, require_roles
from central.api.routes import _one_meter
from central.auth import Principal
from central.consumption import consumption
from central.models import Apartment, AuditLog, Meter, MeterPoint, Property, utcnow
from central.queries import meter_dict

router = APIRouter(prefix="/api", tags=["meters"])
Editor = Annotated[Principal, Depends(require_roles("admin", "staff"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]


class MeterChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    installed_at: datetime | None = None
    removed_at: datetime | None = None
    apartment: str | None = Field(default=None, description="object number; empty string: no apartment")
    key: str | None = Field(
        default=None, pattern=r"^([0-9A-Fa-f]{32})?$", description="32 hex digits; '' clears"
    )
    model: str | None = Field(default=None, max_length=100)


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, detail=f"{name}: give a time zone (e.g. Z)")


@router.patch("/meters/{meter_id}")
async def change_meter(
    *,
    who: Editor,
    state: StateDep,
    session: SessionDep,
    meter_id: str,
    body: MeterChange,
    manufacturer: str | None = None,
) -> dict[str, Any]:
    meter, point, _apt, prop = await _one_meter(session, who, meter_id, manufacturer)
    changes = body.model_dump(exclude_unset=True)
    _aware("installed_at", body.installed_at)
    _aware("removed_at", body.removed_at)
    audit: dict[str, Any] = {}
    for name in ("installed_at", "removed_at", "model"):
        if name in changes and getattr(meter, name) != changes[name]:
            setattr(meter, name, changes[name])
            audit[name] = changes[name]
    if meter.installed_at and meter.removed_at and meter.removed_at < meter.installed_at:
        raise HTTPException(422, detail="removed_at: before installed_at")
    if "apartment" in changes:
        target = changes["apartment"] or None
        if prop is None and target is not None:
            raise HTTPException(
                422, detail="apartment: the meter belongs to no property yet; import it with one"
            )
        if target is None:
            meter.meter_point_id = None
        else:
            assert prop is not None
            apt = (
                await session.execute(
                    select(Apartment).where(
                        Apartment.property_id == prop.id, Apartment.object_number == target
                    )
                )
            ).scalar_one_or_none()
            if apt is None:
                raise HTTPException(422, detail=f"apartment: no apartment {target!r} in {prop.key}")
            meter.meter_point_id = await _free_point(session, prop, apt, meter)
        audit["apartment"] = target
    if "key" in changes:
        if changes["key"]:
            meter.key_encrypted = state.keybox.encrypt(changes["key"])
            audit["key"] = "set"
        else:
            meter.key_encrypted = None
            audit["key"] = "cleared"
    if audit:
        session.add(
            AuditLog(
                at=utcnow(),
                actor=who.username,
                action="meter.update",
                entity="meter",
                entity_id=f"{meter.serial}/{meter.manufacturer}",
                detail=json.dumps(audit, default=str),
            )
        )
    await session.commit()
    point = await session.get(MeterPoint, meter.meter_point_id) if meter.meter_point_id else None
    apt = await session.get(Apartment, point.apartment_id) if point and point.apartment_id else None
    return meter_dict(meter, point, apt, prop)


async def _free_point(session: Any, prop: Property, apt: Apartment, meter: Meter) -> int:
    """The apartment's point for the meter's medium without another installed meter; new if none."""
    points = (
        await session.execute(
            select(MeterPoint).where(MeterPoint.apartment_id == apt.id, MeterPoint.medium == meter.medium)
        )
    ).scalars()
    for point in points:
        if point.id == meter.meter_point_id:
            return int(point.id)
        busy = await session.execute(
            select(func.count())
            .select_from(Meter)
            .where(Meter.meter_point_id == point.id, Meter.removed_at.is_(None), Meter.id != meter.id)
        )
        if busy.scalar_one() == 0:
            return int(point.id)
    point = MeterPoint(property_id=prop.id, apartment_id=apt.id, medium=meter.medium, name=meter.medium)
    session.add(point)
    await session.flush()
    return int(point.id)


@router.get("/meters/{meter_id}/consumption")
async def meter_consumption(
    *,
    who: PrincipalDep,
    session: SessionDep,
    meter_id: str,
    start: datetime,
    end: datetime,
    manufacturer: str | None = None,
    max_gap_days: Annotated[float, Query(gt=0, le=366)] = 45.0,
) -> dict[str, Any]:
    """Consumption of the billing register between two instants. Register values at the boundaries
    are measured or linearly interpolated between the nearest readings (flagged with the method);
    a boundary without readings on both sides within ``max_gap_days`` gives ``null``."""
    _aware("start", start)
    _aware("end", end)
    if end <= start:
        raise HTTPException(422, detail="end: must be after start")
    meter = (await _one_meter(session, who, meter_id, manufacturer))[0]
    return await consumption(session, meter, start, end, max_gap_days=max_gap_days)


@router.get("/audit", tags=["system"])
async def audit_log(
    *,
    who: Admin,
    session: SessionDep,
    response: Response,
    entity: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Changes to meters, keys, faults, users and imports (admin only). Never contains key material."""
    query = select(AuditLog)
    if entity is not None:
        query = query.where(AuditLog.entity == entity)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset))
    response.headers["X-Total-Count"] = str(total)
    return [
        {
            "at": a.at,
            "actor": a.actor,
            "action": a.action,
            "entity": a.entity,
            "entity_id": a.entity_id,
            "detail": json.loads(a.detail) if a.detail.startswith("{") else a.detail,
        }
        for a in rows.scalars()
    ]
