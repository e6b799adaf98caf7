"""Staff pages over HTTP against a real central (SQLite): the collectors page shows what a collector
itself reports as wrong (its status alarms: outbox overflow, a full disk, a serial port gone), and the
fault queue pages through a long list while its CSV download carries the whole filtered queue."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from central.api.app import create_app
from central.api.deps import TOKEN_COOKIE
from central.auth import create_user
from central.config import Settings
from central.models import Collector, Fault

pytestmark = pytest.mark.asyncio(loop_scope="module")
PW = "pw-web-collectors"
FAULTS = 230
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
            session.add_all(
                Fault(
                    collector_id="c-full",
                    rule=f"rule_{n:03d}",
                    message=f"fault {n}",
                    first_seen_at=now - timedelta(minutes=n),
                    last_seen_at=now,
                )
                for n in range(FAULTS)
            )
        await create_user(state.db, "staff", PW, "staff")
        yield application


async def _staff(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/auth/token", data={"username": "staff", "password": PW})
    assert r.status_code == 200, r.text
    http.cookies.set(TOKEN_COOKIE, str(r.json()["access_token"]))


async def test_the_collectors_page_shows_a_collectors_own_alarms(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await _staff(http)
        page = await http.get("/collectors")
        download = (await http.get("/collectors?csv=collectors")).text
    assert page.status_code == 200
    assert ALARM in page.text
    assert "Larm från insamlaren" in page.text
    rows = {line.split(";")[0]: line for line in download.lstrip("\ufeff").splitlines()}
    assert ALARM in rows["c-full"]  # the CSV download carries the same column
    assert "cannot store" not in rows["c-fine"]


async def test_the_fault_queue_pages_and_its_csv_has_the_whole_queue(app: FastAPI) -> None:
    def rules(html: str) -> list[str]:
        return re.findall(r"rule_\d{3}", html.split('id="table-faults"', 1)[1])

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await _staff(http)
        first = await http.get("/faults?sort=newest&state=open")
        last = await http.get("/faults?sort=newest&state=open&page=3")
        download = await http.get("/faults?sort=newest&state=open&csv=faults")
    assert first.status_code == last.status_code == download.status_code == 200
    assert f"({FAULTS})" in first.text  # the total counts the whole queue, not the page
    assert len(set(rules(first.text))) == 100
    assert "Sida 1 / 3" in first.text
    assert 'href="/faults?sort=newest&amp;state=open&amp;page=2"' in first.text  # filters kept
    assert len(set(rules(last.text))) == FAULTS - 200
    assert 'rel="next"' not in last.text
    assert len(set(re.findall(r"rule_\d{3}", download.text))) == FAULTS
