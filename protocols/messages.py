"""The edge <-> central message schema carried over MQTT (topic scheme ``imd/v1/<collector>/...``).

Versioned by the topic prefix; every payload is UTF-8 JSON. Raw frames travel as hex so that central
keeps exactly the bytes the meter sent and can re-decode them later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocols.errors import MessageError

TOPIC_ROOT = "imd/v1"
COLLECTOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FRAMES_PER_BATCH = 1000
MAX_FRAME_HEX = 2 * 1024  # one wired long frame is at most 261 bytes, a wM-Bus telegram 256
_HEX_RE = re.compile(r"[0-9a-f]*")


def frames_topic(collector: str) -> str:
    return f"{TOPIC_ROOT}/{collector}/frames"


def status_topic(collector: str) -> str:
    return f"{TOPIC_ROOT}/{collector}/status"


def command_topic(collector: str) -> str:
    return f"{TOPIC_ROOT}/{collector}/cmd"


def command_result_topic(collector: str) -> str:
    return f"{TOPIC_ROOT}/{collector}/cmd/result"


def receipt_topic(collector: str) -> str:
    """Central -> collector: which sequences are durably stored (only central may write it)."""
    return f"{TOPIC_ROOT}/{collector}/receipt"


FRAMES_SUBSCRIPTION = f"{TOPIC_ROOT}/+/frames"
SHARED_FRAMES_SUBSCRIPTION = f"$share/ingest/{FRAMES_SUBSCRIPTION}"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/status"
COMMAND_RESULT_SUBSCRIPTION = f"{TOPIC_ROOT}/+/cmd/result"


def collector_from_topic(topic: str) -> str:
    """The collector id from a topic ``imd/v1/<collector>/...``; raises MessageError otherwise."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or not COLLECTOR_ID_RE.match(parts[2]):
        raise MessageError(f"not an imd/v1 collector topic: {topic!r}")
    return parts[2]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LinkKind(StrEnum):
    MBUS = "mbus"
    WMBUS = "wmbus"


class FrameStatus(StrEnum):
    """What the collector could make of a frame before sending it on."""

    OK = "ok"  # link layer intact
    FAILED = "failed"  # bytes arrived but are not a valid frame (reason says why)
    NO_ANSWER = "no_answer"  # the meter did not answer within its retry budget


class FrameMessage(_Message):
    """One raw frame as received on a bus or radio, with where and when."""

    sequence: int = Field(ge=0, description="per-collector, strictly increasing, survives restarts")
    received_at: datetime
    link: LinkKind = LinkKind.MBUS
    port: str = Field(max_length=128, description="bus or stick name from the collector config")
    address: str | None = Field(
        default=None, max_length=32, description="primary address (decimal) or secondary id (16 hex)"
    )
    link_mode: str | None = Field(default=None, max_length=8, description="wM-Bus link mode (T1, C1...)")
    rssi: int | None = Field(default=None, ge=-200, le=50)
    status: FrameStatus = FrameStatus.OK
    reason: str | None = Field(default=None, max_length=500)
    raw: str = Field(default="", max_length=MAX_FRAME_HEX, description="frame bytes as lowercase hex")
    decoded: dict[str, Any] | None = Field(
        default=None, description="the collector's local decode summary, informational only"
    )

    @field_validator("raw")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.lower()
        if len(value) % 2 or not _HEX_RE.fullmatch(value):  # a regex: ~30x a per-character loop
            raise ValueError("raw must be an even number of hex digits")
        return value

    @property
    def raw_bytes(self) -> bytes:
        return bytes.fromhex(self.raw)


class FrameBatch(_Message):
    """Payload of ``imd/v1/<collector>/frames``."""

    schema_version: Literal[1] = 1
    collector: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    sent_at: datetime
    frames: list[FrameMessage] = Field(min_length=1, max_length=MAX_FRAMES_PER_BATCH)


class CollectorState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class BusPollResult(_Message):
    bus: str
    started_at: datetime
    duration_s: float
    meters_read: int
    meters_failed: int


class RadioHeard(_Message):
    """A radio meter the collector hears that is not in its list ("heard but not ours" survey)."""

    id: str = Field(max_length=16)
    manufacturer: str = Field(max_length=3)
    version: int = Field(ge=0, le=255)
    device_type: int = Field(ge=0, le=255)
    count: int = Field(ge=0, description="telegrams heard")
    last_heard: datetime
    rssi: int | None = Field(default=None, description="best RSSI heard, dBm")
    link_mode: str | None = Field(default=None, max_length=8)
    sticks: list[str] = Field(default_factory=list)


class CollectorStatus(_Message):
    """Payload of ``imd/v1/<collector>/status`` (retained; the last will says offline)."""

    schema_version: Literal[1] = 1
    collector: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    state: CollectorState
    at: datetime
    uptime_s: float | None = None
    outbox_depth: int | None = None
    outbox_awaiting_receipt: int | None = Field(
        default=None, description="of outbox_depth: published, acknowledged by the broker, not yet receipted"
    )
    outbox_oldest_age_s: float | None = None
    last_polls: list[BusPollResult] = Field(default_factory=list)
    radio_telegrams_per_min: float | None = None
    disk_free_bytes: int | None = None
    cpu_temp_c: float | None = None
    version: str | None = None
    alarms: list[str] = Field(default_factory=list, description="e.g. outbox overflow, serial port gone")
    radio_not_ours: list[RadioHeard] = Field(
        default_factory=list, description="radio meters heard that are not ours, strongest first (at most 50)"
    )


class CommandName(StrEnum):
    READ_METER = "read_meter"
    READ_ALL = "read_all"
    SCAN = "scan"
    REPORT = "report"
    RELOAD_CONFIG = "reload_config"


class Command(_Message):
    """Payload of ``imd/v1/<collector>/cmd``."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, max_length=64)
    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    issued_at: datetime


class CommandResult(_Message):
    """Payload of ``imd/v1/<collector>/cmd/result``."""

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, max_length=64)
    collector: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    finished_at: datetime


MAX_RECEIPT_RANGES = 1000


def sequence_ranges(sequences: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering exactly the given sequences."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(sequences)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class IngestReceipt(_Message):
    """Payload of ``imd/v1/<collector>/receipt``: these sequences are committed at central.

    What frees a row of the collector's outbox: a broker's PUBACK only says the broker has the
    message, and a broker can still drop it (a shared subscription not restored after a restart).
    """

    schema_version: Literal[1] = 1
    collector: str = Field(pattern=COLLECTOR_ID_RE.pattern)
    ranges: list[tuple[int, int]] = Field(
        min_length=1, max_length=MAX_RECEIPT_RANGES, description="inclusive [lo, hi] sequence ranges"
    )
    committed_at: datetime

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for lo, hi in value:
            if lo < 0 or hi < lo:
                raise ValueError(f"range [{lo}, {hi}] is not 0 <= lo <= hi")
        return value

    def sequences(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)


def receipts_for(
    collector: str, sequences: Iterable[int], committed_at: datetime
) -> list[IngestReceipt]:
    """The receipts naming ``sequences``, split so that none exceeds :data:`MAX_RECEIPT_RANGES`."""
    ranges = sequence_ranges(sequences)
    return [
        IngestReceipt(
            collector=collector, ranges=ranges[i : i + MAX_RECEIPT_RANGES], committed_at=committed_at
        )
        for i in range(0, len(ranges), MAX_RECEIPT_RANGES)
    ]


MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
_M = TypeVar("_M", bound=_Message)


def _parse(model: type[_M], payload: bytes) -> _M:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise MessageError(f"invalid {model.__name__}: {reasons}") from exc


def parse_frame_batch(payload: bytes) -> FrameBatch:
    return _parse(FrameBatch, payload)


def parse_status(payload: bytes) -> CollectorStatus:
    return _parse(CollectorStatus, payload)


def parse_command(payload: bytes) -> Command:
    return _parse(Command, payload)


def parse_command_result(payload: bytes) -> CommandResult:
    return _parse(CommandResult, payload)


def parse_receipt(payload: bytes) -> IngestReceipt:
    return _parse(IngestReceipt, payload)


def encode(message: _Message) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()
