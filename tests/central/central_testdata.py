"""A small site whose meters match real frames from the libmbus corpus (BSD-3, see its LICENSE)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocols.site import SiteExport

# The copy kept in the repository (tests/protocols/corpus, with its licence), not the shared folder.
CORPUS = Path(__file__).resolve().parents[1] / "protocols" / "corpus" / "test-frames"


def corpus_frame(name: str) -> bytes:
    """A real frame from the libmbus test corpus (BSD-3, see the corpus LICENSE)."""
    return bytes.fromhex((CORPUS / f"{name}.hex").read_text().replace(" ", "").strip())


# corpus file -> (id, manufacturer, version, device type, medium, apartment)
CORPUS_METERS = {
    "kamstrup_multical_601": ("06855817", "KAM", 8, 4, "heat", "OBJ-1001"),
    "EFE_Engelmann-WaterStar": ("04990254", "EFE", 0, 6, "hot_water", "OBJ-1001"),
    "itron_cyble_m-bus_v1.4_water": ("12000071", "ACW", 20, 7, "cold_water", "OBJ-1002"),
    "EMU_EMU-Professional-375-M-Bus": ("00032629", "EMU", 16, 2, "electricity", "OBJ-2001"),
}

OTHER_PROPERTY_METERS = {
    "Elster-F2": ("00802657", "SVM", 8, 4, "heat", "OBJ-1001"),
    "GWF-MTKcoder": ("00182007", "GWF", 53, 7, "cold_water", "OBJ-1002"),
}


def site_export(
    property_id: str = "BRF-TEST-1",
    *,
    key: str | None = None,
    meters: dict[str, tuple[str, str, int, int, str, str]] | None = None,
) -> SiteExport:
    return SiteExport.model_validate(
        {
            "property": {"id": property_id, "name": f"Brf {property_id}", "city": "Uppsala"},
            "buildings": [{"id": "A", "name": "Hus A"}, {"id": "B", "name": "Hus B"}],
            "apartments": [
                {"object_number": "OBJ-1001", "number": "1001", "building": "A", "area_m2": "61.5"},
                {
                    "object_number": "OBJ-1002",
                    "number": "1002",
                    "building": "A",
                    "area_m2": "74.0",
                    "share": "0.0312",
                },
                {"object_number": "OBJ-2001", "number": "2001", "building": "B", "area_m2": "45.25"},
            ],
            "meters": [
                {
                    "id": mid,
                    "manufacturer": man,
                    "version": ver,
                    "device_type": dt,
                    "medium": medium,
                    "apartment": apt,
                    "primary_address": n + 1,
                    "key": key if n == 0 else None,
                }
                for n, (mid, man, ver, dt, medium, apt) in enumerate((meters or CORPUS_METERS).values())
            ],
        }
    )


BACKENDS = ["sqlite", "postgres"]


async def _admin(url: str) -> Any:
    import asyncpg

    base = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")[0]
    return await asyncpg.connect(f"{base}/postgres")


@asynccontextmanager
async def database_url(request: pytest.FixtureRequest, directory: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file in ``directory`` or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'central.sqlite'}"
        return
    pg = request.getfixturevalue("postgres_url")
    name = f"imd_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await _admin(pg)
    except Exception as exc:  # a server that refuses us is a skip with the reason, not a failure
        pytest.skip(f"PostgreSQL at {pg} refused a connection: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{pg.rpartition('/')[0]}/{name}"
    finally:
        admin = await _admin(pg)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
