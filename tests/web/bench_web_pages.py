"""Page render times with a large portfolio: ``python tests/web/bench_web_pages.py [--properties 100]``.

Builds a SQLite database with ``properties`` simulated properties (about 100 meters each, so 100
properties is about 10,000 meters) and a year of weekly billing-register readings per meter written
directly (ingesting a year of full telegrams for 10,000 meters would take an hour here), then
renders the main pages in-process through the ASGI app and prints p50/p95 per page in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any


async def build(data_dir: Path, properties: int, apartments: int) -> dict[str, Any]:
    from hwsim.fleet import Fleet
    from sqlalchemy import insert, select

    from central.auth import create_user
    from central.checks import MAIN_REGISTER
    from central.config import Settings
    from central.db import Database
    from central.faults import raise_fault
    from central.keys import MeterKeyBox
    from central.models import Meter, Reading
    from central.reading_months import rebuild
    from central.site_import import import_site

    settings = Settings(data_dir=data_dir).validated()
    db = await Database.open(settings.effective_database_url)
    fleet = Fleet(seed=3, properties=properties, apartments=apartments)
    keybox = MeterKeyBox(settings.meter_key_file)
    now = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    try:
        for prop in fleet.properties:
            await import_site(db, prop.sim.site, keybox)
        async with db.sessions() as session:
            meters = list((await session.execute(select(Meter.id, Meter.medium))).all())
        rows = 0
        registers = {"energy": "0406", "volume": "0413"}
        for start in range(0, len(meters), 500):
            batch = []
            for meter_id, medium in meters[start : start + 500]:
                main = MAIN_REGISTER.get(medium)
                if main is None:
                    continue
                value = Decimal(1000 + meter_id)
                for week in range(53):
                    value += Decimal(50 + (meter_id * 7 + week * 13) % 40) / (1 if main[1] == "Wh" else 1000)
                    batch.append(
                        {
                            "meter_id": meter_id,
                            "register": registers[main[0]],
                            "quantity": main[0],
                            "unit": main[1],
                            "read_at": now - timedelta(days=7 * (52 - week)),
                            "value": value,
                            "function": "instantaneous",
                            "storage": 0,
                            "tariff": 0,
                            "subunit": 0,
                        }
                    )
            async with db.sessions.begin() as session:
                await session.execute(insert(Reading), batch)
            rows += len(batch)
        async with db.sessions.begin() as session:
            await rebuild(session)  # the month summaries ingest would have kept (bulk rows bypass it)
        async with db.sessions.begin() as session:
            for meter_id, _medium in meters[:: max(1, len(meters) // 300)]:
                await raise_fault(
                    session, "stuck_register", at=now, severity="warning", message="bench", meter_id=meter_id
                )
        await create_user(db, "bench", "bench-pw", "admin")
        await create_user(
            db, "boardb", "bench-pw", "board", properties=[fleet.properties[0].sim.site.property.id]
        )
    finally:
        await db.close()
    return {
        "meters": len(meters),
        "readings": rows,
        "build_s": round(time.perf_counter() - t0, 1),
        "property": fleet.properties[0].sim.site.property.id,
    }


async def measure(data_dir: Path, info: dict[str, Any], repeat: int) -> dict[str, Any]:
    import httpx

    from central.api.app import create_app
    from central.config import Settings

    app = create_app(Settings(data_dir=data_dir).validated(), start_ingest=False)
    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            form = (await client.get("/login")).text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            await client.post("/login", data={"username": "bench", "password": "bench-pw", "csrf": csrf})
            key = info["property"]
            pages = [
                "/",
                "/faults",
                "/faults/1",
                "/collectors",
                "/search?q=1001",
                "/meters/1",
                "/apartments/1",
                f"/portal/p/{key}",
                f"/portal/p/{key}/compare",
                f"/portal/p/{key}/compare?kind=meters",
            ]
            for path in pages:
                times = []
                cpu = time.process_time()
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                cpu_ms = (time.process_time() - cpu) * 1000 / repeat  # not inflated by other load
                times.sort()
                out[path] = {
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
                    "cpu_ms_per_page": round(cpu_ms, 1),
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--properties", type=int, default=100)
    parser.add_argument("--apartments", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="imd-web-bench-"))
    info = asyncio.run(build(data_dir, args.properties, args.apartments))
    print(json.dumps(info), flush=True)
    print(json.dumps(asyncio.run(measure(data_dir, info, args.repeat)), indent=1))


if __name__ == "__main__":
    main()
