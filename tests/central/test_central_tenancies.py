"""Tenancies stored in central: CRUD with roles and scope, the register import (all rows valid or
nothing), and a run from the database that splits an apartment at a move, by readings and by days,
checked against figures worked out by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from central_testdata import BACKENDS, database_url
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from test_central_billing import _readings, _site, login

from central.api.app import create_app
from central.auth import create_user
from central.config import Settings
from central.models import Apartment, Meter, MeterPoint, Property, Reading, Tenancy
from central.site_import import import_site

pytestmark = pytest.mark.asyncio(loop_scope="module")
D = Decimal


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("central-tenancies")
    async with database_url(request, directory) as url:
        application = create_app(Settings(data_dir=directory / "data", database_url=url).validated())
        async with application.router.lifespan_context(application):
            state = application.state.central
            await import_site(state.db, _site("BRF-1", 10_000_000), state.keybox)
            await import_site(state.db, _site("BRF-2", 20_000_000), state.keybox)
            await _readings(state.db, "BRF-1", "c-1")
            await create_user(state.db, "admin", "pw-admin", "admin")
            await create_user(state.db, "staff", "pw-staff", "staff")
            await create_user(state.db, "tech", "pw-tech", "technician")
            await create_user(state.db, "board-1", "pw-b1", "board", properties=["BRF-1"])
            await create_user(state.db, "board-2", "pw-b2", "board", properties=["BRF-2"])
            yield application


async def _apartment_ids(app: FastAPI, key: str) -> dict[str, int]:
    async with app.state.central.db.sessions() as session:
        rows = await session.execute(
            select(Apartment.object_number, Apartment.id)
            .join(Property, Property.id == Apartment.property_id)
            .where(Property.key == key)
        )
        return dict(rows.all())


async def _tenancy_count(app: FastAPI) -> int:
    async with app.state.central.db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Tenancy))).scalar_one()


async def test_crud_roles_scope_and_overlaps(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await _apartment_ids(app, "BRF-2")
    staff = await login(client, "staff", "pw-staff")
    url = f"/api/billing/apartments/{ids['OBJ-3']}/tenancies"
    r = await client.post(
        url, json={"tenant_ref": "K-100", "name": "Anna Berg", "move_in": "2024-01-01"}, headers=staff
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["object_number"] == "OBJ-3"
    assert first["move_out"] is None
    # A second tenancy while the first is open overlaps it: refused, naming the one in the way.
    body: dict[str, Any] = {"tenant_ref": "K-200", "name": "Per Ek", "move_in": "2025-02-01"}
    r = await client.post(url, json=body, headers=staff)
    assert r.status_code == 409
    assert "K-100 2024-01-01..open" in r.json()["detail"]
    # Close the first (move-out = the first day no longer occupied), then the second fits.
    r = await client.put(
        f"/api/billing/tenancies/{first['id']}",
        json={"tenant_ref": "K-100", "name": "Anna Berg", "move_in": "2024-01-01", "move_out": "2025-02-01"},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    r = await client.post(url, json=body, headers=staff)
    assert r.status_code == 201, r.text
    second = r.json()
    # Dates out of order and binary nonsense get reasons, not crashes.
    r = await client.post(
        url, json={"tenant_ref": "K-9", "move_in": "2026-05-01", "move_out": "2026-05-01"}, headers=staff
    )
    assert r.status_code == 422
    assert "must be after move_in" in r.json()["detail"]
    r = await client.post(url, json={"tenant_ref": "", "move_in": "2026-05-01"}, headers=staff)
    assert r.status_code == 422

    # Board members read their own properties' tenancies, never write; others see nothing.
    board2 = await login(client, "board-2", "pw-b2")
    board1 = await login(client, "board-1", "pw-b1")
    tech = await login(client, "tech", "pw-tech")
    listed = (await client.get(url, headers=board2)).json()
    assert [t["tenant_ref"] for t in listed] == ["K-100", "K-200"]
    assert (await client.post(url, json=body, headers=board2)).status_code == 403
    assert (await client.get(url, headers=board1)).status_code == 404
    assert (await client.get(f"/api/billing/tenancies/{second['id']}", headers=board1)).status_code == 404
    assert (await client.get(url, headers=tech)).status_code == 403
    assert (await client.get(url)).status_code == 401
    assert (await client.delete(f"/api/billing/tenancies/{second['id']}", headers=board2)).status_code == 403
    assert (await client.delete(f"/api/billing/tenancies/{second['id']}", headers=staff)).status_code == 204
    assert [t["tenant_ref"] for t in (await client.get(url, headers=staff)).json()] == ["K-100"]
    # An apartment with a tenancy is not deleted from under it (409 naming what is in the way).
    r = await client.post(
        "/api/properties/BRF-2/apartments",
        json={"object_number": "OBJ-9", "number": "1009", "building": "A", "area_m2": "30"},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    spare = r.json()["ref"]
    r = await client.post(
        f"/api/billing/apartments/{spare}/tenancies",
        json={"tenant_ref": "K-9", "move_in": "2025-01-01"},
        headers=staff,
    )
    assert r.status_code == 201
    tenancy_id = r.json()["id"]
    r = await client.delete(f"/api/apartments/{spare}", headers=staff)
    assert r.status_code == 409
    assert "tenancies" in r.json()["detail"]
    assert (await client.delete(f"/api/billing/tenancies/{tenancy_id}", headers=staff)).status_code == 204
    assert (await client.delete(f"/api/apartments/{spare}", headers=staff)).status_code == 204


REGISTER = (
    "Objektsnummer;Lägenhetsnummer;Hyresgäst;Namn;Inflyttning;Utflyttning\n"
    "OBJ-1;;K-1;Karin Lind;2019-05-01;2025-03-16\n"
    "OBJ-1;;K-2;Olof Nyström;2025-03-16;\n"
    ";1002;K-3;Sara Öberg;20210101;2025-03-21\n"  # found by lägenhetsnummer, compact date
    "OBJ-2;1002;K-4;Jon Ahl;2025-03-21;\n"
)


async def test_register_import_is_all_or_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin", "pw-admin")
    url = "/api/billing/properties/BRF-1/tenancies/import"
    before = await _tenancy_count(app)
    bad = (
        REGISTER
        + "OBJ-9;;K-5;Nils Ny;2025-01-01;\n"  # no such apartment
        + "OBJ-3;;K-6;Eva Sten;2025-04-01;2025-03-01\n"  # out of order
        + "OBJ-1;;K-7;Ulla Dubbel;2025-03-20;\n"  # overlaps K-2 in the same file
        + "OBJ-3;1001;K-8;Fel Nummer;2025-01-01;\n"  # object number and lägenhetsnummer disagree
        + "OBJ-3;;K-9;Datum Fel;1 mars 2025;\n"
    )
    r = await client.post(url, content=bad.encode(), headers=admin)
    assert r.status_code == 422
    report = r.json()
    assert report["imported"] is False
    assert report["rows"] == 9
    assert report["accepted"] == 4
    reasons = {row["row"]: row["reason"] for row in report["refused"]}
    assert reasons[6] == "object_number: no apartment 'OBJ-9' in BRF-1"
    assert "must be after move_in" in reasons[7]
    assert reasons[8] == "overlaps K-2 2025-03-16..open (row 3) of OBJ-1"
    assert reasons[9] == "number: OBJ-3 is lägenhetsnummer 1003, not 1001"
    assert "is not a date" in reasons[10]
    assert await _tenancy_count(app) == before  # nothing half-imported

    # A dry run reports without writing; the real import writes all four.
    r = await client.post(url, params={"dry_run": "true"}, content=REGISTER.encode(), headers=admin)
    assert r.status_code == 200
    assert (r.json()["accepted"], r.json()["imported"]) == (4, False)
    assert await _tenancy_count(app) == before
    r = await client.post(url, content=REGISTER.encode("cp1252"), headers=admin)  # older Windows export
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"tenancies_created": 4, "tenancies_updated": 0, "tenancies_unchanged": 0}
    # The same register again changes nothing.
    r = await client.post(url, content=REGISTER.encode(), headers=admin)
    assert r.json()["summary"] == {"tenancies_created": 0, "tenancies_updated": 0, "tenancies_unchanged": 4}
    # A register giving the contract's last day (t.o.m.) fills in K-4's move-out: an update.
    later = "Objektsnummer;Hyresgäst;Namn;Inflyttning;Utflyttning\nOBJ-2;K-4;Jon Ahl;2025-03-21;2025-06-30\n"
    r = await client.post(url, params={"move_out_is_last_day": "true"}, content=later.encode(), headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"tenancies_created": 0, "tenancies_updated": 1, "tenancies_unchanged": 0}
    ids = await _apartment_ids(app, "BRF-1")
    listed = (await client.get(f"/api/billing/apartments/{ids['OBJ-2']}/tenancies", headers=admin)).json()
    assert listed[-1]["move_out"] == "2025-07-01"  # the contract's last day + 1: first day not occupied
    # A stored tenancy in the way of a row is named, and the row is refused.
    clash = "Objektsnummer;Hyresgäst;Inflyttning\nOBJ-1;K-X;2025-03-20\n"
    r = await client.post(url, content=clash.encode(), headers=admin)
    assert r.status_code == 422
    assert "overlaps the stored tenancy K-2 2025-03-16..open of OBJ-1" in r.json()["refused"][0]["reason"]
    # Board members may not import; a header without an apartment column is refused as a whole.
    board1 = await login(client, "board-1", "pw-b1")
    assert (await client.post(url, content=REGISTER.encode(), headers=board1)).status_code == 403
    r = await client.post(url, content=b"Hyresgast;Inflyttning\nK-1;2025-01-01\n", headers=admin)
    assert r.status_code == 422
    assert "object_number" in r.json()["detail"]


async def test_run_splits_at_stored_moves(app: FastAPI, client: httpx.AsyncClient) -> None:
    """March 2025, cold water at 32.75 kr/m³ plus 10 kr per apartment and month, no VAT.

    Readings (``_readings``): daily at 23:30 UTC, value = 100 + daily use × n, n = days since
    20 Feb. Period boundaries are local midnights, interpolated between the readings around them.

    OBJ-1 (0.151 m³/day), K-1 moves out and K-2 in on 16 March. A reading was taken on 16 March
    local (15 Mar 23:30 UTC = 00:30 CET, n = 23): split *by readings* at 100 + 0.151 × 23 = 103.473.
      start 1 Mar 00:00 CET = 28 Feb 23:00 UTC, 23.5 h after n = 7 (101.057):
            101.057 + 0.151 × 23.5/24 = 101.20485
      end   1 Apr 00:00 CEST = 31 Mar 22:00 UTC, 22.5 h after n = 38 (105.738):
            105.738 + 0.151 × 22.5/24 = 105.8795625
      K-1: 103.473 − 101.20485 = 2.26815 → 2.268 m³ × 32.75 = 74.277 → 74.28 kr
      K-2: 105.8795625 − 103.473 = 2.4065625 → 2.407 m³ × 32.75 = 78.82925 → 78.83 kr
      fee: 10 × 15/31 = 4.8387 and 10 × 16/31 = 5.1613 → 4.83 + 5.16 = 9.99, the last öre to the
           larger remainder (K-1): 4.84 and 5.16.

    OBJ-2 (0.222 m³/day), K-3 moves out and K-4 in on 21 March, and the readings of that local day
    are missing: split *by days* (flagged estimated, "split by days"):
      start 100 + 0.222 × 7 + 0.222 × 23.5/24 = 101.771375; end 100 + 0.222 × 38 + 0.222 × 22.5/24
      = 108.644125; month 6.87275 → 6.873 m³
      K-3: 20 of 31 days: 4.434193… ; K-4: 11/31: 2.438806… → at 0.001 by largest remainder
           4.434 and 2.439 (Σ 6.873) → 4.434 × 32.75 = 145.2135 → 145.21; 2.439 × 32.75 = 79.87725 → 79.88
      fee: 10 × 20/31 = 6.4516, 10 × 11/31 = 3.5484 → 6.45 and 3.55.
    """
    admin = await login(client, "admin", "pw-admin")
    r = await client.put(
        "/api/billing/properties/BRF-1/settings",
        json={"vat_registered": False, "media": {"cold_water": {"model": "debitering"}}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/billing/properties/BRF-1/prices",
        json={
            "medium": "cold_water",
            "valid_from": "2025-01-01",
            "unit_price": "32.75",
            "fixed_fee_per_month": "10",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    state = app.state.central
    async with state.db.sessions.begin() as session:
        meter_ids = (
            (
                await session.execute(
                    select(Meter.id)
                    .join(MeterPoint, MeterPoint.id == Meter.meter_point_id)
                    .join(Apartment, Apartment.id == MeterPoint.apartment_id)
                    .where(
                        Apartment.object_number == "OBJ-2",
                        Meter.medium == "cold_water",
                        Meter.serial.startswith("1"),
                    )
                )
            )
            .scalars()
            .all()
        )
        assert len(meter_ids) == 1
        await session.execute(
            delete(Reading).where(
                Reading.meter_id == meter_ids[0],
                Reading.read_at == datetime(2025, 3, 20, 23, 30, tzinfo=UTC),  # = 21 Mar 00:30 local
            )
        )
    # The register from the import test is stored (K-4's move-out is after March).
    r = await client.post(
        "/api/billing/properties/BRF-1/runs", json={"period_from": "2025-03-01"}, headers=admin
    )
    assert r.status_code == 201, r.text
    run = (await client.get(f"/api/billing/runs/{r.json()['run_id']}", headers=admin)).json()
    got = {
        (ln["object_number"], ln["tenant_ref"], ln["kind"]): ln
        for ln in run["lines"]
        if ln["object_number"] in {"OBJ-1", "OBJ-2"}
    }
    expected = {
        ("OBJ-1", "K-1", "consumption"): ("2.268", "74.28", "2025-03-01", "2025-03-16"),
        ("OBJ-1", "K-2", "consumption"): ("2.407", "78.83", "2025-03-16", "2025-04-01"),
        ("OBJ-1", "K-1", "fixed_fee"): (None, "4.84", "2025-03-01", "2025-03-16"),
        ("OBJ-1", "K-2", "fixed_fee"): (None, "5.16", "2025-03-16", "2025-04-01"),
        ("OBJ-2", "K-3", "consumption"): ("4.434", "145.21", "2025-03-01", "2025-03-21"),
        ("OBJ-2", "K-4", "consumption"): ("2.439", "79.88", "2025-03-21", "2025-04-01"),
        ("OBJ-2", "K-3", "fixed_fee"): (None, "6.45", "2025-03-01", "2025-03-21"),
        ("OBJ-2", "K-4", "fixed_fee"): (None, "3.55", "2025-03-21", "2025-04-01"),
    }
    assert set(got) == set(expected)
    for key, (qty, net, lo, hi) in expected.items():
        line = got[key]
        assert (line["period_from"], line["period_to"]) == (lo, hi), key
        assert D(line["net"]) == D(net), (key, line["net"])
        if qty is not None:
            assert D(line["quantity"]) == D(qty), (key, line["quantity"])
    assert got[("OBJ-1", "K-1", "consumption")]["estimated"] is False  # by readings
    by_days = got[("OBJ-2", "K-3", "consumption")]
    assert by_days["estimated"] is True
    assert by_days["estimate_method"] == "split by days 20/31"
    assert by_days["estimate_reason"] == "no reading on the move date"
    # OBJ-3 has no stored tenancy: its tenant_ref bills the whole month as before.
    assert {ln["tenant_ref"] for ln in run["lines"] if ln["object_number"] == "OBJ-3"} == {"T-OBJ-3"}


async def test_the_shared_imports_endpoint_takes_the_tenancy_register(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """``POST /api/properties/{key}/imports/tenancies`` is the same import as the billing route."""
    admin = await login(client, "admin", "pw-admin")
    url = "/api/properties/BRF-1/imports/tenancies"
    register = "Objektsnummer;Hyresgäst;Namn;Inflyttning\nOBJ-3;K-20;Åsa Berg;2024-02-01\n"
    r = await client.post(url, params={"dry_run": "true"}, content=register.encode(), headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["imported"]) == (1, False)
    cp1252 = b"Objektsnummer;Hyresg\xe4st;Inflyttning\nOBJ-404;K-21;2024-02-01\n"
    refused = await client.post(url, content=cp1252, headers=admin)
    assert refused.status_code == 422  # cp1252 header read, the row refused with its reason
    assert "OBJ-404" in refused.json()["refused"][0]["reason"]
