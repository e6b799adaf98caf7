"""Scale-out (issue 11, point 2): three ``imd central serve`` workers - separate processes, distinct
MQTT client ids, one shared subscription ``$share/ingest/imd/v1/+/frames`` - on one Mosquitto and
one PostgreSQL. A fleet publishes a known set of frames in shuffled order and then every message
again (reversed): nothing may be lost or doubled, every worker must have taken a share, and what
depends on per-meter order (consumption over a period, the meter's last-reading time) must come
out as from a clean, in-order ingest of the same frames.

The broker is a private Mosquitto (the shared one on :1883 may carry other tests' ``$share/ingest``
workers, which would take part of our messages); PostgreSQL is the test server (skip when absent).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.reliability.parts import MOSQUITTO, Figures, consumption_totals, wait_for
from tests.reliability.scenarios import FLEET_START, Sizes, lab

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(shutil.which(MOSQUITTO) is None, reason=f"needs Mosquitto ({MOSQUITTO})"),
]

WORKERS = 3
ROUNDS = 6


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    base = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")[0]
    connection = await asyncpg.connect(f"{base}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def scratch_database(postgres_url: str) -> Iterator[str]:
    name = f"imd_scale_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a server that refuses us is a skip with the reason, not a failure
        pytest.skip(f"PostgreSQL at {postgres_url} refused a connection: {exc}")
    try:
        yield f"{postgres_url.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_three_workers_share_the_subscription_and_lose_or_double_nothing(
    tmp_path: Path, scratch_database: str
) -> None:
    with lab(tmp_path, "scale-out", database_url=scratch_database) as lab_:
        fleet = lab_.fleet(51, Sizes(fleet_properties=3, fleet_apartments=4, fleet_rounds=ROUNDS))
        workers = lab_.workers(WORKERS)
        assert len({w.client_id for w in workers}) == WORKERS
        shuffled = list(fleet.messages)
        random.Random(5).shuffle(shuffled)
        messages = shuffled + list(reversed(fleet.messages))
        fleet.publish(lab_.broker.url, messages=messages)
        wait_for(lambda: sum(w.acknowledged() for w in workers) >= len(messages), 90,
                 "every message to be acknowledged", step=0.2)

        figures = lab_.tally(Figures("scale-out"), fleet.keys)
        shares = [w.delivered() for w in workers]
        print(f"\n{WORKERS} workers, {len(messages)} messages ({figures.copies} frame copies) -> "
              f"{figures.stored} frames, {figures.readings} readings; messages per worker {shares}")
        assert figures.problems == []
        assert (figures.lost, figures.doubled) == (0, 0)
        assert figures.stored == figures.sent == len(fleet.keys)
        assert figures.readings_match  # every meter's readings complete, none twice
        assert all(share > 0 for share in shares), f"a worker got nothing: {shares}"

        # Consumers order by the meter's time stamps, never by arrival: the same answers as in order.
        end = FLEET_START + timedelta(hours=ROUNDS - 1)
        stored = consumption_totals(lab_.database_url, FLEET_START, end)
        reference = consumption_totals(figures.reference_url, FLEET_START, end)
        assert stored == reference
        measured = [m for m in stored.values() if m["consumption"] is not None]
        assert len(measured) >= len(fleet.fleet.properties)  # the comparison is not vacuous
        assert all(m["methods"] == ("measured", "measured") for m in measured)
        with_readings = [m for m in stored.values() if m["newest_reading"]]
        assert all(m["last_reading_at"] == m["newest_reading"] for m in with_readings)
