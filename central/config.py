"""Central's settings: command-line flags override ``IMD_*`` environment variables override defaults.

Every validation error names the field it is about, so a bad setting is found without reading code.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from central.db import DatabaseConfigError, check_url, sqlite_url
from protocols.errors import ProtocolError
from protocols.messages import COLLECTOR_ID_RE
from protocols.mqtturl import parse_mqtt_url

DEFAULT_DATA_DIR = Path("data/central")
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(ValueError):
    """A setting is wrong; the message starts with the field's name."""


def default_client_id() -> str:
    """Stable across restarts (the persistent session is keyed by it), distinct per host: workers
    sharing the subscription on one host need ``--client-id`` each."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"imd-central-{host}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None  # None: SQLite file in data_dir
    mqtt_url: str | None = None  # None: no ingest (API only)
    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = False
    shared_subscription: bool = True
    mqtt_client_id: str = "imd-central-ingest"
    # Subscribe to these collectors only instead of the wildcard (tests on a shared broker).
    collectors: tuple[str, ...] | None = None
    token_minutes: int = 30
    key_file: Path | None = None  # default: data_dir / "meter-keys.fernet"
    # Process roles (``imd central serve --no-api / --no-ingest / --no-scheduler``): by default one
    # process does everything. ``api``: HTTP API and dashboard; ``ingest``: the MQTT subscription;
    # ``scheduler``: the periodic sweep of the meter-function checks (the checks right after an
    # ingest run wherever that ingest ran).
    api: bool = True
    ingest: bool = True
    scheduler: bool = True

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)

    @property
    def meter_key_file(self) -> Path:
        return self.key_file or self.data_dir / "meter-keys.fernet"

    @property
    def token_secret_file(self) -> Path:
        return self.data_dir / "token-secret"

    def validated(self) -> Settings:
        if self.database_url is not None:
            try:
                check_url(self.database_url)
            except DatabaseConfigError as exc:
                raise ConfigError(str(exc)) from exc
        if self.mqtt_url is not None:
            try:
                parse_mqtt_url(self.mqtt_url)
            except ProtocolError as exc:
                raise ConfigError(f"mqtt_url: {exc}") from exc
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: {self.port} is not a TCP port (1-65535)")
        if not self.host:
            raise ConfigError("host: must not be empty")
        if not _CLIENT_ID_RE.match(self.mqtt_client_id):
            raise ConfigError("mqtt_client_id: 1-64 letters, digits, '_', '.', '-'")
        for collector in self.collectors or ():
            if not COLLECTOR_ID_RE.match(collector):
                raise ConfigError(f"collectors: {collector!r} is not a collector id")
        if not self.api and not self.ingest:
            raise ConfigError("api: --no-api together with --no-ingest leaves nothing to run")
        if not self.api and self.mqtt_url is None:
            raise ConfigError(
                "mqtt_url: an ingest-only process (--no-api) needs a broker (--mqtt-url, IMD_MQTT_URL)"
            )
        if not 1 <= self.token_minutes <= 24 * 60:
            raise ConfigError("token_minutes: between 1 and 1440")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"data_dir: {self.data_dir} exists and is not a directory")
        return self

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``IMD_*`` variables, then the given non-None overrides."""
        base = cls(
            data_dir=Path(os.environ.get("IMD_DATA_DIR", str(DEFAULT_DATA_DIR))),
            database_url=os.environ.get("IMD_DATABASE_URL") or None,
            mqtt_url=os.environ.get("IMD_MQTT_URL") or None,
            demo=_env_flag("IMD_DEMO"),
            mqtt_client_id=os.environ.get("IMD_MQTT_CLIENT_ID") or default_client_id(),
        )
        changes = {k: v for k, v in overrides.items() if v is not None}
        try:
            return replace(base, **changes).validated()  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"unknown setting: {exc}") from exc
