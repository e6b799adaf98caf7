"""The web pages in a real browser: Debian's chromium driven by Playwright against a live central.

Central runs as a subprocess on a free port over a temporary SQLite database seeded with simulator
data (``web_seed.py``: two properties, a year of readouts through the real ingest, the meter checks).
Skips with the reason when /usr/bin/chromium is missing (``make browser`` installs it). Screenshots of
the main pages land in ``test-artifacts/web/``; axe-core (vendored, MPL-2.0) checks accessibility.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "web"
AXE = HERE / "vendor" / "axe.min.js"
PASSWORD = "web-test-pw"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is missing: run `make browser` (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("web-central")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "hardware-sim")])}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "web_seed.py"), str(data), "--apartments", "4", "--serve", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    info: dict[str, Any] = {}
    deadline = time.monotonic() + 75
    lines = []
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("{"):
                info = json.loads(line)
            if line.startswith("ready"):
                break
        else:
            pytest.fail("central did not start in time")
        if not info or proc.poll() is not None:
            pytest.fail("seeding or central failed:\n" + "".join(lines[-40:]))
        info["url"] = f"http://127.0.0.1:{port}"
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _login(browser: Any, central: dict[str, Any], user: str, *, phone: bool = False) -> Any:
    viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.goto(central["url"] + "/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _axe(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} - {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_staff_works_a_fault_from_open_to_resolved(browser: Any, central: dict[str, Any]) -> None:
    page = _login(browser, central, "staff")
    assert page.locator("#table-dashboard_faults").is_visible()
    _shot(page, "staff-dashboard")
    page.goto(central["url"] + "/faults?rule=stuck_register")
    row = page.locator("#table-faults tbody tr").first
    assert central["stuck_meter"] in row.inner_text()
    _shot(page, "fault-queue")
    row.locator("a").first.click()
    page.wait_for_url(re.compile(r".*/faults/\d+$"))
    fault_url = page.url
    assert page.locator("#fault-state").inner_text() in ("Öppen", "Open")
    assert page.locator("canvas#evidence-chart").is_visible()
    assert page.locator("details.frame pre.hex").first.is_visible()  # raw frame with its decode
    assert page.locator("details.frame table tbody tr").count() > 0
    _shot(page, "fault-detail")
    page.click("#do-acknowledge")
    assert page.locator("#fault-state").inner_text() == "Kvitterad"
    page.fill("#assignee", "tekniker-anna")
    page.click("#do-assign")
    assert page.locator("#fault-assignee").inner_text() == "tekniker-anna"
    page.fill("#comment-text", "Vattenmätaren står still; byte bokat.")
    page.click("#do-comment")
    assert "byte bokat" in page.locator("#table-fault_history").inner_text()
    page.fill("#resolve-text", "Mätaren bytt")
    page.click("#do-resolve")
    assert page.locator("#fault-state").inner_text() == "Löst"
    history = page.locator("#table-fault_history").inner_text()
    for kind in ("opened", "acknowledged", "assigned", "comment", "resolved"):
        assert kind in history
    assert page.url == fault_url
    page.goto(central["url"] + "/collectors")
    assert page.locator("#table-collectors tbody tr").count() == 2
    _shot(page, "collectors")
    page.goto(central["url"] + "/search?q=" + central["resident_apartment"])
    assert central["resident_apartment"] in page.locator("#table-search_apartments").inner_text()
    page.context.close()


def test_bulk_acknowledge_and_filters(browser: Any, central: dict[str, Any]) -> None:
    page = _login(browser, central, "admin")
    page.goto(central["url"] + "/faults?state=open")
    boxes = page.locator("#table-faults tbody input[type=checkbox]")
    n = boxes.count()
    assert n >= 1, "the seed injects silent and backwards meters: their faults should be open"
    for i in range(n):
        boxes.nth(i).check()
    page.click("#bulk-ack")
    page.wait_for_url(re.compile(r".*/faults\?state=open$"))
    assert page.locator("#table-faults tbody input[type=checkbox]").count() == 0
    page.goto(central["url"] + "/faults?state=acknowledged&sort=oldest&severity=warning")
    assert "Kvitterad" in page.locator("#table-faults").inner_text()
    page.context.close()


def test_board_sees_own_property_compares_and_downloads_csv(browser: Any, central: dict[str, Any]) -> None:
    mine, other = central["properties"]
    page = _login(browser, central, "board")
    assert page.url.endswith("/portal")
    page.goto(f"{central['url']}/portal/p/{mine}")
    assert page.locator("#table-overview tbody tr").count() >= 3  # heat, hot and cold water, electricity
    assert page.locator("#table-vacant tbody tr").count() >= 1
    _shot(page, "property-overview")
    page.goto(f"{central['url']}/portal/p/{mine}/compare?kind=apartments&medium=heat")
    page.wait_for_function("() => document.querySelector('#compare-chart').dataset.drawn === '1'")
    assert page.locator("#table-compare_apartments tbody tr").count() == 4
    _shot(page, "compare-apartments")
    page.goto(f"{central['url']}/portal/p/{mine}/compare?kind=meters&medium=cold_water")
    assert page.locator("#table-compare_meters tbody tr").count() >= 2
    _shot(page, "compare-meters")
    with page.expect_download() as download:
        page.click("a[href$='csv=compare_meters']")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig")), delimiter=";"))
    assert rows[0][0] in ("Mätar-id", "Meter id")
    assert len(rows) >= 3
    assert all(re.fullmatch(r"\d{8}", r[0]) for r in rows[1:])
    # Another property: refused, and its data nowhere on the page.
    response = page.goto(f"{central['url']}/portal/p/{other}")
    assert response is not None
    assert response.status == 403
    assert other not in page.locator("main").inner_text() or "Åtkomst nekad" in page.content()
    response = page.goto(f"{central['url']}/portal/p/{other}/compare")
    assert response is not None
    assert response.status == 403
    response = page.goto(f"{central['url']}/faults")
    assert response is not None
    assert response.status == 403
    page.goto(f"{central['url']}/portal/p/{mine}/compare?kind=properties")
    assert other not in page.locator("#table-compare_properties").inner_text()
    page.goto(f"{central['url']}/portal/p/{mine}/archive")
    assert page.locator("#archive-empty").is_visible()
    page.context.close()


def test_resident_sees_own_apartment_on_a_phone_in_english(browser: Any, central: dict[str, Any]) -> None:
    page = _login(browser, central, "resident", phone=True)
    assert page.url.endswith("/mitt")
    page.goto(central["url"] + "/mitt?lang=en")
    assert page.locator("h1").inner_text() == "My consumption"
    table = page.locator("#table-my_consumption").inner_text()
    assert "kWh" in table
    assert "m³" in table
    _shot(page, "resident-phone")
    page.goto(central["url"] + "/mitt")  # the language stays (cookie)
    assert page.locator("h1").inner_text() == "My consumption"
    own = page.locator("main a[href^='/apartments/']").first.get_attribute("href")
    assert page.goto(central["url"] + "/portal").status == 403  # type: ignore[union-attr]
    page.goto(central["url"] + str(own))
    assert page.locator("canvas").count() >= 1
    _shot(page, "apartment-phone")
    neighbour = int(str(own).rsplit("/", 1)[1]) + 1
    assert page.goto(f"{central['url']}/apartments/{neighbour}").status == 403  # type: ignore[union-attr]
    page.context.close()


def test_forms_need_the_csrf_token(browser: Any, central: dict[str, Any]) -> None:
    page = _login(browser, central, "staff")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["imd_token"]["httpOnly"]
    assert cookies["imd_token"]["sameSite"] == "Strict"
    assert cookies["imd_csrf"]["httpOnly"]
    assert cookies["imd_csrf"]["sameSite"] == "Strict"
    forged = page.request.post(central["url"] + "/faults/bulk", form={"ids": "1", "csrf": "forged-token"})
    assert forged.status == 403
    missing = page.request.post(central["url"] + "/faults/1", form={"action": "reopen"})
    assert missing.status == 403
    page.context.close()


MAIN_PAGES = {
    "staff": ["/", "/faults", "/faults/1", "/meters/1", "/apartments/1"],
    "board": ["/portal/p/{mine}", "/portal/p/{mine}/compare?kind=meters"],
    "resident": ["/mitt"],
}


def test_main_pages_have_no_serious_accessibility_violations(browser: Any, central: dict[str, Any]) -> None:
    problems: dict[str, list[str]] = {}
    anonymous = browser.new_context()
    page = anonymous.new_page()
    page.goto(central["url"] + "/login")
    _shot(page, "login")
    if found := _axe(page):
        problems["/login"] = found
    anonymous.close()
    for user, paths in MAIN_PAGES.items():
        page = _login(browser, central, user)
        for path in paths:
            page.goto(central["url"] + path.format(mine=central["properties"][0]))
            if found := _axe(page):
                problems[f"{user} {path}"] = found
        if user == "staff":
            page.goto(central["url"] + "/meters/1?grain=day")
            _shot(page, "meter-daily")
        page.context.close()
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)


def test_board_searches_the_archive_and_downloads_a_billing_basis(
    browser: Any, central: dict[str, Any]
) -> None:
    """Last month billed and exported through the API (debitering of every medium), then the board
    member finds the property summary in the archive and downloads it; the checksum matches."""
    import hashlib
    from datetime import UTC, date, datetime

    mine = central["properties"][0]
    api = browser.new_context()
    token = api.request.post(
        central["url"] + "/api/auth/token", form={"username": "admin", "password": PASSWORD}
    ).json()["access_token"]
    admin = {"Authorization": f"Bearer {token}"}
    today = datetime.now(UTC).date()
    last = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    media = ("heat", "hot_water", "cold_water", "electricity")
    base = f"{central['url']}/api/billing/properties/{mine}"
    r = api.request.put(
        f"{base}/settings", data={"media": {m: {"model": "debitering"} for m in media}}, headers=admin
    )
    assert r.ok, r.text()
    for medium, price in zip(media, ("1.10", "68.50", "32.75", "1.4375"), strict=True):
        r = api.request.post(
            f"{base}/prices",
            data={"medium": medium, "valid_from": "2020-01-01", "unit_price": price},
            headers=admin,
        )
        assert r.status == 201, r.text()
    r = api.request.post(f"{base}/runs", data={"period_from": last.isoformat()}, headers=admin)
    assert r.status == 201, r.text()
    run_id = r.json()["run_id"]
    assert api.request.post(f"{central['url']}/api/billing/runs/{run_id}/approve", data={}, headers=admin).ok
    exported = api.request.post(f"{central['url']}/api/billing/runs/{run_id}/export", data={}, headers=admin)
    assert exported.ok, exported.text()
    api.close()

    page = _login(browser, central, "board")
    page.goto(f"{central['url']}/portal/p/{mine}/archive")
    assert page.locator("#table-archive tbody tr").count() >= 3  # bases, summary, billing file
    page.select_option("select[name=kind]", "summary")
    page.fill("input[name=period]", last.strftime("%Y-%m"))
    page.click("form.filters button[type=submit]")
    page.wait_for_url(lambda url: "kind=summary" in url)
    rows = page.locator("#table-archive tbody tr")
    assert rows.count() == 1
    shown = rows.first.locator("td").last.inner_text().strip()
    _shot(page, "archive")
    assert not _axe(page)
    with page.expect_download() as download:
        rows.first.locator("a").first.click()
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"%PDF-")
    assert hashlib.sha256(data).hexdigest() == shown
    page.context.close()
