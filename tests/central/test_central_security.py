"""Authentication on every route and role/property isolation (issue 11, point 6).

* Every route of the app - enumerated from the app itself and cross-checked against the OpenAPI
  schema, so a new route cannot slip past - answers 401 without a token (or an expired or forged
  one), a web page redirects to the login, except the documented public ones.
* A matrix: each role tries to read and write what it must not, on the other property (and the
  neighbour's apartment), and gets 403/404 with nothing changed; then each write is replayed by a
  role that may do it and goes through, which proves the refusals were the role or scope check, not
  a bad request.

The scoping tests in ``test_central_api.py`` (board sees only its property, resident only their
apartment, keys never shown) stay there; this module adds the exhaustive sweep. SQLite only: the
checks are in Python, the same on both backends (``test_central_api.py`` runs on both).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from central_testdata import CORPUS_METERS, OTHER_PROPERTY_METERS, corpus_frame, site_export
from fastapi import FastAPI
from sqlalchemy import func, select

from central.api.app import create_app
from central.auth import create_user, issue_token
from central.checks import run_meter_checks
from central.config import Settings
from central.models import Apartment, Base, Property
from central.site_import import import_site
from protocols.messages import FrameBatch, FrameMessage, encode, frames_topic

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Routes anyone may call, and why (docs/THREAT_MODEL.md, "What needs no login").
PUBLIC = {
    ("GET", "/api/health"): "liveness for the load balancer; no data",
    ("GET", "/api/health/ready"): "readiness for the load balancer; no data",
    ("POST", "/api/auth/token"): "the login itself (rate-limited)",
    ("GET", "/login"): "the login form",
    ("POST", "/login"): "the login form (CSRF-checked, rate-limited)",
    ("GET", "/openapi.json"): "the API's description; no data",
    ("GET", "/docs"): "the API's description; no data",
    ("GET", "/docs/oauth2-redirect"): "the API's description; no data",
    ("GET", "/redoc"): "the API's description; no data",
}
# /metrics: loopback only (Prometheus on the same host) or with a token; a remote client is refused.
LOOPBACK_ONLY = {("GET", "/metrics")}
REMOTE = ("203.0.113.50", 51000)  # not loopback: nothing is waved through for being local
USERS = {
    "staff-1": ("staff", {}),
    "tech-1": ("technician", {}),
    "board-a": ("board", {"properties": ["BRF-A"]}),
    "board-b": ("board", {"properties": ["BRF-B"]}),
    "res-a": ("resident", {"apartment": "OBJ-1001", "properties": ["BRF-A"]}),
    "res-b": ("resident", {"apartment": "OBJ-1002", "properties": ["BRF-B"]}),
}


def app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers and non-schema ones."""

    def walk(routes: Any) -> Iterator[Any]:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x: lazily included routers
                yield from route.effective_route_contexts()
            elif hasattr(route, "routes") and not hasattr(route, "methods") and not hasattr(route, "app"):
                yield from walk(route.routes)
            else:
                yield route

    for route in walk(app.routes):
        methods = getattr(route, "methods", None)
        if methods is None:  # a mount: /static
            yield ("MOUNT", route.path)
            continue
        for method in sorted(methods - {"HEAD"}):
            yield (method, route.path)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("central-security")
    application = create_app(Settings(data_dir=directory / "data", demo=True).validated(), start_ingest=False)
    async with application.router.lifespan_context(application):
        state = application.state.central
        await import_site(
            state.db, site_export("BRF-A", key="00112233445566778899AABBCCDDEEFF"), state.keybox
        )
        await import_site(state.db, site_export("BRF-B", meters=OTHER_PROPERTY_METERS), state.keybox)
        for name, (role, extra) in USERS.items():
            await create_user(state.db, name, f"{name}-pw", role, **extra)
        at = datetime(2025, 2, 1, tzinfo=UTC)
        batch = FrameBatch(
            collector="sec-c1",
            sent_at=at,
            frames=[
                FrameMessage(sequence=n, received_at=at, port="mbus0", raw=corpus_frame(f).hex())
                for n, f in enumerate([*CORPUS_METERS, *OTHER_PROPERTY_METERS])
            ],
        )
        await state.processor.handle(frames_topic("sec-c1"), encode(batch))
        await run_meter_checks(state.db, rules=["communication_gap"])
        yield application


@pytest_asyncio.fixture(loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=REMOTE), base_url="http://testserver"
    ) as http:
        yield http


async def login(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    password = "demo" if username == "demo" else f"{username}-pw"
    response = await http.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def snapshot(app: FastAPI) -> dict[str, int]:
    """Row counts of every table plus the audit log: any write shows here."""
    async with app.state.central.db.sessions() as session:
        return {
            table.name: (await session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in Base.metadata.sorted_tables
        }


async def test_every_route_needs_a_token_except_the_public_ones(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = set(app_routes(app))
    schema = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert schema <= routes, f"routes in the schema the walk missed: {schema - routes}"
    assert set(PUBLIC) <= routes, set(PUBLIC) - routes
    api = sorted(r for r in routes if r[1].startswith("/api/") and r not in PUBLIC)
    assert len(api) >= 80, len(api)  # the sweep really sweeps
    state = app.state.central
    expired = issue_token(state.token_secret, "demo", -1)
    forged = issue_token("a-forged-secret-of-the-right-length-48-chars-long", "demo", 30)
    checked = 0
    for method, path in api:
        for headers in ({}, {"Authorization": f"Bearer {expired}"}, {"Authorization": f"Bearer {forged}"}):
            response = await client.request(method, concrete(path), headers=headers)
            assert response.status_code == 401, (
                method,
                path,
                headers,
                response.status_code,
                response.text[:200],
            )
            assert response.headers.get("www-authenticate") == "Bearer", (method, path)
            checked += 1
    web = sorted(
        r
        for r in routes
        if not r[1].startswith("/api/") and r not in PUBLIC and r not in LOOPBACK_ONLY and r[0] != "MOUNT"
    )
    for method, path in web:
        response = await client.request(method, concrete(path), headers={"Cookie": f"imd_token={expired}"})
        if method == "GET":
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/login"), (method, path)
        else:  # forms: refused before anything happens (no session, no CSRF token)
            assert response.status_code in (303, 401, 403), (method, path, response.status_code)
            assert not response.headers.get("location", "/login").startswith("/faults"), (method, path)
        checked += 1
    for method, path in LOOPBACK_ONLY:
        assert (await client.request(method, path)).status_code in (401, 403), path
        assert (
            await client.request(method, path, headers={"Authorization": f"Bearer {forged}"})
        ).status_code in (
            401,
            403,
        )
    for method, path in PUBLIC:
        assert (await client.request(method, path)).status_code != 401 or path == "/api/auth/token", path
    assert (await client.get("/static/does-not-exist.css")).status_code == 404  # static: files only
    print(f"{checked} requests over {len(api)} API and {len(web)} web routes")


@dataclass(frozen=True, slots=True)
class Case:
    method: str
    url: str
    may: frozenset[str]  # the roles that may do it (on this target)
    json: Any = None


ROLES = ("staff-1", "tech-1", "board-a", "board-b", "res-a", "res-b")
EDIT = frozenset({"demo", "staff-1"})
FIELD = frozenset({"demo", "staff-1", "tech-1"})
WORKERS = FIELD  # global roles: they read everything
REGISTRARS = frozenset({"demo", "tech-1"})


async def ids(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    admin = await login(client, "demo")

    async def get(url: str) -> Any:
        response = await client.get(url, headers=admin)
        assert response.status_code == 200, (url, response.text)
        return response.json()

    async with app.state.central.db.sessions() as session:
        rows = await session.execute(
            select(Apartment.object_number, Apartment.id, Apartment.building_id)
            .join(Property, Apartment.property_id == Property.id)
            .where(Property.key == "BRF-B")
        )
        apartments = {number: (ref, building) for number, ref, building in rows.all()}
    points = await get("/api/meter-points?property=BRF-B")
    faults = [f for f in await get("/api/faults?rule=communication_gap") if f["meter"] == "00802657"]
    return {
        "apt_1001": apartments["OBJ-1001"][0],
        "apt_1002": apartments["OBJ-1002"][0],
        "building": apartments["OBJ-1001"][1],
        "point_1001": next(p["ref"] for p in points if p["apartment"] == "OBJ-1001"),
        "fault": faults[0]["id"],
    }


def read_cases(i: dict[str, Any]) -> list[Case]:
    """Reads of BRF-B's things: its board (and for its own apartment, its resident) may; no one else
    outside the global roles."""
    board_b = WORKERS | {"board-b"}
    own = board_b | {"res-b"}  # res-b's apartment OBJ-1002 and its meter 00182007
    return [
        Case("GET", "/api/properties/BRF-B", own),
        Case("GET", "/api/properties/BRF-B/buildings", own),
        Case("GET", "/api/properties/BRF-B/apartments", own),  # a resident's list: their apartment only
        Case("GET", f"/api/apartments/{i['apt_1001']}", board_b),
        Case("GET", f"/api/apartments/{i['apt_1002']}", own),
        Case("GET", "/api/meters/00802657", board_b),
        Case("GET", "/api/meters/00802657/readings", board_b),
        Case("GET", "/api/meters/00802657/frames", board_b),
        Case("GET", "/api/meters/00182007", own),
        Case("GET", f"/api/meter-points/{i['point_1001']}", board_b),
        Case("GET", f"/api/faults/{i['fault']}", board_b),
        Case("GET", "/api/billing/properties/BRF-B/invoices", board_b),
        Case("GET", "/api/billing/properties/BRF-B/fixed-costs", board_b),
        Case("GET", "/api/billing/properties/BRF-B/runs", board_b),
        Case("GET", "/api/billing/properties/BRF-B/prices", board_b),
        Case("GET", "/api/rejected-messages", WORKERS),
        Case("GET", "/api/collectors/sec-c1/commands", WORKERS),
        Case("GET", "/api/audit", frozenset({"demo"})),
    ]


def write_cases(i: dict[str, Any]) -> list[Case]:
    """Writes on BRF-B (or global ones), in an order in which the permitted replay succeeds."""
    return [
        Case("POST", "/api/properties", EDIT, {"key": "BRF-NEW", "name": "Brf Ny"}),
        Case("PATCH", "/api/properties/BRF-B", EDIT, {"name": "Brf B, renamed"}),
        Case("POST", "/api/properties/BRF-B/buildings", EDIT, {"key": "C", "name": "Hus C"}),
        Case("PATCH", f"/api/buildings/{i['building']}", EDIT, {"name": "Hus A2"}),
        Case(
            "POST",
            "/api/properties/BRF-B/apartments",
            EDIT,
            {"object_number": "OBJ-3001", "number": "3001", "building": "A", "area_m2": "50"},
        ),
        Case("PATCH", f"/api/apartments/{i['apt_1002']}", EDIT, {"tenant_ref": "T-9"}),
        Case(
            "POST",
            "/api/meter-points",
            EDIT,
            {"property": "BRF-B", "apartment": "OBJ-1001", "medium": "electricity"},
        ),
        Case("PATCH", f"/api/meter-points/{i['point_1001']}", EDIT, {"name": "värme"}),
        Case(
            "POST",
            "/api/meters",
            FIELD,
            {
                "id": "99000001",
                "manufacturer": "KAM",
                "medium": "hot_water",
                "property": "BRF-B",
                "apartment": "OBJ-1001",
            },
        ),
        Case("PATCH", "/api/meters/00182007", EDIT, {"key": "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"}),
        Case("POST", "/api/collectors", FIELD, {"id": "sec-new", "property": "BRF-B"}),
        Case("PATCH", "/api/collectors/sec-c1", EDIT, {"property": "BRF-B"}),
        Case("POST", f"/api/faults/{i['fault']}/comments", FIELD, {"text": "looked at it"}),
        Case("PUT", f"/api/faults/{i['fault']}/assignee", FIELD, {"assignee": "tech-1"}),
        Case("POST", f"/api/faults/{i['fault']}/acknowledge", FIELD, {"text": ""}),
        Case(
            "POST",
            "/api/billing/properties/BRF-B/prices",
            EDIT,
            {"medium": "cold_water", "valid_from": "2025-02-01", "unit_price": "1"},
        ),
        Case(
            "POST",
            "/api/billing/properties/BRF-B/fixed-costs",
            EDIT,
            {"name": "Samfällighetsavgift", "amount_per_month": "900.00", "key": "count"},
        ),
        Case(
            "POST",
            "/api/collectors/sec-reg/registration",
            REGISTRARS,
            {
                "property": "BRF-B",
                "collector": {"id": "sec-reg"},
                "meters": [
                    {
                        "id": "99000002",
                        "manufacturer": "KAM",
                        "medium": "heat",
                        "apartment": "OBJ-1001",
                        "meter_point": "heat 2",
                    }
                ],
            },
        ),
        Case("POST", "/api/collectors/sec-c1/commands", FIELD, {"command": "read_all"}),
        Case("DELETE", "/api/meters/99000001", EDIT),
        Case("DELETE", "/api/collectors/sec-new", EDIT),
    ]


async def test_each_role_is_refused_what_it_must_not_read(app: FastAPI, client: httpx.AsyncClient) -> None:
    i = await ids(app, client)
    tokens = {name: await login(client, name) for name in ROLES}
    refused = 0
    wrong = []
    for case in read_cases(i):
        for name in ROLES:
            response = await client.request(case.method, case.url, headers=tokens[name])
            if name in case.may:
                if response.status_code != 200:
                    wrong.append((name, case.url, response.status_code, response.text[:200]))
            elif response.status_code not in (403, 404):
                wrong.append((name, case.url, response.status_code, response.text[:200]))
            else:
                refused += 1
    assert not wrong, "\n".join(map(str, wrong))
    # Lists do not leak either: BRF-B's meters, faults and frames are not in board-a's or res-a's lists.
    for name in ("board-a", "res-a"):
        meters = (await client.get("/api/meters?limit=10000", headers=tokens[name])).json()
        assert not {"00802657", "00182007"} & {m["id"] for m in meters}, name
        filtered = await client.get("/api/meters?property=BRF-B", headers=tokens[name])
        assert filtered.status_code == 404 or filtered.json() == [], name
        faults = (await client.get("/api/faults", headers=tokens[name])).json()
        assert "00802657" not in {f["meter"] for f in faults}, name
        frames = (await client.get("/api/frames?limit=10000", headers=tokens[name])).json()
        assert not {"00802657", "00182007"} & {f.get("meter") for f in frames}, name
        points = await client.get("/api/meter-points?property=BRF-B", headers=tokens[name])
        assert points.status_code == 404 or points.json() == [], name
        assert [p["id"] for p in (await client.get("/api/properties", headers=tokens[name])).json()] == [
            "BRF-A"
        ]
    resident = (await client.get("/api/meters", headers=tokens["res-b"])).json()
    assert [m["id"] for m in resident] == ["00182007"]  # not the neighbour's 00802657
    listed = (await client.get("/api/properties/BRF-B/apartments", headers=tokens["res-b"])).json()
    assert [a["object_number"] for a in listed] == ["OBJ-1002"]
    # The web pages keep the same line.
    for name, path in (
        ("board-a", "/portal/p/BRF-B"),
        ("res-a", "/meters/00802657"),
        ("res-b", "/meters/00802657"),
    ):
        cookie = f"imd_token={tokens[name]['Authorization'].removeprefix('Bearer ')}"
        page = await client.get(path, headers={"Cookie": cookie})
        assert page.status_code in (403, 404), (name, path, page.status_code)
    print(f"{refused} refused reads")


async def test_each_role_is_refused_what_it_must_not_write(app: FastAPI, client: httpx.AsyncClient) -> None:
    i = await ids(app, client)
    tokens = {name: await login(client, name) for name in (*ROLES, "demo")}
    cases = write_cases(i)
    before = await snapshot(app)
    refused = 0
    for case in cases:
        for name in ROLES:
            if name in case.may:
                continue
            response = await client.request(case.method, case.url, headers=tokens[name], json=case.json)
            assert response.status_code in (403, 404), (
                name,
                case.method,
                case.url,
                response.status_code,
                response.text,
            )
            refused += 1
    assert await snapshot(app) == before, "a refused write changed something"
    # The same requests from a role that may: through (503 for a command: no broker in this test).
    for case in cases:
        name = next(n for n in ("tech-1", "staff-1", "demo") if n in case.may)
        response = await client.request(case.method, case.url, headers=tokens[name], json=case.json)
        assert response.status_code in (200, 201, 202, 204, 503), (name, case.method, case.url, response.text)
    assert (await snapshot(app))["audit_log"] > before["audit_log"]
    print(f"{refused} refused writes over {len(cases)} write cases")
