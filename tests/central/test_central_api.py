"""API and dashboard: login, 401 without a token, role scoping across properties, keys never shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from central_testdata import CORPUS_METERS, OTHER_PROPERTY_METERS, corpus_frame, site_export
from conftest import BACKENDS, database_url
from fastapi import FastAPI

from central.api.app import create_app
from central.auth import create_user
from central.checks import run_meter_checks
from central.config import Settings
from central.site_import import import_site
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic

KEY = "00112233445566778899AABBCCDDEEFF"


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    """One app per backend for the module (argon2 hashing makes set-up the slow part); tests only read."""
    directory = tmp_path_factory.mktemp("central-api")
    async with database_url(request, directory) as url:
        application = create_app(
            Settings(data_dir=directory / "data", database_url=url, demo=True).validated()
        )
        async with application.router.lifespan_context(application):
            state = application.state.central
            await import_site(state.db, site_export("BRF-A", key=KEY), state.keybox)
            await import_site(state.db, site_export("BRF-B", meters=OTHER_PROPERTY_METERS), state.keybox)
            await create_user(state.db, "board-a", "secret-a", "board", properties=["BRF-A"])
            await create_user(
                state.db, "resident-b", "secret-r", "resident", apartment="OBJ-1002", properties=["BRF-B"]
            )
            at = datetime(2025, 2, 1, tzinfo=UTC)
            batch = FrameBatch(
                collector="api-c1",
                sent_at=at,
                frames=[
                    FrameMessage(sequence=n, received_at=at, port="mbus0", raw=corpus_frame(f).hex())
                    for n, f in enumerate([*CORPUS_METERS, *OTHER_PROPERTY_METERS])
                ],
            )
            await state.processor.handle(frames_topic("api-c1"), encode(batch))
            # Frames from 2025 and no frame since: every meter has a communication gap.
            await run_meter_checks(state.db, rules=["communication_gap"])
            yield application


async def login(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await http.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


async def test_health_needs_no_login_and_meters_need_a_token(client: httpx.AsyncClient) -> None:
    # Every other route without a token: the sweep in test_central_security.py.
    assert (await client.get("/api/health")).json()["status"] == "ok"
    assert (await client.get("/api/meters")).status_code == 401
    bad = await client.get("/api/meters", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    wrong = await client.post("/api/auth/token", data={"username": "demo", "password": "nope"})
    assert wrong.status_code == 401


async def test_demo_admin_sees_meters_with_latest_values(client: httpx.AsyncClient) -> None:
    headers = await login(client, "demo", "demo")
    response = await client.get("/api/meters", headers=headers)
    assert response.status_code == 200
    meters = {m["id"]: m for m in response.json()}
    assert response.headers["x-total-count"] == str(len(meters)) == "6"
    heat = meters["06855817"]
    assert heat["manufacturer"] == "KAM"
    assert heat["medium"] == "heat"
    assert heat["apartment"] == "OBJ-1001"
    assert heat["last_reading_at"].startswith("2025-02-01")
    energy = [v for v in heat["values"] if v["register"] == "0406"]
    assert energy == [energy[0]]
    assert energy[0]["value"] == "37351000"
    assert energy[0]["unit"] == "Wh"
    assert heat["has_key"] is True
    assert KEY.lower() not in response.text.lower()
    page = await client.get("/api/meters?limit=2&offset=1", headers=headers)
    assert len(page.json()) == 2
    assert page.headers["x-total-count"] == "6"
    assert (await client.get("/api/meters?limit=0", headers=headers)).status_code == 422


async def test_meter_detail_frames_and_collectors(client: httpx.AsyncClient) -> None:
    headers = await login(client, "demo", "demo")
    detail = (await client.get("/api/meters/04990254", headers=headers)).json()
    assert detail["readings_total"] == len(detail["readings"]) == 9
    assert {"volume", "flow"} <= {r["quantity"] for r in detail["readings"]}
    frames = (await client.get("/api/meters/04990254/frames", headers=headers)).json()
    assert len(frames) == 1
    assert frames[0]["status"] == "ok"
    assert frames[0]["raw"].startswith("68")
    assert (await client.get("/api/meters/99999999", headers=headers)).status_code == 404
    assert (await client.get("/api/meters/abc", headers=headers)).status_code == 422
    assert (await client.get("/api/frames?status=weird", headers=headers)).status_code == 422
    collectors = (await client.get("/api/collectors", headers=headers)).json()
    assert [c["id"] for c in collectors] == ["api-c1"]
    assert collectors[0]["last_sequence"] == 5


async def test_board_member_sees_only_their_property(client: httpx.AsyncClient) -> None:
    headers = await login(client, "board-a", "secret-a")
    meters = (await client.get("/api/meters", headers=headers)).json()
    assert {m["property"] for m in meters} == {"BRF-A"}
    assert len(meters) == 4
    assert (await client.get("/api/meters/00802657", headers=headers)).status_code == 404  # BRF-B's meter
    assert (await client.get("/api/properties/BRF-B/apartments", headers=headers)).status_code == 404
    assert [p["id"] for p in (await client.get("/api/properties", headers=headers)).json()] == ["BRF-A"]
    frames = (await client.get("/api/frames", headers=headers)).json()
    assert len(frames) == 4
    assert (await client.get("/api/rejected-messages", headers=headers)).status_code == 403


async def test_resident_sees_only_their_apartment(client: httpx.AsyncClient) -> None:
    headers = await login(client, "resident-b", "secret-r")
    meters = (await client.get("/api/meters", headers=headers)).json()
    assert [(m["property"], m["apartment"], m["id"]) for m in meters] == [("BRF-B", "OBJ-1002", "00182007")]
    assert (await client.get("/api/meters/06855817", headers=headers)).status_code == 404


async def test_dashboard_requires_login_and_shows_meters(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    form = (await client.get("/login")).text
    assert "password" in form
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]  # the login form is CSRF-protected
    assert (await client.post("/login", data={"username": "demo", "password": "demo"})).status_code == 403
    failed = await client.post("/login", data={"username": "demo", "password": "wrong", "csrf": csrf})
    assert failed.status_code == 401
    ok = await client.post("/login", data={"username": "demo", "password": "demo", "csrf": csrf})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    page = await client.get("/")
    assert page.status_code == 200
    assert "communication_gap" in page.text  # the open faults section
    assert "06855817" in page.text
    assert "37351000 Wh" in page.text
    assert "api-c1" in page.text


async def test_faults_are_scoped_and_only_staff_may_act(client: httpx.AsyncClient) -> None:
    admin = await login(client, "demo", "demo")
    board = await login(client, "board-a", "secret-a")
    everything = (await client.get("/api/faults?rule=communication_gap", headers=admin)).json()
    assert {f["meter"] for f in everything} >= {"06855817", "00802657"}
    mine = (await client.get("/api/faults?rule=communication_gap", headers=board)).json()
    assert len(mine) == 4
    assert "00802657" not in {f["meter"] for f in mine}
    other = next(f for f in everything if f["meter"] == "00802657")
    assert (await client.get(f"/api/faults/{other['id']}", headers=board)).status_code == 404
    target = mine[0]["id"]
    assert (await client.post(f"/api/faults/{target}/acknowledge", headers=board)).status_code == 403
    assert (await client.get("/api/faults?state=weird", headers=admin)).status_code == 422
    rules = {r["name"] for r in (await client.get("/api/checks", headers=board)).json()}
    assert {"communication_gap", "continuous_flow"} <= rules


async def test_fault_workflow_over_the_api(client: httpx.AsyncClient) -> None:
    admin = await login(client, "demo", "demo")
    fault = (await client.get("/api/faults?meter=00182007&rule=communication_gap", headers=admin)).json()[0]
    url = f"/api/faults/{fault['id']}"
    acked = await client.post(f"{url}/acknowledge", headers=admin, json={"text": "looking"})
    assert acked.status_code == 200
    assert acked.json()["state"] == "acknowledged"
    again = await client.post(f"{url}/acknowledge", headers=admin)
    assert again.status_code == 409
    assert "cannot" in again.json()["detail"]
    assert (await client.post(f"{url}/explode", headers=admin)).status_code == 404
    commented = await client.post(f"{url}/comments", headers=admin, json={"text": "technician booked"})
    assert commented.json()["history"][-1]["text"] == "technician booked"
    assigned = await client.put(f"{url}/assignee", headers=admin, json={"assignee": "tekniker-1"})
    assert assigned.json()["assignee"] == "tekniker-1"
    resolved = await client.post(f"{url}/resolve", headers=admin, json={"text": "meter replaced"})
    kinds = [h["kind"] for h in resolved.json()["history"]]
    assert kinds[:1] == ["opened"]
    assert kinds[-4:] == ["acknowledged", "comment", "assigned", "resolved"]


async def test_csv_import_over_the_api(client: httpx.AsyncClient) -> None:
    admin = await login(client, "demo", "demo")
    board = await login(client, "board-a", "secret-a")
    csv_text = "objektsnummer;lgh;hus;yta\nOBJ-1003;1003;A;52,0\n"
    url = "/api/properties/BRF-A/imports/apartments"
    assert (await client.post(url, content=csv_text, headers=board)).status_code == 403
    dry = await client.post(f"{url}?dry_run=true", content=csv_text, headers=admin)
    assert dry.status_code == 200
    assert dry.json()["imported"] is False
    refused = await client.post(url, content=csv_text + "OBJ-1004;1004;A;abc\n", headers=admin)
    assert refused.status_code == 422
    assert refused.json()["refused"][0]["row"] == 3
    done = await client.post(url, content=csv_text, headers=admin)
    assert done.json()["imported"] is True
    numbers = [
        a["number"] for a in (await client.get("/api/properties/BRF-A/apartments", headers=admin)).json()
    ]
    assert "1003" in numbers
    assert (
        await client.post("/api/properties/BRF-A/imports/nonsense", content="x", headers=admin)
    ).status_code == 404


async def test_meter_changes_are_audited_and_keys_stay_secret(client: httpx.AsyncClient) -> None:
    admin = await login(client, "demo", "demo")
    board = await login(client, "board-a", "secret-a")
    new_key = "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
    old = (await client.get("/api/meters/12000071", headers=admin)).json()
    assert (
        await client.patch("/api/meters/12000071", headers=board, json={"removed_at": None})
    ).status_code == 403
    removed = await client.patch(
        "/api/meters/12000071",
        headers=admin,
        json={"installed_at": "2024-01-01T00:00:00Z", "removed_at": "2025-03-01T00:00:00Z", "key": new_key},
    )
    assert removed.status_code == 200
    assert removed.json()["removed_at"].startswith("2025-03-01")
    assert removed.json()["has_key"] is True
    assert new_key.lower() not in removed.text.lower()
    bad = await client.patch(
        "/api/meters/12000071", headers=admin, json={"removed_at": "2025-03-01T00:00:00"}
    )
    assert bad.status_code == 422
    before_install = await client.patch(
        "/api/meters/12000071", headers=admin, json={"removed_at": "2023-03-01T00:00:00Z"}
    )
    assert before_install.status_code == 422
    moved = await client.patch("/api/meters/04990254", headers=admin, json={"apartment": "OBJ-1002"})
    assert moved.status_code == 200
    assert moved.json()["apartment"] == "OBJ-1002"
    assert moved.json()["meter_point"] != old["meter_point"]  # hot water: a point of its own medium
    audit = (await client.get("/api/audit?entity=meter", headers=admin)).json()
    assert {"key": "set", "removed_at": "2025-03-01 00:00:00+00:00"}.items() <= audit[1]["detail"].items()
    assert new_key.lower() not in str(audit).lower()
    assert (await client.get("/api/audit", headers=board)).status_code == 403


async def test_consumption_interpolates_at_period_boundaries(client: httpx.AsyncClient) -> None:
    admin = await login(client, "demo", "demo")
    one = await client.get(
        "/api/meters/06855817/consumption?start=2025-02-01T00:00:00Z&end=2025-02-02T00:00:00Z", headers=admin
    )
    body = one.json()
    assert body["start"]["method"] == "measured"
    assert body["start"]["value"] == "37351000"
    assert body["end"]["method"] == "missing"
    assert body["consumption"] is None
    assert (
        await client.get(
            "/api/meters/06855817/consumption?start=2025-02-02T00:00:00Z&end=2025-02-01T00:00:00Z",
            headers=admin,
        )
    ).status_code == 422
