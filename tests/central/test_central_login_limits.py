"""Brute-force limits on login (issue 11, point 6): per username and per client address, for the API's
``POST /api/auth/token`` and the web login form; 429 with ``Retry-After``; exponential backoff.

The throttle's clock is swapped for a hand-moved one, so the test waits for nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from central.api.app import create_app
from central.auth import LoginThrottle, create_user, login_throttle
from central.config import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_backoff_doubles_after_the_free_failures_and_a_success_clears_the_username() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_per_user=3, free_per_address=100, base_s=1.0, max_s=8.0, clock=clock)
    waits = []
    for _ in range(7):
        assert throttle.retry_after("Anna", "10.0.0.1") == 0
        throttle.failed("anna", "10.0.0.1")  # the username counts case-folded
        waits.append(throttle.retry_after("ANNA", "10.0.0.2"))
        clock.now += waits[-1]
    assert waits == [0, 0, 0, 1, 2, 4, 8]
    throttle.failed("anna", "10.0.0.1")
    assert throttle.retry_after("anna", None) == 8  # capped at max_s
    clock.now += 8
    throttle.succeeded("anna", "10.0.0.1")
    throttle.failed("anna", "10.0.0.1")
    assert throttle.retry_after("anna", "10.0.0.1") == 0  # counting starts afresh
    # forgotten after forget_s without failure
    for _ in range(4):
        throttle.failed("bert", None)
    assert throttle.retry_after("bert", None) == 1
    clock.now += throttle.forget_s + 1
    throttle.failed("bert", None)
    assert throttle.retry_after("bert", None) == 0


async def test_the_table_stays_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_entries=100, clock=clock)
    for n in range(1000):
        clock.now += 1
        throttle.failed(f"user-{n}", None)
    assert len(throttle._table) <= 100
    assert throttle.retry_after("user-999", None) == 0  # the newest is kept (first failure is free)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("login-limits")
    application = create_app(Settings(data_dir=directory / "data").validated(), start_ingest=False)
    async with application.router.lifespan_context(application):
        state = application.state.central
        for name in ("anna", "bert", "carl"):
            await create_user(state.db, name, f"{name}-right", "staff")
        yield application


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://testserver"
    )


@pytest_asyncio.fixture(loop_scope="module")
async def clock(app: FastAPI) -> Clock:
    fresh = Clock()
    app.state.central.extras["login_throttle"] = LoginThrottle(clock=fresh)
    return fresh


async def token(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/api/auth/token", data={"username": username, "password": password})


async def test_api_token_locks_a_username_after_five_failures(app: FastAPI, clock: Clock) -> None:
    async with client_from(app, "198.51.100.1") as http, client_from(app, "198.51.100.2") as other:
        for _ in range(6):
            assert (await token(http, "anna", "guess")).status_code == 401
        locked = await token(http, "anna", "anna-right")  # even the right password waits
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "1"
        assert "try again" in locked.json()["detail"]
        # the lock is on the username, from every address; other users are not affected
        assert (await token(other, "anna", "anna-right")).status_code == 429
        assert (await token(http, "bert", "bert-right")).status_code == 200
        clock.now += 1
        assert (await token(http, "anna", "guess")).status_code == 401
        assert (await token(http, "anna", "anna-right")).headers["retry-after"] == "2"  # doubled
        clock.now += 2
        assert (await token(http, "anna", "anna-right")).status_code == 200
        assert (await token(http, "anna", "guess")).status_code == 401  # a success starts afresh


async def test_api_token_locks_an_address_guessing_many_usernames(app: FastAPI, clock: Clock) -> None:
    async with client_from(app, "203.0.113.9") as guesser, client_from(app, "203.0.113.10") as office:
        for n in range(21):
            assert (await token(guesser, f"user-{n}", "guess")).status_code == 401
        refused = await token(guesser, "carl", "carl-right")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert (await token(office, "carl", "carl-right")).status_code == 200


async def test_web_login_form_is_limited_too(app: FastAPI, clock: Clock) -> None:
    async with client_from(app, "192.0.2.5") as http:
        form = (await http.get("/login?lang=en")).text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for _ in range(6):
            failed = await http.post("/login", data={"username": "bert", "password": "guess", "csrf": csrf})
            assert failed.status_code == 401
        locked = await http.post(
            "/login?lang=en", data={"username": "bert", "password": "bert-right", "csrf": csrf}
        )
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "1"
        assert "Too many failed logins. Try again in 1 seconds." in locked.text
        # the API and the form share the count: the API is locked for bert as well
        assert (await token(http, "bert", "bert-right")).status_code == 429
        clock.now += 1
        ok = await http.post("/login", data={"username": "bert", "password": "bert-right", "csrf": csrf})
        assert ok.status_code == 303


async def test_the_app_keeps_one_throttle(app: FastAPI) -> None:
    extras = app.state.central.extras
    assert login_throttle(extras) is login_throttle(extras)
