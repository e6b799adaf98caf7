"""REST endpoints under ``/api``. Lists are JSON arrays; the total count is in ``X-Total-Count``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import func, select, text

from central.api.deps import PrincipalDep, SessionDep, StateDep, require_roles
from central.auth import LoginThrottledError, Principal, authenticate_throttled, issue_token, login_throttle
from central.models import RejectedMessage, utcnow
from central.queries import (
    find_meter,
    list_apartments,
    list_collectors,
    list_frames,
    list_meters,
    list_properties,
    meter_dict,
    meter_readings,
    value_dict,
)

router = APIRouter(prefix="/api")

Limit = Annotated[int, Query(ge=1, le=10_000, description="page size")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]


def _paged(response: Response, total: int, limit: int, offset: int) -> None:
    response.headers["X-Total-Count"] = str(total)
    response.headers["X-Limit"] = str(limit)
    response.headers["X-Offset"] = str(offset)


@router.get("/health", tags=["system"])
async def health(state: StateDep, session: SessionDep) -> dict[str, Any]:
    """Liveness: database reachable, ingest connected. Needs no login."""
    await session.execute(text("SELECT 1"))
    ingest = state.ingest
    return {
        "status": "ok",
        "database": "sqlite" if state.db.is_sqlite else "postgresql",
        "demo": state.settings.demo,
        "ingest": None
        if ingest is None
        else {
            "connected": ingest.connected.is_set(),
            "subscribed": ingest.subscribed.is_set(),
            "acknowledged": ingest.acked,
            **{k: getattr(state.processor.stats, k) for k in state.processor.stats.__slots__},
        },
    }


@router.post("/auth/token", tags=["auth"])
async def token(
    request: Request, state: StateDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> dict[str, Any]:
    """OAuth2 password flow: form fields ``username`` and ``password``. Repeated failures per
    username or client address answer 429 with ``Retry-After`` (``central.auth.LoginThrottle``)."""
    address = request.client.host if request.client else None
    try:
        user = await authenticate_throttled(
            state.db, login_throttle(state.extras), form.username, form.password, address
        )
    except LoginThrottledError as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="wrong username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    minutes = state.settings.token_minutes
    return {
        "access_token": issue_token(state.token_secret, user.username, minutes),
        "token_type": "bearer",
        "expires_in": minutes * 60,
    }


@router.get("/me", tags=["auth"])
async def me(who: PrincipalDep) -> dict[str, Any]:
    return {"username": who.username, "role": who.role}


@router.get("/meters", tags=["meters"])
async def meters(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    property: Annotated[str | None, Query(description="property id")] = None,
    medium: str | None = None,
    apartment: Annotated[str | None, Query(description="apartment object number")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    after: Annotated[
        int | None, Query(ge=0, description="keyset paging: the last `ref` of the previous page")
    ] = None,
) -> list[dict[str, Any]]:
    """Meters with their apartment, last reading time and latest register values (exact, as text),
    in `ref` order, 50 a page by default. Page with `offset`, or - cheaper on deep pages - with
    `after` set to the last `ref` received (`X-Next-After` gives it)."""
    items, total = await list_meters(
        session,
        who,
        property_key=property,
        medium=medium,
        apartment=apartment,
        limit=limit,
        offset=offset,
        after=after,
    )
    _paged(response, total, limit, offset)
    if len(items) == limit:
        response.headers["X-Next-After"] = str(items[-1]["ref"])
    return items


async def _one_meter(session: Any, who: Principal, serial: str, manufacturer: str | None) -> Any:
    if not serial.isdigit() or len(serial) > 16:
        raise HTTPException(422, detail="meter id: digits only (8 digits)")
    rows = await find_meter(session, who, serial, manufacturer)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no meter {serial} visible to you")
    if len(rows) > 1:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"meter id {serial} exists for several manufacturers; add ?manufacturer=",
        )
    return rows[0]


@router.get("/meters/{meter_id}", tags=["meters"])
async def meter_detail(
    *,
    who: PrincipalDep,
    session: SessionDep,
    meter_id: str,
    manufacturer: str | None = None,
    readings_limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
) -> dict[str, Any]:
    """One meter with its most recent readings."""
    meter, point, apt, prop = await _one_meter(session, who, meter_id, manufacturer)
    item = meter_dict(meter, point, apt, prop)
    readings, total = await meter_readings(session, meter.id, limit=readings_limit)
    item["readings"] = [value_dict(r) for r in readings]
    item["readings_total"] = total
    return item


@router.get("/meters/{meter_id}/readings", tags=["meters"])
async def meter_readings_endpoint(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    meter_id: str,
    manufacturer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    quantity: str | None = None,
    limit: Limit = 500,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, detail=f"{name}: give a time zone (e.g. Z)")
    meter = (await _one_meter(session, who, meter_id, manufacturer))[0]
    readings, total = await meter_readings(
        session, meter.id, since=since, until=until, quantity=quantity, limit=limit, offset=offset
    )
    _paged(response, total, limit, offset)
    return [value_dict(r) for r in readings]


@router.get("/meters/{meter_id}/frames", tags=["meters"])
async def meter_frames(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    meter_id: str,
    manufacturer: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    meter = (await _one_meter(session, who, meter_id, manufacturer))[0]
    items, total = await list_frames(session, who, meter_id=meter.id, limit=limit, offset=offset)
    _paged(response, total, limit, offset)
    return items


FRAME_STATUSES = ("ok", "failed", "no_answer")


@router.get("/frames", tags=["frames"])
async def frames(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    collector: str | None = None,
    status_: Annotated[str | None, Query(alias="status", description="ok, failed or no_answer")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Raw frames as received (hex), newest first, with the reason when decoding failed."""
    if status_ is not None and status_ not in FRAME_STATUSES:
        raise HTTPException(422, detail=f"status: one of {', '.join(FRAME_STATUSES)}")
    items, total = await list_frames(
        session, who, collector=collector, status=status_, limit=limit, offset=offset
    )
    _paged(response, total, limit, offset)
    return items


@router.get("/collectors", tags=["collectors"])
async def collectors(who: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return await list_collectors(session, who, utcnow())


@router.get("/properties", tags=["properties"])
async def properties(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    q: Annotated[str | None, Query(description="part of the key, name or address")] = None,
    city: str | None = None,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The properties visible to you with their buildings, filtered and paginated."""
    items = await list_properties(session, who)
    if q:
        needle = q.casefold()
        items = [p for p in items if any(needle in str(p[k]).casefold() for k in ("id", "name", "address"))]
    if city:
        items = [p for p in items if str(p["city"]).casefold() == city.casefold()]
    _paged(response, len(items), limit, offset)
    return items[offset : offset + limit]


@router.get("/properties/{property_id}/apartments", tags=["properties"])
async def apartments(
    *,
    who: PrincipalDep,
    session: SessionDep,
    response: Response,
    property_id: str,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    result = await list_apartments(session, who, property_id, limit=limit, offset=offset)
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no property {property_id} visible to you")
    items, total = result
    _paged(response, total, limit, offset)
    return items


@router.get("/rejected-messages", tags=["frames"])
async def rejected_messages(
    *,
    who: Annotated[Principal, Depends(require_roles("admin", "staff", "technician"))],
    session: SessionDep,
    response: Response,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """MQTT messages ingest could not parse, with the reason (payload shown as hex, first 1 KiB)."""
    total = (await session.execute(select(func.count()).select_from(RejectedMessage))).scalar_one()
    rows = await session.execute(
        select(RejectedMessage).order_by(RejectedMessage.id.desc()).limit(limit).offset(offset)
    )
    _paged(response, total, limit, offset)
    return [
        {
            "id": r.id,
            "received_at": r.received_at,
            "topic": r.topic,
            "reason": r.reason,
            "payload": r.payload[:1024].hex(),
        }
        for r in rows.scalars()
    ]


# The installation register's CRUD and consumption per period (central.api.registry) share the /api
# prefix; including it here keeps app.py's list of routers as it is.
from central.api.registry import router as _registry_router  # noqa: E402

router.include_router(_registry_router)
