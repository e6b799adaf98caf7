"""Month summaries of the billing registers: what ingest keeps equals a rebuild from the readings,
and the pages' month figures from them equal the day-by-day figures from every reading."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from central_testdata import corpus_frame
from sqlalchemy import select
from test_central_ingest_batching import batch

from central.db import Database
from central.ingest import IngestProcessor, redecode
from central.models import Meter, ReadingMonth
from central.reading_months import figures, fold, rebuild
from central.web.data import daily_from_readings
from central.web.monthly import month_series, series_from_months
from protocols.messages import frames_topic


def _history(rng: random.Random, days: int) -> list[tuple[datetime, Decimal]]:
    """A register read at odd times: gaps of up to three weeks, several read-outs on some days."""
    at = datetime(2025, 1, 27, 1, 30, tzinfo=UTC)
    value = Decimal("1000.000")
    out = []
    end = at + timedelta(days=days)
    while at < end:
        out.append((at, value))
        step = rng.choice(
            [timedelta(hours=7), timedelta(days=1), timedelta(days=1), timedelta(days=rng.randint(2, 21))]
        )
        at += step
        value += Decimal(rng.randint(0, 5000)) / 1000
    return out


def _summaries(points: list[tuple[datetime, Decimal]]) -> list[tuple[object, ...]]:
    rows = [(1, "0413", at, "volume", "m3", format(v, "f")) for at, v in points]
    random.Random(3).shuffle(rows)  # arrival order does not matter
    rows += rows[:20]  # nor do repeats
    return [figures(s) for s in sorted(fold(rows).values(), key=lambda s: s.month)]


def test_month_figures_equal_the_daily_figures_summed() -> None:
    rng = random.Random(5)
    for _ in range(40):
        points = _history(rng, rng.randint(20, 500))
        daily = daily_from_readings(points, "m3")
        monthly = series_from_months(_summaries(points), "m3")
        for grain in ("month", "year"):
            want = [
                (label, value.quantize(Decimal("1e-9")), est) for label, value, est in daily.buckets(grain)
            ]
            got = [
                (label, value.quantize(Decimal("1e-9")), est) for label, value, est in monthly.buckets(grain)
            ]
            assert got == want
        for start, end in ((date(2025, 3, 1), date(2025, 6, 1)), (date(2025, 2, 1), date(2026, 2, 1))):
            want_total, want_est = daily.total(start, end)
            got_total, got_est = monthly.total(start, end)
            assert (got_total is None) == (want_total is None)
            if got_total is not None and want_total is not None:
                assert abs(got_total - want_total) < Decimal("1e-9")
            assert got_est == want_est


def test_a_merge_keeps_the_stored_reading_on_a_tie() -> None:
    at = datetime(2025, 5, 5, 2, tzinfo=UTC)
    rows = [(1, "0403", at, "energy", "Wh", "10"), (1, "0403", at, "energy", "Wh", "99")]
    (only,) = fold(rows).values()
    assert (only.first_value, only.last_value, only.days) == ("10", "10", 1 << 4)


async def _stored(db: Database) -> dict[tuple[int, str, str], tuple[object, ...]]:
    async with db.sessions() as session:
        rows = (await session.execute(select(ReadingMonth))).scalars().all()
    return {
        (r.meter_id, r.register, r.month): (
            r.first_day,
            r.first_at,
            r.first_value,
            r.last_at,
            r.last_value,
            r.days,
        )
        for r in rows
    }


async def test_ingest_keeps_the_summaries_a_rebuild_makes(db: Database) -> None:
    heat = corpus_frame("kamstrup_multical_601")
    topic = frames_topic("rm-c1")
    processor = IngestProcessor(db)
    t0 = datetime(2025, 1, 30, 3, tzinfo=UTC)
    offsets = [0, 1, 2, 5, 3, 40, 33, 1, 70, 71]  # late, out of order, repeated, across months
    for seq, days in enumerate(offsets, start=1):
        at = t0 + timedelta(days=days, hours=seq)
        await processor.handle_many([(topic, batch("rm-c1", [(seq, heat)], at=at))])
    await processor.handle_many([(topic, batch("rm-c1", [(3, heat)], at=t0))])  # a redelivery
    kept = await _stored(db)
    assert {month for _m, _r, month in kept} == {"2025-01", "2025-02", "2025-03", "2025-04"}
    async with db.sessions.begin() as session:
        await rebuild(session)
    assert await _stored(db) == kept

    # Re-decoding rewrites the readings; the summaries follow.
    await redecode(db)
    assert await _stored(db) == kept

    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "06855817"))).scalar_one()
        series = (await month_series(session, [meter], datetime(2025, 1, 1, tzinfo=UTC)))[meter.id]
    assert series.unit == "kWh"
    assert [label for label, _v, _e in series.buckets("month")] == [
        "2025-01",
        "2025-02",
        "2025-03",
        "2025-04",
    ]
