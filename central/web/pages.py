"""Meter and apartment pages, the board/manager portal (their properties only) and the resident page."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from central.api.deps import get_state
from central.auth import Principal
from central.models import (
    Apartment,
    BillingDocument,
    BillingSupplierInvoice,
    Building,
    Fault,
    Meter,
    MeterPoint,
    Property,
    Tenancy,
)
from central.queries import scope_meters, scope_properties
from central.web.billing_view import (
    ARCHIVE_KINDS,
    archive_entries,
    archive_table,
    bases_for_meters,
    bases_table,
    invoice_csv,
    kronor,
    unit_prices,
)
from central.web.common import Page, Table, cell, chart, page, render, require
from central.web.data import (
    MEDIA_ORDER,
    DailySeries,
    change_percent,
    daily_series,
    month_start,
    period_windows,
    round_display,
)
from central.web.monthly import month_series

GRAINS = ("day", "month", "year")
Wrap = Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]


def _today() -> date:
    return datetime.now(UTC).date()


def _since(today: date, months: int = 14) -> datetime:
    start = month_start(today, months)
    return datetime(start.year, start.month, start.day, tzinfo=UTC) - timedelta(days=45)


DAY_GRAIN_DAYS = 62  # what a day-grain table shows


async def _series(
    session: AsyncSession, meters: list[Meter], since: datetime, grain: str = "month"
) -> dict[int, DailySeries]:
    """Month and year grains from the month summaries (a row per month, not per reading); a day grain
    from the readings of the days shown (and a few before, so the first day has its difference)."""
    if grain == "day":
        recent = datetime.now(UTC) - timedelta(days=DAY_GRAIN_DAYS + 8)
        return await daily_series(session, meters, max(since, recent))
    return await month_series(session, meters, since)


def series_table(p: Page, name: str, series: DailySeries, grain: str, label: str) -> tuple[Table, str]:
    t = p.t
    buckets = series.buckets(grain)
    if grain == "day":
        buckets = buckets[-62:]
    table = Table(name, [t(grain), f"{t('consumption')} ({series.unit})", t("estimated")])
    for when, value, est in buckets:
        table.rows.append([when, cell(round_display(value), estimated=est), "*" if est else ""])
    data = chart(
        "bar",
        [b[0] for b in buckets],
        [
            {
                "label": f"{label} ({series.unit})",
                "data": [float(b[1]) for b in buckets],
                "estimated": [b[2] for b in buckets],
            }
        ],
        series.unit,
    )
    return table, data


async def _property(session: AsyncSession, p: Page, key: str) -> Property:
    who = require(p)
    if who.role == "resident":
        raise HTTPException(403, detail=p.t("forbidden_text"))
    prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one_or_none()
    if prop is None:
        raise HTTPException(404, detail=f"{p.t('property')} {key}")
    if not who.sees_all and prop.id not in who.property_ids:
        raise HTTPException(403, detail=p.t("forbidden_text"))
    return prop


async def _property_meters(
    session: AsyncSession, prop_id: int
) -> list[tuple[Meter, MeterPoint, Apartment | None]]:
    rows = await session.execute(
        select(Meter, MeterPoint, Apartment)
        .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
        .where(MeterPoint.property_id == prop_id)
        .order_by(Apartment.number, Meter.medium, Meter.serial)
    )
    return [(m, mp, a) for m, mp, a in rows.all()]


def _per_medium(
    meters: list[tuple[Meter, MeterPoint, Apartment | None]], series: dict[int, DailySeries]
) -> dict[str, DailySeries]:
    out: dict[str, DailySeries] = {}
    for m, mp, _a in meters:
        if m.id in series:
            out.setdefault(mp.medium, DailySeries()).add(series[m.id])
    return dict(sorted(out.items(), key=lambda kv: MEDIA_ORDER.index(kv[0]) if kv[0] in MEDIA_ORDER else 99))


def _per_apartment(
    meters: list[tuple[Meter, MeterPoint, Apartment | None]], series: dict[int, DailySeries], medium: str
) -> dict[int, tuple[Apartment, DailySeries]]:
    out: dict[int, tuple[Apartment, DailySeries]] = {}
    for m, mp, a in meters:
        if a is None or mp.medium != medium or m.id not in series:
            continue
        out.setdefault(a.id, (a, DailySeries()))[1].add(series[m.id])
    return out


def mount_pages(app: FastAPI, html: Wrap) -> None:
    @app.get("/meters/{meter_id}", include_in_schema=False)
    @html
    async def meter_page(request: Request, meter_id: int) -> Response:
        p = await page(request)
        who = require(p)
        t = p.t
        grain = request.query_params.get("grain", "month")
        grain = grain if grain in GRAINS else "month"
        state = get_state(request)
        async with state.db.sessions() as session:
            row = (
                await session.execute(
                    scope_meters(
                        select(Meter, MeterPoint, Apartment, Property)
                        .outerjoin(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                        .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
                        .outerjoin(Property, MeterPoint.property_id == Property.id),
                        who,
                    ).where(Meter.id == meter_id)
                )
            ).first()
            if row is None:
                raise HTTPException(404, detail=f"{t('meter')} {meter_id}")
            meter, point, apt, prop = row
            series = (await _series(session, [meter], _since(_today()), grain)).get(meter.id, DailySeries())
            siblings = []
            if point is not None:
                siblings = list(
                    (
                        await session.execute(
                            select(Meter).where(Meter.meter_point_id == point.id).order_by(Meter.installed_at)
                        )
                    ).scalars()
                )
            faults = list(
                (
                    await session.execute(
                        select(Fault).where(Fault.meter_id == meter.id).order_by(Fault.first_seen_at.desc())
                    )
                ).scalars()
            )
            bases = await bases_for_meters(session, [meter.id])
        table, data = series_table(p, f"meter_{meter.serial}_{grain}", series, grain, meter.serial)
        repl = Table("replacements", [t("serial"), t("manufacturer"), t("installed"), t("removed")])
        for s in siblings:
            repl.rows.append(
                [cell(s.serial, f"/meters/{s.id}"), s.manufacturer, s.installed_at, s.removed_at]
            )
        ftable = Table(
            "meter_faults", ["#", t("severity"), t("rule"), t("state"), t("first_seen"), t("message")]
        )
        for f in faults:
            href = f"/faults/{f.id}" if who.role in ("admin", "staff", "technician") else None
            ftable.rows.append(
                [cell(f.id, href), t(f.severity), f.rule, t(f.state), f.first_seen_at, f.message]
            )
        return render(
            p,
            "meter.html",
            {
                "meter": meter,
                "apt": apt,
                "prop": prop,
                "grain": grain,
                "grains": GRAINS,
                "chart_json": data,
                "main_table": table.name,
                "tables": {
                    table.name: table,
                    "replacements": repl,
                    "meter_faults": ftable,
                    "billing_bases": bases_table(t, "billing_bases", bases),
                },
            },
        )

    @app.get("/apartments/{apartment_id}", include_in_schema=False)
    @html
    async def apartment_page(request: Request, apartment_id: int) -> Response:
        p = await page(request)
        who = require(p)
        t = p.t
        grain = request.query_params.get("grain", "month")
        grain = grain if grain in GRAINS else "month"
        state = get_state(request)
        async with state.db.sessions() as session:
            row = (
                await session.execute(
                    select(Apartment, Property, Building)
                    .join(Property, Apartment.property_id == Property.id)
                    .join(Building, Apartment.building_id == Building.id)
                    .where(Apartment.id == apartment_id)
                )
            ).first()
            if row is None or not _may_see_apartment(who, row[0]):
                raise HTTPException(403 if row is not None else 404, detail=t("forbidden_text"))
            apt, prop, building = row
            meters = list(
                (
                    await session.execute(
                        select(Meter, MeterPoint)
                        .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                        .where(MeterPoint.apartment_id == apt.id)
                        .order_by(MeterPoint.medium, Meter.installed_at)
                    )
                ).all()
            )
            series = await _series(session, [m for m, _mp in meters], _since(_today()), grain)
            bases = await bases_for_meters(session, [m.id for m, _mp in meters])
            # Who lived here when: staff and the board; a resident does not see other people's names.
            stays = (
                []
                if who.role == "resident"
                else list(
                    (
                        await session.execute(
                            select(Tenancy).where(Tenancy.apartment_id == apt.id).order_by(Tenancy.move_in)
                        )
                    ).scalars()
                )
            )
        by_medium: dict[str, DailySeries] = {}
        for m, mp in meters:
            if m.id in series:
                by_medium.setdefault(mp.medium, DailySeries()).add(series[m.id])
        tables: dict[str, Table] = {}
        charts = []
        for medium, s in sorted(by_medium.items(), key=lambda kv: _medium_rank(kv[0])):
            table, data = series_table(p, f"apartment_{apt.number}_{medium}_{grain}", s, grain, t(medium))
            tables[table.name] = table
            charts.append({"medium": medium, "table": table.name, "chart_json": data})
        mtable = Table(
            "apartment_meters", [t("serial"), t("medium"), t("manufacturer"), t("installed"), t("removed")]
        )
        for m, mp in meters:
            mtable.rows.append(
                [
                    cell(m.serial, f"/meters/{m.id}"),
                    t(mp.medium),
                    m.manufacturer,
                    m.installed_at,
                    m.removed_at,
                ]
            )
        tables["apartment_meters"] = mtable
        tables["billing_bases"] = bases_table(t, "billing_bases", bases)
        tenancies = Table("tenancies", [t("tenant_ref"), t("name"), t("move_in"), t("move_out")])
        for stay in stays:
            tenancies.rows.append([stay.tenant_ref, stay.name or "–", stay.move_in, stay.move_out])
        tables["tenancies"] = tenancies
        return render(
            p,
            "apartment.html",
            {
                "apt": apt,
                "prop": prop,
                "building": building,
                "grain": grain,
                "grains": GRAINS,
                "charts": charts,
                "tables": tables,
            },
        )

    @app.get("/portal", include_in_schema=False)
    @html
    async def portal(request: Request) -> Response:
        p = await page(request)
        who = require(p)
        if who.role == "resident":
            raise HTTPException(403, detail=p.t("forbidden_text"))
        t = p.t
        state = get_state(request)
        async with state.db.sessions() as session:
            props = list(
                (
                    await session.execute(scope_properties(select(Property), who).order_by(Property.key))
                ).scalars()
            )
            counts = dict(
                (
                    await session.execute(
                        select(MeterPoint.property_id, func.count(Fault.id))
                        .join(Meter, Meter.meter_point_id == MeterPoint.id)
                        .join(Fault, Fault.meter_id == Meter.id)
                        .where(Fault.state.in_(("open", "acknowledged")))
                        .group_by(MeterPoint.property_id)
                    )
                ).all()
            )
        table = Table("properties", [t("property"), t("address"), t("open_faults")])
        for prop in props:
            table.rows.append(
                [
                    cell(f"{prop.name} ({prop.key})", f"/portal/p/{prop.key}"),
                    prop.address or prop.city,
                    counts.get(prop.id, 0),
                ]
            )
        return render(p, "portal.html", {"tables": {"properties": table}})

    @app.get("/portal/p/{key}", include_in_schema=False)
    @html
    async def property_page(request: Request, key: str) -> Response:
        p = await page(request)
        t = p.t
        state = get_state(request)
        today = _today()
        windows = period_windows(today)
        async with state.db.sessions() as session:
            prop = await _property(session, p, key)
            meters = await _property_meters(session, prop.id)
            series = await month_series(session, [m for m, _mp, _a in meters], _since(today))
            open_faults = (
                await session.execute(
                    select(Fault, Meter, Apartment)
                    .join(Meter, Fault.meter_id == Meter.id)
                    .join(MeterPoint, Meter.meter_point_id == MeterPoint.id)
                    .outerjoin(Apartment, MeterPoint.apartment_id == Apartment.id)
                    .where(MeterPoint.property_id == prop.id, Fault.state.in_(("open", "acknowledged")))
                    .order_by(Fault.last_seen_at.desc())
                )
            ).all()
        per_medium = _per_medium(meters, series)
        period = windows["this_period"][0].strftime("%Y-%m")
        overview = Table(
            "overview",
            [
                t("medium"),
                t("unit"),
                f"{t('this_period')} ({period})",
                t("last_period"),
                t("change"),
                t("last_year"),
                t("change"),
            ],
        )
        figures: dict[str, dict[str, Decimal | None]] = {}
        for medium, s in per_medium.items():
            vals = {name: s.total(*window)[0] for name, window in windows.items()}
            figures[medium] = vals
            overview.rows.append(
                [
                    t(medium),
                    s.unit,
                    round_display(vals["this_period"]),
                    round_display(vals["last_period"]),
                    change_percent(vals["this_period"], vals["last_period"]),
                    round_display(vals["last_year"]),
                    change_percent(vals["this_period"], vals["last_year"]),
                ]
            )
        overview_charts = [
            {
                "medium": medium,
                "chart_json": chart(
                    "bar",
                    [t("last_year"), t("last_period"), t("this_period")],
                    [
                        {
                            "label": f"{t(medium)} ({per_medium[medium].unit})",
                            "data": [
                                float(v or 0)
                                for v in (vals["last_year"], vals["last_period"], vals["this_period"])
                            ],
                        }
                    ],
                    per_medium[medium].unit,
                ),
            }
            for medium, vals in figures.items()
        ]
        faults = Table(
            "property_faults", ["#", t("severity"), t("rule"), t("meter"), t("apartment"), t("last_seen")]
        )
        worker = p.who is not None and p.who.role in ("admin", "staff", "technician")
        for f, m, a in open_faults:
            faults.rows.append(
                [
                    cell(f.id, f"/faults/{f.id}" if worker else None),
                    t(f.severity),
                    f.rule,
                    cell(m.serial, f"/meters/{m.id}"),
                    a.number if a else "–",
                    f.last_seen_at,
                ]
            )
        top = Table("top_consumers", [t("medium"), t("apartment"), t("area"), t("consumption"), t("per_m2")])
        vacant = Table("vacant", [t("apartment"), t("object_number"), t("medium"), t("consumption")])
        for medium in per_medium:
            apts = _per_apartment(meters, series, medium)
            ranked = []
            for a, s in apts.values():
                total = s.total(*windows["this_period"])[0]
                if total is not None:
                    ranked.append((total / a.area_m2 if a.area_m2 else Decimal(0), total, a, s.unit))
                    if not a.tenant_ref:
                        vacant.rows.append(
                            [
                                cell(a.number, f"/apartments/{a.id}"),
                                a.object_number,
                                t(medium),
                                f"{round_display(total)} {s.unit}",
                            ]
                        )
            for per_m2, total, a, unit in sorted(ranked, key=lambda r: r[0], reverse=True)[:3]:
                top.rows.append(
                    [
                        t(medium),
                        cell(a.number, f"/apartments/{a.id}"),
                        str(a.area_m2),
                        f"{round_display(total)} {unit}",
                        f"{round_display(per_m2, 3)} {unit}/m²",
                    ]
                )
        return render(
            p,
            "property.html",
            {
                "prop": prop,
                "charts": overview_charts,
                "period": period,
                "tables": {
                    "overview": overview,
                    "property_faults": faults,
                    "top_consumers": top,
                    "vacant": vacant,
                },
            },
        )

    @app.get("/portal/p/{key}/compare", include_in_schema=False)
    @html
    async def compare(request: Request, key: str) -> Response:
        p = await page(request)
        who = require(p)
        t = p.t
        q = request.query_params
        kind = q.get("kind", "apartments")
        kind = kind if kind in ("apartments", "meters", "properties") else "apartments"
        medium = q.get("medium", "heat")
        today = _today()
        start, end = month_start(today, 12), month_start(today, 0)
        state = get_state(request)
        async with state.db.sessions() as session:
            prop = await _property(session, p, key)
            meters = await _property_meters(session, prop.id)
            media = sorted(
                {mp.medium for _m, mp, _a in meters},
                key=lambda x: MEDIA_ORDER.index(x) if x in MEDIA_ORDER else 99,
            )
            medium = medium if medium in media else (media[0] if media else "heat")
            if kind == "properties":
                others = list(
                    (
                        await session.execute(scope_properties(select(Property), who).order_by(Property.key))
                    ).scalars()
                )
                prop_rows = []
                for other in others:
                    om = await _property_meters(session, other.id)
                    os_ = await month_series(
                        session, [m for m, mp, _a in om if mp.medium == medium], _since(today, 12)
                    )
                    area = sum(
                        (
                            a.area_m2
                            for a in {
                                a.id: a for _m, mp, a in om if a is not None and mp.medium == medium
                            }.values()
                        ),
                        Decimal(0),
                    )
                    acc = DailySeries()
                    for s in os_.values():
                        acc.add(s)
                    prop_rows.append((other, acc.total(start, end)[0], area, acc.unit))
            else:
                series = await month_series(
                    session, [m for m, mp, _a in meters if mp.medium == medium], _since(today, 12)
                )
        labels: list[str] = []
        values: list[float] = []
        if kind == "apartments":
            table = Table("compare_apartments", [t("apartment"), t("area"), t("consumption"), t("per_m2")])
            for a, s in sorted(_per_apartment(meters, series, medium).values(), key=lambda x: x[0].number):
                total = s.total(start, end)[0]
                per = total / a.area_m2 if total is not None and a.area_m2 else None
                labels.append(a.number)
                values.append(float(per or 0))
                table.rows.append(
                    [
                        cell(a.number, f"/apartments/{a.id}"),
                        str(a.area_m2),
                        f"{round_display(total)} {s.unit}",
                        f"{round_display(per, 3)} {s.unit}/m²",
                    ]
                )
            data = chart("bar", labels, [{"label": f"{t(medium)} {t('per_m2')}", "data": values}])
        elif kind == "meters":
            chosen = set(q.getlist("m"))
            candidates = [(m, a) for m, mp, a in meters if mp.medium == medium and m.id in series]
            picked = [(m, a) for m, a in candidates if m.serial in chosen] or candidates[:4]
            window = {f"{start.year}-{start.month:02d}", f"{end.year}-{end.month:02d}"}
            months = sorted(
                {
                    b[0]
                    for m, _a in picked
                    for b in series[m.id].buckets("month")
                    if min(window) <= b[0] < max(window)
                }
            )
            datasets = []
            table = Table("compare_meters", [t("serial"), t("apartment"), *months])
            for m, owner in picked:
                by_month = {b[0]: b[1] for b in series[m.id].buckets("month")}
                datasets.append({"label": m.serial, "data": [float(by_month.get(mo, 0)) for mo in months]})
                table.rows.append(
                    [
                        cell(m.serial, f"/meters/{m.id}"),
                        owner.number if owner else "–",
                        *[round_display(by_month.get(mo)) for mo in months],
                    ]
                )
            labels = months
            data = chart("line", labels, datasets)
            q_meters = [
                (m.serial, a.number if a else "–", m.serial in {x.serial for x, _ in picked})
                for m, a in candidates
            ]
        else:
            table = Table("compare_properties", [t("property"), t("area"), t("consumption"), t("per_m2")])
            for other, total, area, unit in prop_rows:
                per = total / area if total is not None and area else None
                labels.append(other.key)
                values.append(float(per or 0))
                table.rows.append(
                    [
                        cell(other.key, f"/portal/p/{other.key}"),
                        str(area),
                        f"{round_display(total)} {unit}",
                        f"{round_display(per, 3)} {unit}/m²",
                    ]
                )
            data = chart("bar", labels, [{"label": f"{t(medium)} {t('per_m2')}", "data": values}])
        return render(
            p,
            "compare.html",
            {
                "prop": prop,
                "kind": kind,
                "medium": medium,
                "media": media,
                "chart_json": data,
                "main_table": table.name,
                "tables": {table.name: table},
                "window": f"{start} – {end - timedelta(days=1)}",
                "meter_choices": q_meters if kind == "meters" else [],
            },
        )

    @app.get("/portal/p/{key}/archive", include_in_schema=False)
    @html
    async def archive(request: Request, key: str) -> Response:
        p = await page(request)
        q = request.query_params
        search = {"q": q.get("q", "")[:100], "period": q.get("period", "")[:7], "kind": q.get("kind", "")}
        if search["kind"] not in ("", *ARCHIVE_KINDS):
            search["kind"] = ""
        state = get_state(request)
        async with state.db.sessions() as session:
            prop = await _property(session, p, key)
            entries = await archive_entries(session, prop.id, prop.key, **search)
            anything = entries or (
                any(search.values())
                and (
                    await session.execute(
                        select(func.count(BillingDocument.id)).where(BillingDocument.property_id == prop.id)
                    )
                ).scalar_one()
            )
        return render(
            p,
            "archive.html",
            {
                "prop": prop,
                "search": search,
                "kinds": ARCHIVE_KINDS,
                "anything": bool(anything),
                "tables": {"archive": archive_table(p.t, entries)},
            },
        )

    @app.get("/portal/p/{key}/archive/invoices/{invoice_id}.csv", include_in_schema=False)
    @html
    async def archive_invoice(request: Request, key: str, invoice_id: int) -> Response:
        p = await page(request)
        state = get_state(request)
        async with state.db.sessions() as session:
            prop = await _property(session, p, key)
            inv = await session.get(BillingSupplierInvoice, invoice_id)
            if inv is None or inv.property_id != prop.id:
                raise HTTPException(404, detail=f"{p.t('doc_supplier_invoice')} {invoice_id}")
            data = await invoice_csv(session, inv)
        return _download(data, "text/csv; charset=utf-8", f"leverantorsfaktura_{inv.id}.csv")

    @app.get("/portal/documents/{doc_id}", include_in_schema=False)
    @html
    async def archive_document(request: Request, doc_id: int) -> Response:
        """A document from the archive: staff, the property's board, or the resident of the apartment
        the billing basis is for; anyone else gets 404 (the document's existence is not disclosed)."""
        p = await page(request)
        who = require(p)
        state = get_state(request)
        async with state.db.sessions() as session:
            doc = await session.get(BillingDocument, doc_id)
            allowed = doc is not None and (
                who.sees_all
                or (who.role == "board" and doc.property_id in who.property_ids)
                or (
                    who.role == "resident" and doc.kind == "underlag" and doc.apartment_id == who.apartment_id
                )
            )
            if doc is None or not allowed or doc.data is None:
                raise HTTPException(404, detail=f"{p.t('document')} {doc_id}")
        return _download(doc.data, doc.content_type, doc.name, doc.sha256)

    @app.get("/mitt", include_in_schema=False)
    @html
    async def resident(request: Request) -> Response:
        p = await page(request)
        who = require(p)
        t = p.t
        if who.apartment_id is None:
            raise HTTPException(403, detail=t("forbidden_text"))
        today = _today()
        this = (month_start(today), today + timedelta(days=1))
        windows = {
            "this_month": this,
            "prev_month": (month_start(today, 1), month_start(today)),
            "same_month_last_year": (month_start(today, 12), month_start(today, 11)),
        }
        state = get_state(request)
        async with state.db.sessions() as session:
            apt = await session.get(Apartment, who.apartment_id)
            if apt is None:
                raise HTTPException(404, detail=t("apartment"))
            prop = await session.get(Property, apt.property_id)
            meters = await _property_meters(session, apt.property_id)
            series = await month_series(session, [m for m, _mp, _a in meters], _since(today, 13))
            media = sorted(
                {mp.medium for _m, mp, a in meters if a is not None and a.id == apt.id},
                key=lambda x: MEDIA_ORDER.index(x) if x in MEDIA_ORDER else 99,
            )
            prices = await unit_prices(session, apt.property_id, media, today)
        money = Table(
            "my_costs",
            [
                t("medium"),
                t("unit_price"),
                f"{t('this_month')} (kr)",
                f"{t('prev_month')} (kr)",
                f"{t('same_month_last_year')} (kr)",
                f"{t('building_avg')} (kr)",
                t("price_source"),
            ],
        )
        table = Table(
            "my_consumption",
            [
                t("medium"),
                t("unit"),
                t("this_month"),
                t("prev_month"),
                t("same_month_last_year"),
                t("building_avg"),
                f"{t('this_month')} {t('per_m2')}",
                t("building_avg_m2"),
            ],
        )
        charts = []
        for medium in media:
            apts = _per_apartment(meters, series, medium)
            mine = apts.get(apt.id)
            if mine is None:
                continue
            s = mine[1]
            vals = {name: s.total(*w)[0] for name, w in windows.items()}
            others: list[tuple[Apartment, Decimal]] = []
            for a, x in apts.values():
                value = x.total(*this)[0]
                if value is not None:
                    others.append((a, value))
            avg: Decimal | None = sum((v for _a, v in others), Decimal(0)) / len(others) if others else None
            area = sum((a.area_m2 for a, _v in others), Decimal(0))
            avg_m2 = sum((v for _a, v in others), Decimal(0)) / area if others and area else None
            mine_m2 = (
                vals["this_month"] / apt.area_m2 if vals["this_month"] is not None and apt.area_m2 else None
            )
            price = prices.get(medium)
            if price is not None:
                vat_note = f" {t('incl_vat')}" if price.vat_rate else ""
                money.rows.append(
                    [
                        t(medium),
                        f"{round_display(price.with_vat, 4)} kr/{s.unit}{vat_note}",
                        *(
                            round_display(kronor(v, price))
                            for v in (
                                vals["this_month"],
                                vals["prev_month"],
                                vals["same_month_last_year"],
                                avg,
                            )
                        ),
                        f"{t(price.source)} {price.detail}",
                    ]
                )
            table.rows.append(
                [
                    t(medium),
                    s.unit,
                    round_display(vals["this_month"]),
                    round_display(vals["prev_month"]),
                    round_display(vals["same_month_last_year"]),
                    round_display(avg),
                    round_display(mine_m2, 3),
                    round_display(avg_m2, 3),
                ]
            )
            charts.append(
                {
                    "medium": medium,
                    "chart_json": chart(
                        "bar",
                        [t("same_month_last_year"), t("prev_month"), t("this_month"), t("building_avg")],
                        [
                            {
                                "label": f"{t(medium)} ({s.unit})",
                                "data": [
                                    float(v or 0)
                                    for v in (
                                        vals["same_month_last_year"],
                                        vals["prev_month"],
                                        vals["this_month"],
                                        avg,
                                    )
                                ],
                            }
                        ],
                        s.unit,
                    ),
                }
            )
        return render(
            p,
            "resident.html",
            {
                "apt": apt,
                "prop": prop,
                "charts": charts,
                "tables": {"my_consumption": table, "my_costs": money},
            },
        )


def _download(data: bytes, content_type: str, name: str, sha256: str | None = None) -> Response:
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return Response(
        data,
        media_type=content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-SHA256": digest,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _may_see_apartment(who: Principal, apt: Apartment) -> bool:
    if who.sees_all:
        return True
    if who.role == "board":
        return apt.property_id in who.property_ids
    return who.role == "resident" and who.apartment_id == apt.id


__all__ = ["mount_pages"]


def _medium_rank(medium: str) -> int:
    return MEDIA_ORDER.index(medium) if medium in MEDIA_ORDER else len(MEDIA_ORDER)
