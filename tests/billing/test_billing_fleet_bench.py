"""The fleet billing benchmark's database path on a tiny fleet: simulator read-outs through the real
ingest, a run per property from the database with lines for every apartment, saved as drafts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from benchmarks.billing_fleet import build_database, check_coverage, main, run_billing
from central.db import Database
from central.models import BillingLineRecord, BillingRunRecord


def test_fleet_runs_bill_every_apartment_from_the_database(tmp_path: Path) -> None:
    path = tmp_path / "central.sqlite"
    setup = asyncio.run(build_database(path, apartments=6, per_property=3, days_around=2, seed=5))
    assert (setup.properties, setup.apartments) == (2, 6)
    assert setup.readings > setup.meters * 35  # a daily read-out of every register, decoded
    _wall, results = run_billing(path, workers=1, documents=2)
    (result,) = results
    assert result.properties == 2
    assert result.apartments == 6
    assert result.states == {"draft": 2}
    assert check_coverage(results) == []
    assert all(len(apartments) == 3 for apartments, _billed in result.coverage.values())
    assert result.documents == 2 * (3 + 1)  # an underlag per apartment and the summary, per property

    async def stored() -> tuple[int, int]:
        db = await Database.open(f"sqlite+aiosqlite:///{path}", migrate=False)
        try:
            async with db.sessions() as session:
                runs = await session.scalar(select(func.count()).select_from(BillingRunRecord))
                lines = await session.scalar(select(func.count()).select_from(BillingLineRecord))
                return int(runs or 0), int(lines or 0)
        finally:
            await db.close()

    assert asyncio.run(stored()) == (2, result.lines)


def test_fleet_benchmark_command_on_two_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--apartments", "4", "--per-property", "2", "--days-around", "1", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "load_input (DB)" in out
    assert "extrapolated linearly to 100000" in out
