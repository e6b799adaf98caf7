"""A synthetic portfolio for benchmarks, load tests and demos: seeded, so the same index and seed
always give the same ``BillingInput`` (and therefore the same run bytes).

Properties of N apartments for one month (March 2024), four media per apartment: heat by
fördelning of a supplier invoice (30 % by area), hot water, cold water and electricity by debitering
(electricity with a fixed fee), and a samfällighetsavgift by area. Each meter has the readings a
daily remote read-out leaves around each boundary (one before and one after local midnight, so
every boundary value is interpolated, as in real life); about 2 % of apartments have a tenant
moving mid-month, 0.5 % of meters are replaced mid-month, 1 % have an estimated reading, 0.5 % of
apartments are vacant. Every other property is VAT-registered.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from zoneinfo import ZoneInfo

from .model import (
    Apartment,
    BillingInput,
    FixedCost,
    FixedKey,
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
    TenantPeriod,
)

__all__ = ["CREATED", "PERIOD", "build_property", "portfolio"]

TZ = ZoneInfo("Europe/Stockholm")
PERIOD = (date(2024, 3, 1), date(2024, 4, 1))
CREATED = datetime(2024, 4, 5, 8, 0, tzinfo=ZoneInfo("UTC"))
D = Decimal

# medium -> (unit, typical monthly use per m² as (lo, hi) in thousandths, price per unit, fee per month)
_MEDIA = {
    Medium.HEAT: ("kWh", (800, 2200), None, None),
    Medium.HOT_WATER: ("m3", (20, 60), D("68.50"), None),
    Medium.COLD_WATER: ("m3", (30, 80), D("32.75"), None),
    Medium.ELECTRICITY: ("kWh", (1500, 4000), D("1.4375"), D("45.00")),
}


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, dtime(hour, minute), tzinfo=TZ)


def _readings(
    rng: random.Random, pid: str, start_value: Decimal, use: Decimal, estimated: bool
) -> list[Reading]:
    """Readings around 1 March and 1 April: 23:40 the day before and 00:20 on the day."""
    lo, hi = PERIOD
    per_hour = use / D(31 * 24)
    before_lo = start_value - (per_hour * D("0.333")).quantize(D("0.001"))
    after_hi = start_value + use + (per_hour * D("0.333")).quantize(D("0.001"))
    rows = [
        Reading(f"{pid}-a", _at(lo - timedelta(days=1), 23, 40), before_lo),
        Reading(f"{pid}-b", _at(lo, 0, 20), start_value + (per_hour * D("0.333")).quantize(D("0.001"))),
        Reading(
            f"{pid}-c",
            _at(hi - timedelta(days=1), 23, 40),
            start_value + use - (per_hour * D("0.333")).quantize(D("0.001")),
        ),
        Reading(f"{pid}-d", _at(hi, 0, 20), after_hi, raw_frame_id=f"frame-{pid}-d"),
    ]
    if estimated:
        rows[3] = Reading(
            f"{pid}-d",
            rows[3].at,
            after_hi,
            ReadingSource.ESTIMATED,
            "same period last year",
            "no frames 9 days",
        )
    del rng
    return rows


def build_property(index: int, apartments: int, seed: int = 2024) -> BillingInput:
    """Property ``index`` of the portfolio: the same index and seed always give the same input."""
    rng = random.Random(seed * 1_000_003 + index)
    pid = f"P{index:05d}"
    lo, hi = PERIOD
    apts: list[Apartment] = []
    points: list[MeterPoint] = []
    tenants: list[TenantPeriod] = []
    for n in range(apartments):
        aid = f"{pid}-A{n:03d}"
        area = D(rng.randrange(280, 1250)) / 10
        apts.append(
            Apartment(
                aid,
                f"{index:05d}{n:03d}",
                f"{1001 + n}",
                area,
                None,
                f"Storgatan {index % 97 + 1}, lgh {1001 + n}",
            )
        )
        roll = rng.random()
        if roll < 0.02:  # a move mid-month
            move = lo + timedelta(days=rng.randrange(5, 25))
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}0", date(2019, 1, 1), move))
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}1", move, None))
        elif roll < 0.025:  # vacant all month
            pass
        else:
            tenants.append(TenantPeriod(aid, f"T{index:05d}{n:03d}0", date(2019, 1, 1), None))
        for medium, (unit, (ulo, uhi), _, _) in _MEDIA.items():
            mpid = f"{aid}-{medium}"
            use = (area * rng.randrange(ulo, uhi) / 1000).quantize(D("0.001"))
            start = D(rng.randrange(1000, 900_000)) / 10
            estimated = rng.random() < 0.01
            rows = _readings(rng, mpid, start, use, estimated)
            if rng.random() < 0.005:  # meter replaced mid-month
                swap = _at(lo + timedelta(days=14), 10)
                half = (use / 2).quantize(D("0.001"))
                old = MeterInstallation(
                    f"m-{mpid}-old",
                    datetime(2019, 1, 1, tzinfo=TZ),
                    swap,
                    (*rows[:2], Reading(f"{mpid}-x", swap, start + half)),
                )
                new_rows = (
                    Reading(f"{mpid}-y", swap, D(0)),
                    Reading(f"{mpid}-z", _at(hi, 0, 20), use - half + D("0.050")),
                    Reading(f"{mpid}-w", _at(hi - timedelta(days=1), 23, 40), use - half),
                )
                installs: tuple[MeterInstallation, ...] = (
                    old,
                    MeterInstallation(f"m-{mpid}", swap, None, new_rows),
                )
            else:
                installs = (
                    MeterInstallation(f"m-{mpid}", datetime(2019, 1, 1, tzinfo=TZ), None, tuple(rows)),
                )
            points.append(MeterPoint(mpid, medium, unit, aid, installs))
    main_use = D(sum(apts[i].area_m2 for i in range(apartments))) * D("1.6")
    media = []
    for medium, (unit, _, price, fee) in _MEDIA.items():
        if price is None:
            media.append(MediumConfig(medium, PriceModel.FORDELNING, unit, fixed_key_share=D("0.30")))
        else:
            media.append(
                MediumConfig(
                    medium,
                    PriceModel.DEBITERING,
                    unit,
                    prices=(PriceEntry(date(2020, 1, 1), None, price, fee or D(0)),),
                )
            )
    cost = (main_use * D("1.10")).quantize(D("0.01"))
    invoice = SupplierInvoice(
        f"{pid}-INV-2403",
        "Fjärrvärme AB",
        Medium.HEAT,
        lo,
        hi,
        (
            InvoiceLine(InvoiceLineKind.FIXED_FEE, D("2500.00")),
            InvoiceLine(InvoiceLineKind.ENERGY, cost, main_use.quantize(D("1")), "kWh"),
            InvoiceLine(InvoiceLineKind.VAT, ((cost + D("2500.00")) * D("0.25")).quantize(D("0.01"))),
        ),
    )
    settings = PropertySettings(pid, f"Brf Portfölj {index}", vat_registered=index % 2 == 0)
    return BillingInput(
        settings,
        lo,
        hi,
        tuple(apts),
        tuple(points),
        tuple(media),
        tuple(tenants),
        (invoice,),
        (FixedCost("samf", "Samfällighetsavgift", D("1250.00"), FixedKey.AREA),),
    )


def portfolio(apartments: int, per_property: int = 50, seed: int = 2024) -> Iterator[BillingInput]:
    """The portfolio's properties in order (the last one smaller when ``apartments`` is not a multiple)."""
    index = 0
    left = apartments
    while left > 0:
        size = min(per_property, left)
        yield build_property(index, size, seed)
        left -= size
        index += 1
