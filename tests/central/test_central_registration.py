"""``POST /api/collectors/{id}/registration`` (issue 10, point 3): one transaction, all or nothing.

On SQLite and PostgreSQL: a technician registers a collector with meters, keys and meter points; the
same body again changes nothing; a body with one refused row (or one conflicting row, listed last so
that every earlier row would have been written by a non-transactional implementation) answers 4xx
with a reason per row and leaves every table exactly as it was; only technician and admin may
register, and only into a property they can see; keys are never echoed, not even a refused one.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from central_testdata import OTHER_PROPERTY_METERS, site_export
from conftest import BACKENDS, database_url
from fastapi import FastAPI
from sqlalchemy import func, select

from central.api.app import create_app
from central.auth import create_user
from central.config import Settings
from central.models import AuditLog, Collector, Meter, MeterPoint, Reading, utcnow
from central.site_import import import_site

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_1 = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"
KEY_2 = "F0E1D2C3B4A5968778695A4B3C2D1E0F"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("central-registration")
    async with database_url(request, directory) as url:
        application = create_app(
            Settings(data_dir=directory / "data", database_url=url, demo=True).validated(),
            start_ingest=False,
        )
        async with application.router.lifespan_context(application):
            state = application.state.central
            # The property manager's register, without meters: what the technician registers into.
            register = site_export("BRF-REG")
            await import_site(state.db, register.model_copy(update={"meters": []}), state.keybox)
            await import_site(state.db, site_export("BRF-OTHER", meters=OTHER_PROPERTY_METERS), state.keybox)
            for name, role, extra in (
                ("tech", "technician", {}),
                ("staff", "staff", {}),
                ("board-reg", "board", {"properties": ["BRF-REG"]}),
                ("resident-reg", "resident", {"apartment": "OBJ-1001", "properties": ["BRF-REG"]}),
            ):
                await create_user(state.db, name, f"{name}-pw", role, **extra)
            yield application


async def auth(http: httpx.AsyncClient, username: str, password: str | None = None) -> dict[str, str]:
    response = await http.post(
        "/api/auth/token", data={"username": username, "password": password or f"{username}-pw"}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def body(collector: str, meters: list[dict[str, Any]], prop: str = "BRF-REG") -> dict[str, Any]:
    return {
        "property": prop,
        "collector": {
            "id": collector,
            "mqtt": {
                "username": f"collector-{collector}",
                "password_hash": "$7$101$c2FsdHNhbHRzYWx0$aGFzaA==",
                "acl": f"user collector-{collector}\ntopic write imd/v1/{collector}/frames\n"
                f"topic read imd/v1/{collector}/cmd\n",
            },
        },
        "meters": meters,
    }


def meter(ident: str, apartment: str | None, medium: str = "heat", **extra: Any) -> dict[str, Any]:
    row = {
        "id": ident,
        "manufacturer": "KAM",
        "version": 10,
        "device_type": 4 if medium == "heat" else 22,
        "medium": medium,
        "link": "wmbus" if "key" in extra else "mbus",
        "bus": "radio0" if "key" in extra else "mbus0",
        "primary_address": None if "key" in extra else int(ident[-2:]),
        "apartment": apartment,
        "meter_point": None,
        "model": "MULTICAL 403",
    }
    row.update(extra)
    return row


async def snapshot(app: FastAPI) -> dict[str, Any]:
    """Every row registration could touch, as plain values."""
    async with app.state.central.db.sessions() as session:
        meters = sorted(
            (m.serial, m.manufacturer, m.meter_point_id, m.key_encrypted, m.model, m.auto_registered)
            for m in (await session.execute(select(Meter))).scalars()
        )
        points = sorted(
            (p.id, p.property_id, p.apartment_id, p.medium, p.name)
            for p in (await session.execute(select(MeterPoint))).scalars()
        )
        collectors = sorted(
            (c.id, c.property_id) for c in (await session.execute(select(Collector))).scalars()
        )
        audit = (await session.execute(select(func.count()).select_from(AuditLog))).scalar_one()
    return {"meters": meters, "points": points, "collectors": collectors, "audit": audit}


async def test_technician_registers_once_and_the_second_run_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tech = await auth(client, "tech")
    meters = [
        meter("71000001", "OBJ-1001"),
        meter("71000002", "OBJ-1001", "cold_water", key=KEY_1),
        meter("71000003", "OBJ-1002"),
        meter("71000004", None),  # the property's main meter
    ]
    first = await client.post(
        "/api/collectors/reg-c1/registration", headers=tech, json=body("reg-c1", meters)
    )
    assert first.status_code == 201, first.text
    answer = first.json()
    assert answer["collector_created"] is True
    assert (answer["meters_created"], answer["meter_points_created"], answer["keys_set"]) == (4, 4, 1)
    assert KEY_1.lower() not in first.text.lower()

    listed = (await client.get("/api/meters?property=BRF-REG", headers=tech)).json()
    where = {m["id"]: m["apartment"] for m in listed}
    assert where == {"71000001": "OBJ-1001", "71000002": "OBJ-1001", "71000003": "OBJ-1002", "71000004": None}
    assert KEY_1.lower() not in str(listed).lower()
    collector = (await client.get("/api/collectors/reg-c1", headers=tech)).json()
    assert collector["property_ref"] is not None

    # The key is stored encrypted, decrypts to what was sent, and the audit names no key material.
    state = app.state.central
    async with state.db.sessions() as session:
        stored = (await session.execute(select(Meter).where(Meter.serial == "71000002"))).scalar_one()
        audit = [a.detail for a in (await session.execute(select(AuditLog))).scalars()]
    assert stored.key_encrypted is not None
    assert bytes.fromhex(KEY_1) not in stored.key_encrypted
    assert state.keybox.decrypt(stored.key_encrypted) == bytes.fromhex(KEY_1)
    assert KEY_1.lower() not in str(audit).lower()
    assert "$7$101$" not in str(audit)  # nor the MQTT password hash

    before = await snapshot(app)
    again = await client.post(
        "/api/collectors/reg-c1/registration", headers=tech, json=body("reg-c1", meters)
    )
    assert again.status_code == 201, again.text
    assert again.json()["changed"] is False
    assert (again.json()["meters_created"], again.json()["meters_updated"], again.json()["keys_set"]) == (
        0,
        0,
        0,
    )
    assert await snapshot(app) == before  # not even an audit row

    # A changed key and a moved meter (no readings yet) are updates, counted as such.
    meters[1] = meter("71000002", "OBJ-1001", "cold_water", key=KEY_2)
    meters[2] = meter("71000003", "OBJ-2001")
    changed = await client.post(
        "/api/collectors/reg-c1/registration", headers=tech, json=body("reg-c1", meters)
    )
    assert changed.status_code == 201, changed.text
    assert (
        changed.json()["keys_set"],
        changed.json()["meters_updated"],
        changed.json()["meter_points_created"],
    ) == (
        1,
        1,
        1,
    )


async def test_one_refused_row_leaves_central_as_it_was(app: FastAPI, client: httpx.AsyncClient) -> None:
    tech = await auth(client, "tech")
    setup = await client.post(
        "/api/collectors/reg-c2/registration",
        headers=tech,
        json=body("reg-c2", [meter("72000000", "OBJ-2001", meter_point="heat 2")]),
    )
    assert setup.status_code == 201, setup.text
    good = [
        meter(
            f"7200000{n}", "OBJ-1001" if n % 2 else "OBJ-1002", "cold_water", key=KEY_1, meter_point=f"kv {n}"
        )
        for n in range(1, 6)
    ]
    bad_key = "Z" * 31 + "9"
    cases = {
        "unknown apartment": [*good, meter("72000009", "OBJ-9999")],
        "bad key": [*good, meter("72000009", "OBJ-2001", key=bad_key)],
        "bad id": [*good, meter("7200009", "OBJ-2001")],
        "listed twice": [*good, good[0]],
        "same meter point twice": [*good, meter("72000009", "OBJ-1001", "cold_water", meter_point="kv 1")],
        "point carries another meter": [*good, meter("72000009", "OBJ-2001", meter_point="heat 2")],
        "wrong medium for the point": [
            *good,
            meter("72000009", "OBJ-2001", "electricity", meter_point="heat 2"),
        ],
    }
    before = await snapshot(app)
    for case, meters in cases.items():
        response = await client.post(
            "/api/collectors/reg-c2/registration", headers=tech, json=body("reg-c2", meters)
        )
        assert response.status_code == 422, (case, response.text)
        refused = response.json()["detail"]["refused"]
        assert len(refused) == 1, (case, refused)
        assert refused[0]["meter"] in ("72000009", "7200009", "72000001"), (case, refused)
        assert "row" not in refused[0]["meter"]
        assert refused[0]["reason"], case
        assert bad_key.lower() not in response.text.lower()
        assert KEY_1.lower() not in response.text.lower()
        assert await snapshot(app) == before, case

    # The collector's MQTT account must be its own and its ACL must stay under its own topics.
    stolen = body("reg-c2", good)
    stolen["collector"]["mqtt"]["acl"] += "topic read $share/ingest/imd/v1/+/frames\n"
    response = await client.post("/api/collectors/reg-c2/registration", headers=tech, json=stolen)
    assert response.status_code == 422
    assert "outside imd/v1/reg-c2/" in response.text
    other = body("reg-c2", good)
    other["collector"]["mqtt"]["username"] = "central"
    assert (
        await client.post("/api/collectors/reg-c2/registration", headers=tech, json=other)
    ).status_code == 422
    mismatch = body("reg-c3", good)
    assert (
        await client.post("/api/collectors/reg-c2/registration", headers=tech, json=mismatch)
    ).status_code == 422
    assert await snapshot(app) == before

    # Central's state after the refusals is what a clean run then builds on.
    ok = await client.post("/api/collectors/reg-c2/registration", headers=tech, json=body("reg-c2", good))
    assert ok.status_code == 201, ok.text
    assert ok.json()["meters_created"] == 5


async def test_conflicts_with_another_property_change_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tech = await auth(client, "tech")
    foreign = next(iter(OTHER_PROPERTY_METERS.values()))  # a meter registered to BRF-OTHER
    foreign_row = meter(foreign[0], "OBJ-1001", foreign[4], manufacturer=foreign[1])
    before = await snapshot(app)
    fresh = [meter("73000001", "OBJ-1001", meter_point="c4"), meter("73000002", "OBJ-1002", meter_point="c4")]
    response = await client.post(
        "/api/collectors/reg-c4/registration", headers=tech, json=body("reg-c4", [*fresh, foreign_row])
    )
    assert response.status_code == 409, response.text
    assert response.json()["detail"]["refused"] == [
        {"meter": foreign[0], "reason": "the meter belongs to another property"}
    ]
    assert await snapshot(app) == before

    # A collector registered to BRF-REG cannot be registered into BRF-OTHER.
    await client.post("/api/collectors/reg-c5/registration", headers=tech, json=body("reg-c5", []))
    before = await snapshot(app)
    response = await client.post(
        "/api/collectors/reg-c5/registration", headers=tech, json=body("reg-c5", [], prop="BRF-OTHER")
    )
    assert response.status_code == 409, response.text
    assert await snapshot(app) == before
    unknown = await client.post(
        "/api/collectors/reg-c6/registration", headers=tech, json=body("reg-c6", [], prop="BRF-NONE")
    )
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no property BRF-NONE visible to you"


async def test_a_meter_with_readings_is_not_moved_by_registration(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tech = await auth(client, "tech")
    rows = [meter("74000001", "OBJ-1001", meter_point="c7")]
    assert (
        await client.post("/api/collectors/reg-c7/registration", headers=tech, json=body("reg-c7", rows))
    ).status_code == 201
    async with app.state.central.db.sessions.begin() as session:
        stored = (await session.execute(select(Meter).where(Meter.serial == "74000001"))).scalar_one()
        session.add(
            Reading(
                meter_id=stored.id, register="0C06", read_at=utcnow(), quantity="energy", unit="kWh", value=1
            )
        )
    before = await snapshot(app)
    moved = await client.post(
        "/api/collectors/reg-c7/registration",
        headers=tech,
        json=body("reg-c7", [meter("74000001", "OBJ-2001", meter_point="c7")]),
    )
    assert moved.status_code == 422
    assert "replace it instead" in moved.text
    assert await snapshot(app) == before


@pytest.mark.parametrize(
    ("user", "expected"),
    [(None, 401), ("staff", 403), ("board-reg", 403), ("resident-reg", 403), ("tech", 201), ("demo", 201)],
)
async def test_only_technician_and_admin_may_register(
    app: FastAPI, client: httpx.AsyncClient, user: str | None, expected: int
) -> None:
    headers = {} if user is None else await auth(client, user, "demo" if user == "demo" else None)
    collector = f"reg-role-{user or 'anon'}"
    ident = f"7500000{['anon', 'staff', 'board-reg', 'resident-reg', 'tech', 'demo'].index(user or 'anon')}"
    payload = body(collector, [meter(ident, "OBJ-2001", meter_point=collector)])
    before = await snapshot(app)
    response = await client.post(f"/api/collectors/{collector}/registration", headers=headers, json=payload)
    assert response.status_code == expected, response.text
    if expected != 201:
        assert await snapshot(app) == before
    else:
        again = await client.post(
            f"/api/collectors/{collector}/registration", headers=headers, json=copy.deepcopy(payload)
        )
        assert again.json()["changed"] is False
