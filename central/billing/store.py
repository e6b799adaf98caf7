"""Storage adapter: builds a ``BillingInput`` from central's database and stores what a run leaves.

The engine stays pure; this module is the only place that knows both sides.

Ids given to the engine are stable within a database: an apartment is its object number (unique per
property, the rental system's own key), a meter point ``P<db id>``, a meter ``<serial>-<manufacturer>``,
a reading its database id as text (so each line's ``reading_ids`` lead back to the reading rows and
their raw frames: ``billing_line_reading``).

Readings: the medium's billing register (``central.checks.MAIN_REGISTER``: energy in Wh, volume in
m³; storage 0, tariff 0, no subunit, instantaneous) of every meter on the property's meter points,
as ``readings.period_readings`` cuts them from ``READING_WINDOW`` before the period to as long after
it (a gap in the read-outs can be bridged): per meter the reading at, or else the nearest on each
side of, every instant the run aligns to, and whole move days. They are read from around those
instants, not the whole window (``_with_readings``). Energy is converted to kWh exactly (a decimal
shift). When a meter carries the quantity on several registers (a pulse input beside the main
register), the shortest DIF/VIF wins, as in ``central.consumption``.

Tenants: the stored tenancies (``central.tenancies``) say who lived in an apartment when; the engine
cuts the period at their move dates, so each tenant gets their own lines. An apartment without
stored tenancies keeps its ``tenant_ref`` as the occupant for the whole period; without one, the
object number stands in as the reference (rental administration systems resolve the contract from
the object number).

Faults: a fault with ``blocks_billing`` that is not resolved blocks its meter's point (the settings'
fault policy then holds the line or bills it flagged).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from central.checks import MAIN_REGISTER
from central.models import (
    Apartment as ApartmentRow,
)
from central.models import (
    BillingDocument,
    BillingFixedCost,
    BillingLineReading,
    BillingLineRecord,
    BillingPrice,
    BillingRunRecord,
    BillingSettings,
    BillingSupplierInvoice,
    BillingSupplierInvoiceLine,
    Fault,
    Meter,
    Property,
    ReadingMonth,
    Tenancy,
)
from central.models import (
    MeterPoint as MeterPointRow,
)
from central.models import (
    Reading as ReadingRow,
)
from central.tenancies import occupancy

from .documents import Comparison, Document, DocumentContext
from .fastinit import builder
from .model import (
    Apartment,
    Approval,
    BillingInput,
    DifferenceRule,
    FaultPolicy,
    FixedCost,
    FixedKey,
    Frequency,
    InvoiceLine,
    InvoiceLineKind,
    Medium,
    MediumConfig,
    MeterInstallation,
    MeterPoint,
    PriceEntry,
    PriceModel,
    PropertySettings,
    Reading,
    ReadingSource,
    SupplierInvoice,
    VatRounding,
)
from .money import ZERO, Rounding
from .prepared import Prepared, PreparedInsert, driver_errors, execute_insert, prepare_insert
from .readings import (
    AlignmentNeeds,
    alignment_needs,
    instants_with_move_days,
    nearest_positions,
    on_move_day,
    period_readings,
)
from .runs import BillingRun, LineKind, RunStopped
from .serial import canonical_json, from_jsonable

__all__ = [
    "READING_WINDOW",
    "UNITS",
    "BillingSetupError",
    "StoredRun",
    "archive_documents",
    "comparisons_for",
    "document_context",
    "load_input",
    "load_run",
    "media_from_json",
    "next_run_id",
    "save_run",
    "update_run",
]

READING_WINDOW = timedelta(days=45)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# medium -> (engine unit, decimal shift from the stored register unit)
UNITS: dict[str, tuple[str, int]] = {
    "heat": ("kWh", -3),  # register in Wh
    "electricity": ("kWh", -3),
    "hot_water": ("m3", 0),
    "cold_water": ("m3", 0),
}


class BillingSetupError(ValueError):
    """The property cannot be billed as configured; ``reasons`` says what is missing."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def media_from_json(text: str) -> dict[str, dict[str, Any]]:
    data = json.loads(text or "{}")
    if not isinstance(data, dict):
        raise BillingSetupError(["media settings: a JSON object medium -> settings"])
    return data


def _medium_config(medium: str, cfg: Mapping[str, Any], prices: tuple[PriceEntry, ...]) -> MediumConfig:
    return MediumConfig(
        medium=Medium(medium),
        model=PriceModel(cfg.get("model", "debitering")),
        unit=UNITS[medium][0],
        prices=prices,
        fixed_key_share=Decimal(str(cfg.get("fixed_key_share", "0"))),
        fixed_key=FixedKey(cfg.get("fixed_key", "area")),
        difference_rule=DifferenceRule(cfg.get("difference_rule", "consumption")),
    )


def _settings(prop: Property, row: BillingSettings) -> PropertySettings:
    return PropertySettings(
        property_id=prop.key,
        name=prop.name,
        frequency=Frequency(row.frequency),
        lag_months=row.lag_months,
        timezone=row.timezone,
        vat_registered=row.vat_registered,
        vat_rate=row.vat_rate,
        vat_rounding=VatRounding(row.vat_rounding),
        rounding=Rounding[row.rounding.upper()],
        reading_decimals=row.reading_decimals,
        max_extrapolation_days=row.max_extrapolation_days,
        fault_policy=FaultPolicy(row.fault_policy),
        estimated_share_limit=row.estimated_share_limit,
    )


def _apartment(row: ApartmentRow) -> Apartment:
    return Apartment(row.object_number, row.object_number, row.number, row.area_m2, row.share, row.address)


def _pick_register(registers: Iterable[str]) -> str:
    return min(registers, key=lambda reg: (len(reg), reg))


# load_input's reads, prepared once (``prepared``: one driver call each on SQLite), all selecting by
# property: columns, not entities (no identity map; the meters' encrypted keys are not read at all).
_APARTMENT = ApartmentRow.__table__.c
_Q_APARTMENTS = Prepared(
    select(
        _APARTMENT.id, _APARTMENT.object_number, _APARTMENT.number, _APARTMENT.area_m2, _APARTMENT.share,
        _APARTMENT.address, _APARTMENT.tenant_ref,
    ).where(_APARTMENT.property_id == bindparam("prop"))
)  # fmt: skip
_Q_TENANCIES = Prepared(
    select(Tenancy.apartment_id, Tenancy.tenant_ref, Tenancy.move_in, Tenancy.move_out)
    .join(ApartmentRow, ApartmentRow.id == Tenancy.apartment_id)
    .where(ApartmentRow.property_id == bindparam("prop"))
)
_Q_POINTS = Prepared(
    select(MeterPointRow.id, MeterPointRow.medium, MeterPointRow.apartment_id).where(
        MeterPointRow.property_id == bindparam("prop")
    )
)
_Q_METERS = Prepared(
    select(
        Meter.id, Meter.serial, Meter.manufacturer, Meter.medium, Meter.meter_point_id, Meter.installed_at,
        Meter.removed_at,
    )
    .join(MeterPointRow, MeterPointRow.id == Meter.meter_point_id)
    .where(MeterPointRow.property_id == bindparam("prop"))
)  # fmt: skip
_Q_FAULTS = Prepared(
    select(Fault.id, Fault.meter_id)
    .join(Meter, Meter.id == Fault.meter_id)
    .join(MeterPointRow, MeterPointRow.id == Meter.meter_point_id)
    .where(
        MeterPointRow.property_id == bindparam("prop"),
        Fault.blocks_billing.is_(True),
        Fault.state != "resolved",
    )
    .order_by(Fault.id)
)
_PRICE = BillingPrice.__table__.c
_Q_PRICES = Prepared(
    select(_PRICE.medium, _PRICE.valid_from, _PRICE.valid_to, _PRICE.unit_price, _PRICE.fixed_fee_per_month)
    .where(_PRICE.property_id == bindparam("prop"))
    .order_by(_PRICE.medium, _PRICE.valid_from, _PRICE.id)
)
_INVOICE = BillingSupplierInvoice.__table__.c
_OVERLAPS = (
    _INVOICE.property_id == bindparam("prop"),
    _INVOICE.period_from < bindparam("hi"),
    _INVOICE.period_to > bindparam("lo"),
)
_Q_INVOICES = Prepared(
    select(_INVOICE.id, _INVOICE.supplier, _INVOICE.medium, _INVOICE.period_from, _INVOICE.period_to)
    .where(*_OVERLAPS)
    .order_by(_INVOICE.id)
)
_LINE = BillingSupplierInvoiceLine.__table__.c
_Q_INVOICE_LINES = Prepared(
    select(_LINE.invoice_id, _LINE.kind, _LINE.amount, _LINE.quantity, _LINE.unit, _LINE.text)
    .join(BillingSupplierInvoice, _INVOICE.id == _LINE.invoice_id)
    .where(*_OVERLAPS)
    .order_by(_LINE.invoice_id, _LINE.position)
)
_COST = BillingFixedCost.__table__.c
_Q_FIXED_COSTS = Prepared(
    select(
        _COST.id, _COST.name, _COST.amount_per_month, _COST.key, _COST.taxable, _COST.valid_from,
        _COST.valid_to,
    )
    .where(_COST.property_id == bindparam("prop"))
    .order_by(_COST.id)
)  # fmt: skip
_Q_MONTH_REGISTERS = Prepared(
    select(ReadingMonth.meter_id, ReadingMonth.register, ReadingMonth.quantity, ReadingMonth.unit)
    .distinct()
    .join(Meter, Meter.id == ReadingMonth.meter_id)
    .join(MeterPointRow, MeterPointRow.id == Meter.meter_point_id)
    .where(
        MeterPointRow.property_id == bindparam("prop"),
        ReadingMonth.month >= bindparam("lo"),
        ReadingMonth.month <= bindparam("hi"),
    )
)


async def load_input(
    session: AsyncSession,
    prop: Property,
    period_from: date,
    period_to: date,
    approvals: tuple[Approval, ...] = (),
    *,
    whole_window: bool = False,
) -> tuple[BillingInput, dict[str, int]]:
    """The engine's input for ``prop`` and ``[period_from, period_to)``; and object number -> apartment
    row id (for the line rows). Raises ``BillingSetupError`` when the property has no settings.

    The readings are those ``period_readings`` keeps of the ``READING_WINDOW`` around the period,
    fetched from around the instants the run aligns to (``_with_readings``); ``whole_window``
    fetches the whole window instead, the reference the shortcut is tested against."""
    # The reads below go to the connection and the driver, past the session's autoflush: what the
    # caller changed in this session (a price, a tenancy) is written first, as a query would.
    await session.flush()
    srow = await session.get(BillingSettings, prop.id)
    if srow is None:
        raise BillingSetupError([f"property {prop.key}: no billing settings (PUT .../settings first)"])
    settings = _settings(prop, srow)
    media_cfg = media_from_json(srow.media)
    if not media_cfg:
        raise BillingSetupError([f"property {prop.key}: no medium has a price model"])

    conn = await session.connection()
    by_prop = {"prop": prop.id}
    apt_rows = await _Q_APARTMENTS.rows(conn, by_prop)
    apartments = tuple(_apartment(a) for a in sorted(apt_rows, key=lambda a: a.object_number))
    apt_key = {a.id: a.object_number for a in apt_rows}
    tenants = occupancy(apt_rows, await _Q_TENANCIES.rows(conn, by_prop))

    points = [p for p in await _Q_POINTS.rows(conn, by_prop) if p.medium in media_cfg]
    point_ids = {p.id for p in points}
    meters = [m for m in await _Q_METERS.rows(conn, by_prop) if m.meter_point_id in point_ids]
    registers = await _billing_registers(session, prop.id, meters, period_from, period_to)
    faults: dict[int, list[str]] = defaultdict(list)
    if meters:
        meter_ids = {m.id for m in meters}
        for fid, meter_id in await _Q_FAULTS.rows(conn, by_prop):
            if meter_id in meter_ids:
                faults[meter_id].append(f"F{fid}")

    by_point: dict[int, list[Any]] = defaultdict(list)
    for m in meters:
        if m.meter_point_id is not None:
            by_point[m.meter_point_id].append(m)
    engine_points: list[MeterPoint] = []
    # (engine point id, index of the installation, meter row id, decimal shift of its register)
    point_meters: list[tuple[str, int, int, int]] = []
    for p in sorted(points, key=lambda p: p.id):
        if p.medium not in UNITS:
            continue
        unit, shift = UNITS[p.medium]
        installs = []
        blocking: list[str] = []
        for m in sorted(by_point.get(p.id, []), key=lambda m: (m.installed_at or EPOCH, m.id)):
            installs.append(
                _new_installation(f"{m.serial}-{m.manufacturer}", m.installed_at or EPOCH, m.removed_at, ())
            )
            point_meters.append((f"P{p.id}", len(installs) - 1, m.id, shift))
            blocking += faults.get(m.id, [])
        engine_points.append(
            _new_point(
                f"P{p.id}",
                Medium(p.medium),
                unit,
                apt_key.get(p.apartment_id) if p.apartment_id is not None else None,
                tuple(installs),
                tuple(blocking),
            )
        )

    price_rows = await _Q_PRICES.rows(conn, by_prop)
    prices: dict[str, list[PriceEntry]] = defaultdict(list)
    for pr in price_rows:
        prices[pr.medium].append(
            PriceEntry(pr.valid_from, pr.valid_to, pr.unit_price, pr.fixed_fee_per_month)
        )

    problems: list[str] = []
    media = []
    for medium in sorted(media_cfg):
        if medium not in UNITS:
            problems.append(f"medium {medium}: cannot be billed (no billing register)")
            continue
        try:
            media.append(_medium_config(medium, media_cfg[medium], tuple(prices.get(medium, ()))))
        except (ValueError, ArithmeticError) as exc:
            problems.append(f"medium {medium}: {exc}")
    if problems:
        raise BillingSetupError(problems)

    overlapping = {"prop": prop.id, "lo": period_from, "hi": period_to}
    inv_rows = await _Q_INVOICES.rows(conn, overlapping)
    inv_lines: dict[int, list[Any]] = defaultdict(list)
    if inv_rows:
        for line in await _Q_INVOICE_LINES.rows(conn, overlapping):
            inv_lines[line.invoice_id].append(line)
    invoices = tuple(
        SupplierInvoice(
            id=f"I{i.id}",
            supplier=i.supplier,
            medium=Medium(i.medium),
            period_from=i.period_from,
            period_to=i.period_to,
            lines=tuple(
                InvoiceLine(InvoiceLineKind(ln.kind), ln.amount, ln.quantity, ln.unit, ln.text)
                for ln in inv_lines[i.id]
            ),
        )
        for i in inv_rows
    )
    cost_rows = await _Q_FIXED_COSTS.rows(conn, by_prop)
    fixed_costs = tuple(
        FixedCost(
            f"C{c.id}", c.name, c.amount_per_month, FixedKey(c.key), c.taxable, c.valid_from, c.valid_to
        )
        for c in cost_rows
    )
    inp = BillingInput(
        settings=settings,
        period_from=period_from,
        period_to=period_to,
        apartments=apartments,
        meter_points=tuple(engine_points),
        media=tuple(media),
        tenants=tenants,
        invoices=invoices,
        fixed_costs=fixed_costs,
        approvals=approvals,
    )
    # The run (and its input digest, which hashes every reading it is given) only needs the readings
    # around the instants it aligns to: ``period_readings``' cut of the window, read as such.
    inp = await _with_readings(session, inp, point_meters, registers, None if whole_window else FETCH_MARGIN)
    return inp, {a.object_number: a.id for a in apt_rows}


_Row = tuple[int, datetime, Decimal, int | None]  # (id, read_at in UTC, value, raw frame id)


def _window(period_from: date, period_to: date) -> tuple[datetime, datetime]:
    """``READING_WINDOW`` either side of the period (UTC midnights): what a run may read from."""
    lo = datetime.combine(period_from, datetime.min.time(), tzinfo=UTC) - READING_WINDOW
    return lo, datetime.combine(period_to, datetime.min.time(), tzinfo=UTC) + READING_WINDOW


# Readings are fetched within this margin of each instant a run aligns to; a meter whose nearest
# read-out on a side lies farther out (a missed night, a meter read weekly) is fetched again over
# the whole READING_WINDOW. Nightly read-outs: one reading a side, two hours' slack for the poll.
FETCH_MARGIN = timedelta(hours=26)
_TIME_ORDER = (ReadingRow.meter_id, ReadingRow.read_at, ReadingRow.id)
# Built once: a property's run executes it a few times per range, and building the expression
# anew cost about as much as the database's own work for it.
_READINGS_IN_RANGE = (
    select(ReadingRow.meter_id, ReadingRow.id, ReadingRow.read_at, ReadingRow.value, ReadingRow.raw_frame_id)
    .where(
        ReadingRow.meter_id.in_(bindparam("meters", expanding=True)),
        ReadingRow.register == bindparam("register"),
        ReadingRow.read_at >= bindparam("lo"),
        ReadingRow.read_at <= bindparam("hi"),
    )
    .order_by(*_TIME_ORDER)
)


async def _billing_registers(
    session: AsyncSession, prop_id: int, meters: Iterable[Any], period_from: date, period_to: date
) -> dict[int, str]:
    """Meter row id -> its billing register: of the medium's candidates (``MAIN_REGISTER``) with
    readings in the UTC months that ``READING_WINDOW`` around the period touches, the shortest
    DIF/VIF (a pulse input beside the main register loses), as in ``central.consumption``. Taken
    from the month summaries (``reading_month``, kept by every writer of readings), so a meter's
    register is known before any of its readings is read; a meter without summaries from the
    readings."""
    wanted = {m.id: MAIN_REGISTER.get(m.medium) for m in meters}
    ids = [mid for mid, w in wanted.items() if w is not None]
    if not ids:
        return {}
    lo, hi = _window(period_from, period_to)
    conn = await session.connection()
    found: dict[int, set[str]] = defaultdict(set)
    for meter_id, register, quantity, unit in await _Q_MONTH_REGISTERS.rows(
        conn, {"prop": prop_id, "lo": f"{lo:%Y-%m}", "hi": f"{hi:%Y-%m}"}
    ):
        if wanted.get(meter_id) == (quantity, unit):
            found[meter_id].add(register)
    unsummarised = [mid for mid in ids if mid not in found]
    if unsummarised:
        # No summary (no readings in the window, or a writer that skipped ``note_readings``): the
        # readings themselves say, at the cost of a scan of the window for these meters.
        pairs = sorted({w for mid in unsummarised if (w := wanted[mid]) is not None})
        for meter_id, register, quantity, unit in await conn.execute(
            select(ReadingRow.meter_id, ReadingRow.register, ReadingRow.quantity, ReadingRow.unit)
            .distinct()
            .where(
                ReadingRow.meter_id.in_(unsummarised),
                ReadingRow.read_at >= lo,
                ReadingRow.read_at <= hi,
                ReadingRow.storage == 0,
                ReadingRow.tariff == 0,
                ReadingRow.subunit == 0,
                ReadingRow.function == "instantaneous",
                or_(*(and_(ReadingRow.quantity == q, ReadingRow.unit == u) for q, u in pairs)),
            )
        ):
            if wanted.get(meter_id) == (quantity, unit):
                found[meter_id].add(register)
    return {mid: _pick_register(regs) for mid, regs in found.items()}


def _merged(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


async def _fetch(
    session: AsyncSession, registers: Mapping[int, str], ranges: list[tuple[datetime, datetime]]
) -> dict[int, list[_Row]]:
    """Meter row id -> (id, read_at, value, raw frame id) of its billing register in ``ranges``
    (disjoint, sorted), in (read_at, id) order."""
    if not registers:
        return defaultdict(list)
    conn = await session.connection()
    if conn.dialect.name == "sqlite":
        return await _fetch_sqlite(conn, registers, ranges)
    return await _fetch_core(conn, registers, ranges)


def _by_register(registers: Mapping[int, str]) -> list[tuple[str, list[int]]]:
    by_name: dict[str, list[int]] = defaultdict(list)
    for meter_id, name in sorted(registers.items()):
        by_name[name].append(meter_id)
    return sorted(by_name.items())


async def _fetch_core(
    conn: AsyncConnection, registers: Mapping[int, str], ranges: list[tuple[datetime, datetime]]
) -> dict[int, list[_Row]]:
    out: dict[int, list[_Row]] = defaultdict(list)
    for lo, hi in ranges:
        for name, meter_ids in _by_register(registers):
            # (meter_id, register, read_at) is the unique index: one range scan per meter.
            rows = await conn.execute(
                _READINGS_IN_RANGE, {"meters": meter_ids, "register": name, "lo": lo, "hi": hi}
            )
            for meter_id, rid, read_at, value, frame in rows:
                out[meter_id].append((rid, read_at, value, frame))
    return out


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's SQLite DATETIME stores UTCDateTime's naive UTC
_SQLITE_CHUNK = 500  # meters per IN list, far below SQLite's bound-parameter limit
_SQLITE_PARTS = 200  # SELECTs per UNION ALL statement (SQLite's limit: 500)


async def _fetch_sqlite(
    conn: AsyncConnection, registers: Mapping[int, str], ranges: list[tuple[datetime, datetime]]
) -> dict[int, list[_Row]]:
    """``_fetch_core`` in one statement through the driver (aiosqlite's ``execute_fetchall``): the
    Core path takes four thread hand-offs per statement and a result processor per value, and on a
    fleet run the fetches were over a third of ``load_input``. The same rows (a test compares the
    two), read_at and value converted as ``UTCDateTime`` and ``ExactDecimal`` convert them."""
    parts: list[str] = []
    params: list[Any] = []
    for lo, hi in ranges:
        bounds = [lo.astimezone(UTC).strftime(_SQLITE_TIME), hi.astimezone(UTC).strftime(_SQLITE_TIME)]
        for name, meter_ids in _by_register(registers):
            for i in range(0, len(meter_ids), _SQLITE_CHUNK):
                chunk = meter_ids[i : i + _SQLITE_CHUNK]
                parts.append(
                    "SELECT meter_id, id, read_at, value, raw_frame_id FROM reading WHERE meter_id IN "
                    f"({','.join('?' * len(chunk))}) AND register = ? AND read_at >= ? AND read_at <= ?"
                )
                params += [*chunk, name, *bounds]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    out: dict[int, list[_Row]] = defaultdict(list)
    parse, dec = datetime.fromisoformat, Decimal
    instants: dict[str, datetime] = {}
    # SQLite takes at most 500 parts in a compound SELECT. A meter's parts come in the order of its
    # ranges, so statement by statement its rows stay in time order.
    at = 0
    for i in range(0, len(parts), _SQLITE_PARTS):
        batch = parts[i : i + _SQLITE_PARTS]
        count = sum(part.count("?") for part in batch)
        sql = " UNION ALL ".join(batch) + " ORDER BY meter_id, read_at, id"
        with driver_errors(sql, conn.dialect):
            rows = await driver.execute_fetchall(sql, params[at : at + count])
        for meter_id, rid, read_at, value, frame in rows:
            # A read-out stamps every meter of a bus with the same few instants: parsed once each.
            at_utc = instants.get(read_at)
            if at_utc is None:
                at_utc = instants[read_at] = parse(read_at).replace(tzinfo=UTC)
            out[meter_id].append((rid, at_utc, dec(value), frame))
        at += count
    return out


_new_reading = builder(Reading)
# A property's points and installations are rebuilt once with their readings: builders, not
# ``dataclasses.replace`` (1.5-2 us each, two hundred meters a property).
_new_installation = builder(MeterInstallation)
_new_point = builder(MeterPoint)


def _with_installs(point: MeterPoint, installs: list[MeterInstallation]) -> MeterPoint:
    return _new_point(
        point.id, point.medium, point.unit, point.apartment_id, tuple(installs), point.blocking_faults
    )


def _with_rows(inst: MeterInstallation, rows: list[_Row], shift: int) -> MeterInstallation:
    return _new_installation(
        inst.meter_id, inst.installed_at, inst.removed_at, tuple([_reading(r, shift) for r in rows])
    )
_REMOTE = ReadingSource.REMOTE


def _reading(row: _Row, shift: int) -> Reading:
    """``Reading(str(id), read_at, value shifted, raw_frame_id=...)`` without ``__init__``: the
    database's instants are aware UTC already, the one thing ``__post_init__`` checks."""
    rid, read_at, value, frame = row
    return _new_reading(
        str(rid), read_at, value.scaleb(shift) if shift else value, _REMOTE, None, None,
        None if frame is None else str(frame),
    )  # fmt: skip


def _cut(
    rows: list[_Row],
    inst: MeterInstallation,
    instants: list[datetime],
    need: AlignmentNeeds,
    margin: timedelta | None,
) -> list[_Row] | None:
    """``period_readings``' cut of one meter's rows (move days whole, the nearest instants around
    every instant); None when ``margin`` is given and the rows do not hold the neighbours within it.

    The rows are one register's in (read_at, id) order from disjoint sorted ranges, and the register
    is unique per instant (``uq_reading_meter_register_read_at``): their instants are already the
    sorted, distinct list ``usable_instants`` would make of them."""
    lo = inst.installed_at
    hi = inst.removed_at
    at = [r[1] for r in rows]
    if at and at[0] >= lo and (hi is None or at[-1] <= hi):
        # Every row inside the installation (the usual case): positions are row indexes.
        keep = nearest_positions(at, instants, margin)
    else:
        inside = [k for k, t in enumerate(at) if t >= lo and (hi is None or t <= hi)]
        found = nearest_positions([at[k] for k in inside], instants, margin)
        keep = None if found is None else {inside[k] for k in found}
    if keep is None:
        return None
    if not need.days:
        return [rows[k] for k in sorted(keep)]
    return [r for k, r in enumerate(rows) if k in keep or on_move_day(r[1], need)]


async def _with_readings(
    session: AsyncSession,
    inp: BillingInput,
    point_meters: list[tuple[str, int, int, int]],
    registers: Mapping[int, str],
    margin: timedelta | None,
) -> BillingInput:
    """``inp`` (installations without readings) with the readings ``period_readings`` keeps of each
    meter's billing register over ``READING_WINDOW`` around the period.

    Fetched from the database: with ``margin``, only the readings within it of every instant the run
    aligns the point to (``alignment_needs``: the period's ends, price changes, installations and
    removals, whole move days); a meter whose nearest usable reading on a side of an instant lies
    farther out (or that has none on a side) is fetched over the whole window after all. Either way
    the cut is the one of the whole window (``nearest_instants``;
    tests/billing/test_billing_period_readings.py). With
    ``margin=None`` every reading of the window is read and ``period_readings`` cuts them: the
    reference tests/central/test_central_billing_fetch.py compares the shortcut with."""
    needs = alignment_needs(inp)
    lo_w, hi_w = _window(inp.period_from, inp.period_to)
    wanted = [(pid, index, mid, shift) for pid, index, mid, shift in point_meters if mid in registers]
    rows: dict[int, list[_Row]] = {}
    if margin is None:
        # The reference: every reading of the window, cut by ``period_readings`` itself.
        rows.update(await _fetch(session, {mid: registers[mid] for _, _, mid, _ in wanted}, [(lo_w, hi_w)]))
        uncut = {p.id: list(p.installations) for p in inp.meter_points}
        for point_id, index, meter_id, shift in wanted:
            inst = uncut[point_id][index]
            uncut[point_id][index] = replace(
                inst, readings=tuple(_reading(r, shift) for r in rows.get(meter_id, ()))
            )
        return period_readings(
            replace(
                inp,
                meter_points=tuple(replace(p, installations=tuple(uncut[p.id])) for p in inp.meter_points),
            )
        )
    by_ranges: dict[tuple[tuple[datetime, datetime], ...], dict[int, str]] = defaultdict(dict)
    for point_id, _, meter_id, _ in wanted:
        need = needs[point_id]
        merged = _merged(
            [(t - margin, t + margin) for t in need.instants]
            + [(lo - margin, hi + margin) for lo, hi in need.days]
        )
        by_ranges[tuple(merged)][meter_id] = registers[meter_id]
    for ranges, group in by_ranges.items():
        rows.update(await _fetch(session, group, list(ranges)))
    by_point: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for point_id, index, meter_id, shift in wanted:
        by_point[point_id].append((index, meter_id, shift))
    points = []
    wide: list[tuple[MeterPoint, list[datetime], list[tuple[int, int, int]]]] = []
    for point in inp.meter_points:
        meters = by_point.get(point.id)
        if not meters:
            points.append(point)
            continue
        need = needs[point.id]
        instants = instants_with_move_days(need, (r[1] for _, mid, _ in meters for r in rows.get(mid, ())))
        installs = list(point.installations)
        again = []
        for index, meter_id, shift in meters:
            cut = _cut(rows.get(meter_id, []), installs[index], instants, need, margin)
            if cut is None:
                again.append((index, meter_id, shift))
            else:
                installs[index] = _with_rows(installs[index], cut, shift)
        points.append(_with_installs(point, installs))
        if again:
            wide.append((points[-1], instants, again))
    if wide:
        fetched = await _fetch(
            session, {mid: registers[mid] for _, _, ms in wide for _, mid, _ in ms}, [(lo_w, hi_w)]
        )
        at = {p.id: k for k, p in enumerate(points)}
        for point, instants, meters in wide:
            installs = list(point.installations)
            need = needs[point.id]
            for index, meter_id, shift in meters:
                cut = _cut(fetched.get(meter_id, []), installs[index], instants, need, None)
                assert cut is not None  # no margin, no refusal
                installs[index] = _with_rows(installs[index], cut, shift)
            points[at[point.id]] = _with_installs(point, installs)
    return replace(inp, meter_points=tuple(points))


@dataclass(frozen=True, slots=True)
class StoredRun:
    record: BillingRunRecord
    result: BillingRun | RunStopped

    @property
    def run(self) -> BillingRun:
        """The run (a stopped run's preview); a stopped run without one has nothing to show."""
        if isinstance(self.result, BillingRun):
            return self.result
        if self.result.preview is None:
            raise LookupError(f"run {self.record.id} stopped without a preview")
        return self.result.preview


_Q_RUN_COUNT = Prepared(
    select(func.count().label("runs"))
    .select_from(BillingRunRecord)
    .where(BillingRunRecord.property_id == bindparam("prop"), BillingRunRecord.period_from == bindparam("lo"))
)


async def next_run_id(session: AsyncSession, prop: Property, period_from: date) -> str:
    await session.flush()  # a run added in this session counts (the read goes past autoflush)
    rows = await _Q_RUN_COUNT.rows(await session.connection(), {"prop": prop.id, "lo": period_from})
    return f"P{prop.id}-{period_from:%Y%m%d}-{rows[0].runs + 1:02d}"


def _state(result: BillingRun | RunStopped) -> str:
    return "stopped" if isinstance(result, RunStopped) else str(result.state)


def _result_json(result: BillingRun | RunStopped) -> str:
    return canonical_json(result).decode()


async def save_run(
    session: AsyncSession,
    prop: Property,
    result: BillingRun | RunStopped,
    apartment_ids: Mapping[str, int],
    *,
    created_by: str,
    kind: str = "regular",
    corrects_run_id: str | None = None,
    raw_frames: Mapping[str, str | None] | None = None,
) -> BillingRunRecord:
    """Store a computed run: the whole value, one row per line, and each line's reading links.

    A stopped run keeps its would-be lines only inside ``result`` (they are not bills yet); its line
    rows and links are written when it is approved (``update_run``)."""
    run = result if isinstance(result, BillingRun) else None
    record = BillingRunRecord(
        id=result.run_id,
        property_id=prop.id,
        period_from=result.period_from,
        period_to=result.period_to,
        kind=kind,
        corrects_run_id=corrects_run_id,
        state=_state(result),
        input_digest=result.input_digest,
        created_at=datetime.now(UTC),
        created_by=created_by,
        net=run.summary.net if run else None,
        vat=run.summary.vat if run else None,
        line_count=len(run.lines) if run else 0,
        stop_reasons=canonical_json(result.reasons if isinstance(result, RunStopped) else ()).decode(),
        result=_result_json(result),
    )
    conn = await session.connection()
    # Every row built before the first write: on SQLite the transaction holds the database's write
    # lock from its first insert to its commit, and another worker saving meanwhile waits in
    # SQLite's busy handler, which sleeps 1, 2, 5, 10 ... ms between its tries.
    writes = _line_writes(conn.dialect, run, apartment_ids, raw_frames) if run is not None else ()
    session.add(record)
    await session.flush()
    for write in writes:
        await execute_insert(conn, write)
    return record


def _line_writes(
    dialect: Dialect,
    run: BillingRun,
    apartment_ids: Mapping[str, int],
    raw_frames: Mapping[str, str | None] | None,
) -> tuple[PreparedInsert, PreparedInsert]:
    """The inserts of ``run``'s line rows and their reading links, values converted."""
    run_id = run.run_id
    rows = [
        (
            run_id, ln.line_id, apartment_ids.get(ln.apartment_id) if ln.apartment_id else None,
            ln.object_number, ln.tenant_ref, ln.kind.value, ln.charge,
            ln.medium.value if ln.medium else None, ln.payer.value, ln.period_from, ln.period_to,
            ln.quantity, ln.unit, ln.unit_price, ln.net, ln.vat_rate, ln.vat, ln.source,
            ln.estimated, ln.held, ln.corrects,
        )
        for ln in run.lines
    ]  # fmt: skip
    frames = raw_frames or {}
    links: list[tuple[str, int, str, int | None]] = []
    for ln in run.lines:
        if ln.kind is LineKind.CREDIT:
            continue  # a credit points at the line it credits, whose links are stored with it
        seen: set[int] = set()
        for span in ln.spans:
            for rid in span.reading_ids:
                if rid.isdigit():
                    seen.add(int(rid))
        for reading in sorted(seen):
            frame = frames.get(str(reading))
            links.append((ln.line_id, reading, run_id, int(frame) if frame else None))
    # Core-level inserts on the connection, one executemany each: the ORM's bulk insert fetches
    # every new line's id back (RETURNING, row by row through the driver), which was over half of
    # a fleet run's save (1.0 ms per apartment).
    return (
        prepare_insert(dialect, cast(Table, BillingLineRecord.__table__), _LINE_COLUMNS, rows),
        prepare_insert(dialect, cast(Table, BillingLineReading.__table__), _LINK_COLUMNS, links),
    )


async def _write_lines(
    session: AsyncSession,
    run: BillingRun,
    apartment_ids: Mapping[str, int],
    raw_frames: Mapping[str, str | None] | None,
) -> None:
    conn = await session.connection()
    for write in _line_writes(conn.dialect, run, apartment_ids, raw_frames):
        await execute_insert(conn, write)


_LINE_COLUMNS = (
    "run_id", "line_id", "apartment_id", "object_number", "tenant_ref", "kind", "charge", "medium",
    "payer", "period_from", "period_to", "quantity", "unit", "unit_price", "net", "vat_rate", "vat",
    "source", "estimated", "held", "corrects",
)  # fmt: skip
_LINK_COLUMNS = ("line_id", "reading_id", "run_id", "raw_frame_id")


def raw_frames_of(inp: BillingInput) -> dict[str, str | None]:
    """Reading id -> raw frame id, for the traceability links."""
    return {r.id: r.raw_frame_id for p in inp.meter_points for inst in p.installations for r in inst.readings}


async def load_run(session: AsyncSession, run_id: str) -> StoredRun | None:
    record = await session.get(BillingRunRecord, run_id)
    if record is None:
        return None
    data = json.loads(record.result)
    cls = RunStopped if record.state == "stopped" or "reasons" in data else BillingRun
    return StoredRun(record, from_jsonable(cls, data))


async def update_run(
    session: AsyncSession,
    record: BillingRunRecord,
    run: BillingRun,
    apartment_ids: Mapping[str, int] | None = None,
    raw_frames: Mapping[str, str | None] | None = None,
) -> None:
    """Store a transition (approve, export, lock): the state and audit change, never the lines.
    A stopped run that is approved gets its line rows now."""
    was_stopped = record.state == "stopped"
    record.state = str(run.state)
    record.result = _result_json(run)
    record.net, record.vat, record.line_count = run.summary.net, run.summary.vat, len(run.lines)
    if was_stopped:
        await session.execute(delete(BillingLineRecord).where(BillingLineRecord.run_id == record.id))
        await _write_lines(session, run, apartment_ids or {}, raw_frames)


async def document_context(session: AsyncSession, prop: Property, language: str = "sv") -> DocumentContext:
    srow = await session.get(BillingSettings, prop.id)
    apt_rows = (
        (await session.execute(select(ApartmentRow).where(ApartmentRow.property_id == prop.id)))
        .scalars()
        .all()
    )
    names = (
        await session.execute(
            select(Tenancy.tenant_ref, Tenancy.name)
            .where(Tenancy.apartment_id.in_([a.id for a in apt_rows] or [-1]), Tenancy.name != "")
            .order_by(Tenancy.move_in, Tenancy.id)
        )
    ).all()
    return DocumentContext(
        prop.key,
        prop.name,
        {a.object_number: _apartment(a) for a in apt_rows},
        {},
        srow.timezone if srow is not None else "Europe/Stockholm",
        language,
        dict(names),  # the latest name wins (ordered by move-in)
    )


async def comparisons_for(
    session: AsyncSession, prop: Property, run: BillingRun
) -> dict[str, tuple[Comparison, ...]]:
    """EED billing information per apartment: the previous period's and last year's consumption (from
    earlier exported runs) and the building's average per m² this period (from this run)."""
    consumption = [
        ln for ln in run.lines if ln.kind is LineKind.CONSUMPTION and ln.medium and ln.quantity is not None
    ]
    if not consumption:
        return {}
    length = run.period_to - run.period_from
    prev_from = _shift_month(run.period_from, -_months(run.period_from, run.period_to))
    year_from = _shift_month(run.period_from, -12)

    async def earlier(period_from: date) -> dict[tuple[str, str], Decimal]:
        rows = await session.execute(
            select(BillingLineRecord.object_number, BillingLineRecord.medium, BillingLineRecord.quantity)
            .join(BillingRunRecord, BillingRunRecord.id == BillingLineRecord.run_id)
            .where(
                BillingRunRecord.property_id == prop.id,
                BillingRunRecord.period_from == period_from,
                BillingRunRecord.state.in_(("exported", "locked")),
                BillingLineRecord.kind.in_(("consumption", "rebill", "credit")),
            )
        )
        out: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
        for obj, medium, qty in rows:
            if medium and qty is not None:
                out[(obj, medium)] += qty
        return out

    previous, last_year = await earlier(prev_from), await earlier(year_from)
    del length
    ctx_apts = {a.object_number: a for a in (await document_context(session, prop)).apartments.values()}
    per_medium: dict[str, Decimal] = defaultdict(lambda: ZERO)
    units: dict[str, str] = {}
    used: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for ln in consumption:
        per_medium[str(ln.medium)] += ln.quantity or ZERO
        units[str(ln.medium)] = ln.unit
        used[(ln.object_number, str(ln.medium))] += ln.quantity or ZERO
    area = sum((a.area_m2 for a in ctx_apts.values()), ZERO)
    out: dict[str, list[Comparison]] = defaultdict(list)
    for obj, medium in sorted(used):
        avg = (per_medium[medium] / area).quantize(Decimal("0.001")) if area else None
        out[obj].append(
            Comparison(
                Medium(medium), units[medium], previous.get((obj, medium)), last_year.get((obj, medium)), avg
            )
        )
    return {k: tuple(v) for k, v in out.items()}


def _months(lo: date, hi: date) -> int:
    return (hi.year - lo.year) * 12 + hi.month - lo.month


def _shift_month(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".csv": "text/csv",
    ".txt": "text/plain",
    ".xml": "application/xml",
}


async def archive_documents(
    session: AsyncSession,
    prop: Property,
    run_id: str,
    items: Iterable[tuple[str, str, str | None, str | None, bytes]],
    apartment_ids: Mapping[str, int],
) -> list[BillingDocument]:
    """Put documents (kind, name, apartment key, tenant ref, bytes) into the archive with SHA-256."""
    now = datetime.now(UTC)
    out = []
    for kind, name, apt_key, tenant, data in items:
        suffix = name[name.rfind(".") :] if "." in name else ""
        doc = BillingDocument(
            run_id=run_id,
            property_id=prop.id,
            kind=kind,
            apartment_id=apartment_ids.get(apt_key) if apt_key else None,
            tenant_ref=tenant,
            name=name,
            content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data,
            created_at=now,
        )
        session.add(doc)
        out.append(doc)
    await session.flush()
    return out


def document_items(docs: Iterable[Document]) -> list[tuple[str, str, str | None, str | None, bytes]]:
    return [(d.kind, d.name, d.apartment_id, d.tenant_ref, d.data) for d in docs]


__all__ += ["CONTENT_TYPES", "document_items", "raw_frames_of"]
