"""A virtual wired M-Bus segment on a pseudo-terminal.

The collector opens :attr:`MbusSegment.port` (``/dev/pts/N``) with pyserial exactly as it opens a
USB level converter. The segment works in bytes: a pty has no baud rate, parity or framing, so the
parity a master configures (8E1) is accepted and ignored, and a bad-parity byte cannot be produced;
everything else on the line is bytes (checksum errors, noise, collisions). In timed mode the segment
holds the real line speed itself: each byte takes 11 bit times (start, 8 data, parity, stop) at the
chosen baud, on the way in (the answer starts only after the request would have been received) and
on the way out, and meters answer after a realistic delay.

Answers follow EN 13757-2/-3: E5 to SND_NKE and selection, RSP_UD to REQ_UD2 with FCB handling and
multi-telegram readouts, secondary selection with wildcards (address 253), and when several devices
answer at once the master receives what the line would carry: the bitwise AND of their UART bit
streams, garbled because they never start at exactly the same bit.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from hwsim import climate
from hwsim.clock import SimClock
from hwsim.meters import Meter
from protocols.mbus.link import (
    ADDRESS_BROADCAST_NO_REPLY,
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK_LAYER,
    CI_SELECT_SECONDARY,
    FCB_BIT,
    FCV_BIT,
    ControlFrame,
    Garbage,
    LinkParser,
    LongFrame,
    ShortFrame,
)
from protocols.mbus.manufacturers import manufacturer_code

BITS_PER_BYTE = 11  # start + 8 data + even parity + stop
CI_SET_ADDRESS_DATA = 0x51  # SND_UD data send; with record 01 7A nn it sets the primary address
CI_SELECT_SECONDARY_FABRICATION = 0x56
# A repeated FCB means "send that again" only right after the answer; a master that polls every
# minute without SND_NKE and without toggling must still get fresh data, as real meters give it.
REPEAT_WINDOW_S = 2.0


def uart_bits(data: bytes) -> list[int]:
    """The line bits of ``data`` in 8E1 framing: start 0, data LSB first, even parity, stop 1."""
    bits: list[int] = []
    for byte in data:
        data_bits = [(byte >> i) & 1 for i in range(8)]
        bits += [0, *data_bits, sum(data_bits) & 1, 1]
    return bits


def uart_bytes(bits: Sequence[int]) -> bytes:
    """What a UART makes of a bit stream: resynchronise on each start bit, keep framing errors."""
    out = bytearray()
    i = 0
    n = len(bits)
    while i < n:
        if bits[i] == 1:
            i += 1
            continue
        frame = list(bits[i + 1 : i + 9]) + [1] * max(0, 8 - (n - i - 1))
        out.append(sum(bit << k for k, bit in enumerate(frame[:8])))
        i += BITS_PER_BYTE
    return bytes(out)


def superimpose(answers: Sequence[bytes], offsets: Sequence[int]) -> bytes:
    """Several slaves modulating the bus at once: a 0 bit from any of them wins (wired AND)."""
    streams = [[1] * off + uart_bits(a) for a, off in zip(answers, offsets, strict=True)]
    length = max(len(s) for s in streams) + BITS_PER_BYTE
    line = [1] * length
    for stream in streams:
        for i, bit in enumerate(stream):
            line[i] &= bit
    return uart_bytes(line)


def secondary_matches(mask: bytes, ident: int, manufacturer: int, version: int, device_type: int) -> bool:
    """Secondary address selection: ``F`` nibbles in the id and ``FF``/``FFFF`` bytes are wildcards."""
    if len(mask) != 8:
        return False
    id_digits = mask[0:4][::-1].hex().upper()
    want = f"{ident:08d}"
    if any(m not in ("F", w) for m, w in zip(id_digits, want, strict=True)):
        return False
    man = int.from_bytes(mask[4:6], "little")
    if man not in (65535, manufacturer):
        return False
    if mask[6] != 0xFF and mask[6] != version:
        return False
    return not (mask[7] != 0xFF and mask[7] != device_type)


@dataclass
class SegmentStats:
    requests: int = 0
    answers: int = 0
    collisions: int = 0
    ignored: int = 0  # garbage and frames with bad checksums: a real meter stays silent
    bytes_out: int = 0


class MbusSegment:
    """Up to 250 meters on one virtual wire, served on a pseudo-terminal from a background thread."""

    def __init__(
        self,
        meters: Iterable[Meter],
        *,
        baud: int = 2400,
        echo: bool = False,
        timed: bool = False,
        clock: SimClock | None = None,
        answer_delay_ms: tuple[float, float] = (15.0, 45.0),
    ) -> None:
        self.meters = list(meters)
        self.baud = baud
        self.echo = echo
        self.timed = timed
        self.clock = clock or SimClock()
        self.answer_delay_ms = answer_delay_ms
        self.stats = SegmentStats()
        self._master: int | None = None
        self._slave: int | None = None
        self._port: str | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._stop = threading.Event()
        self._parser = LinkParser()
        self._frame_started: float | None = None
        self._last_answer_at: dict[int, float] = {}

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def port(self) -> str:
        if self._port is None:
            raise RuntimeError("segment not started")
        return self._port

    @property
    def byte_time(self) -> float:
        return BITS_PER_BYTE / self.baud

    def start(self) -> MbusSegment:
        if self._thread is not None:
            raise RuntimeError("segment already started")
        # Registers integrate from the epoch once per meter (tens of ms each); do it before the
        # first request so the first answer comes within a meter's answer window.
        now = self.clock.now()
        for meter in self.meters:
            meter.rsp_ud(now, meter.primary_address)
        master, slave = os.openpty()
        # Raw on the slave side so the line discipline never edits M-Bus bytes (no echo, no CR/LF
        # mapping, no ^C); the simulator keeps the slave open so the master never sees a hangup when
        # the collector closes and reopens the port.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self._port = os.ttyname(slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"mbus-segment {self._port}", daemon=True)
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
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = None

    def __enter__(self) -> MbusSegment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._master is not None
        assert self._wake_r is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.5)
            if self._wake_r in ready or self._stop.is_set():
                return
            if self._master not in ready:
                if self._parser.pending:
                    # a partial frame that never completed: a real slave's receiver times out
                    self._count_garbage(self._parser.flush())
                    self._frame_started = None
                continue
            try:
                data = os.read(self._master, 512)
            except OSError:
                if self._stop.wait(0.05):
                    return
                continue
            if not data:
                continue
            now = time.monotonic()
            if self._frame_started is None:
                self._frame_started = now
            frames = self._parser.feed(data)
            for item in frames:
                if isinstance(item, Garbage):
                    self.stats.ignored += 1
                    continue
                if self.echo:
                    self._write(item.raw, paced=False)
                received_at = self._frame_started + len(item.raw) * self.byte_time
                self._handle(item, received_at)
            if not self._parser.pending:
                self._frame_started = None

    def _count_garbage(self, items: Sequence[object]) -> None:
        self.stats.ignored += sum(1 for it in items if isinstance(it, Garbage))

    def _now(self) -> datetime:
        return self.clock.now()

    def _addressed(self, address: int) -> list[Meter]:
        at = self._now()
        if address == ADDRESS_NETWORK_LAYER:
            hits = [m for m in self.meters if m.selected]
        elif address == ADDRESS_BROADCAST_REPLY:
            hits = list(self.meters)
        else:
            hits = [m for m in self.meters if m.primary_address == address]
        return [m for m in hits if not (m.faults and m.faults.silent(m, at))]

    def _handle(self, frame: object, received_at: float) -> None:
        self.stats.requests += 1
        if isinstance(frame, ShortFrame) and frame.from_master:
            function = frame.control & 0x4F
            if function == 0x40:  # SND_NKE
                self._snd_nke(frame.address, received_at)
            elif function == 0x4B:  # REQ_UD2
                self._req_ud2(frame, received_at)
            elif function == 0x4A:  # REQ_UD1: no alarm data; meters answer E5 like most do
                self._answer(self._addressed(frame.address), lambda m: b"\xe5", received_at, frame.address)
        elif (
            isinstance(frame, (ControlFrame, LongFrame))
            and frame.from_master
            and (frame.control & 0x4F) == 0x43
        ):
            data = frame.data if isinstance(frame, LongFrame) else b""
            self._snd_ud(frame.address, frame.ci, data, received_at)

    def _snd_nke(self, address: int, received_at: float) -> None:
        if address == ADDRESS_BROADCAST_NO_REPLY:
            for m in self.meters:
                m.reset_link()
                m.selected = False
            return
        targets = self._addressed(address)
        for m in targets:
            m.reset_link()
        if address == ADDRESS_NETWORK_LAYER:
            for m in self.meters:
                m.selected = False
        self._answer(targets, lambda m: b"\xe5", received_at, address)

    def _req_ud2(self, frame: ShortFrame, received_at: float) -> None:
        if frame.address == ADDRESS_BROADCAST_NO_REPLY:
            return
        fcb = bool(frame.control & FCB_BIT)
        fcv = bool(frame.control & FCV_BIT)
        at = self._now()
        now = time.monotonic()

        def build(m: Meter) -> bytes:
            last = self._last_answer_at.get(id(m))
            if last is not None and now - last > REPEAT_WINDOW_S:
                m.reset_link()
            self._last_answer_at[id(m)] = now
            # selected by secondary address or not, a meter answers with its own primary address
            return m.answer_req_ud2(at, m.primary_address, fcb, fcv)

        self._answer(self._addressed(frame.address), build, received_at, frame.address)

    def _snd_ud(self, address: int, ci: int, data: bytes, received_at: float) -> None:
        at = self._now()
        if address == ADDRESS_NETWORK_LAYER and ci == CI_SELECT_SECONDARY:
            chosen = []
            for m in self.meters:
                ident = m.identity(at)
                m.selected = secondary_matches(
                    data, ident.ident, manufacturer_code(ident.manufacturer), ident.version, ident.device_type
                )
                if m.selected and not (m.faults and m.faults.silent(m, at)):
                    chosen.append(m)
                    m.reset_link()
            self._answer(chosen, lambda m: b"\xe5", received_at, address)
            return
        targets = self._addressed(address)
        if address == ADDRESS_BROADCAST_NO_REPLY:
            return
        if ci == CI_SET_ADDRESS_DATA and len(data) == 3 and data[0] == 0x01 and data[1] == 0x7A:
            for m in targets:
                m.primary_address = data[2]
        self._answer(targets, lambda m: b"\xe5", received_at, address)

    def _answer(self, meters: list[Meter], build: object, received_at: float, address: int) -> None:
        if not meters:
            return
        at = self._now()
        answers = []
        for m in meters:
            frame = build(m)  # type: ignore[operator]
            if m.faults and len(frame) > 1 and m.faults.strikes(m, at, "checksum"):
                frame = (
                    frame[:-2]
                    + bytes(((frame[-2] + 1 + m.faults.random_bytes(1)[0] % 254) & 0xFF,))
                    + frame[-1:]
                )
            if m.faults and m.faults.strikes(m, at, "noise"):
                frame = m.faults.random_bytes(3) + frame + m.faults.random_bytes(2)
            answers.append((m, frame))
        if len(answers) == 1 and answers[0][0].faults is not None:
            m, frame = answers[0]
            if m.faults is not None and m.faults.strikes(m, at, "collision"):
                answers.append((m, m.faults.random_bytes(len(frame))))
        if len(answers) == 1:
            wire = answers[0][1]
            delay = self._delay_s(answers[0][0])
        else:
            self.stats.collisions += 1
            # slaves never start on the same bit: stagger them by a few bit times
            offsets = [
                int(climate.unit(m.key, self.stats.requests, i) * 6) + 3 * i
                for i, (m, _f) in enumerate(answers)
            ]
            wire = superimpose([f for _m, f in answers], offsets)
            delay = min(self._delay_s(m) for m, _f in answers)
        self.stats.answers += 1
        if self.timed:
            wait = received_at + delay - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
        self._write(wire, paced=self.timed)

    def _delay_s(self, meter: Meter) -> float:
        low, high = self.answer_delay_ms
        return (low + (high - low) * climate.unit(meter.key, 90)) / 1000

    def _write(self, data: bytes, *, paced: bool) -> None:
        master = self._master
        if master is None:
            return
        if not paced:
            self._write_all(master, data)
            return
        # Hold the line speed against an absolute schedule so sleep overshoot does not accumulate;
        # a byte is released when its stop bit would have ended, as a receiving UART delivers it.
        start = time.monotonic()
        chunk = max(1, int(0.002 / self.byte_time))  # byte by byte unless bytes are shorter than 2 ms
        for i in range(0, len(data), chunk):
            part = data[i : i + chunk]
            due = start + (i + len(part)) * self.byte_time
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            self._write_all(master, part)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [fd], [], 1.0)
            if not writable:
                return  # nobody reads the port: drop like a line without a master
            written = os.write(fd, view)
            self.stats.bytes_out += written
            view = view[written:]
