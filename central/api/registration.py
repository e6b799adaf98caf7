"""``POST /api/collectors/{id}/registration``: the technician registers a collector and its meter
mapping in one database transaction (issue 10, point 3).

All or nothing: every row of the body is checked before anything is written, the writes happen in
one session that is committed once at the end, and any refusal (422, with a reason per row) or
conflict (409: the collector or a meter belongs to another property) leaves the database exactly as
it was. Idempotent: the same body twice creates and changes nothing the second time (and writes no
audit row). Keys are encrypted with the meter-key file before they reach the database and are never
returned, logged or audited; the answer counts them.

The property, its buildings and apartments must exist already (the property manager's register,
imported or entered by staff); the technician's body only names apartments by object number.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from central.api.deps import SessionDep, StateDep, require_roles
from central.auth import Principal
from central.embedded_broker import COLLECTOR_PREFIX
from central.models import Apartment, AuditLog, Collector, Meter, MeterPoint, Property, Reading, utcnow
from protocols.messages import COLLECTOR_ID_RE, TOPIC_ROOT
from protocols.site import Medium

router = APIRouter(prefix="/api")
# Field work: the technician on site, and the admin standing in. Staff edit the register through
# the CRUD endpoints; board members and residents never register anything.
Registrar = Annotated[Principal, Depends(require_roles("admin", "technician"))]
MAX_METERS = 5000


class MqttAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128)
    password_hash: str | None = Field(default=None, max_length=512, repr=False)
    acl: str | None = Field(default=None, max_length=4096)


class CollectorRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    mqtt: MqttAccount | None = None


class MeterRegistration(BaseModel):
    """One row; validated row by row so that a bad row is refused with its own reason."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[0-9]{8}$")
    manufacturer: str = Field(pattern=r"^[A-Za-z@]{3}$")
    version: int | None = Field(default=None, ge=0, le=255)
    device_type: int | None = Field(default=None, ge=0, le=255)
    medium: Medium
    link: Literal["mbus", "wmbus"] = "mbus"
    bus: str | None = Field(default=None, max_length=64)
    primary_address: int | None = Field(default=None, ge=0, le=250)
    secondary_address: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{16}$")
    apartment: str | None = Field(default=None, max_length=64, description="object number; none: main")
    meter_point: str | None = Field(default=None, max_length=100)
    model: str = Field(default="", max_length=100)
    key: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{32}$", repr=False)

    @property
    def point_name(self) -> str:
        if self.meter_point:
            return self.meter_point
        return self.medium.value if self.apartment else f"main {self.medium.value}"


class RegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    property: str = Field(min_length=1, max_length=64)
    collector: CollectorRegistration
    # Rows stay raw here: their errors become per-row reasons, not one opaque 422.
    meters: list[dict[str, Any]] = Field(max_length=MAX_METERS)


@dataclass(slots=True)
class RegistrationReport:
    collector: str
    property_key: str
    collector_created: bool = False
    collector_updated: bool = False
    meters_created: int = 0
    meters_updated: int = 0
    meter_points_created: int = 0
    keys_set: int = 0

    @property
    def changed(self) -> bool:
        return bool(
            self.collector_created
            or self.collector_updated
            or self.meters_created
            or self.meters_updated
            or self.meter_points_created
            or self.keys_set
        )


def _row_label(raw: Any, index: int) -> str:
    ident = raw.get("id") if isinstance(raw, dict) else None
    return ident if isinstance(ident, str) and len(ident) <= 16 else f"row {index + 1}"


def _validation_reason(exc: ValidationError) -> str:
    # Only location and message: pydantic's own text would echo the input, and the input may be a key.
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors())


def _check_mqtt(collector_id: str, account: MqttAccount) -> list[str]:
    reasons = []
    expected = f"{COLLECTOR_PREFIX}{collector_id}"
    if account.username != expected:
        reasons.append(f"mqtt.username: must be {expected!r}")
    base = f"{TOPIC_ROOT}/{collector_id}/"
    for line in (account.acl or "").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and words[1:] != [expected]:
            reasons.append(f"mqtt.acl: 'user' line must name {expected!r}")
        elif words[0] in ("topic", "pattern"):
            pattern = words[-1]
            if not pattern.startswith(base) or "#" in pattern or "+" in pattern:
                reasons.append(f"mqtt.acl: topic {pattern!r} is outside {base}")
            elif pattern == f"{base}receipt" and words[1:-1] != ["read"]:
                reasons.append(f"mqtt.acl: {pattern!r} may only be read (only central writes receipts)")
        elif words[0] != "user":
            reasons.append(f"mqtt.acl: unexpected line {words[0]!r}")
    return reasons


@dataclass(slots=True)
class _Plan:
    row: MeterRegistration
    meter: Meter | None
    apartment: Apartment | None
    point: MeterPoint | None  # an existing point; None: create one


async def _plan(
    session: AsyncSession, prop: Property, collector_id: str, body: RegistrationIn
) -> tuple[list[_Plan], list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every row against the database, write nothing: (plans, refused rows, conflicts)."""
    refused: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    if body.collector.id != collector_id:
        refused.append(
            {"collector": body.collector.id, "reason": f"collector.id: the path names {collector_id}"}
        )
    if body.collector.mqtt is not None:
        refused += [
            {"collector": collector_id, "reason": r} for r in _check_mqtt(collector_id, body.collector.mqtt)
        ]
    collector = await session.get(Collector, collector_id)
    if collector is not None and collector.property_id not in (None, prop.id):
        conflicts.append(
            {"collector": collector_id, "reason": "the collector is registered to another property"}
        )

    rows: list[MeterRegistration] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(body.meters):
        try:
            row = MeterRegistration.model_validate(raw)
        except ValidationError as exc:
            refused.append({"meter": _row_label(raw, index), "reason": _validation_reason(exc)})
            continue
        row = row.model_copy(update={"manufacturer": row.manufacturer.upper()})
        if (row.id, row.manufacturer) in seen:
            refused.append({"meter": row.id, "reason": "listed twice"})
            continue
        seen.add((row.id, row.manufacturer))
        rows.append(row)

    apartments = {
        a.object_number: a
        for a in (await session.execute(select(Apartment).where(Apartment.property_id == prop.id))).scalars()
    }
    points = list(
        (await session.execute(select(MeterPoint).where(MeterPoint.property_id == prop.id))).scalars()
    )
    by_name = {(p.apartment_id, p.name): p for p in points}
    existing = {
        (m.serial, m.manufacturer): m
        for m in (
            await session.execute(select(Meter).where(Meter.serial.in_([r.id for r in rows] or ["-"])))
        ).scalars()
    }
    foreign_points = {
        p.id: p
        for p in (
            await session.execute(
                select(MeterPoint).where(
                    MeterPoint.id.in_(
                        [m.meter_point_id for m in existing.values() if m.meter_point_id] or [-1]
                    )
                )
            )
        ).scalars()
    }
    on_points: dict[int, list[Meter]] = {}
    for m in (
        await session.execute(
            select(Meter).where(
                Meter.meter_point_id.in_([p.id for p in points] or [-1]), Meter.removed_at.is_(None)
            )
        )
    ).scalars():
        assert m.meter_point_id is not None
        on_points.setdefault(m.meter_point_id, []).append(m)

    plans: list[_Plan] = []
    claimed: dict[tuple[int | None, str], str] = {}
    for row in rows:
        apartment = None
        if row.apartment is not None:
            apartment = apartments.get(row.apartment)
            if apartment is None:
                refused.append({"meter": row.id, "reason": f"apartment {row.apartment} is not in {prop.key}"})
                continue
        meter = existing.get((row.id, row.manufacturer))
        current = foreign_points.get(meter.meter_point_id) if meter and meter.meter_point_id else None
        if current is not None and current.property_id != prop.id:
            conflicts.append({"meter": row.id, "reason": "the meter belongs to another property"})
            continue
        if meter is not None and meter.removed_at is not None:
            refused.append(
                {"meter": row.id, "reason": f"meter was removed on {meter.removed_at.isoformat()}"}
            )
            continue
        place = (apartment.id if apartment else None, row.point_name)
        where = f"meter point {row.point_name!r} of {row.apartment or 'the property (main)'}"
        if place in claimed:
            refused.append({"meter": row.id, "reason": f"{where} is given to meter {claimed[place]} too"})
            continue
        claimed[place] = row.id
        point = by_name.get(place)
        if point is not None and point.medium != row.medium.value:
            refused.append(
                {"meter": row.id, "reason": f"{where} measures {point.medium}, not {row.medium.value}"}
            )
            continue
        if point is not None:
            busy = [m for m in on_points.get(point.id, []) if meter is None or m.id != meter.id]
            if busy:
                refused.append(
                    {
                        "meter": row.id,
                        "reason": f"{where} carries meter {busy[0].serial}; replace it "
                        f"(POST /api/meters/{busy[0].serial}/replace) or name another meter point",
                    }
                )
                continue
        if meter is not None and current is not None and (point is None or point.id != current.id):
            has_readings = (
                await session.execute(
                    select(func.count()).select_from(Reading).where(Reading.meter_id == meter.id)
                )
            ).scalar_one()
            if has_readings:
                refused.append(
                    {
                        "meter": row.id,
                        "reason": "the meter has readings on another meter point; moving it would move "
                        "its history (replace it instead)",
                    }
                )
                continue
        plans.append(_Plan(row, meter, apartment, point))
    return plans, refused, conflicts


def _assign(obj: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed


@router.post(
    "/collectors/{collector_id}/registration",
    status_code=201,
    tags=["collectors"],
    responses={
        404: {"description": "unknown property"},
        409: {"description": "the collector or a meter belongs to another property; nothing changed"},
        422: {"description": "refused rows, with a reason per row; nothing changed"},
    },
)
async def register_collector(
    who: Registrar,
    state: StateDep,
    session: SessionDep,
    collector_id: str,
    body: Annotated[RegistrationIn, Body()],
) -> JSONResponse:
    """Register a collector and its meters (with keys, meter points and apartments) in one
    transaction: all or nothing, idempotent. Keys are stored encrypted and never returned."""
    prop = (await session.execute(select(Property).where(Property.key == body.property))).scalar_one_or_none()
    if prop is None or not (who.sees_all or prop.id in who.property_ids):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no property {body.property} visible to you")
    plans, refused, conflicts = await _plan(session, prop, collector_id, body)
    if conflicts:
        raise HTTPException(status.HTTP_409_CONFLICT, detail={"refused": conflicts + refused})
    if refused:
        raise HTTPException(422, detail={"refused": refused})

    report = RegistrationReport(collector_id, prop.key)
    now = utcnow()
    try:
        collector = await session.get(Collector, collector_id)
        if collector is None:
            session.add(Collector(id=collector_id, property_id=prop.id, state="unknown"))
            report.collector_created = True
        elif collector.property_id != prop.id:
            collector.property_id = prop.id
            report.collector_updated = True
        keys_set: list[str] = []
        new_points = {
            id(plan): MeterPoint(
                property_id=prop.id,
                apartment_id=plan.apartment.id if plan.apartment else None,
                medium=plan.row.medium.value,
                name=plan.row.point_name,
            )
            for plan in plans
            if plan.point is None
        }
        session.add_all(new_points.values())
        await session.flush()  # one round for all new points' ids
        report.meter_points_created = len(new_points)
        for plan in plans:
            row = plan.row
            point = plan.point or new_points[id(plan)]
            values: dict[str, Any] = {
                "medium": row.medium.value,
                "link": row.link,
                "meter_point_id": point.id,
                "auto_registered": False,
            }
            # What the technician did not survey stays as central knows it.
            for name in ("version", "device_type", "bus", "primary_address"):
                if getattr(row, name) is not None:
                    values[name] = getattr(row, name)
            if row.model:
                values["model"] = row.model
            meter = plan.meter
            if meter is None:
                meter = Meter(serial=row.id, manufacturer=row.manufacturer, installed_at=now, **values)
                session.add(meter)
                report.meters_created += 1
            else:
                changed = _assign(meter, values)
                if meter.installed_at is None:
                    meter.installed_at = now
                    changed = True
                report.meters_updated += changed
            if row.key is not None:
                current = state.keybox.decrypt(meter.key_encrypted) if meter.key_encrypted else None
                if current != bytes.fromhex(row.key):
                    meter.key_encrypted = state.keybox.encrypt(row.key)
                    keys_set.append(f"{row.id}/{row.manufacturer}")
        report.keys_set = len(keys_set)
        if report.changed:
            detail = {k: v for k, v in asdict(report).items() if k not in ("collector", "property_key")}
            detail["property"] = prop.key
            detail["mqtt_account"] = body.collector.mqtt.username if body.collector.mqtt else None
            session.add(
                AuditLog(
                    at=now,
                    actor=who.username,
                    action="collector.registration",
                    entity="collector",
                    entity_id=collector_id,
                    detail=json.dumps(detail),
                )
            )
            session.add_all(
                AuditLog(at=now, actor=who.username, action="key.set", entity="meter_key", entity_id=ident)
                for ident in keys_set
            )
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={"refused": [{"collector": collector_id, "reason": "changed concurrently; run again"}]},
        ) from None
    answer = {
        "collector": collector_id,
        "property": prop.key,
        "collector_created": report.collector_created,
        "meters_created": report.meters_created,
        "meters_updated": report.meters_updated,
        "meter_points_created": report.meter_points_created,
        "keys_set": report.keys_set,
        "changed": report.changed,
    }
    return JSONResponse(answer, status_code=201)


__all__ = ["RegistrationIn", "router"]
