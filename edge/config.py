"""The collector's configuration: one TOML file, validated by pydantic.

Every error names the file, the field path and what is wrong, because the person reading it is a
technician in a basement with a laptop, not the author of this module. Passwords are never part of
an error message or a repr.

Example::

    collector_id = "brf-solrosen-1"
    data_dir = "/var/lib/imd-edge"

    [mqtt]
    url = "mqtts://collector:secret@mqtt.example.se:8883"
    ca_file = "/etc/imd-edge/ca.pem"

    [[buses]]
    name = "mbus0"
    port = "/dev/imd-mbus0"
    baud = 2400
    meters = [{ primary = 1 }, { secondary = "12345678FFFFFFFF" }]

    [schedule]
    poll_cron = "0 2 * * *"   # nightly; a per-collector jitter spreads a city of collectors
    heartbeat_s = 300
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from protocols.errors import ProtocolError
from protocols.messages import COLLECTOR_ID_RE
from protocols.mqtturl import MqttUrl, parse_mqtt_url

SUPPORTED_BAUD = (300, 600, 1200, 2400, 4800, 9600)
DEFAULT_POLL_CRON = "0 2 * * *"


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(_Model):
    # The whole URL is secret-bearing (it may carry a password), so it is kept as SecretStr.
    url: SecretStr = Field(description="mqtt://user:pass@host:1883 or mqtts://user:pass@host:8883")
    username: str | None = Field(default=None, description="overrides the user in the URL")
    password: SecretStr | None = Field(default=None, description="overrides the password in the URL")
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    batch_max_frames: int = Field(default=100, ge=1, le=1000)
    max_inflight_batches: int = Field(default=10, ge=1, le=100)
    # "receipt": an outbox row is deleted when central's receipt says it is committed there (a
    # broker's PUBACK alone is not enough: a restarted Mosquitto can acknowledge and then drop);
    # "puback": deleted on the broker's PUBACK, for a central that sends no receipts.
    delete_after: Literal["receipt", "puback"] = "receipt"
    receipt_timeout_s: float = Field(
        default=300.0, ge=5, le=7 * 86400,
        description="link-up seconds to wait for a receipt before publishing a frame again",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        try:
            parse_mqtt_url(value.get_secret_value())
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key given without client_cert")
        for name in ("ca_file", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file {path} does not exist")
        return self

    def broker(self) -> MqttUrl:
        parsed = parse_mqtt_url(self.url.get_secret_value())
        if self.username is None and self.password is None:
            return parsed
        return MqttUrl(
            host=parsed.host,
            port=parsed.port,
            tls=parsed.tls,
            username=self.username if self.username is not None else parsed.username,
            password=self.password.get_secret_value() if self.password is not None else parsed.password,
        )


class MeterConfig(_Model):
    """One wired meter, addressed either by primary address or by secondary address."""

    primary: int | None = Field(default=None, ge=0, le=250)
    secondary: str | None = Field(default=None, description="16 hex: id, man, ver, med")
    name: str | None = Field(default=None, max_length=100)

    @field_validator("secondary")
    @classmethod
    def _secondary(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if len(value) != 16 or any(c not in "0123456789ABCDEF" for c in value):
            raise ValueError(f"secondary address must be 16 hex digits, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_address(self) -> MeterConfig:
        if (self.primary is None) == (self.secondary is None):
            raise ValueError("give exactly one of 'primary' (0-250) or 'secondary' (16 hex digits)")
        return self

    @property
    def address(self) -> str:
        """How the meter is named in frames and commands: primary as decimal, secondary as hex."""
        return str(self.primary) if self.primary is not None else str(self.secondary)


class BusConfig(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    port: str = Field(min_length=1, max_length=256, description="serial device, e.g. /dev/imd-mbus0")
    baud: int = 2400
    retries: int = Field(default=2, ge=0, le=10, description="extra attempts after the first request")
    snd_nke: bool = Field(default=True, description="send SND_NKE before each readout")
    max_telegrams: int = Field(default=16, ge=1, le=255, description="multi-telegram readout limit")
    meters: list[MeterConfig] = Field(default_factory=list)

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int) -> int:
        if value not in SUPPORTED_BAUD:
            raise ValueError(f"baud must be one of {', '.join(map(str, SUPPORTED_BAUD))}, got {value}")
        return value

    @field_validator("meters")
    @classmethod
    def _unique(cls, meters: list[MeterConfig]) -> list[MeterConfig]:
        seen: set[str] = set()
        for meter in meters:
            if meter.address in seen:
                raise ValueError(f"meter address {meter.address} listed twice")
            seen.add(meter.address)
        return meters


class RadioConfig(_Model):
    """A wM-Bus receiver stick and the radio meters that are ours (see ``edge/radio.py``).

    ``meters`` lists meter ids (8 digits as printed on the meter); the collector's list is the union
    over all sticks, so a meter heard by another stick is still ours. Everything else heard is
    counted in the "heard but not ours" survey and not forwarded. ``port`` is "-" (stdin) or a
    named pipe for ``type = "rtl"``.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    port: str = Field(min_length=1, max_length=256)
    type: Literal["imst", "amber", "cul", "rtl"] = "imst"
    link_mode: Literal["T1", "C1", "S1", "C1T1"] = "C1T1"
    forward_interval_s: int = Field(default=900, ge=1, le=86400)
    meters: list[str] = Field(default_factory=list, description="radio meter ids, 8 digits")

    @field_validator("meters")
    @classmethod
    def _meter_ids(cls, meters: list[str]) -> list[str]:
        out: list[str] = []
        for value in meters:
            ident = str(value).strip().upper()
            if len(ident) != 8 or any(c not in "0123456789ABCDEF" for c in ident):
                raise ValueError(f"radio meter id must be 8 digits (hex allowed), got {ident!r}")
            if ident in out:
                raise ValueError(f"radio meter {ident} listed twice")
            out.append(ident)
        return out


class ScheduleConfig(_Model):
    poll_cron: str = Field(default=DEFAULT_POLL_CRON, description="5-field cron in local time")
    jitter_s: int = Field(default=3600, ge=0, le=6 * 3600, description="per-collector spread of the poll")
    interval_s: int | None = Field(default=None, ge=5, description="demo mode: poll every N seconds")
    heartbeat_s: int = Field(default=300, ge=5, le=86400)
    run_missed_at_start: bool = True

    @field_validator("poll_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError(f"poll_cron must have 5 fields (minute hour day month weekday), got {value!r}")
        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"poll_cron {value!r}: {exc}") from None
        return value


class OutboxConfig(_Model):
    path: Path | None = Field(default=None, description="default: <data_dir>/outbox.sqlite")
    max_frames: int = Field(default=500_000, ge=10)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)


class CollectorConfig(_Model):
    collector_id: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    data_dir: Path = Path("/var/lib/imd-edge")
    meter_keys_file: Path | None = None
    mqtt: MqttConfig
    buses: list[BusConfig] = Field(default_factory=list)
    radios: list[RadioConfig] = Field(default_factory=list)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_names(self) -> CollectorConfig:
        names = [b.name for b in self.buses] + [r.name for r in self.radios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"bus/radio names must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def outbox_path(self) -> Path:
        return self.outbox.path if self.outbox.path is not None else self.data_dir / "outbox.sqlite"

    def poll_jitter_offset_s(self) -> int:
        """This collector's fixed offset into the jitter window.

        Derived from the collector id (not random per start) so a collector polls at the same time
        every night while a city of collectors spreads across the window.
        """
        if self.schedule.jitter_s == 0:
            return 0
        digest = hashlib.sha256(self.collector_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") % self.schedule.jitter_s

    def bus(self, name: str) -> BusConfig:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _format_validation(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        # Never echo the offending input: it may be a password or a secret-bearing URL.
        lines.append(f"  {_loc(err['loc'])}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: Path | str = "<config>") -> CollectorConfig:
    try:
        config = CollectorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None
    return config


def load_config(path: Path | str) -> CollectorConfig:
    """Read and validate the TOML file; raise :class:`ConfigError` naming file, field and problem."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse_config(data, path)
    # Relative paths in the file are relative to the file, not to wherever the daemon was started.
    base = path.parent.resolve()
    updates: dict[str, Any] = {}
    if not config.data_dir.is_absolute():
        updates["data_dir"] = base / config.data_dir
    if config.meter_keys_file is not None and not config.meter_keys_file.is_absolute():
        updates["meter_keys_file"] = base / config.meter_keys_file
    if config.outbox.path is not None and not config.outbox.path.is_absolute():
        updates["outbox"] = config.outbox.model_copy(update={"path": base / config.outbox.path})
    return config.model_copy(update=updates) if updates else config


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_config(
    *,
    collector_id: str,
    mqtt_url: str,
    buses: list[tuple[str, str, int, list[MeterConfig]]],
    data_dir: str,
    interval_s: int | None = None,
    heartbeat_s: int = 300,
    radios: list[RadioConfig] | None = None,
    meter_keys_file: str | None = None,
) -> str:
    """A collector TOML file (used by ``config-from-site`` and the demo launcher)."""
    lines = [
        "# IMD collector configuration (generated by `imd edge config-from-site`)",
        f"collector_id = {_toml_str(collector_id)}",
        f"data_dir = {_toml_str(data_dir)}",
    ]
    if meter_keys_file is not None:
        lines.append(f"meter_keys_file = {_toml_str(meter_keys_file)}")
    lines += [
        "",
        "[mqtt]",
        f"url = {_toml_str(mqtt_url)}",
        "",
        "[schedule]",
        f'poll_cron = "{DEFAULT_POLL_CRON}"',
        f"heartbeat_s = {heartbeat_s}",
    ]
    if interval_s is not None:
        lines.append(f"interval_s = {interval_s}")
    for name, port, baud, meters in buses:
        lines += ["", "[[buses]]", f"name = {_toml_str(name)}", f"port = {_toml_str(port)}", f"baud = {baud}"]
        lines.append("meters = [")
        for meter in meters:
            label = f", name = {_toml_str(meter.name)}" if meter.name else ""
            if meter.primary is not None:
                lines.append(f"    {{ primary = {meter.primary}{label} }},")
            else:
                lines.append(f"    {{ secondary = {_toml_str(str(meter.secondary))}{label} }},")
        lines.append("]")
    for radio in radios or []:
        lines += [
            "",
            "[[radios]]",
            f"name = {_toml_str(radio.name)}",
            f"port = {_toml_str(radio.port)}",
            f"type = {_toml_str(radio.type)}",
            f"link_mode = {_toml_str(radio.link_mode)}",
            f"forward_interval_s = {radio.forward_interval_s}",
            "meters = [",
        ]
        lines += [f"    {_toml_str(ident)}," for ident in radio.meters]
        lines.append("]")
    return "\n".join(lines) + "\n"


def write_meter_keys(path: Path, keys: dict[str, str]) -> None:
    """The collector's meter keys file (``ID=HEX`` lines, read by ``edge.radio.load_meter_keys``).

    Created with mode 0600 before any key is written, so no other user can read it even briefly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("# wM-Bus meter keys: METER_ID=AES-128 key (hex). Keep this file 0600.\n")
        for ident, key in sorted(keys.items()):
            out.write(f"{ident}={key.upper()}\n")
