"""A virtual wM-Bus receiver stick on a pseudo-terminal, and the radio meters it hears.

:class:`RadioAir` is the air: every radio meter transmits at its own interval (with the random
spread real meters use so they do not collide for ever), encrypted in security mode 5 or 7 with its
key, and every :class:`RadioStick` attached to the air hears it with its own RSSI. A stick is a
pseudo-terminal the collector opens with pyserial, speaking the serial protocol of an IMST iM871A
(WiMOD HCI) or an Amber AMB8465 (command mode): it answers the configuration, reset and
identification requests of that protocol and passes on only the telegrams of the link mode it was
configured for. After power-up or a reset it listens in its non-volatile default mode (S1), in
which it hears none of these meters, so a collector that forgets to configure it hears nothing.

Faults, per stick: corrupted telegrams (a bit flipped in the first encrypted block or the end cut
off, as when a stick's CRC filter lets a damaged frame through), noise bytes on the serial line,
repeated telegrams (a repeater: the same bytes heard twice), and :meth:`RadioStick.stall`: the
firmware stops answering and stops delivering until the collector closes and reopens the port (the
DTR edge of an open restarts it, as on sticks whose reset line hangs on DTR).

Radio intervals are real seconds: a faster simulated clock makes the registers move faster, not the
radio. Keys are never printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import random
import select
import threading
import time
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from hwsim.clock import SimClock
from hwsim.meters import DiehlHydrus, KamstrupMultical21, Meter
from protocols.mbus import encode as mbus_encode
from protocols.sticks import amber, imst
from protocols.wmbus.encode import RadioIdentity, encode_wmbus

__all__ = [
    "DEFAULT_MODE",
    "RADIO_PROFILES",
    "STICK_TYPES",
    "RadioAir",
    "RadioMeter",
    "RadioProfile",
    "RadioStick",
    "StickStats",
    "make_radio_meters",
    "radio_key",
    "radio_records",
]

STICK_TYPES: Final = ("imst", "amber")
DEFAULT_MODE: Final = "S1"  # what a stick listens to after power-up or reset (its NVM setting)
IMST_GET_CONFIG_REQ: Final = 0x05
IMST_GET_CONFIG_RSP: Final = 0x06
AMBER_RSSI_ENABLE: Final = 0x45  # UserSettings offset of RSSI_Enable (AMB8465 manual)

# Which transmitted link modes a receive mode hears.
HEARS: Final[dict[str, frozenset[str]]] = {
    "S1": frozenset(("S1",)),
    "S1m": frozenset(("S1",)),
    "S2": frozenset(("S1",)),
    "T1": frozenset(("T1",)),
    "T2": frozenset(("T1",)),
    "C1": frozenset(("C1",)),
    "C1T1": frozenset(("C1", "T1")),
}


@dataclass(frozen=True, slots=True)
class RadioProfile:
    """How a model transmits: OMS security mode, link mode, nominal interval (real seconds)."""

    security_mode: int
    link_mode: str
    interval_s: float
    ell_cc: int | None = None


# The radio variants of the apartment meters. A real MULTICAL 21 encrypts with the ELL AES-CTR
# mode; the simulator uses OMS mode 7 for it (what current OMS meters send) and mode 5 for the
# HYDRUS, as the Diehl wM-Bus HYDRUS does, so the collector and central see both OMS modes.
RADIO_PROFILES: Final[dict[type[Meter], RadioProfile]] = {
    KamstrupMultical21: RadioProfile(security_mode=7, link_mode="C1", interval_s=16.0, ell_cc=0x20),
    DiehlHydrus: RadioProfile(security_mode=5, link_mode="T1", interval_s=32.0),
}


def radio_key(seed: int, ident: int) -> bytes:
    """The meter's AES-128 key: deterministic for a seed, so the site export can carry it."""
    return hashlib.sha256(f"imd-sim radio key {seed} {ident}".encode()).digest()[:16]


def radio_records(meter: Meter, at: datetime) -> tuple[bytes, int]:
    """The records of the meter's first telegram at ``at`` (faults applied) and its status byte."""
    values = meter.registers(at)
    records = b"".join(
        mbus_encode.data_record(f.dif, f.vif, values[f.key], dife=f.dife, vife=f.vife)
        for f in meter.layout[0]
    )
    status = values["status"]
    return records, status if isinstance(status, int) else 0


class RadioMeter:
    """One meter on the air: its model, key, security mode, link mode and transmit interval."""

    def __init__(
        self,
        meter: Meter,
        *,
        key: bytes | None,
        profile: RadioProfile | None = None,
        interval_s: float | None = None,
        rssi_dbm: int = -70,
    ) -> None:
        self.meter = meter
        self.profile = profile or RADIO_PROFILES.get(type(meter), RadioProfile(5, "T1", 32.0))
        if self.profile.security_mode and key is None:
            mode = self.profile.security_mode
            raise ValueError(f"radio meter {meter.ident:08d} needs a key for security mode {mode}")
        self.key = key
        self.interval_s = interval_s if interval_s is not None else self.profile.interval_s
        self.rssi_dbm = rssi_dbm
        self.transmissions = 0
        self._access = meter.key & 0xFF
        self._counter = meter.key >> 8 & 0xFFFF

    @property
    def link_mode(self) -> str:
        return self.profile.link_mode

    @property
    def ident(self) -> str:
        return f"{self.meter.ident:08d}"

    def telegram(self, at: datetime) -> bytes:
        """The next telegram (CRC-less, with L, as a stick delivers it); access number and counter move on."""
        self._access = (self._access + 1) & 0xFF
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        self.transmissions += 1
        ident = self.meter.identity(at)
        records, status = radio_records(self.meter, at)
        return encode_wmbus(
            RadioIdentity(ident.manufacturer, f"{ident.ident:08d}", ident.version, ident.device_type),
            records,
            access_number=self._access,
            status=status,
            security_mode=self.profile.security_mode,
            key=self.key,
            message_counter=self._counter,
            ell_cc=self.profile.ell_cc,
            frame_format="none",
        )


@dataclass
class StickStats:
    commands: int = 0
    answers: int = 0
    telegrams: int = 0  # delivered to the host
    not_heard: int = 0  # transmissions in a link mode the stick was not configured for
    corrupted: int = 0
    noise_bursts: int = 0
    resets: int = 0
    stalled_drops: int = 0
    host_closed_drops: int = 0
    restarts: int = 0  # stalls ended by a reopen
    modes_set: list[str] = field(default_factory=list)


class RadioStick:
    """A virtual iM871A (``stick="imst"``) or AMB8465 (``"amber"``) on a pseudo-terminal."""

    def __init__(
        self,
        name: str = "radio0",
        *,
        stick: str = "imst",
        seed: int = 1,
        corrupt_rate: float = 0.0,
        noise_rate: float = 0.0,
        serial_number: int | None = None,
    ) -> None:
        if stick not in STICK_TYPES:
            raise ValueError(f"stick type must be one of {', '.join(STICK_TYPES)}, got {stick!r}")
        self.name = name
        self.stick = stick
        self.corrupt_rate = corrupt_rate
        self.noise_rate = noise_rate
        self.serial_number = serial_number if serial_number is not None else 0x1A2B0000 | (seed & 0xFFFF)
        self.stats = StickStats()
        self.link_mode = DEFAULT_MODE
        self.rssi_attached = stick == "amber"  # the AMB8465 is commissioned with RSSI output on
        self._rng = random.Random(f"stick {seed} {name}")
        self._stalled = False
        self._host_open = False
        self._master: int | None = None
        self._port: str | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._parser: imst.HciParser | amber.AmberParser = (
            imst.HciParser() if stick == "imst" else amber.AmberParser(rssi=False)
        )
        self.host_opened = threading.Event()

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def port(self) -> str:
        if self._port is None:
            raise RuntimeError("stick not started")
        return self._port

    def start(self) -> RadioStick:
        if self._thread is not None:
            raise RuntimeError("stick already started")
        master, slave = os.openpty()
        tty.setraw(slave)
        self._port = os.ttyname(slave)
        # Unlike the wired segment, the stick does not keep the slave open: it must notice when the
        # collector closes the port (reads on the master fail with EIO while nobody has it open).
        os.close(slave)
        self._master = master
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"radio-stick {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._write_lock:
            for fd in (self._master, self._wake_r, self._wake_w):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._wake_r = self._wake_w = None

    def __enter__(self) -> RadioStick:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------------

    def stall(self) -> None:
        """Firmware hang: no answers, no telegrams, until the host closes and reopens the port."""
        self._stalled = True

    @property
    def stalled(self) -> bool:
        return self._stalled

    def _power_up(self) -> None:
        self.link_mode = DEFAULT_MODE
        self.rssi_attached = self.stick == "amber"

    # -- the host side -----------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._master is not None
        assert self._wake_r is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.2)
            if self._wake_r in ready or self._stop.is_set():
                return
            if self._master not in ready:
                self._set_host_open(True)  # a closed slave makes the master readable (EIO) at once
                continue
            try:
                data = os.read(self._master, 512)
            except OSError:
                self._set_host_open(False)
                if self._stop.wait(0.05):
                    return
                continue
            self._set_host_open(True)
            if self._stalled or not data:
                continue
            for frame in self._parser.feed(data):
                self._command(frame)

    def _set_host_open(self, is_open: bool) -> None:
        if is_open == self._host_open:
            return
        self._host_open = is_open
        if is_open:
            self.host_opened.set()
        else:
            self.host_opened.clear()
            if self._stalled:
                self._stalled = False
                self.stats.restarts += 1
                self._power_up()

    def _command(self, frame: imst.HciFrame | amber.AmberFrame) -> None:
        self.stats.commands += 1
        answer = self._imst_answer(frame) if isinstance(frame, imst.HciFrame) else self._amber_answer(frame)
        if answer is not None:
            self.stats.answers += 1
            self._write(answer)

    def _imst_answer(self, frame: imst.HciFrame) -> bytes | None:
        if frame.endpoint != imst.DEVMGMT:
            return None
        msg = frame.msg_id
        if msg == imst.PING_REQ:
            return imst.encode_hci(imst.DEVMGMT, imst.PING_RSP)
        if msg == imst.SET_CONFIG_REQ:
            ok = self._imst_set_config(frame.payload)
            return imst.encode_hci(imst.DEVMGMT, imst.SET_CONFIG_RSP, b"\x00" if ok else b"\x01")
        if msg == IMST_GET_CONFIG_REQ:
            code = imst.LINK_MODE_CODES.get(self.link_mode, 0)
            payload = bytes((0x03, 0x00, code, 0x30, int(self.rssi_attached), 0x00))
            return imst.encode_hci(imst.DEVMGMT, IMST_GET_CONFIG_RSP, payload)
        if msg == imst.RESET_REQ:
            self.stats.resets += 1
            self._power_up()
            return imst.encode_hci(imst.DEVMGMT, imst.RESET_RSP, b"\x00")
        if msg == imst.GET_DEVICEINFO_REQ:
            # module type 33h (iM871A), device mode other, firmware 1.6, HCI 1, device id
            payload = bytes((0x33, 0x00, 0x16, 0x01)) + self.serial_number.to_bytes(4, "little")
            return imst.encode_hci(imst.DEVMGMT, imst.GET_DEVICEINFO_RSP, payload)
        return None

    def _imst_set_config(self, payload: bytes) -> bool:
        """NVM flag, IIFlag1 and its fields (bit order), IIFlag2 and its fields (WiMOD HCI)."""
        if len(payload) < 2:
            return False
        pos = 2
        flags1 = payload[1]
        mode = None
        for bit, size in enumerate((1, 1, 1, 2, 4, 1, 1, 1)):
            if flags1 & (1 << bit):
                if bit == 1 and pos < len(payload):
                    mode = payload[pos]
                pos += size
        rssi = None
        if pos < len(payload):
            flags2 = payload[pos]
            pos += 1
            for bit in range(8):
                if flags2 & (1 << bit):
                    if bit == 4 and pos < len(payload):
                        rssi = bool(payload[pos])
                    pos += 1
        if pos > len(payload):
            return False
        if mode is not None:
            names = {code: name for name, code in imst.LINK_MODE_CODES.items()}
            if mode not in names:
                return False
            self.link_mode = names[mode]
            self.stats.modes_set.append(self.link_mode)
        if rssi is not None:
            self.rssi_attached = rssi
        return True

    def _amber_answer(self, frame: amber.AmberFrame) -> bytes | None:
        cmd = frame.command
        if cmd == amber.CMD_SET_MODE_REQ:
            names = {code: name for name, code in amber.LINK_MODE_CODES.items()}
            mode = names.get(frame.payload[0]) if len(frame.payload) == 1 else None
            if mode is not None:
                self.link_mode = mode
                self.stats.modes_set.append(mode)
            return amber.encode_command(cmd | amber.RESPONSE, b"\x00" if mode else b"\x01")
        if cmd == amber.CMD_RESET_REQ:
            self.stats.resets += 1
            self._power_up()
            return amber.encode_command(cmd | amber.RESPONSE, b"\x00")
        if cmd == amber.CMD_SERIALNO_REQ:
            return amber.encode_command(cmd | amber.RESPONSE, self.serial_number.to_bytes(4, "big"))
        if cmd == amber.CMD_GET_REQ and len(frame.payload) == 2:
            offset, count = frame.payload
            data = bytes(1 if offset + i == AMBER_RSSI_ENABLE else 0 for i in range(count))
            return amber.encode_command(cmd | amber.RESPONSE, bytes((offset, count)) + data)
        if cmd == amber.CMD_SET_REQ:
            return amber.encode_command(cmd | amber.RESPONSE, b"\x00")
        return None

    # -- the radio side ----------------------------------------------------------------------------

    def hear(self, telegram: bytes, link_mode: str, rssi_dbm: int) -> bool:
        """A transmission reached the antenna; deliver it when configured for its link mode."""
        if self._stalled:
            self.stats.stalled_drops += 1
            return False
        if link_mode not in HEARS.get(self.link_mode, frozenset()):
            self.stats.not_heard += 1
            return False
        if not self._host_open:
            self.stats.host_closed_drops += 1
            return False
        if self.corrupt_rate and self._rng.random() < self.corrupt_rate:
            telegram = self.corrupt(telegram)
            self.stats.corrupted += 1
        out = b""
        if self.noise_rate and self._rng.random() < self.noise_rate:
            out += bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 6)))
            self.stats.noise_bursts += 1
        out += self.frame(telegram, rssi_dbm)
        self.stats.telegrams += 1
        self._write(out)
        return True

    def frame(self, telegram: bytes, rssi_dbm: int) -> bytes:
        """The serial frame the stick sends for a received telegram (L and CRCs removed)."""
        body = telegram[1:]
        if self.stick == "imst":
            rssi = max(0, min(229, 45 + 2 * (rssi_dbm + 100)))
            control = imst.FLAG_CRC | (imst.FLAG_RSSI if self.rssi_attached else 0) | imst.RADIOLINK
            head = bytes((control, imst.WMBUSMSG_IND, len(body))) + body
            if self.rssi_attached:
                head += bytes((rssi,))
            return bytes((imst.SOF,)) + head + imst.crc16_x25(head).to_bytes(2, "little")
        signed = max(-128, min(127, 2 * (rssi_dbm + 74)))
        payload = body + (bytes((signed & 0xFF,)) if self.rssi_attached else b"")
        return amber.encode_command(amber.CMD_DATA_IND, payload)

    def corrupt(self, telegram: bytes) -> bytes:
        """Damage a telegram so that a collector with the key must reject it (never garbage values)."""
        data = bytearray(telegram)
        if self._rng.random() < 0.5 and len(data) > 40:
            return bytes(data[: len(data) - self._rng.randrange(1, 16)])
        # A bit in the first encrypted block: its plaintext loses the 2F2F check bytes (and in mode 7
        # the MAC fails). A flip further on would pass the mode 5 check with garbled values: real
        # sticks drop such frames by the radio CRC, which this simulated damage stands for.
        start = _encrypted_start(telegram)
        pos = start + self._rng.randrange(min(16, max(1, len(data) - start)))
        data[min(pos, len(data) - 1)] ^= 1 << self._rng.randrange(8)
        return bytes(data)

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            master = self._master
            if master is None:
                return
            view = memoryview(data)
            while view:
                _, writable, _ = select.select([], [master], [], 1.0)
                if not writable:
                    return
                try:
                    written = os.write(master, view)
                except OSError:
                    return
                view = view[written:]


def _encrypted_start(telegram: bytes) -> int:
    """Offset of the first encrypted byte of a simulated telegram (ELL I, AFL, short TPL header)."""
    pos = 11  # L C M M A A A A V T, then the CI field
    if telegram[pos - 1 : pos] == b"\x8c":
        pos += 3
    if telegram[pos - 1 : pos] == b"\x90" and len(telegram) > pos:
        pos += 2 + telegram[pos]
    if telegram[pos - 1 : pos] == b"\x7a" and len(telegram) > pos + 3:
        mode = telegram[pos + 3] & 0x1F
        return pos + 4 + (1 if mode == 7 else 0)
    return min(pos, len(telegram) - 1)


class RadioAir:
    """Radio meters transmitting at their own intervals, heard by every attached stick."""

    def __init__(
        self,
        meters: Iterable[RadioMeter],
        *,
        clock: SimClock | None = None,
        seed: int = 1,
        repeat_rate: float = 0.0,
        spread: float = 0.1,
        start_within_s: float | None = None,
    ) -> None:
        self.meters = list(meters)
        self.clock = clock or SimClock()
        self.repeat_rate = repeat_rate
        self.spread = spread
        self.sticks: list[tuple[RadioStick, dict[int, int]]] = []
        self.transmissions = 0
        self.repeats = 0
        self._rng = random.Random(f"air {seed}")
        self._start_within = start_within_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def attach(self, stick: RadioStick, rssi_offset_db: Sequence[int] | None = None) -> None:
        """``rssi_offset_db`` per meter (same order): how much weaker this stick hears each one."""
        offsets = list(rssi_offset_db) if rssi_offset_db is not None else [0] * len(self.meters)
        self.sticks.append((stick, {id(m): o for m, o in zip(self.meters, offsets, strict=True)}))

    def start(self) -> RadioAir:
        if self._thread is not None:
            raise RuntimeError("air already started")
        now = self.clock.now()
        for m in self.meters:  # registers integrate from the epoch once: do it before the first interval
            m.meter.registers(now)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="radio-air", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RadioAir:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def transmit(self, meter: RadioMeter, *, repeat: bool | None = None) -> bytes:
        """One transmission of ``meter`` now (also what the schedule calls); returns the telegram."""
        with self._lock:
            telegram = meter.telegram(self.clock.now())
            self.transmissions += 1
            copies = 1
            if repeat or (repeat is None and self.repeat_rate and self._rng.random() < self.repeat_rate):
                copies = 2
                self.repeats += 1
            for _ in range(copies):
                for stick, offsets in self.sticks:
                    noise = self._rng.randint(-2, 2)
                    stick.hear(telegram, meter.link_mode, meter.rssi_dbm - offsets.get(id(meter), 0) + noise)
            return telegram

    def _run(self) -> None:
        now = time.monotonic()
        queue: list[tuple[float, int]] = []
        for i, m in enumerate(self.meters):
            first = self._start_within if self._start_within is not None else m.interval_s
            queue.append((now + self._rng.random() * first, i))
        heapq.heapify(queue)
        while queue and not self._stop.is_set():
            due, i = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                if self._stop.wait(min(wait, 0.5)):
                    return
                continue
            heapq.heappop(queue)
            meter = self.meters[i]
            self.transmit(meter)
            jitter = 1.0 + self.spread * (2 * self._rng.random() - 1)
            heapq.heappush(queue, (max(due + meter.interval_s * jitter, time.monotonic()), i))


def make_radio_meters(
    meters: Sequence[Meter],
    keys: dict[int, bytes],
    *,
    seed: int,
    interval_s: float | None = None,
    rssi_range: tuple[int, int] = (-88, -55),
) -> list[RadioMeter]:
    """Radio meters for simulated meters with their keys; RSSI spread deterministically by seed."""
    rng = random.Random(f"rssi {seed}")
    low, high = rssi_range
    return [
        RadioMeter(m, key=keys[m.ident], interval_s=interval_s, rssi_dbm=rng.randint(low, high))
        for m in meters
    ]
