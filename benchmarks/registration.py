"""Registration over the API (``POST /api/collectors/{id}/registration``): CPU time, wall time and
SQL statements for a building of N apartments with a wired heat meter and a radio water meter (with
key) each, first run and the idempotent second run. In-process (ASGI), SQLite unless
``--postgres URL`` (a server: the benchmark creates and drops a scratch database there). CPU
seconds and statement counts do not depend on the machine's load.

    python -m benchmarks.registration --apartments 120
    python -m benchmarks.registration --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from central.api.app import create_app
from central.config import Settings
from central.site_import import import_site
from protocols.site import SiteExport


@asynccontextmanager
async def scratch(server: str | None) -> AsyncIterator[str | None]:
    if server is None:
        yield None
        return
    import asyncpg

    base = server.rpartition("/")[0]
    name = f"imd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(apartments: int, database_url: str | None) -> list[dict[str, Any]]:
    directory = Path(tempfile.mkdtemp(prefix="imd-registration-"))
    app = create_app(
        Settings(data_dir=directory / "data", database_url=database_url, demo=True).validated(),
        start_ingest=False,
    )
    results = []
    async with app.router.lifespan_context(app):
        state = app.state.central
        register = {
            "property": {"id": "BENCH", "name": "Brf Bench"},
            "buildings": [{"id": "A", "name": "Hus A"}],
            "apartments": [
                {"object_number": f"O{i}", "number": str(1000 + i), "building": "A", "area_m2": "50"}
                for i in range(apartments)
            ],
            "meters": [],
        }
        await import_site(state.db, SiteExport.model_validate(register), state.keybox)
        meters: list[dict[str, Any]] = []
        for i in range(apartments):
            common = {"manufacturer": "KAM", "apartment": f"O{i}"}
            meters.append({**common, "id": f"{60000000 + i}", "medium": "heat", "link": "mbus",
                           "bus": "mbus0", "primary_address": i % 250})  # fmt: skip
            meters.append({**common, "id": f"{70000000 + i}", "medium": "cold_water", "link": "wmbus",
                           "bus": "radio0", "key": f"{i + 1:032X}"})  # fmt: skip
        body = {"property": "BENCH", "collector": {"id": "bench-1"}, "meters": meters}
        statements = 0

        def count(*_args: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(state.db.engine.sync_engine, "before_cursor_execute", count)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
            login = await http.post("/api/auth/token", data={"username": "demo", "password": "demo"})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            for label in ("first", "again"):
                statements = 0
                wall, cpu = time.perf_counter(), time.process_time()
                response = await http.post("/api/collectors/bench-1/registration", headers=headers, json=body)
                answer = response.json()
                results.append(
                    {
                        "run": label,
                        "meters": len(meters),
                        "status": response.status_code,
                        "created": answer.get("meters_created"),
                        "changed": answer.get("changed"),
                        "cpu_s": round(time.process_time() - cpu, 3),
                        "wall_s": round(time.perf_counter() - wall, 3),
                        "sql_statements": statements,
                    }
                )
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registration")
    parser.add_argument("--apartments", type=int, default=120)
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is made there)")
    args = parser.parse_args(argv)

    async def both() -> list[dict[str, Any]]:
        async with scratch(args.postgres) as url:
            return await run(args.apartments, url)

    for row in asyncio.run(both()):
        print(row)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
