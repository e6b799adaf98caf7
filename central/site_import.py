"""Import a site export (``protocols.site.SiteExport``) idempotently: importing twice changes nothing.

Property, buildings and apartments are matched by their external keys, meters by (id, manufacturer).
A meter gets a meter point for its apartment and medium; a second meter of the same medium in the
same apartment gets its own point. Keys are encrypted with the meter-key file before they touch
the database, and never logged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from central.db import Database
from central.keys import MeterKeyBox
from central.models import Apartment, AuditLog, Building, Meter, MeterPoint, Property, utcnow
from protocols.site import SiteExport, parse_site


@dataclass(slots=True)
class ImportReport:
    property: str
    buildings_created: int = 0
    apartments_created: int = 0
    apartments_updated: int = 0
    meter_points_created: int = 0
    meters_created: int = 0
    meters_updated: int = 0
    keys_set: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _assign(obj: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed


async def import_site(
    db: Database, site: SiteExport, keybox: MeterKeyBox | None, *, actor: str | None = None
) -> ImportReport:
    report = ImportReport(site.property.id)
    now = utcnow()
    async with db.sessions.begin() as session:
        prop = (
            await session.execute(select(Property).where(Property.key == site.property.id))
        ).scalar_one_or_none()
        if prop is None:
            prop = Property(key=site.property.id, name=site.property.name)
            session.add(prop)
        _assign(
            prop, {"name": site.property.name, "address": site.property.address, "city": site.property.city}
        )
        await session.flush()

        buildings: dict[str, Building] = {
            b.key: b
            for b in (
                await session.execute(select(Building).where(Building.property_id == prop.id))
            ).scalars()
        }
        for sb in site.buildings:
            building = buildings.get(sb.id)
            if building is None:
                building = Building(property_id=prop.id, key=sb.id, name=sb.name, address=sb.address)
                session.add(building)
                buildings[sb.id] = building
                report.buildings_created += 1
            _assign(building, {"name": sb.name, "address": sb.address})
        await session.flush()

        apartments: dict[str, Apartment] = {
            a.object_number: a
            for a in (
                await session.execute(select(Apartment).where(Apartment.property_id == prop.id))
            ).scalars()
        }
        for sa in site.apartments:
            values = {
                "building_id": buildings[sa.building].id,
                "number": sa.number,
                "area_m2": sa.area_m2,
                "share": sa.share,
                "address": sa.address,
                "tenant_ref": sa.tenant_ref,
            }
            apartment = apartments.get(sa.object_number)
            if apartment is None:
                apartment = Apartment(property_id=prop.id, object_number=sa.object_number, **values)
                session.add(apartment)
                apartments[sa.object_number] = apartment
                report.apartments_created += 1
            elif _assign(apartment, values):
                report.apartments_updated += 1
        await session.flush()

        points = list(
            (await session.execute(select(MeterPoint).where(MeterPoint.property_id == prop.id))).scalars()
        )
        existing = {
            (m.serial, m.manufacturer): m
            for m in (
                await session.execute(select(Meter).where(Meter.serial.in_([sm.id for sm in site.meters])))
            ).scalars()
        }
        used_points = {m.meter_point_id for m in existing.values() if m.meter_point_id is not None}
        for sm in site.meters:
            apartment_id = apartments[sm.apartment].id if sm.apartment else None
            meter = existing.get((sm.id, sm.manufacturer))
            point = next(
                (
                    p
                    for p in points
                    if meter is not None
                    and p.id == meter.meter_point_id
                    and p.apartment_id == apartment_id
                    and p.medium == sm.medium.value
                ),
                None,
            )
            if point is None:
                point = next(
                    (
                        p
                        for p in points
                        if p.apartment_id == apartment_id
                        and p.medium == sm.medium.value
                        and p.id not in used_points
                        and apartment_id is not None
                    ),
                    None,
                )
            if point is None:
                name = sm.medium.value if apartment_id is not None else f"{sm.medium.value} main {sm.id}"
                point = MeterPoint(
                    property_id=prop.id, apartment_id=apartment_id, medium=sm.medium.value, name=name
                )
                session.add(point)
                await session.flush()
                points.append(point)
                report.meter_points_created += 1
            used_points.add(point.id)
            values = {
                "version": sm.version,
                "device_type": sm.device_type,
                "medium": sm.medium.value,
                "model": sm.model,
                "link": sm.link,
                "bus": sm.bus,
                "primary_address": sm.primary_address,
                "meter_point_id": point.id,
                "auto_registered": False,
            }
            if meter is None:
                meter = Meter(serial=sm.id, manufacturer=sm.manufacturer, installed_at=now, **values)
                session.add(meter)
                existing[(sm.id, sm.manufacturer)] = meter
                report.meters_created += 1
            else:
                if meter.installed_at is None:
                    meter.installed_at = now
                if _assign(meter, values):
                    report.meters_updated += 1
            if sm.key is not None:
                if keybox is None:
                    raise ValueError(f"meter {sm.id} has a key but no meter-key file is configured")
                current = keybox.decrypt(meter.key_encrypted) if meter.key_encrypted else None
                if current != bytes.fromhex(sm.key):
                    meter.key_encrypted = keybox.encrypt(sm.key)
                    report.keys_set += 1
        session.add(
            AuditLog(
                at=now,
                actor=actor,
                action="site.import",
                entity="property",
                entity_id=site.property.id,
                detail=json.dumps(report.as_dict()),
            )
        )
    return report


def load_site(path: Path) -> SiteExport:
    return parse_site(path.read_bytes())
