"""Billing in the web pages, over HTTP against a real central (SQLite): the resident's consumption in
kronor (price list and the last run's average price, Decimal, rounded to öre), the portal's digital
archive (every document and supplier invoice, searchable, downloadable, checksums shown, scoped), and
meter and apartment pages linking readings to the billing bases that used them."""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select

from central.api.app import create_app
from central.api.deps import TOKEN_COOKIE
from central.auth import create_user
from central.config import Settings
from central.models import Meter, Reading
from central.reading_months import rebuild
from central.site_import import import_site
from protocols.site import SiteExport

pytestmark = pytest.mark.asyncio(loop_scope="module")
D = Decimal
PW = "pw-web-billing"
# apartment -> (area, cold water m³ per day, heat Wh per day)
APARTMENTS = {"OBJ-1": ("60.0", "0.150", 20_000), "OBJ-2": ("40.0", "0.100", 10_000)}
TODAY = datetime.now(UTC).date()


def _month_start(day: date, back: int = 0) -> date:
    y, m = day.year, day.month - back
    while m < 1:
        y, m = y - 1, m + 12
    return date(y, m, 1)


RUN_MONTH = _month_start(TODAY, 1)  # the previous month is billed


def _site(key: str, base: int) -> SiteExport:
    meters = []
    for n, obj in enumerate(APARTMENTS):
        meters.append(
            {"id": f"{base + 2 * n:08d}", "manufacturer": "ACW", "version": 20, "device_type": 7,
             "medium": "cold_water", "apartment": obj}
        )  # fmt: skip
        meters.append(
            {"id": f"{base + 2 * n + 1:08d}", "manufacturer": "KAM", "version": 8, "device_type": 4,
             "medium": "heat", "apartment": obj}
        )  # fmt: skip
    return SiteExport.model_validate(
        {
            "property": {"id": key, "name": f"Brf {key}", "city": "Uppsala", "address": "Storgatan 2"},
            "buildings": [{"id": "A", "name": "Hus A"}],
            "apartments": [
                {
                    "object_number": obj,
                    "number": f"10{n + 1:02d}",
                    "building": "A",
                    "area_m2": area,
                    "tenant_ref": f"T-{obj}",
                }
                for n, (obj, (area, _w, _h)) in enumerate(APARTMENTS.items())
            ],
            "meters": meters,
        }
    )


async def _readings(app: FastAPI) -> None:
    """A read-out at 00:00 UTC every day for 14 months up to today (no raw frames needed)."""
    db = app.state.central.db
    first = _month_start(TODAY, 14)
    days = (TODAY - first).days + 1
    async with db.sessions.begin() as session:
        meters = (await session.execute(select(Meter).order_by(Meter.serial))).scalars().all()
        rows = []
        for meter in meters:
            meter.installed_at = datetime(first.year, first.month, 1, tzinfo=UTC) - timedelta(days=30)
            n = (int(meter.serial) % 100) // 2
            _area, water, heat = APARTMENTS[list(APARTMENTS)[n]]
            for k in range(days):
                at = datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=k)
                if meter.medium == "cold_water":
                    value, quantity, unit, reg = D("100.000") + D(water) * k, "volume", "m3", "0413"
                else:
                    value, quantity, unit, reg = D(1_000_000 + heat * k), "energy", "Wh", "0406"
                rows.append(
                    Reading(
                        meter_id=meter.id, register=reg, read_at=at, quantity=quantity, unit=unit,
                        value=value, storage=0, tariff=0, subunit=0, function="instantaneous",
                    )
                )  # fmt: skip
        session.add_all(rows)
        await session.flush()
        await rebuild(session, [m.id for m in meters])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("web-billing")
    application = create_app(Settings(data_dir=directory / "data").validated())
    async with application.router.lifespan_context(application):
        state = application.state.central
        await import_site(state.db, _site("BRF-W", 30_000_000), state.keybox)
        await import_site(
            state.db, _site("BRF-X", 40_000_000).model_copy(update={"meters": []}), state.keybox
        )
        await _readings(application)
        await create_user(state.db, "admin", PW, "admin")
        await create_user(state.db, "board-w", PW, "board", properties=["BRF-W"])
        await create_user(state.db, "board-x", PW, "board", properties=["BRF-X"])
        await create_user(state.db, "res-1", PW, "resident", apartment="OBJ-1", properties=["BRF-W"])
        yield application


@pytest_asyncio.fixture(loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http


async def _token(http: httpx.AsyncClient, user: str) -> str:
    r = await http.post("/api/auth/token", data={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def _get(http: httpx.AsyncClient, user: str, url: str) -> httpx.Response:
    """A page as ``user`` sees it in the browser (the session cookie, no Authorization header)."""
    http.cookies.clear()
    http.cookies.set(TOKEN_COOKIE, await _token(http, user))
    try:
        return await http.get(url)
    finally:
        http.cookies.clear()


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text[:500]
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def billed(app: FastAPI) -> dict[str, Any]:
    """Last month billed and exported: cold water by the price list, heat by fördelning of an invoice."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        admin = {"Authorization": f"Bearer {await _token(http, 'admin')}"}
        settings = {
            "media": {"cold_water": {"model": "debitering"}, "heat": {"model": "fordelning"}},
            "vat_registered": False,
        }
        r = await http.put("/api/billing/properties/BRF-W/settings", json=settings, headers=admin)
        assert r.status_code == 200, r.text
        price = {"medium": "cold_water", "valid_from": "2020-01-01", "unit_price": "32.75"}
        r = await http.post("/api/billing/properties/BRF-W/prices", json=price, headers=admin)
        assert r.status_code == 201, r.text
        invoice = {
            "supplier": "Uppsala Fjärrvärme",
            "reference": "F-4711",
            "medium": "heat",
            "period_from": RUN_MONTH.isoformat(),
            "period_to": _month_start(TODAY).isoformat(),
            "lines": [{"kind": "energy", "amount": "900.00", "text": "Energi"}],
        }
        r = await http.post("/api/billing/properties/BRF-W/invoices", json=invoice, headers=admin)
        assert r.status_code == 201, r.text
        r = await http.post(
            "/api/billing/properties/BRF-W/runs", json={"period_from": RUN_MONTH.isoformat()}, headers=admin
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        assert (
            await http.post(f"/api/billing/runs/{run_id}/approve", json={}, headers=admin)
        ).status_code == 200
        r = await http.post(f"/api/billing/runs/{run_id}/export", json={}, headers=admin)
        assert r.status_code == 200, r.text
        run = (await http.get(f"/api/billing/runs/{run_id}", headers=admin)).json()
        return {"run_id": run_id, "documents": r.json()["documents"], "lines": run["lines"]}


async def test_resident_sees_consumption_in_kronor(client: httpx.AsyncClient, billed: dict[str, Any]) -> None:
    costs = _csv(await _get(client, "res-1", "/mitt?csv=my_costs"))
    rows = {r[0]: r for r in costs[1:]}
    assert set(rows) == {"Kallvatten", "Värme"}
    # Cold water, price list 32.75 kr/m³ (not VAT-registered): OBJ-1 uses 0.150 m³ a day, OBJ-2 0.100.
    days_now = TODAY.day  # today's 00:00 reading closes yesterday; the 1st's closes the last month
    prev = calendar.monthrange(RUN_MONTH.year, RUN_MONTH.month)[1]
    last_year = _month_start(TODAY, 12)
    days_ly = calendar.monthrange(last_year.year, last_year.month)[1]
    cent = D("0.01")

    def kr(m3: Decimal) -> str:
        return str((m3 * D("32.75")).quantize(cent, ROUND_HALF_UP))

    water = rows["Kallvatten"]
    assert water[1] == "32.7500 kr/m³"
    assert water[2:6] == [
        kr(D("0.150") * days_now),
        kr(D("0.150") * prev),
        kr(D("0.150") * days_ly),
        kr(D("0.125") * days_now),  # building average per apartment: (0.150 + 0.100) / 2 a day
    ]
    assert water[6].endswith("2020-01-01")
    # Heat by fördelning: the last run's average price, Σ net ÷ Σ kWh of its consumption lines.
    heat_lines = [ln for ln in billed["lines"] if ln["medium"] == "heat" and ln["kind"] == "consumption"]
    net = sum((D(ln["net"]) for ln in heat_lines), D(0))
    assert net == D("900.00")  # the pool, to the öre
    avg = (net / sum((D(ln["quantity"]) for ln in heat_lines), D(0))).quantize(D("0.0001"))
    heat = rows["Värme"]
    assert heat[1] == f"{avg} kr/kWh"
    assert heat[3] == str((D(20) * prev * avg).quantize(cent, ROUND_HALF_UP))  # last month: 20 kWh a day
    assert billed["run_id"] in heat[6]
    page = await _get(client, "res-1", "/mitt?lang=en")
    assert "What the consumption costs" in page.text


async def test_archive_lists_searches_and_serves_documents(
    client: httpx.AsyncClient, billed: dict[str, Any]
) -> None:
    url = "/portal/p/BRF-W/archive"
    rows = _csv(await _get(client, "board-w", f"{url}?csv=archive"))
    assert rows[0][-1] == "SHA-256"
    listed = {r[1]: r for r in rows[1:]}
    docs = billed["documents"]
    assert len(listed) == len(docs) + 1  # + the supplier invoice
    for d in docs:
        assert listed[d["name"]][-1] == d["sha256"]
    kinds = sorted(r[0] for r in rows[1:])
    assert kinds.count("Debiteringsunderlag") == 2
    assert {"Debiteringsfil", "Fastighetssammanställning", "Leverantörsfaktura"} <= set(kinds)
    # Search: by apartment, by kind, by period, by supplier.
    only = _csv(await _get(client, "board-w", f"{url}?csv=archive&q=OBJ-2"))[1:]
    assert [r[3] for r in only] == ["1002 (OBJ-2)"]
    summary = _csv(await _get(client, "board-w", f"{url}?csv=archive&kind=summary"))[1:]
    assert [r[0] for r in summary] == ["Fastighetssammanställning"]
    month = RUN_MONTH.strftime("%Y-%m")
    assert len(_csv(await _get(client, "board-w", f"{url}?csv=archive&period={month}"))) == len(rows)
    page = await _get(client, "board-w", f"{url}?period=1999-01")
    assert 'id="archive-none"' in page.text
    supplier = _csv(await _get(client, "board-w", f"{url}?csv=archive&q=fjärrvärme"))[1:]
    assert [r[0] for r in supplier] == ["Leverantörsfaktura"]
    # Downloads: the bytes match the checksum shown, for an archived PDF and a supplier invoice.
    page = await _get(client, "board-w", url)
    assert page.status_code == 200
    pdf = next(d for d in docs if d["kind"] == "underlag")
    assert f'href="/portal/documents/{pdf["id"]}"' in page.text
    got = await _get(client, "board-w", f"/portal/documents/{pdf['id']}")
    assert got.status_code == 200
    assert got.content.startswith(b"%PDF-")
    assert hashlib.sha256(got.content).hexdigest() == pdf["sha256"] == got.headers["x-sha256"]
    inv = supplier[0]
    inv_url = page.text.split("/portal/p/BRF-W/archive/invoices/", 1)[1].split('"', 1)[0]
    got = await _get(client, "board-w", f"/portal/p/BRF-W/archive/invoices/{inv_url}")
    assert hashlib.sha256(got.content).hexdigest() == inv[-1]
    assert "F-4711" in got.content.decode("utf-8-sig")
    # Scope: another property's board sees neither the archive nor a document; the resident only
    # their own billing basis.
    assert (await _get(client, "board-x", url)).status_code == 403
    assert (await _get(client, "board-x", f"/portal/documents/{pdf['id']}")).status_code == 404
    mine = next(d for d in docs if d["kind"] == "underlag" and "OBJ-1" in d["name"])
    theirs = next(d for d in docs if d["kind"] == "underlag" and "OBJ-2" in d["name"])
    assert (await _get(client, "res-1", f"/portal/documents/{mine['id']}")).status_code == 200
    assert (await _get(client, "res-1", f"/portal/documents/{theirs['id']}")).status_code == 404
    summary_doc = next(d for d in docs if d["kind"] == "summary")
    assert (await _get(client, "res-1", f"/portal/documents/{summary_doc['id']}")).status_code == 404
    assert (await _get(client, "res-1", url)).status_code == 403
    # A property with nothing archived says so.
    assert 'id="archive-empty"' in (await _get(client, "board-x", "/portal/p/BRF-X/archive")).text


async def test_meter_and_apartment_pages_link_readings_to_billing_bases(
    app: FastAPI, client: httpx.AsyncClient, billed: dict[str, Any]
) -> None:
    async with app.state.central.db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "30000000"))).scalar_one()
    rows = _csv(await _get(client, "board-w", f"/meters/{meter.id}?csv=billing_bases"))[1:]
    assert len(rows) == 1
    run_col, _period, charge, obj, tenant, qty, net, used, _doc = rows[0]
    line = next(
        ln for ln in billed["lines"] if ln["object_number"] == "OBJ-1" and ln["charge"] == "cold_water"
    )
    assert run_col.startswith(billed["run_id"])
    assert (charge, obj, tenant) == ("Kallvatten", "OBJ-1", "T-OBJ-1")
    assert net == f"{D(line['net']):.2f} kr"
    assert qty == f"{line['quantity']} m³"
    # The boundary values are interpolated between the readings on either side of each local midnight.
    assert used.count(" = ") == 4
    start = RUN_MONTH - timedelta(days=1)
    assert f"{start:%Y-%m-%d} 00:00" in used
    page = await _get(client, "board-w", f"/meters/{meter.id}")
    underlag = next(d for d in billed["documents"] if d["kind"] == "underlag" and "OBJ-1" in d["name"])
    assert f'href="/portal/documents/{underlag["id"]}"' in page.text
    # The apartment page: both meters' lines (cold water and heat), for the resident too.
    apartment = page.text.split('href="/apartments/', 1)[1].split('"', 1)[0]
    rows = _csv(await _get(client, "res-1", f"/apartments/{apartment}?csv=billing_bases"))[1:]
    assert sorted(r[2] for r in rows) == ["Kallvatten", "Värme"]


async def test_apartment_page_shows_tenancies_to_the_board_not_to_residents(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.central.db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "30000000"))).scalar_one()
    page = await _get(client, "board-w", f"/meters/{meter.id}")
    apartment = page.text.split('href="/apartments/', 1)[1].split('"', 1)[0]
    admin = {"Authorization": f"Bearer {await _token(client, 'admin')}"}
    body = {"tenant_ref": "T-OBJ-1", "name": "Karin Lind", "move_in": "2019-05-01"}
    r = await client.post(f"/api/billing/apartments/{apartment}/tenancies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    rows = _csv(await _get(client, "board-w", f"/apartments/{apartment}?csv=tenancies"))
    assert rows[1][:3] == ["T-OBJ-1", "Karin Lind", "2019-05-01"]
    assert _csv(await _get(client, "res-1", f"/apartments/{apartment}?csv=tenancies"))[1:] == []
    assert "Karin Lind" not in (await _get(client, "res-1", f"/apartments/{apartment}")).text
