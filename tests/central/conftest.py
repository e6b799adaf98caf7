"""Central fixtures: the same tests on SQLite (tmp file) and PostgreSQL (a fresh database per use)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from central_testdata import BACKENDS, database_url
from fastapi import FastAPI

from central.config import Settings
from central.db import Database
from central.keys import MeterKeyBox


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request, tmp_path) as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await Database.open(db_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def keybox(tmp_path: Path) -> MeterKeyBox:
    return MeterKeyBox(tmp_path / "keys" / "meter-keys.fernet")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url).validated()


@pytest_asyncio.fixture(loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP against the module's own ``app`` fixture (a real central, in-process)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http
