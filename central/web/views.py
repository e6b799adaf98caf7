"""The dashboard: a login form and the meter overview, rendered on the server.

The token from the login form travels in an HttpOnly, SameSite=Strict cookie, so page scripts
cannot read it and other sites cannot make the browser send it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from central.api.deps import TOKEN_COOKIE, get_state, principal_from_token
from central.api.faults import fault_dict, open_faults
from central.auth import authenticate, issue_token
from central.models import utcnow
from central.queries import list_collectors, list_meters

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

MEDIUM_LABELS = {
    "heat": "Värme",
    "hot_water": "Varmvatten",
    "cold_water": "Kallvatten",
    "electricity": "El",
    "room_temperature": "Rumstemperatur",
    "cooling": "Kyla",
    "gas": "Gas",
}


QUANTITY_LABELS = {
    "energy": "Energi",
    "volume": "Volym",
    "power": "Effekt",
    "flow": "Flöde",
    "flow_temperature": "Framledning",
    "return_temperature": "Retur",
    "temperature_difference": "Temperaturdifferens",
    "voltage": "Spänning",
    "current": "Ström",
}


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "–"


templates.env.filters["fmt_time"] = _fmt_time
templates.env.globals["medium_label"] = lambda m: MEDIUM_LABELS.get(m, m)
templates.env.globals["quantity_label"] = lambda q: QUANTITY_LABELS.get(q, q.replace("_", " "))


def mount(app: FastAPI) -> None:
    static = HERE / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"error": None})

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]
    ) -> Response:
        state = get_state(request)
        user = await authenticate(state.db, username, password)
        if user is None:
            return templates.TemplateResponse(
                request,
                "login.html",
                {"error": "Fel användarnamn eller lösenord (wrong username or password)"},
                status_code=401,
            )
        token = issue_token(state.token_secret, user.username, state.settings.token_minutes)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            max_age=state.settings.token_minutes * 60,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        state = get_state(request)
        who = await principal_from_token(state, request.cookies.get(TOKEN_COOKIE))
        if who is None:
            return RedirectResponse("/login", status_code=303)
        async with state.db.sessions() as session:
            meters, total = await list_meters(session, who, limit=2000)
            collectors = await list_collectors(session, who, utcnow())
            faults = [fault_dict(f, m) for f, m in (await session.execute(open_faults(who).limit(100))).all()]
        with_readings = sum(1 for m in meters if m["last_reading_at"] is not None)
        return templates.TemplateResponse(
            request,
            "dashboard.html",
            {
                "who": who,
                "meters": meters,
                "total": total,
                "with_readings": with_readings,
                "collectors": collectors,
                "faults": faults,
                "now": utcnow(),
            },
        )
