"""Faults and the check registry: list, detail with history, acknowledge/resolve/reopen, comment, assign."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import case, func, select

from central.api.deps import PrincipalDep, SessionDep, require_roles
from central.auth import Principal
from central.checks import REGISTRY
from central.faults import SEVERITIES, TRANSITIONS, FaultTransitionError, assign, comment, transition
from central.models import Fault, FaultEvent, Meter, MeterPoint, utcnow
from central.queries import scope_meters

router = APIRouter(prefix="/api", tags=["faults"])

FAULT_STATES = ("open", "acknowledged", "resolved")
Worker = Annotated[Principal, Depends(require_roles("admin", "staff", "technician"))]


class FaultAction(BaseModel):
    text: str = Field(default="", max_length=2000)


class FaultComment(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class FaultAssignee(BaseModel):
    assignee: str | None = Field(default=None, max_length=64)


def _base(who: Principal) -> Any:
    query = (
        select(Fault, Meter)
        .outerjoin(Meter, Fault.meter_id == Meter.id)
        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
    )
    if who.sees_all:
        return query
    # Collector faults and unassigned meters belong to the global roles.
    return scope_meters(query.where(Fault.meter_id.is_not(None)), who)


def open_faults(who: Principal) -> Any:
    """Unresolved faults visible to ``who``, worst and newest first."""
    severity_rank = case({"critical": 0, "warning": 1}, value=Fault.severity, else_=2)
    return (
        _base(who)
        .where(Fault.state.in_(("open", "acknowledged")))
        .order_by(severity_rank, Fault.last_seen_at.desc(), Fault.id.desc())
    )


def fault_dict(f: Fault, meter: Meter | None) -> dict[str, Any]:
    return {
        "id": f.id,
        "rule": f.rule,
        "state": f.state,
        "severity": f.severity,
        "message": f.message,
        "meter": meter.serial if meter else None,
        "meter_manufacturer": meter.manufacturer if meter else None,
        "collector": f.collector_id,
        "first_seen_at": f.first_seen_at,
        "last_seen_at": f.last_seen_at,
        "count": f.count,
        "assignee": f.assignee,
        "acknowledged_at": f.acknowledged_at,
        "resolved_at": f.resolved_at,
        "blocks_billing": f.blocks_billing,
        "evidence": json.loads(f.evidence) if f.evidence else None,
    }


@router.get("/checks")
async def checks(who: PrincipalDep) -> list[dict[str, Any]]:
    """The meter-function checks: name, description, default severity and parameters."""
    from central.checks import rules as _builtin  # noqa: F401 - registers the rules

    return [r.describe() for r in REGISTRY.values()]


@router.get("/faults")
async def faults(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    state: Annotated[
        str | None, Query(description="open, acknowledged, resolved or unresolved")
    ] = "unresolved",
    rule: str | None = None,
    severity: str | None = None,
    meter: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    query = _base(who)
    if state == "unresolved":
        query = query.where(Fault.state.in_(("open", "acknowledged")))
    elif state is not None and state != "all":
        if state not in FAULT_STATES:
            raise HTTPException(422, detail=f"state: one of {', '.join(FAULT_STATES)}, unresolved or all")
        query = query.where(Fault.state == state)
    if rule is not None:
        query = query.where(Fault.rule == rule)
    if severity is not None:
        if severity not in SEVERITIES:
            raise HTTPException(422, detail=f"severity: one of {', '.join(SEVERITIES)}")
        query = query.where(Fault.severity == severity)
    if meter is not None:
        query = query.where(Meter.serial == meter)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(
        query.order_by(Fault.last_seen_at.desc(), Fault.id.desc()).limit(limit).offset(offset)
    )
    response.headers["X-Total-Count"] = str(total)
    return [fault_dict(f, m) for f, m in rows.all()]


async def _visible(session: Any, who: Principal, fault_id: int) -> tuple[Fault, Meter | None]:
    row = (await session.execute(_base(who).where(Fault.id == fault_id))).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no fault {fault_id} visible to you")
    return row[0], row[1]


async def _detail(session: Any, fault: Fault, meter: Meter | None) -> dict[str, Any]:
    events = await session.execute(
        select(FaultEvent).where(FaultEvent.fault_id == fault.id).order_by(FaultEvent.id)
    )
    item = fault_dict(fault, meter)
    item["history"] = [
        {"at": e.at, "actor": e.actor, "kind": e.kind, "text": e.text} for e in events.scalars()
    ]
    return item


@router.get("/faults/{fault_id}")
async def fault_detail(*, who: PrincipalDep, session: SessionDep, fault_id: int) -> dict[str, Any]:
    fault, meter = await _visible(session, who, fault_id)
    return await _detail(session, fault, meter)


@router.post("/faults/{fault_id}/comments")
async def fault_comment(
    *, who: Worker, session: SessionDep, fault_id: int, body: FaultComment
) -> dict[str, Any]:
    fault, meter = await _visible(session, who, fault_id)
    await comment(session, fault, actor=who.username, at=utcnow(), text=body.text)
    await session.commit()
    return await _detail(session, fault, meter)


@router.post("/faults/{fault_id}/{action}")
async def fault_action(
    *, who: Worker, session: SessionDep, fault_id: int, action: str, body: FaultAction | None = None
) -> dict[str, Any]:
    """``acknowledge``, ``resolve`` or ``reopen`` a fault (optional text for the history)."""
    if action not in TRANSITIONS:
        raise HTTPException(404, detail=f"action: one of {', '.join(TRANSITIONS)}")
    fault, meter = await _visible(session, who, fault_id)
    try:
        await transition(
            session, fault, action, actor=who.username, at=utcnow(), text=body.text if body else ""
        )
    except FaultTransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    await session.commit()
    return await _detail(session, fault, meter)


@router.put("/faults/{fault_id}/assignee")
async def fault_assignee(
    *, who: Worker, session: SessionDep, fault_id: int, body: FaultAssignee
) -> dict[str, Any]:
    fault, meter = await _visible(session, who, fault_id)
    await assign(session, fault, actor=who.username, at=utcnow(), assignee=body.assignee)
    await session.commit()
    return await _detail(session, fault, meter)
