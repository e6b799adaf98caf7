"""Billing through central end to end: site import, a month of readings, prices and an invoice, a run,
approval, export into the archive, the CSV and a PDF fetched back, Σ lines == pool to the öre,
determinism, traceability to raw frames, corrections, a stopped run, and role scoping."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from central_testdata import BACKENDS, database_url
from fastapi import FastAPI
from sqlalchemy import select

from central.api.app import create_app
from central.auth import create_user
from central.billing import GENERIC_CSV, compute_run, render
from central.billing.serial import canonical_json
from central.billing.store import load_input
from central.config import Settings
from central.models import Collector, Fault, Meter, Property, RawFrame, Reading
from central.site_import import import_site
from protocols.site import SiteExport

pytestmark = pytest.mark.asyncio(loop_scope="module")
D = Decimal

# apartment -> (area, heat Wh per day, cold water m³ per day)
APARTMENTS = {
    "OBJ-1": ("61.5", 21_000, "0.151"),
    "OBJ-2": ("74.0", 33_000, "0.222"),
    "OBJ-3": ("45.25", 9_500, "0.087"),
}


def _site(key: str, serial_base: int) -> SiteExport:
    meters: list[dict[str, Any]] = []
    for n, obj in enumerate(APARTMENTS):
        meters.append(
            {
                "id": f"{serial_base + 2 * n:08d}",
                "manufacturer": "KAM",
                "version": 8,
                "device_type": 4,
                "medium": "heat",
                "apartment": obj,
            }
        )
        meters.append(
            {
                "id": f"{serial_base + 2 * n + 1:08d}",
                "manufacturer": "ACW",
                "version": 20,
                "device_type": 7,
                "medium": "cold_water",
                "apartment": obj,
            }
        )
    meters.append(
        {
            "id": f"{serial_base + 99:08d}",
            "manufacturer": "KAM",
            "version": 8,
            "device_type": 4,
            "medium": "heat",
            "apartment": None,
        }
    )
    return SiteExport.model_validate(
        {
            "property": {"id": key, "name": f"Brf {key}", "city": "Uppsala", "address": "Storgatan 1"},
            "buildings": [{"id": "A", "name": "Hus A"}],
            "apartments": [
                {
                    "object_number": obj,
                    "number": f"10{n + 1:02d}",
                    "building": "A",
                    "area_m2": area,
                    "tenant_ref": f"T-{obj}",
                }
                for n, (obj, (area, _h, _w)) in enumerate(APARTMENTS.items())
            ],
            "meters": meters,
        }
    )


async def _readings(db: Any, key: str, collector: str) -> None:
    """A daily remote read-out at 23:30 UTC from 20 Feb to 10 Apr 2025, each with its raw frame."""
    async with db.sessions.begin() as session:
        prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one()
        session.add(Collector(id=collector, property_id=prop.id, state="online"))
        await session.flush()
        meters = (await session.execute(select(Meter).order_by(Meter.id))).scalars().all()
        seq = 0
        for meter in meters:
            if meter.meter_point_id is None or not meter.serial.startswith(key[-1]):
                continue
            meter.installed_at = datetime(2025, 1, 1, tzinfo=UTC)  # commissioning, not the import day
            obj = None
            for n, o in enumerate(APARTMENTS):
                if int(meter.serial) % 100 in (2 * n, 2 * n + 1):
                    obj = o
            main = int(meter.serial) % 100 == 99
            for day in range(50):
                at = datetime(2025, 2, 20, 23, 30, tzinfo=UTC) + timedelta(days=day)
                seq += 1
                frame = RawFrame(
                    collector_id=collector,
                    sequence=seq,
                    received_at=at,
                    ingested_at=at,
                    link="mbus",
                    port="mbus0",
                    raw=bytes([0x68, seq % 256, day]),
                    collector_status="ok",
                    status="ok",
                    meter_id=meter.id,
                )
                session.add(frame)
                await session.flush()
                if meter.medium == "heat":
                    per_day = 70_000 if main else APARTMENTS[obj or "OBJ-1"][1]
                    value, quantity, unit, reg = D(1_000_000 + per_day * day), "energy", "Wh", "0406"
                else:
                    value = D("100.000") + D(APARTMENTS[obj or "OBJ-1"][2]) * day
                    quantity, unit, reg = "volume", "m3", "0413"
                session.add(
                    Reading(
                        meter_id=meter.id,
                        register=reg,
                        read_at=at,
                        quantity=quantity,
                        unit=unit,
                        value=value,
                        raw_frame_id=frame.id,
                    )
                )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("central-billing")
    async with database_url(request, directory) as url:
        application = create_app(Settings(data_dir=directory / "data", database_url=url).validated())
        async with application.router.lifespan_context(application):
            state = application.state.central
            await import_site(state.db, _site("BRF-1", 10_000_000), state.keybox)
            await import_site(state.db, _site("BRF-2", 20_000_000), state.keybox)
            await _readings(state.db, "BRF-1", "c-1")
            await _readings(state.db, "BRF-2", "c-2")
            await create_user(state.db, "admin", "pw-admin", "admin")
            await create_user(state.db, "board-1", "pw-b1", "board", properties=["BRF-1"])
            await create_user(state.db, "board-2", "pw-b2", "board", properties=["BRF-2"])
            yield application


async def login(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await http.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


SETTINGS = {
    "vat_registered": True,
    "media": {
        "heat": {"model": "fordelning", "fixed_key_share": "0.30", "fixed_key": "area"},
        "cold_water": {"model": "debitering"},
    },
    "invoicing": {
        "seller_name": "Brf Test",
        "seller_org_number": "769600-1234",
        "seller_street": "Storgatan 1",
        "seller_postal_code": "75310",
        "seller_city": "Uppsala",
        "bankgiro": "123-4567",
        "next_invoice_number": 5001,
        "seller_vat_number": "SE769600123401",
    },
}
HEAT_INVOICE = {
    "supplier": "Uppsala Fjärrvärme",
    "reference": "F-2025-03",
    "medium": "heat",
    "period_from": "2025-03-01",
    "period_to": "2025-04-01",
    "lines": [
        {"kind": "fixed_fee", "amount": "1500.00", "text": "Fast avgift"},
        {"kind": "energy", "amount": "1735.37", "quantity": "2170", "unit": "kWh", "text": "Energi"},
        {"kind": "vat", "amount": "808.84", "text": "Moms"},
    ],
}


async def _configure(http: httpx.AsyncClient, admin: dict[str, str], key: str) -> None:
    r = await http.put(f"/api/billing/properties/{key}/settings", json=SETTINGS, headers=admin)
    assert r.status_code == 200, r.text
    r = await http.post(
        f"/api/billing/properties/{key}/prices",
        json={
            "medium": "cold_water",
            "valid_from": "2025-01-01",
            "unit_price": "32.75",
            "fixed_fee_per_month": "10",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    r = await http.post(f"/api/billing/properties/{key}/invoices", json=HEAT_INVOICE, headers=admin)
    assert r.status_code == 201, r.text
    r = await http.post(
        f"/api/billing/properties/{key}/fixed-costs",
        json={"name": "Samfällighetsavgift", "amount_per_month": "900.00", "key": "count"},
        headers=admin,
    )
    assert r.status_code == 201, r.text


async def test_run_approve_export_archive_and_correct(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin", "pw-admin")
    await _configure(client, admin, "BRF-1")
    # An overlapping price and a binary float are refused with a reason.
    r = await client.post(
        "/api/billing/properties/BRF-1/prices",
        json={"medium": "cold_water", "valid_from": "2025-02-01", "unit_price": "1"},
        headers=admin,
    )
    assert r.status_code == 409
    assert "overlaps" in r.json()["detail"]
    r = await client.post(
        "/api/billing/properties/BRF-1/prices",
        json={"medium": "cold_water", "valid_from": "2030-02-01", "unit_price": 1.5},
        headers=admin,
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-02"}, headers=admin
    )
    assert r.status_code == 422

    r = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-01"}, headers=admin
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    assert r.json()["state"] == "draft"
    run = (await client.get(f"/api/billing/runs/{run_id}", headers=admin)).json()
    heat = next(m for m in run["summary"]["media"] if m["medium"] == "heat")
    heat_lines = [ln for ln in run["lines"] if ln["medium"] == "heat"]
    # Nollsummespel: the pool (fixed fee + energy, excl. VAT) is charged to the öre.
    assert D(heat["cost"]) == D("3235.37")
    assert sum(D(ln["net"]) for ln in heat_lines) == D("3235.37")
    assert D(heat["cost_minus_lines"]) == 0
    # Consumption from the readings, aligned to local midnight (interpolated, flagged): March in
    # Stockholm is 31 days less the DST hour = 743 h; OBJ-2 uses 33 kWh a day, OBJ-1 0.151 m³.
    obj2 = next(ln for ln in heat_lines if ln["object_number"] == "OBJ-2" and ln["kind"] == "consumption")
    assert abs(D(obj2["quantity"]) - D(33) * 743 / 24) <= D("0.001")
    assert obj2["source"] == "interpolated"
    water = next(ln for ln in run["lines"] if ln["object_number"] == "OBJ-1" and ln["charge"] == "cold_water")
    assert abs(D(water["quantity"]) - D("0.151") * 743 / 24) <= D("0.001")
    assert D(water["net"]) == (D(water["quantity"]) * D("32.75")).quantize(D("0.01"), ROUND_HALF_UP)
    assert D(water["vat"]) == (D(water["net"]) * D("0.25")).quantize(D("0.01"))

    # Traceability: each line leads to its readings and the raw frames that carried them.
    sources = (
        await client.get(f"/api/billing/runs/{run_id}/lines/{obj2['line_id']}/sources", headers=admin)
    ).json()
    assert len(sources) >= 2
    assert all((s["raw_frame"] or "").startswith("68") for s in sources)

    # Determinism: the same data gives the same input digest and the same bytes.
    r2 = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-01"}, headers=admin
    )
    assert r2.json()["input_digest"] == run["input_digest"]
    state = app.state.central
    async with state.db.sessions() as session:
        prop = (await session.execute(select(Property).where(Property.key == "BRF-1"))).scalar_one()
        at = datetime(2025, 4, 5, tzinfo=UTC)
        outs = []
        for _ in range(2):
            inp, _ids = await load_input(session, prop, date(2025, 3, 1), date(2025, 4, 1))
            result = compute_run(inp, "R-DET", at, "test")
            outs.append((canonical_json(result), render(result, GENERIC_CSV)))  # type: ignore[arg-type]
        assert outs[0] == outs[1]

    # Export before approval is refused; approve, export, then it never changes.
    r = await client.post(f"/api/billing/runs/{run_id}/export", json={}, headers=admin)
    assert r.status_code == 409
    r = await client.post(f"/api/billing/runs/{run_id}/approve", json={"note": "granskad"}, headers=admin)
    assert r.status_code == 200
    assert r.json()["state"] == "approved"
    r = await client.post(f"/api/billing/runs/{run_id}/export", json={"profile": "nonesuch"}, headers=admin)
    assert r.status_code == 422
    r = await client.post(
        f"/api/billing/runs/{run_id}/export",
        json={"profile": "excel", "issue_date": "2025-04-10"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "exported"
    kinds = sorted({d["kind"] for d in body["documents"]})
    assert kinds == ["debiteringsfil", "invoices", "summary", "ubl", "underlag"]
    assert sum(d["kind"] == "underlag" for d in body["documents"]) == 3
    csv_doc = next(d for d in body["documents"] if d["kind"] == "debiteringsfil")
    r = await client.get(f"/api/billing/documents/{csv_doc['id']}", headers=admin)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == csv_doc["sha256"]
    text = r.content.decode("utf-8-sig")
    assert "OBJ-2" in text
    assert run_id in text
    pdf_doc = next(d for d in body["documents"] if d["kind"] == "underlag")
    r = await client.get(f"/api/billing/documents/{pdf_doc['id']}", headers=admin)
    assert r.content.startswith(b"%PDF-")
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["x-sha256"] == hashlib.sha256(r.content).hexdigest()
    for step in ("approve", "export"):
        assert (
            await client.post(f"/api/billing/runs/{run_id}/{step}", json={}, headers=admin)
        ).status_code == 409
    r = await client.post(f"/api/billing/runs/{run_id}/lock", json={}, headers=admin)
    assert r.status_code == 200
    assert r.json()["state"] == "locked"

    # Unchanged data: a correction finds nothing. A new price for March: credit + re-bill in a new run.
    r = await client.post(f"/api/billing/runs/{run_id}/correct", headers=admin)
    assert r.status_code == 200
    assert r.json()["changed"] is False
    prices = (await client.get("/api/billing/properties/BRF-1/prices", headers=admin)).json()
    r = await client.put(
        f"/api/billing/prices/{prices[0]['id']}",
        json={
            "medium": "cold_water",
            "valid_from": "2025-01-01",
            "unit_price": "35.00",
            "fixed_fee_per_month": "10",
        },
        headers=admin,
    )
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/billing/runs/{run_id}/correct", headers=admin)
    assert r.status_code == 201, r.text
    corr = r.json()
    assert corr["kind"] == "correction"
    assert corr["corrects_run_id"] == run_id
    credits = [ln for ln in corr["lines"] if ln["kind"] == "credit"]
    rebills = [ln for ln in corr["lines"] if ln["kind"] == "rebill"]
    assert len(credits) == len(rebills) == 3
    assert all(D(c["net"]) < 0 for c in credits)
    diff = sum(D(ln["net"]) for ln in corr["lines"])
    cent = D("0.01")
    assert diff == sum(
        (
            (D(ln["quantity"]) * D("35.00")).quantize(cent, ROUND_HALF_UP)
            - (D(ln["quantity"]) * D("32.75")).quantize(cent, ROUND_HALF_UP)
            for ln in rebills
        ),
        D(0),
    )
    # History is intact: the locked run still says what it said.
    again = (await client.get(f"/api/billing/runs/{run_id}", headers=admin)).json()
    assert again["state"] == "locked"
    assert again["lines"] == run["lines"]
    audit = [a["action"] for a in again["audit"]]
    assert audit == ["computed", "approved", "exported", "locked"]


async def test_role_scoping(client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin", "pw-admin")
    runs = (await client.get("/api/billing/properties/BRF-1/runs", headers=admin)).json()
    assert runs, "the run test above stores runs"
    run_id = runs[-1]["id"]
    board1 = await login(client, "board-1", "pw-b1")
    board2 = await login(client, "board-2", "pw-b2")
    assert (await client.get(f"/api/billing/runs/{run_id}", headers=board1)).status_code == 200
    assert (await client.get("/api/billing/properties/BRF-1/settings", headers=board1)).status_code == 200
    docs = (await client.get(f"/api/billing/runs/{run_id}/documents", headers=board1)).json()
    assert docs
    # Board members read, they do not manage.
    r = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-01"}, headers=board1
    )
    assert r.status_code == 403
    # Another property's board sees nothing of it.
    assert (await client.get(f"/api/billing/runs/{run_id}", headers=board2)).status_code == 404
    assert (await client.get("/api/billing/properties/BRF-1/runs", headers=board2)).status_code == 404
    assert (await client.get(f"/api/billing/documents/{docs[0]['id']}", headers=board2)).status_code == 404
    assert (await client.get(f"/api/billing/runs/{run_id}")).status_code == 401


async def test_stopped_run_waits_for_approval(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A blocking fault billed on an estimate in the largest apartment: the estimated share of the heat
    pool's area is over 25 %, so the run stops (202 with reasons) until someone approves it."""
    admin = await login(client, "admin", "pw-admin")
    await _configure(client, admin, "BRF-2")
    settings = {**SETTINGS, "fault_policy": "estimate"}
    assert (
        await client.put("/api/billing/properties/BRF-2/settings", json=settings, headers=admin)
    ).status_code == 200
    state = app.state.central
    async with state.db.sessions.begin() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == f"{20_000_002:08d}"))).scalar_one()
        now = datetime.now(UTC)
        session.add(
            Fault(
                meter_id=meter.id,
                rule="stuck_register",
                state="open",
                message="stuck",
                first_seen_at=now,
                last_seen_at=now,
                blocks_billing=True,
            )
        )
    r = await client.post(
        "/api/billing/properties/BRF-2/runs", json={"period_from": "2025-03-01"}, headers=admin
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "stopped"
    assert body["needs_approval"] is True
    assert [s["code"] for s in body["stop_reasons"]] == ["estimated_share_over_limit"]
    run_id = body["run_id"]
    assert (
        await client.post(f"/api/billing/runs/{run_id}/export", json={}, headers=admin)
    ).status_code == 409
    r = await client.post(f"/api/billing/runs/{run_id}/approve", json={"note": "ok"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    assert any("estimated_share_over_limit" in a for a in r.json()["approvals"])
    run = (await client.get(f"/api/billing/runs/{run_id}", headers=admin)).json()
    heat = [ln for ln in run["lines"] if ln["medium"] == "heat"]
    assert sum(D(ln["net"]) for ln in heat) == D("3235.37")
    assert any(ln["estimated"] for ln in heat)


async def test_a_run_id_taken_meanwhile_is_a_conflict_and_loses_nothing(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests for the same period count the same runs and pick the same id: the second one's
    insert is refused. It gets a 409 saying to retry, and the stored run is untouched."""
    import central.api.billing as billing_api

    admin = await login(client, "admin", "pw-admin")
    runs = (await client.get("/api/billing/properties/BRF-1/runs", headers=admin)).json()
    taken = runs[0]["id"]
    before = (await client.get(f"/api/billing/runs/{taken}", headers=admin)).json()

    async def same_id(*_args: Any) -> str:
        return str(taken)

    monkeypatch.setattr(billing_api, "next_run_id", same_id)
    r = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-01"}, headers=admin
    )
    assert r.status_code == 409, r.text
    assert "retry" in r.json()["detail"]
    assert (await client.get(f"/api/billing/runs/{taken}", headers=admin)).json() == before
    assert len((await client.get("/api/billing/properties/BRF-1/runs", headers=admin)).json()) == len(runs)
