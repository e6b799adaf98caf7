"""The web pages, rendered on the server: login, staff fault work, collectors, search.

Meter/apartment pages, the board/manager portal and the resident page live in ``central.web.pages``.
The login token travels in an HttpOnly, SameSite=Strict cookie, so page scripts cannot read it and
other sites cannot make the browser send it; every form carries a CSRF token (``central.web.common``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import case, func, or_, select

from central.api.deps import TOKEN_COOKIE, get_state
from central.auth import LoginThrottledError, Principal, authenticate_throttled, issue_token, login_throttle
from central.faults import SEVERITIES, TRANSITIONS, FaultTransitionError, assign, comment, transition
from central.models import (
    Apartment,
    Building,
    Collector,
    Fault,
    FaultEvent,
    Meter,
    MeterPoint,
    Property,
    RawFrame,
    Reading,
    utcnow,
)
from central.queries import list_collectors, list_meters, scope_meters, scope_properties
from central.web.common import (
    HERE,
    WORKER_ROLES,
    LoginRequired,
    Page,
    Table,
    cell,
    chart,
    check_csrf,
    error_page,
    page,
    render,
    require,
    secure,
)
from central.web.data import register_points

Handler = Callable[..., Awaitable[Response]]
FAULT_SORTS = {
    "worst": (case({"critical": 0, "warning": 1}, value=Fault.severity, else_=2), Fault.last_seen_at.desc()),
    "newest": (Fault.last_seen_at.desc(),),
    "oldest": (Fault.first_seen_at.asc(),),
    "count": (Fault.count.desc(),),
}
AGES = {"1d": (None, 1), "7d": (None, 7), "old": (7, None)}  # (older than days, newer than days)
# The queue shows a page at a time (rendering the table is most of the page's cost); the CSV
# download of the filtered queue takes up to CSV_FAULTS rows.
FAULTS_PER_PAGE = 100
CSV_FAULTS = 5000
DASHBOARD_METERS = 50  # the first page of the meter list; the rest is one search or API page away


def html(fn: Handler) -> Handler:
    """Turn 'log in first' into a redirect and 403/404 into a page in the user's language."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(request, *args, **kwargs)
        except LoginRequired:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            suffix = "" if target == "/" else f"?next={quote(target)}"
            return RedirectResponse(f"/login{suffix}", status_code=303)
        except HTTPException as exc:
            if exc.status_code in (400, 403, 404, 409, 422):
                return error_page(request, exc.status_code, str(exc.detail))
            raise

    return wrapper


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect after login would help phishing.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def fault_query(who: Principal) -> Any:
    query = (
        select(Fault, Meter, Apartment, Property)
        .outerjoin(Meter, Fault.meter_id == Meter.id)
        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
        .outerjoin(Property, MeterPoint.property_id == Property.id)
    )
    if who.sees_all:
        return query
    return scope_meters(query.where(Fault.meter_id.is_not(None)), who)


def fault_row(p: Page, f: Fault, m: Meter | None, a: Apartment | None, prop: Property | None) -> list[Any]:
    t = p.t
    return [
        cell(f.id, f"/faults/{f.id}"),
        cell(t(f.severity), cls=f"sev-{f.severity}"),
        f.rule,
        cell(m.serial, f"/meters/{m.id}") if m else (f.collector_id or "–"),
        cell(f"{a.number} ({a.address or a.object_number})", f"/apartments/{a.id}") if a else "–",
        prop.key if prop else "–",
        f.message,
        t(f.state),
        f.assignee or "–",
        f.first_seen_at,
        f.last_seen_at,
        f.count,
    ]


def fault_columns(p: Page) -> list[str]:
    t = p.t
    return [
        "#",
        t("severity"),
        t("rule"),
        t("meter"),
        t("apartment"),
        t("property"),
        t("message"),
        t("state"),
        t("assignee"),
        t("first_seen"),
        t("last_seen"),
        t("count"),
    ]


async def _dashboard(p: Page, who: Principal) -> Response:
    """Staff home: the worst open faults, collectors (offline first) and meters with their latest values."""
    t = p.t
    state = get_state(p.request)
    async with state.db.sessions() as session:
        meters, total = await list_meters(session, who, limit=DASHBOARD_METERS)
        collectors = await list_collectors(session, who, utcnow())
        faults = (
            await session.execute(
                fault_query(who)
                .where(Fault.state.in_(("open", "acknowledged")))
                .order_by(*FAULT_SORTS["worst"])
                .limit(20)
            )
        ).all()
    ftable = Table("dashboard_faults", fault_columns(p))
    for row in faults:
        ftable.rows.append(fault_row(p, *row))
    ctable = Table("dashboard_collectors", [t("collector"), t("state"), t("last_seen"), t("version")])
    for c in sorted(collectors, key=lambda c: (c["state"] == "online", c["id"])):
        ok = c["state"] == "online"
        ctable.rows.append(
            [
                c["id"],
                cell(
                    t(c["state"]) if c["state"] in ("online", "offline") else t("unknown"),
                    cls="ok" if ok else "bad",
                ),
                c["last_seen_at"],
                c["version"] or "–",
            ]
        )
    mtable = Table(
        "meters",
        [
            t("property"),
            t("apartment"),
            t("medium"),
            t("serial"),
            t("manufacturer"),
            t("value"),
            t("last_seen"),
        ],
    )
    for m in meters:
        values = ", ".join(f"{v['quantity']}: {v['value']} {v['unit']}" for v in m["values"][:3])
        mtable.rows.append(
            [
                m["property"] or "–",
                m["apartment_number"] or "–",
                t(m["medium"]),
                cell(m["id"], f"/meters/{m['ref']}"),
                m["manufacturer"],
                values or "–",
                m["last_reading_at"],
            ]
        )
    with_readings = sum(1 for m in meters if m["last_reading_at"] is not None)
    tables = {"dashboard_faults": ftable, "dashboard_collectors": ctable, "meters": mtable}
    return render(p, "dashboard.html", {"tables": tables, "total": total, "with_readings": with_readings})


_TOO_MANY_LOGINS = {
    "sv": "För många misslyckade inloggningar. Försök igen om {s} sekunder.",
    "en": "Too many failed logins. Try again in {s} seconds.",
}


def mount(app: FastAPI) -> None:
    static = HERE / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/login", include_in_schema=False)
    @html
    async def login_form(request: Request) -> Response:
        p = await page(request, login=False)
        return render(p, "login.html", {"error": None, "next": _safe_next(request.query_params.get("next"))})

    @app.post("/login", include_in_schema=False)
    @html
    async def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        await check_csrf(request)
        p = await page(request, login=False)
        state = get_state(request)
        address = request.client.host if request.client else None
        try:
            user = await authenticate_throttled(
                state.db, login_throttle(state.extras), username, password, address
            )
        except LoginThrottledError as exc:
            error = _TOO_MANY_LOGINS.get(p.lang, _TOO_MANY_LOGINS["sv"]).format(s=exc.retry_after)
            locked = render(p, "login.html", {"error": error, "next": _safe_next(next)}, 429)
            locked.headers["Retry-After"] = str(exc.retry_after)
            return locked
        if user is None:
            return render(p, "login.html", {"error": p.t("bad_login"), "next": _safe_next(next)}, 401)
        token = issue_token(state.token_secret, user.username, state.settings.token_minutes)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            max_age=state.settings.token_minutes * 60,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    @html
    async def logout(request: Request) -> Response:
        await check_csrf(request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False)
    @html
    async def home(request: Request) -> Response:
        p = await page(request)
        who = require(p)
        if who.role in WORKER_ROLES:
            return await _dashboard(p, who)
        if who.role == "board":
            return RedirectResponse("/portal", status_code=303)
        return RedirectResponse("/mitt", status_code=303)

    @app.get("/faults", include_in_schema=False)
    @html
    async def fault_queue(request: Request) -> Response:
        p = await page(request)
        who = require(p, workers=True)
        q = request.query_params
        state_filter = q.get("state", "unresolved")
        query = fault_query(who)
        if state_filter == "unresolved":
            query = query.where(Fault.state.in_(("open", "acknowledged")))
        elif state_filter in ("open", "acknowledged", "resolved"):
            query = query.where(Fault.state == state_filter)
        if q.get("severity") in SEVERITIES:
            query = query.where(Fault.severity == q["severity"])
        if q.get("rule"):
            query = query.where(Fault.rule == q["rule"])
        if q.get("property"):
            query = query.where(Property.key == q["property"])
        now = utcnow()
        older, newer = AGES.get(q.get("age", ""), (None, None))
        if older is not None:
            query = query.where(Fault.first_seen_at <= now - timedelta(days=older))
        if newer is not None:
            query = query.where(Fault.first_seen_at >= now - timedelta(days=newer))
        sort = q.get("sort", "worst")
        query = query.order_by(*FAULT_SORTS.get(sort, FAULT_SORTS["worst"]), Fault.id.desc())
        page_no = int(q["page"]) if q.get("page", "").isdigit() and int(q["page"]) >= 1 else 1
        if q.get("csv"):
            query = query.limit(CSV_FAULTS)
        else:
            query = query.limit(FAULTS_PER_PAGE).offset((page_no - 1) * FAULTS_PER_PAGE)
        state = get_state(request)
        async with state.db.sessions() as session:
            counted = query.limit(None).offset(None).subquery()
            total = (await session.execute(select(func.count()).select_from(counted))).scalar_one()
            rows = (await session.execute(query)).all()
            rules = list(
                (await session.execute(select(Fault.rule).distinct().order_by(Fault.rule))).scalars()
            )
            props = list(
                (
                    await session.execute(scope_properties(select(Property.key), who).order_by(Property.key))
                ).scalars()
            )
        table = Table("faults", fault_columns(p), select="ids")
        for f, m, a, prop in rows:
            table.rows.append(fault_row(p, f, m, a, prop))
            table.keys.append(str(f.id))
        return render(
            p,
            "faults.html",
            {
                "tables": {"faults": table},
                "total": total,
                "pages": _pages(request, page_no, total, FAULTS_PER_PAGE),
                "rules": rules,
                "props": props,
                "severities": SEVERITIES,
                "sorts": list(FAULT_SORTS),
                "ages": list(AGES),
            },
        )

    def _pages(request: Request, page_no: int, total: int, per_page: int) -> dict[str, Any]:
        """Previous/next links that keep the filters."""
        last = max((total + per_page - 1) // per_page, 1)
        keep = {k: v for k, v in request.query_params.items() if k not in ("page", "csv")}

        def link(n: int) -> str:
            return f"{request.url.path}?{urlencode({**keep, 'page': n})}"

        return {
            "page": page_no,
            "last": last,
            "previous": link(page_no - 1) if page_no > 1 else None,
            "next": link(page_no + 1) if page_no < last else None,
        }

    @app.post("/faults/bulk", include_in_schema=False)
    @html
    async def fault_bulk(request: Request) -> Response:
        await check_csrf(request)
        p = await page(request)
        who = require(p, workers=True)
        form = await request.form()
        action = str(form.get("action") or "acknowledge")
        if action not in ("acknowledge", "resolve"):
            raise HTTPException(422, detail="action: acknowledge or resolve")
        ids = [int(str(v)) for v in form.getlist("ids") if str(v).isdigit()]
        state = get_state(request)
        async with state.db.sessions.begin() as session:
            rows = (await session.execute(fault_query(who).where(Fault.id.in_(ids or [-1])))).all()
            for f, *_rest in rows:
                if f.state in TRANSITIONS[action][0]:
                    await transition(session, f, action, actor=who.username, at=utcnow(), text="bulk")
        back = str(form.get("back") or "/faults")
        return RedirectResponse(_safe_next(back), status_code=303)

    async def _fault(session: Any, who: Principal, fault_id: int) -> tuple[Fault, Meter | None, Any, Any]:
        row = (await session.execute(fault_query(who).where(Fault.id == fault_id))).first()
        if row is None:
            raise HTTPException(404, detail=f"no fault {fault_id}")
        return row[0], row[1], row[2], row[3]

    @app.get("/faults/{fault_id}", include_in_schema=False)
    @html
    async def fault_detail(request: Request, fault_id: int) -> Response:
        p = await page(request)
        who = require(p, workers=True)
        t = p.t
        state = get_state(request)
        async with state.db.sessions() as session:
            fault, meter, apt, prop = await _fault(session, who, fault_id)
            events = list(
                (
                    await session.execute(
                        select(FaultEvent).where(FaultEvent.fault_id == fault.id).order_by(FaultEvent.id)
                    )
                ).scalars()
            )
            history = Table("fault_history", [t("at"), t("actor"), t("kind"), t("text")])
            for e in events:
                history.rows.append([e.at, e.actor or "system", e.kind, e.text])
            tables = {"fault_history": history}
            chart_json = None
            if meter is not None:
                since = fault.first_seen_at - timedelta(days=21)
                until = fault.last_seen_at + timedelta(days=3)
                unit, points = await register_points(session, meter, since, until)
                readings = Table("evidence_readings", [t("at"), f"{t('value')} ({unit})"])
                for at, value in points:
                    readings.rows.append([at, format(value, "f")])
                tables["evidence_readings"] = readings
                chart_json = chart(
                    "line",
                    [at.strftime("%Y-%m-%d %H:%M") for at, _v in points],
                    [{"label": f"{meter.serial} ({unit})", "data": [float(v) for _a, v in points]}],
                    unit,
                )
                frames = list(
                    (
                        await session.execute(
                            select(RawFrame)
                            .where(RawFrame.meter_id == meter.id, RawFrame.received_at <= until)
                            .order_by(RawFrame.received_at.desc(), RawFrame.id.desc())
                            .limit(4)
                        )
                    ).scalars()
                )
                decoded: dict[int, list[Reading]] = {f.id: [] for f in frames}
                if frames:
                    for r in (
                        await session.execute(
                            select(Reading)
                            .where(Reading.raw_frame_id.in_(list(decoded)))
                            .order_by(Reading.id)
                        )
                    ).scalars():
                        decoded[r.raw_frame_id or 0].append(r)
                frame_views = [
                    {
                        "frame": f,
                        "hex": " ".join(f.raw[i : i + 1].hex() for i in range(len(f.raw))),
                        "readings": decoded[f.id],
                    }
                    for f in frames
                ]
                history_rows = (
                    await session.execute(
                        fault_query(who)
                        .where(Fault.meter_id == meter.id)
                        .order_by(Fault.first_seen_at.desc())
                    )
                ).all()
                meter_faults = Table("meter_faults", fault_columns(p))
                for row in history_rows:
                    meter_faults.rows.append(fault_row(p, *row))
                tables["meter_faults"] = meter_faults
            else:
                frame_views = []
        evidence = (
            json.dumps(json.loads(fault.evidence), indent=1, ensure_ascii=False) if fault.evidence else ""
        )
        return render(
            p,
            "fault.html",
            {
                "fault": fault,
                "meter": meter,
                "apt": apt,
                "prop": prop,
                "tables": tables,
                "chart_json": chart_json,
                "frames": frame_views,
                "evidence": evidence,
            },
        )

    @app.post("/faults/{fault_id}", include_in_schema=False)
    @html
    async def fault_act(request: Request, fault_id: int) -> Response:
        await check_csrf(request)
        p = await page(request)
        who = require(p, workers=True)
        form = await request.form()
        action = str(form.get("action") or "")
        text = str(form.get("text") or "")[:2000]
        state = get_state(request)
        async with state.db.sessions.begin() as session:
            fault, *_rest = await _fault(session, who, fault_id)
            try:
                if action in TRANSITIONS:
                    await transition(session, fault, action, actor=who.username, at=utcnow(), text=text)
                elif action == "comment":
                    await comment(session, fault, actor=who.username, at=utcnow(), text=text)
                elif action == "assign":
                    await assign(
                        session,
                        fault,
                        actor=who.username,
                        at=utcnow(),
                        assignee=str(form.get("assignee") or "").strip()[:64] or None,
                    )
                else:
                    raise HTTPException(422, detail=f"action: {action!r} is not known")
            except FaultTransitionError as exc:
                raise HTTPException(409, detail=str(exc)) from exc
        return RedirectResponse(f"/faults/{fault_id}", status_code=303)

    @app.get("/collectors", include_in_schema=False)
    @html
    async def collectors(request: Request) -> Response:
        p = await page(request)
        require(p, workers=True)
        t = p.t
        state = get_state(request)
        async with state.db.sessions() as session:
            rows = (
                await session.execute(
                    select(Collector, Property.key)
                    .outerjoin(Property, Collector.property_id == Property.id)
                    # Offline (and never heard) first: those are the ones someone must act on.
                    .order_by(
                        case({"online": 1}, value=Collector.state, else_=0),
                        Collector.last_seen_at,
                        Collector.id,
                    )
                )
            ).all()
        table = Table(
            "collectors",
            [
                t("collector"),
                t("state"),
                t("last_seen"),
                t("last_poll"),
                t("outbox"),
                t("collector_alarms"),
                t("version"),
                t("property"),
            ],
        )
        for c, key in rows:
            status: dict[str, Any] = {}
            if c.last_status:
                try:
                    status = json.loads(c.last_status)
                except ValueError:
                    status = {}
            polls = status.get("last_polls") or []
            last_poll = max((str(x.get("started_at", "")) for x in polls), default="–")[:16].replace("T", " ")
            table.rows.append(
                [
                    c.id,
                    cell(
                        t(c.state) if c.state in ("online", "offline") else t("unknown"),
                        cls="ok" if c.state == "online" else "bad",
                    ),
                    c.last_seen_at,
                    last_poll or "–",
                    status.get("outbox_depth", "–"),
                    # What the collector itself says is wrong (outbox overflow, disk full, port gone).
                    cell("; ".join(map(str, alarms)), cls="bad") if (alarms := status.get("alarms")) else "–",
                    c.version or "–",
                    key or "–",
                ]
            )
        return render(p, "collectors.html", {"tables": {"collectors": table}})

    @app.get("/search", include_in_schema=False)
    @html
    async def search(request: Request) -> Response:
        p = await page(request)
        who = require(p)
        if who.role == "resident":
            raise HTTPException(403, detail=p.t("forbidden_text"))
        t = p.t
        q = (request.query_params.get("q") or "").strip()[:100]
        tables: dict[str, Table] = {}
        apartments = Table(
            "search_apartments",
            [t("apartment"), t("object_number"), t("address"), t("tenant_ref"), t("property"), t("area")],
        )
        meters = Table(
            "search_meters", [t("serial"), t("manufacturer"), t("medium"), t("apartment"), t("property")]
        )
        if q:
            like = f"%{q.replace('%', '').replace('_', '')}%"
            state = get_state(request)
            async with state.db.sessions() as session:
                query = (
                    scope_properties(
                        select(Apartment, Property, Building)
                        .join(Property, Apartment.property_id == Property.id)
                        .join(Building, Apartment.building_id == Building.id)
                        .where(
                            or_(
                                Apartment.number.ilike(like),
                                Apartment.object_number.ilike(like),
                                Apartment.address.ilike(like),
                                Apartment.tenant_ref.ilike(like),
                                Property.address.ilike(like),
                                Property.name.ilike(like),
                                Property.key.ilike(like),
                                Building.address.ilike(like),
                            )
                        ),
                        who,
                    )
                    .order_by(Property.key, Apartment.number)
                    .limit(200)
                )
                for a, prop, b in (await session.execute(query)).all():
                    apartments.rows.append(
                        [
                            cell(a.number, f"/apartments/{a.id}"),
                            a.object_number,
                            a.address or b.address or prop.address,
                            a.tenant_ref or "–",
                            prop.key,
                            str(a.area_m2),
                        ]
                    )
                mquery = (
                    scope_meters(
                        select(Meter, Apartment, Property)
                        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
                        .outerjoin(Property, MeterPoint.property_id == Property.id)
                        .where(Meter.serial.ilike(like)),
                        who,
                    )
                    .order_by(Meter.serial)
                    .limit(200)
                )
                for m, a, prop in (await session.execute(mquery)).all():
                    meters.rows.append(
                        [
                            cell(m.serial, f"/meters/{m.id}"),
                            m.manufacturer,
                            t(m.medium),
                            cell(a.number, f"/apartments/{a.id}") if a else "–",
                            prop.key if prop else "–",
                        ]
                    )
        tables = {"search_apartments": apartments, "search_meters": meters}
        return render(p, "search.html", {"tables": tables, "q": q, "qs": urlencode({"q": q})})

    from central.web.pages import mount_pages

    mount_pages(app, html)
