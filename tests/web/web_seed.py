"""Seed a central database with simulator data for the browser tests and the page benchmark.

Two (or more) simulated properties from :class:`hwsim.fleet.Fleet`, read out every few days for
about fourteen months (so "this month vs the same month last year" has figures), ingested through
the real :class:`central.ingest.IngestProcessor`, then the meter checks, so faults exist. Users:
``staff``/``admin`` (global), ``board`` (first property only), ``resident`` (first apartment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

PASSWORD = "web-test-pw"


async def seed(
    data_dir: Path,
    *,
    properties: int = 2,
    apartments: int = 6,
    days: int = 410,
    step_days: int = 10,
    seed: int = 7,
) -> dict[str, Any]:
    from hwsim.fleet import Fleet

    from central.auth import create_user
    from central.checks import run_meter_checks
    from central.config import Settings
    from central.db import Database
    from central.ingest import IngestProcessor
    from central.keys import MeterKeyBox
    from central.models import Apartment, Meter, MeterPoint
    from central.site_import import import_site
    from protocols.messages import FrameBatch, encode, frames_topic

    settings = Settings(data_dir=data_dir).validated()
    data_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(seed=seed, properties=properties, apartments=apartments)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = (now - timedelta(days=days)).replace(hour=2)
    # One water meter of the first property freezes a few weeks ago: the stuck-register check finds it.
    first = fleet.properties[0]
    water = next(sm for sm in first.sim.site.meters if sm.medium.value in ("hot_water", "cold_water"))
    first.sim.faults.inject(int(water.id), "stuck", now - timedelta(days=20), None)
    # More for the bulk acknowledge: a meter that went silent and a heat meter running backwards.
    second = fleet.properties[-1]
    elec = next(sm for sm in second.sim.site.meters if sm.medium.value == "electricity")
    second.sim.faults.inject(int(elec.id), "silent", now - timedelta(days=6), None)
    heat = next(sm for sm in second.sim.site.meters if sm.medium.value == "heat")
    second.sim.faults.inject(int(heat.id), "backwards", now - timedelta(days=10), None)
    db = await Database.open(settings.effective_database_url)
    t0 = time.perf_counter()
    try:
        keybox = MeterKeyBox(settings.meter_key_file)
        for prop in fleet.properties:
            await import_site(db, prop.sim.site, keybox)
        async with db.sessions.begin() as session:
            for meter in (await session.execute(select(Meter))).scalars():
                meter.installed_at = start - timedelta(days=1)
        processor = IngestProcessor(db, keybox=keybox)
        at = start
        while at < now:
            for collector, batch in fleet.batches(at, batch_size=200):
                await processor.handle(frames_topic(collector), encode(FrameBatch.model_validate(batch)))
            at += timedelta(days=step_days if at < now - timedelta(days=40) else 1)
        await run_meter_checks(db, now=now)
        async with db.sessions.begin() as session:  # tenants everywhere but the last apartment: one vacancy
            apartments = list((await session.execute(select(Apartment).order_by(Apartment.id))).scalars())
            for n, apt in enumerate(apartments[:-1]):
                apt.tenant_ref = f"T-{70000 + n}"
        keys = [p.sim.site.property.id for p in fleet.properties]
        async with db.sessions() as session:
            apartment = (
                await session.execute(
                    select(Apartment.object_number)
                    .join(MeterPoint, MeterPoint.apartment_id == Apartment.id)
                    .order_by(Apartment.id)
                    .limit(1)
                )
            ).scalar_one()
        await create_user(db, "admin", PASSWORD, "admin")
        await create_user(db, "staff", PASSWORD, "staff")
        await create_user(db, "board", PASSWORD, "board", properties=[keys[0]])
        await create_user(db, "resident", PASSWORD, "resident", apartment=apartment, properties=[keys[0]])
    finally:
        await db.close()
    return {
        "properties": keys,
        "meters": fleet.meter_count,
        "stuck_meter": water.id,
        "resident_apartment": apartment,
        "frames": processor.stats.frames_new,
        "readings": processor.stats.readings,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--properties", type=int, default=2)
    parser.add_argument("--apartments", type=int, default=6)
    parser.add_argument("--serve", type=int, metavar="PORT", help="then serve central on this port")
    args = parser.parse_args()
    print(
        json.dumps(asyncio.run(seed(args.data_dir, properties=args.properties, apartments=args.apartments)))
    )
    if args.serve:
        from central.config import Settings
        from central.service import serve

        settings = Settings(data_dir=args.data_dir, port=args.serve).validated()
        asyncio.run(serve(settings, on_ready=lambda url: print("ready", url, flush=True)))


if __name__ == "__main__":
    main()
