"""Parse the broker URL used by edge and central: ``mqtt://user:pass@host:1883`` or ``mqtts://...``."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from protocols.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def redacted(self) -> str:
        """The URL as it may appear in a log: never the password."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ProtocolError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise ProtocolError("MQTT URL has no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ProtocolError(f"MQTT URL has a bad port: {exc}") from exc
    return MqttUrl(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
