"""Entry points other parts (the CLI, ``imd demo``) call: serve, import a site, create users, redecode."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central.config import Settings
from protocols.site import SiteExport

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run API, dashboard and ingest in this process until SIGINT/SIGTERM (uvicorn handles both).

    ``settings.ingest`` False (``--no-ingest``): API and dashboard only, nothing subscribed;
    ``settings.api`` False (``--no-api``): see :func:`serve_ingest`. ``on_ready`` gets the
    dashboard's URL, or for an ingest-only process the broker's (password removed).
    """
    if not settings.api:
        await serve_ingest(settings, on_ready=on_ready)
        return
    import uvicorn

    from central.api.app import create_app
    from central.logs import uvicorn_log_config

    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False, lifespan="on",
        log_config=uvicorn_log_config(),
    )
    server = uvicorn.Server(config)
    url = f"http://{settings.host}:{settings.port}/"

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        if on_ready is not None:
            on_ready(url)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        announcer.cancel()
    if not server.started:
        raise RuntimeError(f"central could not start on {settings.host}:{settings.port} (see the log above)")


async def serve_ingest(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """An ingest worker (``--no-api``): MQTT ingest and the checks after it, no HTTP port, until
    SIGINT/SIGTERM. Stopping acknowledges nothing more; the broker redelivers what was not committed."""
    from central.api.app import central_state
    from central.metrics import start_textfile

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with central_state(settings) as state:
            ingest = state.ingest
            if ingest is None:
                raise RuntimeError("an ingest-only process needs a broker URL and ingest enabled")

            async def announce() -> None:
                await ingest.subscribed.wait()
                if on_ready is not None:
                    on_ready(ingest.url.redacted())

            announcer = asyncio.create_task(announce())
            metrics_file = start_textfile(state)  # no HTTP port here: metrics go to a file if asked
            try:
                await stop.wait()
            finally:
                announcer.cancel()
                if metrics_file is not None:
                    metrics_file.cancel()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def import_site_async(
    settings: Settings, site: SiteExport, *, actor: str | None = None
) -> dict[str, Any]:
    from central.db import Database
    from central.keys import MeterKeyBox
    from central.site_import import import_site

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database.open(settings.effective_database_url)
    try:
        report = await import_site(db, site, MeterKeyBox(settings.meter_key_file), actor=actor)
    finally:
        await db.close()
    return report.as_dict()


def import_site_file(settings: Settings, path: Path) -> dict[str, Any]:
    """Import a site export file (what ``imd sim ... --export`` writes); idempotent."""
    from central.site_import import load_site

    return asyncio.run(import_site_async(settings, load_site(path), actor="cli"))


async def create_user_async(
    settings: Settings, username: str, password: str, role: str, **kwargs: Any
) -> None:
    from central.auth import create_user
    from central.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database.open(settings.effective_database_url)
    try:
        await create_user(db, username, password, role, **kwargs)
    finally:
        await db.close()


async def redecode_async(settings: Settings, collector: str | None = None) -> dict[str, int]:
    from central.db import Database
    from central.ingest import redecode
    from central.keys import MeterKeyBox

    db = await Database.open(settings.effective_database_url)
    try:
        return await redecode(db, collector=collector, keybox=MeterKeyBox(settings.meter_key_file))
    finally:
        await db.close()


async def migrate_async(settings: Settings) -> None:
    from central.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database.open(settings.effective_database_url)
    await db.close()
