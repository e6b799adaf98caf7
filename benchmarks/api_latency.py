"""API and page latency with a city-sized portfolio: 10,000 meters and a year of daily readings.

The portfolio is written straight into a fresh SQLite database (migrated by ``Database.open``) with
bulk inserts through SQLAlchemy Core - properties, buildings, apartments, meter points, meters, a
year of daily main-register readings per meter (~3.65 M rows), the last read-out's extra registers,
a week of raw frames per meter, collectors and faults. Ingest is not what is measured here (see
``benchmarks.ingest``), so the rows go in through the driver's executemany in one transaction.

Central then runs as it does in production - uvicorn in its own process on a free port - and the
dashboard's queries are timed over real HTTP with httpx, one request at a time (the unloaded
latency a user sees): the REST API with an admin token and with a board member's token (scoped to
one property), the server-rendered pages with a cookie login. Each endpoint gets a few warm-up
requests, then ``--requests`` timed ones (stopping early after ``--budget`` seconds, never below
``--min-requests``), with the meter, apartment or fault rotated through a fixed random sample so that the
figures are not one cached row. Goals: API p95 < 100 ms (issue 7), page p95 < 200 ms (issue 9).

``python -m benchmarks.api_latency [--meters 10000] [--days 365] [--requests 200] [--keep DIR] [--only TEXT]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

API_GOAL_MS = 100.0
PAGE_GOAL_MS = 200.0
APARTMENTS_PER_BUILDING = 50
BUILDINGS_PER_PROPERTY = 2
METERS_PER_APARTMENT = 2
FRAME_DAYS = 7  # the last week of readings is linked to raw frames
CHUNK = 100_000
ADMIN = ("bench-admin", "bench-admin-pw")
BOARD = ("bench-board", "bench-board-pw")

# medium -> (quantity, unit, register hex, manufacturer); the pairs match central.checks.MAIN_REGISTER.
MAIN = {
    "heat": ("energy", "Wh", "0403", "KAM"),
    "hot_water": ("volume", "m3", "0413", "AXI"),
    "cold_water": ("volume", "m3", "0413", "AXI"),
    "electricity": ("energy", "Wh", "0403", "ELV"),
}
APARTMENT_MEDIA = (("heat", "hot_water"), ("cold_water", "electricity"))
FAULT_RULES = (
    ("communication_gap", "warning"),
    ("device_flags", "critical"),
    ("register_backwards", "critical"),
    ("stuck_register", "warning"),
    ("continuous_flow", "warning"),
    ("spike", "warning"),
    ("heat_sanity", "info"),
)


def sqlite_time(at: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC), so range queries compare correctly."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# --- portfolio ---------------------------------------------------------------------------------------


@dataclass
class Portfolio:
    meters: int
    days: int
    properties: int = 0
    apartments: int = 0
    readings: int = 0
    frames: int = 0
    faults: int = 0
    seconds: float = 0.0
    first_day: date = field(default_factory=lambda: datetime.now(UTC).date())
    last_day: date = field(default_factory=lambda: datetime.now(UTC).date())
    property_keys: list[str] = field(default_factory=list)


def _daily_increment(medium: str, day_of_year: int, rng: random.Random, scale: float) -> int:
    """Consumption of one day in the register's smallest unit (Wh or litres), seasonal for heat."""
    import math

    if medium == "heat":
        season = 1.0 + 0.9 * math.cos(2 * math.pi * (day_of_year - 15) / 365)
        return int(scale * 30_000 * season * rng.uniform(0.8, 1.2))  # ~30 kWh/day average
    if medium == "electricity":
        return int(scale * 6_000 * rng.uniform(0.6, 1.4))
    if medium == "hot_water":
        return int(scale * 120 * rng.uniform(0.5, 1.5))
    return int(scale * 250 * rng.uniform(0.5, 1.5))


def _value_text(medium: str, raw: int) -> str:
    if MAIN[medium][1] == "m3":
        return f"{raw // 1000}.{raw % 1000:03d}"  # litres -> m3, exact decimal text
    return str(raw)


def generate(db_path: Path, n_meters: int, n_days: int, seed: int = 7) -> Portfolio:
    """Write the portfolio into the (already migrated) SQLite file at ``db_path``."""
    from sqlalchemy import create_engine, insert
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.types import DateTime

    from central.models import Apartment, Building, MeterPoint, Property

    # The bulk rows bypass the ORM types: check that our timestamp text is what SQLAlchemy writes.
    probe = datetime(2024, 5, 6, 7, 8, 9, 10)
    bind = DateTime().dialect_impl(sqlite_dialect.dialect()).bind_processor(sqlite_dialect.dialect())
    if bind is None or bind(probe) != sqlite_time(probe.replace(tzinfo=UTC)):
        raise RuntimeError("SQLAlchemy's SQLite timestamp text changed; update sqlite_time()")

    rng = random.Random(seed)
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    last_day = now.date() - timedelta(days=1)
    first_day = last_day - timedelta(days=n_days - 1)
    pf = Portfolio(meters=n_meters, days=n_days, first_day=first_day, last_day=last_day)
    per_property = APARTMENTS_PER_BUILDING * BUILDINGS_PER_PROPERTY * METERS_PER_APARTMENT
    n_props = max(1, -(-n_meters // per_property))
    installed = sqlite_time(
        datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC) - timedelta(days=30)
    )

    engine = create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA cache_size=-262144")
        props = [
            {"id": p + 1, "key": f"BRF{p + 1:04d}", "name": f"Brf Björken {p + 1}",
             "address": f"Storgatan {p + 1}", "city": "Uppsala"}
            for p in range(n_props)
        ]  # fmt: skip
        conn.execute(insert(Property.__table__), props)
        pf.property_keys = [p["key"] for p in props]
        buildings, apartments, points, meters = [], [], [], []
        collectors: list[tuple[Any, ...]] = []
        meter_collector: dict[int, str] = {}
        meter_medium: dict[int, str] = {}
        apt_id = point_id = meter_id = building_id = 0
        for p in range(n_props):
            for b in range(BUILDINGS_PER_PROPERTY):
                building_id += 1
                buildings.append(
                    {"id": building_id, "property_id": p + 1, "key": f"B{b + 1}", "name": f"Hus {b + 1}",
                     "address": f"Storgatan {p + 1}{'AB'[b % 2]}"}
                )  # fmt: skip
                collector = f"col-{p + 1:04d}-{b + 1}"
                poll = {"started_at": (now - timedelta(hours=1)).isoformat(), "ok": 98, "failed": 2}
                status = json.dumps({"outbox_depth": rng.randint(0, 50), "last_polls": [poll]})
                online = rng.random() > 0.05
                seen = now - (
                    timedelta(minutes=rng.randint(1, 10)) if online else timedelta(days=rng.randint(1, 9))
                )
                collectors.append(
                    (collector, p + 1, "online" if online else "offline", sqlite_time(seen),
                     sqlite_time(seen), status, 1000, "imd-edge 0.1.0")
                )  # fmt: skip
                for a in range(APARTMENTS_PER_BUILDING):
                    if meter_id >= n_meters:
                        break
                    apt_id += 1
                    floor, door = divmod(a, 5)
                    apartments.append(
                        {"id": apt_id, "property_id": p + 1, "building_id": building_id,
                         "object_number": f"{p + 1:04d}-{b + 1}{a + 1:03d}",
                         "number": f"{floor + 11}{door + 1:02d}",
                         "area_m2": f"{rng.randint(28, 130)}.{rng.randint(0, 9)}", "share": None,
                         "address": f"Storgatan {p + 1}{'AB'[b % 2]}",
                         "tenant_ref": None if rng.random() < 0.04 else f"K{apt_id:07d}"}
                    )  # fmt: skip
                    for medium in APARTMENT_MEDIA[apt_id % 2][
                        : max(0, min(METERS_PER_APARTMENT, n_meters - meter_id))
                    ]:
                        point_id += 1
                        meter_id += 1
                        points.append({"id": point_id, "property_id": p + 1, "apartment_id": apt_id,
                                       "medium": medium, "name": medium})  # fmt: skip
                        meters.append(
                            (meter_id, f"{10_000_000 + meter_id:08d}", MAIN[medium][3], medium, point_id)
                        )
                        meter_collector[meter_id] = collector
                        meter_medium[meter_id] = medium
        pf.properties, pf.apartments = n_props, apt_id
        conn.execute(insert(Building.__table__), buildings)
        conn.execute(insert(Apartment.__table__), apartments)
        conn.execute(insert(MeterPoint.__table__), points)
        conn.exec_driver_sql(
            "INSERT INTO collector (id, property_id, state, last_seen_at, last_status_at, last_status, "
            "last_sequence, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            collectors,
        )
        last_read = {m[0]: sqlite_time(_read_time(last_day, m[0])) for m in meters}
        conn.exec_driver_sql(
            "INSERT INTO meter (id, serial, manufacturer, version, device_type, medium, model, link, bus, "
            "primary_address, meter_point_id, installed_at, removed_at, key_encrypted, auto_registered, "
            "last_frame_at, last_reading_at, last_raw_frame_id, last_status) "
            "VALUES (?, ?, ?, 1, 4, ?, 'bench', 'mbus', 'bus0', ?, ?, ?, NULL, NULL, 0, ?, ?, NULL, 0)",
            [(mid, serial, man, medium, (mid % 250) + 1, point, installed, last_read[mid], last_read[mid])
             for mid, serial, man, medium, point in meters],
        )  # fmt: skip

        # Raw frames of the last FRAME_DAYS days, one per meter and day; readings of those days point at them.
        frame_ids: dict[tuple[int, int], int] = {}
        frames: list[tuple[Any, ...]] = []
        raw = bytes.fromhex("684d4d680801723412345624" + "00" * 60 + "16")
        seq: dict[str, int] = {}
        frame_id = 0
        for d in range(max(0, n_days - FRAME_DAYS), n_days):
            day = first_day + timedelta(days=d)
            for mid, *_ in meters:
                frame_id += 1
                col = meter_collector[mid]
                seq[col] = seq.get(col, 0) + 1
                at = sqlite_time(_read_time(day, mid))
                frames.append((frame_id, col, seq[col], at, at, "mbus", "/dev/ttyUSB0", str(mid % 250 + 1),
                               None, raw, "ok", "ok", None, mid, at))  # fmt: skip
                frame_ids[(mid, d)] = frame_id
        # Failed frames (a wrong key): kept with the reason, no readings.
        for n in range(max(1, n_meters // 20)):
            frame_id += 1
            mid = rng.randint(1, n_meters)
            col = meter_collector[mid]
            seq[col] = seq.get(col, 0) + 1
            at = sqlite_time(now - timedelta(hours=rng.randint(1, 24 * FRAME_DAYS)))
            frames.append((frame_id, col, seq[col], at, at, "wmbus", "/dev/ttyACM0", None, -70 - n % 30,
                           raw, "ok", "failed", "security: wrong key (MAC mismatch)", mid, None))  # fmt: skip
        conn.exec_driver_sql(
            "INSERT INTO raw_frame (id, collector_id, sequence, received_at, ingested_at, link, port, "
            "address, rssi, raw, collector_status, status, reason, meter_id, decoded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            frames,
        )
        pf.frames = len(frames)
        del frames
        conn.exec_driver_sql(
            "UPDATE collector SET last_sequence = (SELECT max(sequence) FROM raw_frame "
            "WHERE raw_frame.collector_id = collector.id)"
        )

        # Readings: meter by meter (the order of the unique index), in CHUNK-row executemany calls.
        sql = (
            "INSERT INTO reading (meter_id, register, read_at, quantity, unit, function, storage, tariff, "
            "subunit, value, raw_frame_id) VALUES (?, ?, ?, ?, ?, 'instantaneous', 0, 0, 0, ?, ?)"
        )
        day_dates = [first_day + timedelta(days=d) for d in range(n_days)]
        batch: list[tuple[Any, ...]] = []
        for mid, _serial, _man, medium, _point in meters:
            quantity, unit, register, _m = MAIN[medium]
            scale = rng.uniform(0.5, 1.6)
            value = rng.randint(1_000, 50_000) * (1000 if unit == "Wh" else 1)
            offset = timedelta(hours=2, minutes=mid % 60, seconds=mid % 47)
            for d, day in enumerate(day_dates):
                value += _daily_increment(medium, day.timetuple().tm_yday, rng, scale)
                at = datetime(day.year, day.month, day.day) + offset
                batch.append((mid, register, at.strftime("%Y-%m-%d %H:%M:%S.%f"), quantity, unit,
                              _value_text(medium, value), frame_ids.get((mid, d))))  # fmt: skip
            if medium == "heat":  # the last read-out carries more than the billing register
                at_text = last_read[mid]
                fid = frame_ids.get((mid, n_days - 1))
                batch.append(
                    (mid, "0413", at_text, "volume", "m3", f"{value // 40_000}.{mid % 1000:03d}", fid)
                )
                batch.append((mid, "025b", at_text, "flow_temperature", "°C", str(55 + mid % 10), fid))
                batch.append((mid, "025f", at_text, "return_temperature", "°C", str(30 + mid % 10), fid))
            if len(batch) >= CHUNK:
                conn.exec_driver_sql(sql, batch)
                pf.readings += len(batch)
                batch = []
        if batch:
            conn.exec_driver_sql(sql, batch)
            pf.readings += len(batch)
        # What ingest keeps beside the readings as it writes them (bulk rows bypass it).
        from central.reading_months import rebuild_sync

        rebuild_sync(conn)

        # Faults: ~3 % of the meters with an unresolved one, as many resolved, each with its history.
        faults, events = [], []
        chosen = rng.sample(range(1, n_meters + 1), k=min(n_meters, max(2, n_meters * 6 // 100)))
        for fault_id, mid in enumerate(chosen, start=1):
            rule, severity = FAULT_RULES[fault_id % len(FAULT_RULES)]
            state = ("open", "acknowledged", "resolved", "resolved")[fault_id % 4]
            first = now - timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 23))
            last = min(now, first + timedelta(days=rng.randint(0, 10)))
            resolved = sqlite_time(last) if state == "resolved" else None
            evidence = json.dumps(
                {"meter": f"{10_000_000 + mid:08d}", "readings": [[sqlite_time(last), "123"]]}
            )
            faults.append((fault_id, mid, meter_collector[mid], rule, state, severity, f"{rule} on meter",
                           evidence, sqlite_time(first), sqlite_time(last), rng.randint(1, 20),
                           "tekniker" if state == "acknowledged" else None,
                           sqlite_time(last) if state != "open" else None, resolved,
                           int(severity == "critical")))  # fmt: skip
            events.append((fault_id, sqlite_time(first), None, "opened", ""))
            if state != "open":
                events.append((fault_id, sqlite_time(last), "bench-admin", "acknowledged", ""))
            if state == "resolved":
                events.append((fault_id, sqlite_time(last), None, "resolved", "condition cleared"))
        conn.exec_driver_sql(
            "INSERT INTO fault (id, meter_id, collector_id, rule, state, severity, message, evidence, "
            "first_seen_at, last_seen_at, count, assignee, acknowledged_at, resolved_at, blocks_billing) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            faults,
        )
        conn.exec_driver_sql(
            "INSERT INTO fault_event (fault_id, at, actor, kind, text) VALUES (?, ?, ?, ?, ?)", events
        )
        pf.faults = len(faults)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")  # what `PRAGMA optimize` would leave on a long-running database
        conn.commit()
    engine.dispose()
    pf.seconds = time.perf_counter() - t0
    return pf


def _read_time(day: date, meter_id: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        hours=2, minutes=meter_id % 60, seconds=meter_id % 47
    )


async def _prepare(url: str, board_property: str) -> None:
    from central.auth import create_user
    from central.db import Database

    db = await Database.open(url)
    try:
        await create_user(db, *ADMIN, "admin", actor="benchmark")
        await create_user(db, *BOARD, "board", properties=[board_property], actor="benchmark")
    finally:
        await db.close()


async def _migrate(url: str) -> None:
    from central.db import Database

    db = await Database.open(url)
    await db.close()


# --- server ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data_dir: Path, port: int) -> None:
    """The server process: central's app (no broker, so no ingest) under uvicorn."""
    import uvicorn

    from central.api.app import create_app
    from central.config import Settings

    settings = Settings.from_env(data_dir=data_dir, port=port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): a figure other load cannot inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(data_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.api_latency", "--serve", str(data_dir), "--port", str(port)],
        cwd=str(ROOT),
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"central exited with {proc.returncode} before answering")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("central did not answer /api/health within 60 s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- timing ------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    kind: str  # "api" or "page"
    who: str
    times_ms: list[float]
    status: int
    size: int
    cpu_ms: float = float("nan")  # the server's CPU time per timed request

    def pct(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]

    @property
    def goal(self) -> float:
        return API_GOAL_MS if self.kind == "api" else PAGE_GOAL_MS


def timed(
    client: httpx.Client,
    name: str,
    kind: str,
    who: str,
    urls: Callable[[int], str],
    *,
    requests: int,
    budget_s: float,
    min_requests: int = 20,
    warmup: int = 2,
    cpu: Callable[[], float] | None = None,
) -> Result:
    for i in range(warmup):
        r = client.get(urls(i))
        if r.status_code != 200:
            raise RuntimeError(f"{name}: {urls(i)} answered {r.status_code}: {r.text[:300]}")
    times: list[float] = []
    size = 0
    start = time.perf_counter()
    cpu_start = cpu() if cpu is not None else 0.0
    for i in range(requests):
        url = urls(i + warmup)
        t = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{name}: {url} answered {r.status_code}: {r.text[:300]}")
        size = max(size, len(r.content))
        if i + 1 >= min_requests and time.perf_counter() - start > budget_s:
            break
    cpu_ms = (cpu() - cpu_start) * 1000 / len(times) if cpu is not None else float("nan")
    return Result(name, kind, who, times, 200, size, cpu_ms)


def login_api(client: httpx.Client, base: str, user: tuple[str, str]) -> dict[str, str]:
    r = client.post(f"{base}/api/auth/token", data={"username": user[0], "password": user[1]})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def login_cookie(base: str, user: tuple[str, str]) -> httpx.Client:
    """A browser-like client: GET /login for the CSRF cookie, POST the form, keep the session cookie."""
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    client.get("/login").raise_for_status()
    csrf = client.cookies.get("imd_csrf") or ""
    r = client.post("/login", data={"username": user[0], "password": user[1], "next": "/", "csrf": csrf})
    if r.status_code != 303 or "imd_token" not in client.cookies:
        raise RuntimeError(f"cookie login failed: {r.status_code} {r.text[:200]}")
    return client


def month_bounds(day: date, back: int) -> tuple[str, str]:
    index = day.year * 12 + day.month - 1 - back
    start = date(index // 12, index % 12 + 1, 1)
    end = date((index + 1) // 12, (index + 1) % 12 + 1, 1)
    return f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T00:00:00Z"


def run_requests(
    base: str,
    pf: Portfolio,
    db_path: Path,
    *,
    n_requests: int,
    budget_s: float,
    min_requests: int,
    cpu: Callable[[], float] | None = None,
    only: str | None = None,
) -> list[Result]:
    import sqlite3

    rng = random.Random(11)
    con = sqlite3.connect(db_path)
    try:
        meters = con.execute(
            "SELECT m.serial, m.id, m.meter_point_id, m.medium, a.id, p.key FROM meter m "
            "JOIN meter_point mp ON mp.id = m.meter_point_id JOIN apartment a ON a.id = mp.apartment_id "
            "JOIN property p ON p.id = mp.property_id"
        ).fetchall()
        faults = [r[0] for r in con.execute("SELECT id FROM fault WHERE state != 'resolved'")]
        board_prop = pf.property_keys[0]
        board_meters = [m for m in meters if m[5] == board_prop]
        board_apts = sorted({m[4] for m in board_meters})
    finally:
        con.close()
    sample = rng.sample(meters, k=min(200, len(meters)))
    heat = [m for m in sample if m[3] == "heat"] or sample
    fault_sample = rng.sample(faults, k=min(100, len(faults)))
    apts = sorted({m[4] for m in sample})
    props = pf.property_keys
    mid_prop = props[len(props) // 2]
    deep = max(0, pf.meters - 100)
    year_from = f"{pf.first_day.isoformat()}T00:00:00Z"
    year_to = f"{(pf.last_day + timedelta(days=1)).isoformat()}T00:00:00Z"
    m_from, m_to = month_bounds(pf.last_day, 1)

    def pick(seq: list[Any]) -> Callable[[int], Any]:
        return lambda i: seq[i % len(seq)]

    m = pick(sample)
    h = pick(heat)
    f = pick(fault_sample)
    a = pick(apts)
    bm = pick(board_meters)
    ba = pick(board_apts)
    prop = pick(props)

    results: list[Result] = []
    kw = {
        "requests": n_requests,
        "budget_s": budget_s,
        "min_requests": min(min_requests, n_requests),
        "cpu": cpu,
    }
    with httpx.Client(base_url=base, timeout=120) as client:
        admin = login_api(client, base, ADMIN)
        board = login_api(client, base, BOARD)
        api: list[tuple[str, str, dict[str, str], Callable[[int], str]]] = [
            ("meters list, first page (50)", "admin", admin, lambda i: "/api/meters?limit=50"),
            ("meters list, deep page (offset ~N-100)", "admin", admin,
             lambda i: f"/api/meters?limit=50&offset={deep}"),
            ("meters list, property+medium filter", "admin", admin,
             lambda i: f"/api/meters?property={prop(i)}&medium=heat&limit=50"),
            ("meters list, default page (50)", "admin", admin, lambda i: "/api/meters"),
            ("meters list, keyset page (after=~N-100)", "admin", admin,
             lambda i: f"/api/meters?after={deep}"),
            ("meter detail (+100 readings)", "admin", admin, lambda i: f"/api/meters/{m(i)[0]}"),
            ("meter readings, a year", "admin", admin,
             lambda i: f"/api/meters/{m(i)[0]}/readings?since={year_from}&until={year_to}&limit=1000"),
            ("meter consumption, one month", "admin", admin,
             lambda i: f"/api/meters/{m(i)[0]}/consumption?start={m_from}&end={m_to}"),
            ("meter point consumption, one month", "admin", admin,
             lambda i: f"/api/meter-points/{m(i)[2]}/consumption?start={m_from}&end={m_to}"),
            ("property consumption, one month (200 pts)", "admin", admin,
             lambda i: f"/api/consumption?property={prop(i)}&start={m_from}&end={m_to}"),
            ("faults, unresolved (200)", "admin", admin, lambda i: "/api/faults"),
            ("faults, filter rule+severity", "admin", admin,
             lambda i: "/api/faults?rule=device_flags&severity=critical&limit=50"),
            ("collectors", "admin", admin, lambda i: "/api/collectors"),
            ("properties", "admin", admin, lambda i: "/api/properties"),
            ("meters list, first page (50)", "board", board, lambda i: "/api/meters?limit=50"),
            ("meter readings, a year", "board", board,
             lambda i: f"/api/meters/{bm(i)[0]}/readings?since={year_from}&until={year_to}&limit=1000"),
            ("faults, unresolved", "board", board, lambda i: "/api/faults"),
            ("collectors", "board", board, lambda i: "/api/collectors"),
        ]  # fmt: skip
        for name, who, headers, urls in api:
            if only is not None and only not in name:
                continue
            client.headers.clear()
            client.headers.update(headers)
            results.append(timed(client, name, "api", who, urls, **kw))  # type: ignore[arg-type]
            _progress(results[-1])

    pages: list[tuple[str, str, Callable[[int], str]]] = [
        ("/ dashboard", "admin", lambda i: "/"),
        ("/faults queue", "admin", lambda i: "/faults"),
        ("/faults?severity=critical&sort=newest", "admin", lambda i: "/faults?severity=critical&sort=newest"),
        ("/faults/{id} detail", "admin", lambda i: f"/faults/{f(i)}"),
        ("/collectors", "admin", lambda i: "/collectors"),
        ("/search?q=<tenant ref>", "admin", lambda i: f"/search?q=K{a(i):07d}"),
        ("/meters/{id}?grain=month", "admin", lambda i: f"/meters/{h(i)[1]}?grain=month"),
        ("/meters/{id}?grain=day", "admin", lambda i: f"/meters/{h(i)[1]}?grain=day"),
        ("/apartments/{id}", "admin", lambda i: f"/apartments/{a(i)}"),
        ("/portal (admin: all properties)", "admin", lambda i: "/portal"),
        ("/portal/p/{key}", "admin", lambda i: f"/portal/p/{mid_prop}"),
        ("/portal", "board", lambda i: "/portal"),
        ("/portal/p/{key}", "board", lambda i: f"/portal/p/{board_prop}"),
        ("/portal/p/{key}/compare (apartments)", "board", lambda i: f"/portal/p/{board_prop}/compare"),
        ("/portal/p/{key}/compare?kind=meters", "board",
         lambda i: f"/portal/p/{board_prop}/compare?kind=meters"),
        ("/portal/p/{key}/compare?kind=properties", "board",
         lambda i: f"/portal/p/{board_prop}/compare?kind=properties"),
        ("/portal/p/{key}/archive", "board", lambda i: f"/portal/p/{board_prop}/archive"),
        ("/apartments/{id}", "board", lambda i: f"/apartments/{ba(i)}"),
    ]  # fmt: skip
    clients = {"admin": login_cookie(base, ADMIN), "board": login_cookie(base, BOARD)}
    try:
        for name, who, urls in pages:
            if only is not None and only not in name:
                continue
            results.append(timed(clients[who], name, "page", who, urls, **kw))  # type: ignore[arg-type]
            _progress(results[-1])
    finally:
        for c in clients.values():
            c.close()
    return results


def _progress(r: Result) -> None:
    print(
        f"  .. {r.kind:4} {r.who:5} {r.name:45} n={len(r.times_ms):3} p95={r.pct(95):8.1f} ms "
        f"cpu={r.cpu_ms:6.1f} ms/req",
        flush=True,
    )


def table(results: list[Result]) -> str:
    head = (
        f"{'kind':4} {'user':5} {'endpoint':45} {'n':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} "
        f"{'cpu/req':>8} {'KiB':>6}  goal"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ok = "ok" if r.pct(95) < r.goal else "SLOW"
        lines.append(
            f"{r.kind:4} {r.who:5} {r.name:45} {len(r.times_ms):4} {r.pct(50):8.1f} {r.pct(95):8.1f} "
            f"{r.pct(99):8.1f} {max(r.times_ms):8.1f} {r.cpu_ms:8.1f} {r.size / 1024:6.0f}  "
            f"{ok} (p95 < {r.goal:.0f} ms)"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_latency")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per endpoint, at most")
    parser.add_argument("--min-requests", type=int, default=20, help="timed requests even past --budget")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the portfolio in this directory")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--only", help="time only the endpoints whose name contains this text")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    if args.meters < 10 or args.days < 40:
        parser.error("--meters >= 10 and --days >= 40")

    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            data_dir = args.keep
            data_dir.mkdir(parents=True, exist_ok=True)
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imd-api-bench-")))
        db_path = data_dir / "central.sqlite"
        url = f"sqlite+aiosqlite:///{db_path}"
        meta = data_dir / "portfolio.json"
        if args.keep is not None and meta.exists():
            saved = json.loads(meta.read_text())
            pf = Portfolio(**{**saved, "first_day": date.fromisoformat(saved["first_day"]),
                              "last_day": date.fromisoformat(saved["last_day"])})  # fmt: skip
            print(f"reusing portfolio in {data_dir}", flush=True)
        else:
            if db_path.exists():
                db_path.unlink()
            asyncio.run(_migrate(url))
            pf = generate(db_path, args.meters, args.days)
            asyncio.run(_prepare(url, pf.property_keys[0]))
            meta.write_text(json.dumps({**pf.__dict__, "first_day": pf.first_day.isoformat(),
                                        "last_day": pf.last_day.isoformat()}))  # fmt: skip
        size_mb = sum(p.stat().st_size for p in data_dir.glob("central.sqlite*")) / 1e6
        print(
            f"portfolio: {pf.properties} properties, {pf.apartments} apartments, {pf.meters} meters, "
            f"{pf.readings:,} readings ({pf.first_day} .. {pf.last_day}), {pf.frames:,} raw frames, "
            f"{pf.faults} faults; generated in {pf.seconds:.1f} s; SQLite {size_mb:.0f} MB",
            flush=True,
        )
        with server(data_dir) as (base, pid):
            results = run_requests(
                base,
                pf,
                db_path,
                n_requests=args.requests,
                budget_s=args.budget,
                min_requests=args.min_requests,
                cpu=lambda: cpu_seconds(pid),
                only=args.only,
            )
    print()
    print(f"central over HTTP (uvicorn, 1 process, SQLite), sequential requests, {os.cpu_count()} CPUs")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end: {load}; cpu/req is the server's own CPU time per request")
    print(table(results))
    slow = [r for r in results if r.pct(95) >= r.goal]
    print(f"\n{len(results) - len(slow)}/{len(results)} endpoints meet their p95 goal")
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"portfolio": {**pf.__dict__, "first_day": str(pf.first_day), "last_day": str(pf.last_day)},
             "results": [{"name": r.name, "kind": r.kind, "user": r.who, "n": len(r.times_ms),
                          "p50_ms": r.pct(50), "p95_ms": r.pct(95), "p99_ms": r.pct(99), "goal_ms": r.goal,
                          "server_cpu_ms_per_request": r.cpu_ms}
                         for r in results]}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
