"""The staff's collectors page shows what a collector itself reports as wrong (its status alarms:
outbox overflow, a full disk, a serial port gone), over HTTP against a real central (SQLite)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from central.api.app import create_app
from central.api.deps import TOKEN_COOKIE
from central.auth import create_user
from central.config import Settings
from central.models import Collector

pytestmark = pytest.mark.asyncio(loop_scope="module")
PW = "pw-web-collectors"
ALARM = "outbox cannot store frames: database or disk is full (12 frames not stored since start)"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(data_dir=tmp_path_factory.mktemp("web-coll") / "data").validated())
    async with application.router.lifespan_context(application):
        state = application.state.central
        now = datetime.now(UTC)
        async with state.db.sessions.begin() as session:
            for name, status in (("c-full", {"outbox_depth": 40, "alarms": [ALARM]}), ("c-fine", {})):
                session.add(
                    Collector(
                        id=name, state="online", last_seen_at=now, last_status_at=now,
                        last_status=json.dumps({"outbox_depth": 0, "alarms": [], **status}),
                    )
                )  # fmt: skip
        await create_user(state.db, "staff", PW, "staff")
        yield application


async def test_the_collectors_page_shows_a_collectors_own_alarms(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        r = await http.post("/api/auth/token", data={"username": "staff", "password": PW})
        assert r.status_code == 200, r.text
        http.cookies.set(TOKEN_COOKIE, str(r.json()["access_token"]))
        page = await http.get("/collectors")
        download = (await http.get("/collectors?csv=collectors")).text
    assert page.status_code == 200
    assert ALARM in page.text
    assert "Larm från insamlaren" in page.text
    rows = {line.split(";")[0]: line for line in download.lstrip("\ufeff").splitlines()}
    assert ALARM in rows["c-full"]  # the CSV download carries the same column
    assert "cannot store" not in rows["c-fine"]
