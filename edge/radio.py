"""The wM-Bus listener: receiver-stick drivers and what the collector does with what it hears.

Three parts, each testable alone:

* :class:`StickDriver` - one thread per stick (pyserial, blocking reads with a short timeout) using
  the pure framings of :mod:`protocols.sticks`: configures the link mode on open, delivers each
  telegram with its RSSI, probes a stick that has been silent, and recovers one that stops answering
  by a reset request and then by closing and reopening the port, reporting every step in its
  :class:`StickHealth` (and the log). ``rtl`` sticks are ``rtl_wmbus`` text lines from stdin or a
  named pipe.
* :class:`RadioFilter` - sans-IO: drops duplicates by content (the same telegram heard again, or by
  two sticks), counts meters that are not ours in the "heard but not ours" survey, forwards at most
  one telegram per meter per interval plus every one whose status changed, and turns a telegram
  that cannot be parsed or (with the key) decrypted into a ``failed`` frame.
* :class:`RadioService` - the asyncio side the daemon starts: stick threads -> queue -> filter ->
  durable outbox as :class:`~protocols.messages.FrameMessage` (``link="wmbus"``), like wired frames.

The raw telegram (CRC-less, with its L field) is forwarded; central decrypts with its keys. The
collector decodes locally when it has a key, for the status logic and the local summary. Keys are
never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import threading
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol

import serial

from edge.config import RadioConfig
from protocols.errors import DecodeError, FrameError, ProtocolError, SecurityError
from protocols.messages import FrameMessage, FrameStatus, LinkKind, RadioHeard
from protocols.sticks import amber, imst
from protocols.sticks.rtlwmbus import parse_rtlwmbus_line
from protocols.wmbus import (
    FormatCache,
    FormatUnknownError,
    FragmentPendingError,
    FragmentReassembler,
    decode_wmbus,
    parse_link,
)
from protocols.wmbus.link import LinkFrame

log = logging.getLogger("edge.radio")

__all__ = [
    "STICK_PROTOCOLS",
    "Heard",
    "KeysFileError",
    "RadioFilter",
    "RadioService",
    "StickDriver",
    "StickHealth",
    "SurveyEntry",
    "load_meter_keys",
]

# -- meter keys ----------------------------------------------------------------------------------


class KeysFileError(Exception):
    """The meter keys file cannot be used; the message names file and line, never a key."""


def load_meter_keys(path: Path | str) -> dict[str, bytes]:
    """Keys per meter id: a JSON object ``{"12345678": "HEX32"}`` or lines ``12345678=HEX32``
    (``#`` comments, blank lines and ``ID HEX`` allowed). Ids are upper-cased."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            items = list(json.loads(text).items())
        except (ValueError, AttributeError):
            raise KeysFileError(f"{path}: not a JSON object of meter id -> key") from None
        pairs = [(i + 1, str(k), str(v)) for i, (k, v) in enumerate(items)]
    else:
        pairs = []
        for number, text_line in enumerate(text.splitlines(), 1):
            line = text_line.split("#", 1)[0].strip()
            if not line:
                continue
            ident, sep, key = line.partition("=")
            if not sep:
                ident, _, key = line.partition(" ")
            pairs.append((number, ident, key))
    keys: dict[str, bytes] = {}
    for number, raw_ident, key in pairs:
        ident = raw_ident.strip().upper()
        try:
            value = bytes.fromhex(key.strip())
        except ValueError:
            value = b""
        if not ident or len(value) != 16:
            raise KeysFileError(f"{path}: entry {number}: expected METER_ID=32 hex digits (AES-128 key)")
        keys[ident] = value
    return keys


# -- what a stick delivers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """One telegram as a stick delivered it."""

    stick: str
    raw: bytes  # the telegram with its L field (CRC-less from the sticks)
    rssi: int | None  # dBm
    link_mode: str | None
    received_at: datetime
    monotonic: float


class _Parser(Protocol):
    dropped_bytes: int

    def feed(self, data: bytes) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class StickProtocol:
    """What differs between stick types, as data: baud, parser, requests and how answers look."""

    baud: int
    parser: Callable[[], _Parser]
    configure: Callable[[str], bytes]
    probe: Callable[[], bytes]
    reset: Callable[[], bytes]
    configured: Callable[[Any], bool]
    probed: Callable[[Any], bool]
    was_reset: Callable[[Any], bool]
    telegram: Callable[[Any], tuple[bytes, int | None] | None]
    errors: Callable[[Any], int]


def _imst_answer(msg_id: int) -> Callable[[Any], bool]:
    return lambda f: f.endpoint == imst.DEVMGMT and f.msg_id == msg_id


def _imst_telegram(frame: imst.HciFrame) -> tuple[bytes, int | None] | None:
    if not frame.is_telegram:
        return None
    return imst.wmbus_telegram(frame), None if frame.rssi is None else imst.rssi_dbm(frame.rssi)


def _amber_answer(command: int) -> Callable[[Any], bool]:
    return lambda f: f.command == command | amber.RESPONSE


def _amber_telegram(frame: amber.AmberFrame) -> tuple[bytes, int | None] | None:
    if not frame.is_telegram:
        return None
    return amber.wmbus_telegram(frame), None if frame.rssi is None else amber.rssi_dbm(frame.rssi)


STICK_PROTOCOLS: Final[dict[str, StickProtocol]] = {
    "imst": StickProtocol(
        baud=57600,
        parser=imst.HciParser,
        configure=imst.set_link_mode_request,
        probe=imst.ping_request,
        reset=imst.reset_request,
        configured=_imst_answer(imst.SET_CONFIG_RSP),
        probed=_imst_answer(imst.PING_RSP),
        was_reset=_imst_answer(imst.RESET_RSP),
        telegram=_imst_telegram,
        errors=lambda p: p.crc_errors,
    ),
    "amber": StickProtocol(
        baud=9600,
        parser=amber.AmberParser,
        configure=amber.set_link_mode_request,
        probe=amber.serial_number_request,  # command mode has no ping; the serial number is harmless
        reset=amber.reset_request,
        configured=_amber_answer(amber.CMD_SET_MODE_REQ),
        probed=_amber_answer(amber.CMD_SERIALNO_REQ),
        was_reset=_amber_answer(amber.CMD_RESET_REQ),
        telegram=_amber_telegram,
        errors=lambda p: p.checksum_errors,
    ),
}


@dataclass
class StickHealth:
    """What the heartbeat and ``report`` say about one stick."""

    name: str
    type: str
    port: str
    link_mode: str
    state: str = "starting"  # listening, not answering, port error, stopped
    error: str | None = None
    telegrams: int = 0
    frame_errors: int = 0  # serial frames with a bad CRC/checksum (dropped by the parser)
    dropped_bytes: int = 0
    opens: int = 0
    resets: int = 0
    reopens: int = 0
    recoveries: int = 0
    last_heard_at: datetime | None = None
    events: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def note(self, text: str, level: int = logging.INFO) -> None:
        self.events.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}")
        log.log(level, "radio %s: %s", self.name, text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "port": self.port, "link_mode": self.link_mode,
            "state": self.state, "error": self.error, "telegrams": self.telegrams,
            "frame_errors": self.frame_errors, "dropped_bytes": self.dropped_bytes, "opens": self.opens,
            "resets": self.resets, "reopens": self.reopens, "recoveries": self.recoveries,
            "last_heard_at": self.last_heard_at.isoformat() if self.last_heard_at else None,
            "events": list(self.events),
        }  # fmt: skip


class StickDriver:
    """One receiver stick on a serial port, in its own thread (see the module docstring)."""

    def __init__(
        self,
        config: RadioConfig,
        deliver: Callable[[Heard], None],
        *,
        answer_timeout_s: float = 1.0,
        idle_probe_s: float = 60.0,
        silence_reset_s: float = 900.0,
        backoff_s: tuple[float, float] = (0.5, 60.0),
        serial_factory: Callable[..., Any] = serial.Serial,
        stdin: IO[str] | None = None,
    ) -> None:
        if config.type not in STICK_PROTOCOLS and config.type != "rtl":
            raise ValueError(f"radio {config.name}: stick type {config.type!r} is not supported yet")
        self.config = config
        self.health = StickHealth(config.name, config.type, config.port, config.link_mode)
        self._deliver = deliver
        self._answer_timeout = answer_timeout_s
        self._idle_probe = idle_probe_s
        self._silence_reset = silence_reset_s
        self._backoff = backoff_s
        self._factory = serial_factory
        self._stdin = stdin
        self._protocol = STICK_PROTOCOLS.get(config.type)
        self._ser: Any = None
        self._parser: _Parser | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_rx = 0.0
        self._last_telegram = 0.0
        self._failing_since: float | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> StickDriver:
        if self._thread is not None:
            raise RuntimeError("driver already started")
        self._stop.clear()
        target = self._run_rtl if self.config.type == "rtl" else self._run
        self._thread = threading.Thread(target=target, name=f"radio {self.config.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()
        self.health.state = "stopped"

    # -- the serial sticks -------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            if self._connect():
                delay = self._backoff[0]
                self._listen()
            self._close()
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._backoff[1])

    def _open(self) -> bool:
        assert self._protocol is not None
        try:
            self._ser = self._factory(self.config.port, self._protocol.baud, timeout=0.05, write_timeout=2,
                                      exclusive=True)  # fmt: skip
        except (serial.SerialException, OSError, ValueError) as exc:
            self._fail("port error", f"cannot open {self.config.port}: {exc}")
            return False
        self._parser = self._protocol.parser()
        self.health.opens += 1
        if self.health.opens > 1:
            self.health.reopens += 1
        return True

    def _connect(self) -> bool:
        """Open, configure the link mode; a stick that does not answer gets a reset, then a reopen."""
        assert self._protocol is not None
        if not self._open():
            return False
        if self._configure():
            return True
        self.health.note("no answer to the link mode request: resetting the stick", logging.WARNING)
        if self._reset_and_configure():
            return True
        self._fail("not answering", f"stick on {self.config.port} does not answer (reset and reopen tried)")
        return False

    def _configure(self) -> bool:
        assert self._protocol is not None
        ok = self._request(self._protocol.configure(self.config.link_mode), self._protocol.configured)
        if ok:
            now = time.monotonic()
            self._last_rx = self._last_telegram = now
            was, self.health.state, self.health.error = self.health.state, "listening", None
            if self._failing_since is not None:
                down = now - self._failing_since
                self.health.note(f"answering again after {down:.1f} s; listening in {self.config.link_mode}")
                self._failing_since = None
                self.health.recoveries += 1
            elif was != "listening":
                self.health.note(f"listening in {self.config.link_mode} on {self.config.port}")
        return ok

    def _reset_and_configure(self) -> bool:
        assert self._protocol is not None
        self.health.resets += 1
        if not self._request(self._protocol.reset(), self._protocol.was_reset):
            return False
        return self._configure()

    def _fail(self, state: str, error: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if self.health.error != error:
            self.health.note(error, logging.ERROR)
        self.health.state = state
        self.health.error = error

    def _close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()

    def _request(self, request: bytes, answered: Callable[[Any], bool]) -> bool:
        """Send a request and read (delivering telegrams meanwhile) until its answer or the timeout."""
        if self._ser is None:
            return False
        try:
            self._ser.write(request)
        except (serial.SerialException, OSError) as exc:
            self._fail("port error", f"write to {self.config.port} failed: {exc}")
            return False
        deadline = time.monotonic() + self._answer_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            frames = self._read()
            if frames is None:
                return False
            if any(answered(f) for f in frames):
                return True
        return False

    def _read(self) -> list[Any] | None:
        """One short read: deliver telegrams, return every frame (None when the port failed)."""
        assert self._protocol is not None
        assert self._parser is not None
        try:
            data = self._ser.read(512)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            self._fail("port error", f"read from {self.config.port} failed: {exc}")
            return None
        if not data:
            return []
        frames = list(self._parser.feed(data))
        self.health.dropped_bytes = self._parser.dropped_bytes
        self.health.frame_errors = self._protocol.errors(self._parser)
        now = time.monotonic()
        for frame in frames:
            self._last_rx = now
            try:
                got = self._protocol.telegram(frame)
            except FrameError:
                got = None
            if got is None:
                continue
            raw, rssi = got
            self._last_telegram = now
            self._hand_over(raw, rssi, self.config.link_mode)
        return frames

    def _hand_over(self, raw: bytes, rssi: int | None, link_mode: str | None) -> None:
        self.health.telegrams += 1
        at = datetime.now(UTC)
        self.health.last_heard_at = at
        try:
            self._deliver(Heard(self.config.name, raw, rssi, link_mode, at, time.monotonic()))
        except Exception:  # the consumer's problem must not kill the stick thread
            log.exception("radio %s: delivering a telegram failed", self.config.name)

    def _listen(self) -> None:
        """Read until stopped, the port fails, or the stick stops answering (then recover)."""
        assert self._protocol is not None
        while not self._stop.is_set():
            if self._read() is None:
                return
            now = time.monotonic()
            if now - self._last_telegram > self._silence_reset:
                # answering but deaf (radio part hung): a reset and a new configuration
                self.health.note(f"no telegram for {self._silence_reset:.0f} s: resetting", logging.WARNING)
                self._last_telegram = now
                if not self._reset_and_configure():
                    self._fail("not answering", f"stick on {self.config.port} does not answer after a reset")
                    return
            elif now - self._last_rx > self._idle_probe:
                if self._request(self._protocol.probe(), self._protocol.probed):
                    self._last_rx = time.monotonic()
                    continue
                if self._stop.is_set() or self._ser is None:
                    return
                self._fail("not answering", f"stick on {self.config.port} stopped answering")
                if self._reset_and_configure():
                    continue
                self.health.note("no answer to a reset either: reopening the port", logging.WARNING)
                return

    # -- rtl_wmbus lines -----------------------------------------------------------------------------

    def _run_rtl(self) -> None:
        """Lines from stdin ("-") or a named pipe; a closed pipe is reopened (the writer restarted)."""
        while not self._stop.is_set():
            try:
                stream = self._stdin if self.config.port == "-" else open(self.config.port, encoding="ascii",  # noqa: SIM115
                                                                          errors="replace")  # fmt: skip
            except OSError as exc:
                self._fail("port error", f"cannot open {self.config.port}: {exc.strerror or exc}")
                if self._stop.wait(self._backoff[0]):
                    return
                continue
            stream = stream or sys.stdin
            self.health.opens += 1
            self.health.state, self.health.error = "listening", None
            try:
                for line in stream:
                    if self._stop.is_set():
                        break
                    if not line.strip():
                        continue
                    try:
                        parsed = parse_rtlwmbus_line(line)
                    except FrameError as exc:
                        self.health.frame_errors += 1
                        log.debug("radio %s: %s", self.config.name, exc)
                        continue
                    self._hand_over(parsed.telegram, parsed.rssi, parsed.link_mode or self.config.link_mode)
            finally:
                if stream is not self._stdin and stream is not sys.stdin:
                    stream.close()
            if self.config.port == "-":
                self.health.state = "stopped"
                return
            self._fail("port error", f"{self.config.port}: writer closed the pipe")
            if self._stop.wait(self._backoff[0]):
                return


# -- the collector's rules ------------------------------------------------------------------------


@dataclass
class SurveyEntry:
    """One meter heard that is not ours (the technician's survey)."""

    id: str
    manufacturer: str
    version: int
    device_type: int
    count: int
    first_heard: datetime
    last_heard: datetime
    rssi_last: int | None
    rssi_best: int | None
    link_mode: str | None
    sticks: set[str]

    def as_message(self) -> RadioHeard:
        return RadioHeard(
            id=self.id, manufacturer=self.manufacturer, version=self.version, device_type=self.device_type,
            count=self.count, last_heard=self.last_heard, rssi=self.rssi_best, link_mode=self.link_mode,
            sticks=sorted(self.sticks),
        )  # fmt: skip


@dataclass
class FilterStats:
    heard: int = 0
    duplicates: int = 0
    not_ours: int = 0
    forwarded: int = 0
    rate_limited: int = 0
    status_changes: int = 0
    failed: int = 0
    failed_suppressed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# Long TPL headers (CI 72h family) carry the meter's own address after a radio adapter's link address.
_LONG_HEADER_CI: Final = frozenset((0x72, 0x73, 0x75, 0x6F, 0x8B))


def _meter_address(link: LinkFrame) -> tuple[str, str, int, int]:
    """The meter (id, manufacturer, version, device type): the link address unless an ELL III/IV or
    a long transport header names the meter behind a radio adapter."""
    from protocols.mbus.manufacturers import manufacturer_letters

    data = link.data
    address = None
    if data[:1] in (b"\x8e", b"\x8f") and len(data) >= 11:
        address = data[3:11]
    elif data[:1] and data[0] in _LONG_HEADER_CI and len(data) >= 9:
        address = data[5:7] + data[1:5] + data[7:9]
    if address is None or address == link.address_bytes:
        return link.id, link.manufacturer, link.version, link.device_type
    code = address[0] | address[1] << 8
    return address[2:6][::-1].hex().upper(), manufacturer_letters(code), address[6], address[7]


class _RecentContents:
    """Telegram contents heard in the last ``window_s`` seconds, at most ``capacity`` of them.

    Kept as 8-byte digests in an open-addressing hash table of one ``array`` (linear probing,
    deletion by backward shift, 0 = empty) with their times in a fixed ring of two more (oldest
    first): about 29 bytes a telegram, no Python object per entry. The OrderedDict of 16-byte
    digests and float times it replaces took about 200 bytes each (a ``set`` of int digests still
    ~160: Python sizes a set to four times its entries), and at 500 radio meters sending every 3 s
    (the collector memory benchmark) its 20,000 entries were some 3.9 MB of the collector's RSS.
    Two different contents sharing a digest (a telegram wrongly dropped as a repeat) come about
    once in 10^15 lookups."""

    __slots__ = ("_at", "_head", "_mask", "_ring", "_size", "_table", "capacity", "window_s")

    def __init__(self, window_s: float, capacity: int) -> None:
        self.window_s = window_s
        self.capacity = max(1, capacity)
        slots = 1 << max(4, (self.capacity * 8 // 5).bit_length())  # load factor at most 5/8
        self._mask = slots - 1
        self._table = array("Q", bytes(8 * slots))
        self._ring = array("Q", bytes(8 * self.capacity))
        self._at = array("d", bytes(8 * self.capacity))
        self._head = 0  # ring index of the oldest entry
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def seen(self, content: bytes, now: float) -> bool:
        """Whether ``content`` was heard within the window; remembers it when not."""
        ring, at, cap = self._ring, self._at, self.capacity
        while self._size and (now - at[self._head] > self.window_s or self._size >= cap):
            self._remove(ring[self._head])
            self._head = (self._head + 1) % cap
            self._size -= 1
        digest = int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "little") | 1
        table, mask = self._table, self._mask
        i = digest & mask
        while (found := table[i]) != 0:
            if found == digest:
                return True
            i = (i + 1) & mask
        table[i] = digest
        tail = (self._head + self._size) % cap
        ring[tail] = digest
        at[tail] = now
        self._size += 1
        return False

    def _remove(self, digest: int) -> None:
        table, mask = self._table, self._mask
        i = digest & mask
        while table[i] != digest:
            i = (i + 1) & mask
        # Backward shift: move later entries of the probe run into the hole when their home slot
        # does not lie cyclically in (hole, their slot], so every lookup still finds them.
        j = i
        while True:
            j = (j + 1) & mask
            entry = table[j]
            if entry == 0:
                break
            home = entry & mask
            if (j > i and (home <= i or home > j)) or (j < i and i >= home > j):
                table[i] = entry
                i = j
        table[i] = 0


class RadioFilter:
    """Sans-IO rules for what the collector forwards (see the module docstring). Not thread-safe:
    one caller (the service's consumer task)."""

    def __init__(
        self,
        meters: Iterable[str],
        keys: Mapping[str, bytes] | None = None,
        *,
        dedupe_window_s: float = 300.0,
        failed_interval_s: float = 60.0,
        survey_max: int = 2000,
        dedupe_max: int = 20000,
    ) -> None:
        self.meters = frozenset(m.upper() for m in meters)
        self.keys = dict(keys or {})
        self.dedupe_window_s = dedupe_window_s
        self.failed_interval_s = failed_interval_s
        self.survey_max = survey_max
        self.dedupe_max = dedupe_max
        self.stats = FilterStats()
        self.formats = FormatCache()
        self.fragments = FragmentReassembler()
        self._seen = _RecentContents(dedupe_window_s, dedupe_max)
        self._survey: OrderedDict[str, SurveyEntry] = OrderedDict()
        self._last_forward: dict[str, float] = {}
        self._last_failed: dict[str, float] = {}
        self._status: dict[str, tuple[Any, ...]] = {}
        # Telegrams heard per whole second of the monotonic clock: a few hundred small entries
        # however busy the air is (one float per telegram cost megabytes at 500 meters).
        self._heard_per_s: deque[list[int]] = deque()  # [second, count], oldest first

    # -- queries -----------------------------------------------------------------------------------

    def survey(self, limit: int | None = None) -> list[SurveyEntry]:
        """Not-ours meters, strongest first (a neighbour heard loud may be ours, mislisted)."""
        entries = sorted(self._survey.values(), key=lambda e: (-(e.rssi_best or -999), -e.count, e.id))
        return entries[:limit] if limit is not None else entries

    def telegrams_per_min(self, now: float | None = None, window_s: float = 300.0) -> float:
        now = time.monotonic() if now is None else now
        buckets = self._heard_per_s
        while buckets and buckets[0][0] < now - window_s:
            buckets.popleft()
        return round(sum(count for _, count in buckets) * 60.0 / window_s, 1)

    # -- the rules ---------------------------------------------------------------------------------

    def accept(self, heard: Heard, interval_s: float) -> FrameMessage | None:
        """What to store for one telegram: a frame to forward, a failed frame, or None (dropped)."""
        now = heard.monotonic
        self.stats.heard += 1
        second = int(now)
        buckets = self._heard_per_s
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
            while len(buckets) > 3600:  # nobody asked for the rate for an hour
                buckets.popleft()
        try:
            link = parse_link(heard.raw, link_mode=heard.link_mode)
        except FrameError as exc:
            return self._failed(heard, None, f"link layer: {exc}", key=f"stick:{heard.stick}")
        if self._duplicate(link.stripped, now):
            self.stats.duplicates += 1
            return None
        ident, manufacturer, version, device_type = _meter_address(link)
        if ident not in self.meters:
            self.stats.not_ours += 1
            self._note_neighbour(heard, ident, manufacturer, version, device_type)
            return None
        decoded: dict[str, Any] | None = None
        status: tuple[Any, ...] | None = None
        always = False
        try:
            w = decode_wmbus(heard.raw, self.keys, formats=self.formats, fragments=self.fragments,
                             link_mode=heard.link_mode)  # fmt: skip
        except FragmentPendingError:
            always = True  # central needs every fragment to reassemble the message
        except FormatUnknownError:
            pass  # compact frame before its full frame: intact, central may know the layout
        except SecurityError as exc:
            if ident in self.keys or "key missing" not in str(exc):
                return self._failed(heard, ident, str(exc))
            status = _plain_status(link)
        except (DecodeError, ProtocolError) as exc:
            return self._failed(heard, ident, str(exc))
        else:
            t = w.telegram
            status = (t.status, w.flags)
            decoded = {
                "id": t.id, "manufacturer": t.manufacturer, "version": t.version, "medium": t.medium,
                "access_number": t.access_number, "status": t.status, "flags": list(w.flags),
                "security_mode": w.security_mode, "decrypted": w.decrypted, "compact": w.compact,
                "records": len(t.records),
            }  # fmt: skip
        changed = False
        if status is not None:
            previous = self._status.get(ident)
            self._status[ident] = status
            changed = previous is not None and previous != status
        last = self._last_forward.get(ident)
        if not (always or changed or last is None or now - last >= interval_s):
            self.stats.rate_limited += 1
            return None
        if changed:
            self.stats.status_changes += 1
        self._last_forward[ident] = now
        self.stats.forwarded += 1
        return self._message(heard, ident, FrameStatus.OK, None, decoded)

    def _duplicate(self, content: bytes, now: float) -> bool:
        return self._seen.seen(content, now)

    def _note_neighbour(
        self, heard: Heard, ident: str, manufacturer: str, version: int, device_type: int
    ) -> None:
        key = f"{manufacturer}{ident}"
        entry = self._survey.pop(key, None)
        if entry is None:
            entry = SurveyEntry(ident, manufacturer, version, device_type, 0, heard.received_at,
                                heard.received_at, None, None, heard.link_mode, set())  # fmt: skip
        entry.count += 1
        entry.last_heard = heard.received_at
        entry.rssi_last = heard.rssi
        if heard.rssi is not None and (entry.rssi_best is None or heard.rssi > entry.rssi_best):
            entry.rssi_best = heard.rssi
        entry.sticks.add(heard.stick)
        self._survey[key] = entry  # most recently heard last: eviction drops the stalest
        while len(self._survey) > self.survey_max:
            self._survey.popitem(last=False)

    def _failed(
        self, heard: Heard, ident: str | None, reason: str, *, key: str | None = None
    ) -> FrameMessage | None:
        """A telegram that arrived but cannot be used: stored as failed, at most one per meter (or per
        stick when no meter can be named) per ``failed_interval_s`` so a broken meter cannot flood."""
        self.stats.failed += 1
        key = key or ident or heard.stick
        last = self._last_failed.get(key)
        if last is not None and heard.monotonic - last < self.failed_interval_s:
            self.stats.failed_suppressed += 1
            return None
        self._last_failed[key] = heard.monotonic
        if len(self._last_failed) > 4 * max(1, len(self.meters)) + 64:
            self._last_failed.clear()
        return self._message(heard, ident, FrameStatus.FAILED, reason[:500], None)

    def _message(self, heard: Heard, ident: str | None, status: FrameStatus, reason: str | None,
                 decoded: dict[str, Any] | None) -> FrameMessage:  # fmt: skip
        return FrameMessage(
            sequence=0,
            received_at=heard.received_at,
            link=LinkKind.WMBUS,
            port=heard.stick,
            address=ident,
            link_mode=heard.link_mode,
            rssi=max(-200, min(50, heard.rssi)) if heard.rssi is not None else None,
            status=status,
            reason=reason,
            raw=heard.raw.hex(),
            decoded=decoded,
        )


def _plain_status(link: LinkFrame) -> tuple[Any, ...] | None:
    """The TPL status byte is sent in the clear even when the records are encrypted."""
    data = link.data
    pos = 0
    if data[:1] == b"\x8c":
        pos = 3
    if data[pos : pos + 1] == b"\x90" and len(data) > pos + 1:
        pos += 2 + data[pos + 1]
    if data[pos : pos + 1] == b"\x7a" and len(data) > pos + 2:
        return (data[pos + 2], None)
    if data[pos : pos + 1] == b"\x72" and len(data) > pos + 10:
        return (data[pos + 10], None)
    return None


# -- the asyncio side --------------------------------------------------------------------------------


class RadioService:
    """Stick threads feeding the filter and the durable outbox; started and stopped by the daemon."""

    def __init__(
        self,
        radios: Sequence[RadioConfig],
        store: Callable[[list[FrameMessage]], Any],
        *,
        keys: Mapping[str, bytes] | None = None,
        driver_options: Mapping[str, Any] | None = None,
        filter_options: Mapping[str, Any] | None = None,
        queue_max: int = 10_000,
    ) -> None:
        self.radios = list(radios)
        self._store = store  # async callable: messages -> None (the outbox add + publisher wake)
        meters = {m for r in self.radios for m in r.meters}
        self.filter = RadioFilter(meters, keys, **dict(filter_options or {}))
        self._interval = {r.name: float(r.forward_interval_s) for r in self.radios}
        self._driver_options = dict(driver_options or {})
        self.drivers: list[StickDriver] = []
        self._queue: asyncio.Queue[Heard] | None = None
        self._queue_max = queue_max
        self._task: asyncio.Task[None] | None = None
        self.queue_overflows = 0
        self.problems: list[str] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self._queue_max)
        queue = self._queue

        def put(item: Heard) -> None:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.queue_overflows += 1

        def deliver(item: Heard) -> None:  # called in a stick thread
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(put, item)

        self._task = asyncio.create_task(self._consume(), name="radio-consumer")
        for radio in self.radios:
            try:
                driver = StickDriver(radio, deliver, **self._driver_options)
            except ValueError as exc:
                self.problems.append(str(exc))
                log.error("%s", exc)
                continue
            self.drivers.append(driver.start())
        log.info("radio: %d stick(s), %d meter(s) ours, %d key(s)", len(self.drivers),
                 len(self.filter.meters), len(self.filter.keys))  # fmt: skip

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(d.stop) for d in self.drivers))
        if self._task is not None:
            if self._queue is not None:
                await self._drain()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drain(self) -> None:
        """Store what the sticks already delivered (best effort within a second)."""
        assert self._queue is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._queue.join()

    async def _consume(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 200:
                batch.append(queue.get_nowait())
            messages: list[FrameMessage] = []
            for heard in batch:
                try:
                    message = self.filter.accept(heard, self._interval.get(heard.stick, 900.0))
                except Exception:  # a telegram must never take the listener down
                    log.exception("radio %s: telegram could not be handled", heard.stick)
                    message = None
                if message is not None:
                    messages.append(message)
            try:
                if messages:
                    await self._store(messages)
            except Exception:
                log.exception("radio: storing %d frame(s) failed", len(messages))
            finally:
                for _ in batch:
                    queue.task_done()

    # -- health --------------------------------------------------------------------------------------

    def alarms(self) -> list[str]:
        out = [f"radio {d.health.name}: {d.health.error}" for d in self.drivers if d.health.error]
        out += [f"radio: {text}" for text in self.problems]
        if self.queue_overflows:
            out.append(f"radio: {self.queue_overflows} telegrams lost (listener queue full)")
        return out

    def telegrams_per_min(self) -> float:
        return self.filter.telegrams_per_min()

    def not_ours(self, limit: int = 50) -> list[RadioHeard]:
        return [e.as_message() for e in self.filter.survey(limit)]

    def report(self) -> dict[str, Any]:
        return {
            "sticks": [d.health.as_dict() for d in self.drivers],
            "filter": self.filter.stats.as_dict(),
            "telegrams_per_min": self.telegrams_per_min(),
            "heard_not_ours": [e.as_message().model_dump(mode="json") for e in self.filter.survey()],
            "unsupported": list(self.problems),
        }
