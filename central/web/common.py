"""Shared machinery of the web pages: who is logged in, language, CSRF, tables with CSV, charts.

CSRF: a double-submit token. A random token lives in an HttpOnly, SameSite=Strict cookie and is
rendered into every form; a POST is accepted only when the form field equals the cookie. Another
site can make the browser send the cookie but cannot read it to fill in the field. Cookies carry
``Secure`` when the request came over TLS (behind a proxy: run uvicorn with ``--proxy-headers`` so
the scheme is the client's).
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from central.api.deps import TOKEN_COOKIE, get_state, principal_from_token
from central.auth import Principal
from central.web.i18n import LANG_COOKIE, pick_language, translator

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
CSRF_COOKIE = "imd_csrf"
CSRF_FIELD = "csrf"
WORKER_ROLES = frozenset({"admin", "staff", "technician"})


def fmt_time(value: Any) -> str:
    return (
        value.strftime("%Y-%m-%d %H:%M")
        if isinstance(value, datetime)
        else ("–" if value is None else str(value))
    )


templates.env.filters["fmt_time"] = fmt_time


class LoginRequired(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


@dataclass
class Table:
    """A table as data: rendered as HTML and downloadable as CSV (``?csv=<name>``)."""

    name: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    select: str | None = None  # form field name of a leading checkbox column
    keys: list[str] = field(default_factory=list)  # checkbox values, one per row
    caption: str = ""

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";")  # Swedish Excel expects semicolons
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([cell_text(c) for c in row])
        return out.getvalue()


def cell(text: Any, href: str | None = None, cls: str = "", estimated: bool = False) -> dict[str, Any]:
    return {"text": text, "href": href, "cls": cls, "estimated": estimated}


def cell_text(value: Any) -> str:
    if isinstance(value, dict):
        text = value.get("text")
        return fmt_time(text) if isinstance(text, datetime) else str(text if text is not None else "")
    if isinstance(value, datetime):
        return fmt_time(value)
    return "" if value is None else str(value)


def chart(kind: str, labels: list[str], datasets: list[dict[str, Any]], unit: str = "") -> str:
    """Chart.js input as JSON (rendered into a ``<script type="application/json">``)."""
    return json.dumps({"type": kind, "labels": labels, "datasets": datasets, "unit": unit}, default=str)


@dataclass
class Page:
    request: Request
    who: Principal | None
    lang: str

    @property
    def t(self) -> Any:
        return translator(self.lang)


async def page(request: Request, *, login: bool = True) -> Page:
    state = get_state(request)
    who = await principal_from_token(state, request.cookies.get(TOKEN_COOKIE))
    lang = pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
    if login and who is None:
        raise LoginRequired
    return Page(request, who, lang)


def require(p: Page, *, workers: bool = False) -> Principal:
    who = p.who
    if who is None:
        raise LoginRequired
    if workers and who.role not in WORKER_ROLES:
        raise HTTPException(403, detail=p.t("forbidden_text"))
    return who


def csrf_token(request: Request) -> tuple[str, bool]:
    token = request.cookies.get(CSRF_COOKIE) or ""
    if len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


async def check_csrf(request: Request) -> None:
    form = await request.form()
    sent = str(form.get(CSRF_FIELD) or "")
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        lang = pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
        raise HTTPException(403, detail=translator(lang)("csrf_failed"))


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(p: Page, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    request = p.request
    tables: dict[str, Table] = context.get("tables", {})
    wanted = request.query_params.get("csv")
    if wanted is not None:
        table = tables.get(wanted)
        if table is None:
            raise HTTPException(404, detail=f"no table {wanted!r} on this page")
        return Response(
            "\ufeff" + table.csv(),  # the BOM makes Excel read UTF-8 (å, ä, ö)
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{table.name}.csv"'},
        )
    token, fresh = csrf_token(request)
    query = {k: v for k, v in request.query_params.items() if k not in ("csv", "lang")}
    ctx = {
        "who": p.who,
        "t": p.t,
        "lang": p.lang,
        "csrf": token,
        "path": request.url.path,
        "query": query,
        "tables": tables,
        **context,
    }
    response: Response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path="/"
        )
    if request.query_params.get("lang") == p.lang:
        response.set_cookie(
            LANG_COOKIE,
            p.lang,
            max_age=365 * 86400,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
        )
    return response


def error_page(request: Request, status_code: int, detail: str) -> Response:
    lang = pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
    t = translator(lang)
    title = (
        t("forbidden") if status_code == 403 else t("not_found") if status_code == 404 else str(status_code)
    )
    response = templates.TemplateResponse(
        request,
        "error.html",
        {
            "who": None,
            "t": t,
            "lang": lang,
            "title": title,
            "detail": detail,
            "path": request.url.path,
            "query": {},
            "csrf": "",
            "tables": {},
        },
        status_code=status_code,
    )
    return HTMLResponse(response.body, status_code=status_code, headers={"Cache-Control": "no-store"})
