"""CRUD of the installation register over the API: roles, 4xx with reasons, audit, replacement keeping
the meter point's history, consumption with estimates, and no leaks across properties."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from central_testdata import OTHER_PROPERTY_METERS, site_export
from fastapi import FastAPI
from sqlalchemy import select

from central.api.app import create_app
from central.auth import create_user
from central.config import Settings
from central.models import AuditLog, Meter
from central.site_import import import_site

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = "00112233445566778899AABBCCDDEEFF"
USERS = {
    "admin": ("admin", None, None),
    "staff": ("staff", None, None),
    "tech": ("technician", None, None),
    "board-a": ("board", ["BRF-A"], None),
    "resident-a": ("resident", ["BRF-A"], "OBJ-1001"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("central-crud")
    application = create_app(
        Settings(
            data_dir=directory / "data", database_url=f"sqlite+aiosqlite:///{directory / 'c.sqlite'}"
        ).validated(),
        start_ingest=False,
    )
    async with application.router.lifespan_context(application):
        state = application.state.central
        await import_site(state.db, site_export("BRF-A"), state.keybox)
        await import_site(state.db, site_export("BRF-B", meters=OTHER_PROPERTY_METERS), state.keybox)
        for name, (role, props, apartment) in USERS.items():
            await create_user(state.db, name, f"pw-{name}", role, properties=props, apartment=apartment)
        yield application


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def auth(http: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    headers = {}
    for name in USERS:
        response = await http.post("/api/auth/token", data={"username": name, "password": f"pw-{name}"})
        assert response.status_code == 200, response.text
        headers[name] = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return headers


async def test_property_building_apartment_lifecycle(http: httpx.AsyncClient, auth: dict) -> None:
    admin = auth["admin"]
    created = await http.post(
        "/api/properties", json={"key": "BRF-C", "name": "Brf C", "city": "Umeå"}, headers=admin
    )
    assert created.status_code == 201, created.text
    again = await http.post("/api/properties", json={"key": "BRF-C", "name": "x"}, headers=admin)
    assert again.status_code == 409
    assert "exists already" in again.json()["detail"]
    bad = await http.post(
        "/api/properties", json={"key": "BRF-D", "name": "x", "colour": "red"}, headers=admin
    )
    assert bad.status_code == 422
    assert "colour" in bad.text
    building = await http.post(
        "/api/properties/BRF-C/buildings", json={"key": "A", "name": "Hus A"}, headers=admin
    )
    assert building.status_code == 201
    apartment = await http.post(
        "/api/properties/BRF-C/apartments",
        json={"object_number": "C-1", "number": "1001", "building": "A", "area_m2": "55.5"},
        headers=auth["staff"],
    )
    assert apartment.status_code == 201, apartment.text
    assert apartment.json()["area_m2"] == "55.5"
    bad_area = await http.post(
        "/api/properties/BRF-C/apartments",
        json={"object_number": "C-2", "number": "1002", "building": "A", "area_m2": "-3"},
        headers=admin,
    )
    assert bad_area.status_code == 422
    assert "area_m2" in bad_area.json()["detail"]
    no_building = await http.post(
        "/api/properties/BRF-C/apartments",
        json={"object_number": "C-2", "number": "1002", "building": "Z", "area_m2": "40"},
        headers=admin,
    )
    assert no_building.status_code == 422
    assert "no building 'Z'" in no_building.json()["detail"]
    ref = apartment.json()["ref"]
    patched = await http.patch(f"/api/apartments/{ref}", json={"tenant_ref": "T-9"}, headers=admin)
    assert patched.json()["tenant_ref"] == "T-9"
    busy = await http.delete(f"/api/buildings/{building.json()['ref']}", headers=admin)
    assert busy.status_code == 409
    assert (await http.delete(f"/api/apartments/{ref}", headers=admin)).status_code == 204
    assert (await http.delete(f"/api/buildings/{building.json()['ref']}", headers=admin)).status_code == 204
    assert (await http.delete("/api/properties/BRF-C", headers=admin)).status_code == 204
    assert (await http.get("/api/properties/BRF-C", headers=admin)).status_code == 404


async def test_roles_technician_creates_meters_and_collectors_only(
    http: httpx.AsyncClient, auth: dict
) -> None:
    tech = auth["tech"]
    assert (
        await http.post("/api/properties", json={"key": "X", "name": "X"}, headers=tech)
    ).status_code == 403
    collector = await http.post("/api/collectors", json={"id": "tech-c1", "property": "BRF-A"}, headers=tech)
    assert collector.status_code == 201, collector.text
    meter = await http.post(
        "/api/meters",
        json={"id": "70000001", "manufacturer": "kam", "medium": "cold_water", "property": "BRF-A",
              "apartment": "OBJ-2001", "installed_at": "2025-01-10T00:00:00Z", "key": KEY},
        headers=tech,
    )  # fmt: skip
    assert meter.status_code == 201, meter.text
    body = meter.json()
    assert body["manufacturer"] == "KAM"
    assert body["apartment"] == "OBJ-2001"
    assert body["has_key"] is True
    assert KEY not in meter.text
    assert (
        await http.patch("/api/collectors/tech-c1", json={"property": None}, headers=tech)
    ).status_code == 403
    for who in ("board-a", "resident-a"):
        denied = await http.post("/api/collectors", json={"id": f"{who}-c"}, headers=auth[who])
        assert denied.status_code == 403
        assert "may not" in denied.json()["detail"]


async def test_meter_create_is_audited_without_key_material(
    app: FastAPI, http: httpx.AsyncClient, auth: dict
) -> None:
    response = await http.post(
        "/api/meters",
        json={"id": "70000002", "manufacturer": "KAM", "medium": "heat", "property": "BRF-B", "key": KEY},
        headers=auth["staff"],
    )
    assert response.status_code == 201, response.text
    duplicate = await http.post(
        "/api/meters", json={"id": "70000002", "manufacturer": "KAM", "medium": "heat"}, headers=auth["staff"]
    )
    assert duplicate.status_code == 409
    bad_key = await http.post(
        "/api/meters",
        json={"id": "70000003", "manufacturer": "KAM", "medium": "heat", "key": "zz"},
        headers=auth["staff"],
    )
    assert bad_key.status_code == 422
    async with app.state.central.db.sessions() as session:
        entries = list(
            (await session.execute(select(AuditLog).where(AuditLog.entity_id == "70000002/KAM"))).scalars()
        )
        keys = list((await session.execute(select(AuditLog).where(AuditLog.action == "key.set"))).scalars())
    assert [e.action for e in entries] == ["meter.create", "key.set"]
    assert all(KEY not in e.detail and KEY.lower() not in e.detail for e in entries)
    assert '"key": "set"' in entries[0].detail
    assert {e.actor for e in keys} >= {"staff", "tech"}


async def test_replacement_keeps_the_point_history(app: FastAPI, http: httpx.AsyncClient, auth: dict) -> None:
    admin = auth["admin"]
    points = await http.get(
        "/api/meter-points", params={"property": "BRF-A", "medium": "cold_water"}, headers=admin
    )
    assert points.status_code == 200
    point = next(p for p in points.json() if p["apartment"] == "OBJ-1002")
    old = "12000071"
    installed = {"installed_at": "2025-01-01T00:00:00Z"}
    placed = await http.patch(f"/api/meters/{old}", json=installed, headers=admin)
    assert placed.status_code == 200, placed.text
    refused = await http.post(
        f"/api/meters/{old}/replace",
        json={
            "removed_at": "2025-03-01T00:00:00Z",
            "new": {"id": "71000001", "manufacturer": "KAM", "medium": "heat"},
        },
        headers=admin,
    )
    assert refused.status_code == 422
    assert "measures cold_water" in refused.json()["detail"]
    assert (
        await http.post(
            f"/api/meters/{old}/replace",
            json={"removed_at": "2025-03-01T00:00:00Z", "new": {"id": "71000001", "manufacturer": "KAM",
                                                                "medium": "cold_water"}},
            headers=auth["tech"],
        )
    ).status_code == 403  # fmt: skip
    replaced = await http.post(
        f"/api/meters/{old}/replace",
        json={"removed_at": "2025-03-01T00:00:00Z", "removal_reading": "123.456",
              "new": {"id": "71000001", "manufacturer": "KAM", "medium": "cold_water",
                      "installation_reading": "0.000"}},
        headers=admin,
    )  # fmt: skip
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["removed"]["removed_at"].startswith("2025-03-01")
    assert replaced.json()["installed"]["meter_point"] == point["ref"]
    history = (await http.get(f"/api/meter-points/{point['ref']}", headers=admin)).json()
    assert [m["id"] for m in history["meters"]] == [old, "71000001"]
    twice = await http.post(
        f"/api/meters/{old}/replace",
        json={"removed_at": "2025-04-01T00:00:00Z", "new": {"id": "71000002", "manufacturer": "KAM",
                                                            "medium": "cold_water"}},
        headers=admin,
    )  # fmt: skip
    assert twice.status_code == 409
    consumption = await http.get(
        f"/api/meter-points/{point['ref']}/consumption",
        params={"start": "2025-02-01T00:00:00Z", "end": "2025-04-01T00:00:00Z", "fallbacks": ""},
        headers=admin,
    )
    assert consumption.status_code == 200, consumption.text
    body = consumption.json()
    assert [s["meter"] for s in body["segments"]] == [old, "71000001"]
    assert body["segments"][0]["end"] == {
        "at": "2025-03-01T00:00:00Z",
        "value": "123.456",
        "method": "measured",
        "readings": ["2025-03-01T00:00:00Z"],
    }
    assert body["limits"]["fallbacks"] == []
    async with app.state.central.db.sessions() as session:
        removed = (await session.execute(select(Meter).where(Meter.serial == old))).scalar_one()
        actions = list(
            (await session.execute(select(AuditLog.action).where(AuditLog.entity == "meter"))).scalars()
        )
    assert removed.removed_at is not None
    assert "meter.remove" in actions


async def test_consumption_endpoint_validates_and_flags_estimates(
    http: httpx.AsyncClient, auth: dict
) -> None:
    admin = auth["admin"]
    bad = await http.get(
        "/api/consumption",
        params={"property": "BRF-A", "start": "2025-02-01T00:00:00", "end": "2025-03-01T00:00:00Z"},
        headers=admin,
    )  # fmt: skip
    assert bad.status_code == 422
    assert "time zone" in bad.json()["detail"]
    unknown = await http.get(
        "/api/consumption",
        params={
            "property": "BRF-A",
            "start": "2025-02-01T00:00:00Z",
            "end": "2025-03-01T00:00:00Z",
            "fallbacks": "guess",
        },
        headers=admin,
    )
    assert unknown.status_code == 422
    assert "unknown guess" in unknown.json()["detail"]
    listed = await http.get(
        "/api/consumption",
        params={
            "property": "BRF-A",
            "start": "2025-02-01T00:00:00Z",
            "end": "2025-03-01T00:00:00Z",
            "limit": 2,
        },
        headers=admin,
    )
    assert listed.status_code == 200
    assert len(listed.json()) == 2
    assert int(listed.headers["X-Total-Count"]) >= 4
    assert all(
        item["method"] == "missing" and item["estimated"] for item in listed.json()
    )  # no readings at all


async def test_pagination_and_filters(http: httpx.AsyncClient, auth: dict) -> None:
    page = await http.get("/api/meter-points", params={"limit": 2, "offset": 1}, headers=auth["admin"])
    assert page.status_code == 200
    assert len(page.json()) == 2
    assert page.headers["X-Offset"] == "1"
    assert int(page.headers["X-Total-Count"]) > 2
    bad = await http.get("/api/meter-points", params={"medium": "steam"}, headers=auth["admin"])
    assert bad.status_code == 422
    assert "medium: one of" in bad.json()["detail"]


async def test_no_leaks_across_properties(http: httpx.AsyncClient, auth: dict) -> None:
    admin, board, resident = auth["admin"], auth["board-a"], auth["resident-a"]
    b_points = (await http.get("/api/meter-points", params={"property": "BRF-B"}, headers=admin)).json()
    b_building = (await http.get("/api/properties/BRF-B/buildings", headers=admin)).json()[0]
    b_apartment = b_points[0]
    assert b_building["property"] == "BRF-B"
    await http.post("/api/collectors", json={"id": "b-c1", "property": "BRF-B"}, headers=admin)
    a_points = (await http.get("/api/meter-points", params={"property": "BRF-A"}, headers=admin)).json()
    own_point = next(p for p in a_points if p["apartment"] == "OBJ-1001")
    other_a_point = next(p for p in a_points if p["apartment"] == "OBJ-1002")
    period = {"start": "2025-02-01T00:00:00Z", "end": "2025-03-01T00:00:00Z"}
    hidden = [
        "/api/properties/BRF-B",
        "/api/properties/BRF-B/buildings",
        f"/api/buildings/{b_building['ref']}",
        f"/api/meter-points/{b_apartment['ref']}",
        f"/api/meter-points/{b_apartment['ref']}/consumption",
        "/api/collectors/b-c1",
    ]
    for who in (board, resident):
        for url in hidden:
            response = await http.get(url, params=period if "consumption" in url else None, headers=who)
            assert response.status_code == 404, (url, response.text)
            assert "BRF-B" not in response.json()["detail"] or url.endswith("BRF-B") or "buildings" in url
        listed = (await http.get("/api/meter-points", headers=who)).json()
        assert {p["property"] for p in listed} == {"BRF-A"}
        assert b_apartment["ref"] not in {p["ref"] for p in listed}
        gone = await http.get("/api/consumption", params={"property": "BRF-B", **period}, headers=who)
        assert gone.status_code == 404
    # The resident sees their own apartment's points only, and their consumption.
    mine = (await http.get("/api/meter-points", headers=resident)).json()
    assert {p["apartment"] for p in mine} == {"OBJ-1001"}
    assert (await http.get(f"/api/meter-points/{other_a_point['ref']}", headers=resident)).status_code == 404
    assert (await http.get(f"/api/meter-points/{own_point['ref']}", headers=resident)).status_code == 200
    theirs = await http.get("/api/consumption", params={"property": "BRF-A", **period}, headers=resident)
    assert {item["apartment"] for item in theirs.json()} == {"OBJ-1001"}
    neighbour = await http.get(
        "/api/consumption", params={"property": "BRF-A", "apartment": "OBJ-1002", **period}, headers=resident
    )
    assert neighbour.status_code == 404
    # The board sees its property but may not change it; writes elsewhere do not reveal anything.
    assert (await http.get("/api/properties/BRF-A", headers=board)).status_code == 200
    for method, url, body in (
        ("PATCH", "/api/properties/BRF-A", {"name": "x"}),
        ("POST", "/api/properties/BRF-A/buildings", {"key": "Q", "name": "Q"}),
        ("DELETE", f"/api/meter-points/{own_point['ref']}", None),
        ("POST", "/api/meters", {"id": "79000001", "manufacturer": "KAM", "medium": "heat"}),
    ):
        response = await http.request(method, url, json=body, headers=board)
        assert response.status_code == 403, (method, url)
    # Staff may not touch a property through a key it does not exist under.
    assert (await http.patch("/api/buildings/999999", json={"name": "x"}, headers=admin)).status_code == 404


async def test_property_list_filters_and_pages(http: httpx.AsyncClient, auth: dict) -> None:
    everything = await http.get("/api/properties", headers=auth["admin"])
    assert {p["id"] for p in everything.json()} >= {"BRF-A", "BRF-B"}
    one = await http.get("/api/properties", params={"q": "brf-b"}, headers=auth["admin"])
    assert [p["id"] for p in one.json()] == ["BRF-B"]
    assert one.headers["X-Total-Count"] == "1"
    page = await http.get("/api/properties", params={"limit": 1, "offset": 1}, headers=auth["admin"])
    assert len(page.json()) == 1
    assert [p["id"] for p in (await http.get("/api/properties", headers=auth["board-a"])).json()] == ["BRF-A"]
