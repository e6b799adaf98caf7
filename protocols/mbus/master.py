"""Sans-IO M-Bus master: the state machine of reading one meter (EN 13757-2 / -3).

The machine never touches a port or a clock. It says what to send and how long to listen
(:class:`Send`, :class:`Listen`); the driver reports bytes (:meth:`MeterReadout.feed`) or that the
window closed (:meth:`MeterReadout.timeout`) and gets the next action, until :class:`Done`.

Timing (EN 13757-2): a slave answers between 11 bit times and 330 bit times + 50 ms after the end of
the request. The first-byte window therefore counts the request's own wire time plus that maximum,
so at 2400 baud a silent meter costs about 0.19 s per attempt, never a fixed half second. Once bytes
flow, the window becomes "line idle" (a few character times plus a margin for USB adapters), and an
answer is complete the moment the link parser yields a frame.

Corrupt answers are reported, never swallowed: bytes the parser rejects, or a frame whose user data
does not decode, become a ``failed`` :class:`ReadFrame` with the reason and the raw bytes; a meter
that stays silent through its retry budget gives one ``no_answer`` record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from protocols.errors import ProtocolError
from protocols.mbus.application import Telegram, decode_long_frame
from protocols.mbus.link import (
    ADDRESS_NETWORK_LAYER,
    Frame,
    Garbage,
    LinkParser,
    LongFrame,
    SingleChar,
    req_ud2,
    select_secondary,
    snd_nke,
)
from protocols.messages import FrameStatus

__all__ = [
    "BITS_PER_CHAR",
    "Done",
    "Listen",
    "MeterReadout",
    "ReadFrame",
    "ReadoutResult",
    "Send",
    "Timing",
]

BITS_PER_CHAR: Final = 11  # start, 8 data, even parity, stop
_RSP_UD_MASK: Final = 0xCF  # ignore ACD and DFC
_RSP_UD: Final = 0x08
MAX_PRIMARY_ADDRESS: Final = 250


@dataclass(frozen=True, slots=True)
class Timing:
    """EN 13757-2 answer timing at one baud rate, plus a margin for OS and USB-serial latency."""

    baud: int
    margin_s: float = 0.015
    idle_chars: int = 4

    def wire_time(self, nbytes: int) -> float:
        return nbytes * BITS_PER_CHAR / self.baud

    @property
    def min_answer_delay_s(self) -> float:
        return 11 / self.baud

    @property
    def max_answer_delay_s(self) -> float:
        return 330 / self.baud + 0.050

    def answer_window(self, request_len: int) -> float:
        """From handing the request to the port until the first answer byte must have arrived."""
        return self.wire_time(request_len) + self.max_answer_delay_s + self.margin_s

    def idle_window(self, bytes_missing: int = 0) -> float:
        """After some answer bytes: the rest of the frame plus a short line-idle gap."""
        return self.wire_time(bytes_missing + self.idle_chars) + self.margin_s


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data``, then listen for at most ``timeout_s`` for the first byte of the answer."""

    data: bytes
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Listen:
    """Keep listening; give up ``timeout_s`` after the last byte received."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class ReadFrame:
    """One answer (or the lack of one) from a readout, ready to become a ``FrameMessage``."""

    status: FrameStatus
    raw: bytes = b""
    reason: str | None = None
    telegram: Telegram | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class ReadoutResult:
    address: str
    frames: list[ReadFrame] = field(default_factory=list)
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Every frame exchanged, in order (request bytes, answer bytes): the benchmark's physical minimum.
    exchanged: list[bytes] = field(default_factory=list)

    @property
    def telegrams(self) -> list[Telegram]:
        return [f.telegram for f in self.frames if f.telegram is not None]

    @property
    def ok(self) -> bool:
        return bool(self.frames) and all(f.status is FrameStatus.OK for f in self.frames)

    @property
    def answered(self) -> bool:
        return any(f.status is FrameStatus.OK for f in self.frames)


@dataclass(frozen=True, slots=True)
class Done:
    result: ReadoutResult


Action = Send | Listen | Done

_SND_NKE: Final = "snd_nke"
_SELECT: Final = "select"
_REQ_UD2: Final = "req_ud2"


def _missing_bytes(parser_pending: bytes) -> int:
    """How many bytes the buffered, incomplete frame still needs (best effort)."""
    if not parser_pending:
        return 0
    if parser_pending[0] == 0x68:
        if len(parser_pending) >= 2:
            return max(parser_pending[1] + 6 - len(parser_pending), 0)
        return 5
    if parser_pending[0] == 0x10:
        return max(5 - len(parser_pending), 0)
    return 0


class MeterReadout:
    """Read one meter: [SND_NKE] or [select by secondary], then REQ_UD2 until no more records follow.

    ``address`` is a primary address (0-250, int or decimal string) or a 16-hex secondary address.
    ``retries`` is the number of extra attempts per request after the first.
    """

    def __init__(
        self,
        address: int | str,
        *,
        baud: int = 2400,
        retries: int = 2,
        send_nke: bool = True,
        max_telegrams: int = 16,
        timing: Timing | None = None,
        decode: Callable[[bytes], Telegram] = decode_long_frame,
    ) -> None:
        self.timing = timing or Timing(baud)
        self.retries = retries
        self.max_telegrams = max_telegrams
        self._decode = decode
        self._secondary: str | None = None
        if isinstance(address, str) and len(address.strip()) == 16:
            self._secondary = address.strip().upper()
            self._link_address = ADDRESS_NETWORK_LAYER
            label = self._secondary
        else:
            primary = int(address)
            if not 0 <= primary <= MAX_PRIMARY_ADDRESS:
                raise ValueError(f"primary address must be 0..250, got {primary}")
            self._link_address = primary
            label = str(primary)
        self.result = ReadoutResult(address=label)
        self._parser = LinkParser()
        self._step = _SELECT if self._secondary else (_SND_NKE if send_nke else _REQ_UD2)
        self._attempt = 0
        self._fcb = True  # the first REQ_UD2 after SND_NKE / selection carries FCB = 1
        self._garbage: list[Garbage] = []
        self._rx = bytearray()
        self._corrupt_this_step = False
        self._done: Done | None = None

    # -- the driver's interface -----------------------------------------------------------------

    def start(self) -> Action:
        return self._send()

    def feed(self, data: bytes) -> Action:
        if self._done is not None:
            return self._done
        self._rx += data
        self.result.bytes_received += len(data)
        items = self._parser.feed(data)
        for item in items:
            if isinstance(item, Garbage):
                self._garbage.append(item)
                continue
            if item is not None and self._is_echo(item):
                continue
            action = self._on_frame(item)
            if action is not None:
                return action
        return Listen(self.timing.idle_window(_missing_bytes(self._pending())))

    def timeout(self) -> Action:
        if self._done is not None:
            return self._done
        for item in self._parser.flush():
            if isinstance(item, Garbage):
                self._garbage.append(item)
        if self._garbage:
            raw = b"".join(g.raw for g in self._garbage)
            reasons = "; ".join(dict.fromkeys(g.reason for g in self._garbage))
            self._record(ReadFrame(FrameStatus.FAILED, raw, f"{self._what()}: corrupt answer: {reasons}"))
            self._corrupt_this_step = True
            self._exchanged_rx()
        return self._retry_or_give_up()

    @property
    def done(self) -> bool:
        return self._done is not None

    # -- internals --------------------------------------------------------------------------------

    def _pending(self) -> bytes:
        n = self._parser.pending
        return bytes(self._rx[-n:]) if n else b""

    def _is_echo(self, frame: Frame) -> bool:
        # Some level converters echo the master's own request back; it carries the PRM bit.
        return bool(getattr(frame, "from_master", False))

    def _what(self) -> str:
        if self._step == _REQ_UD2:
            return f"REQ_UD2 telegram {len(self.result.telegrams) + 1}"
        return {"snd_nke": "SND_NKE", "select": "secondary selection"}[self._step]

    def _request(self) -> bytes:
        if self._step == _SND_NKE:
            return snd_nke(self._link_address)
        if self._step == _SELECT:
            assert self._secondary is not None
            return select_secondary(self._secondary)
        return req_ud2(self._link_address, self._fcb)

    def _send(self) -> Send:
        data = self._request()
        self._parser = LinkParser()
        self._garbage = []
        self._rx = bytearray()
        self.result.requests += 1
        self.result.bytes_sent += len(data)
        self.result.exchanged.append(data)
        return Send(data, self.timing.answer_window(len(data)))

    def _exchanged_rx(self) -> None:
        if self._rx:
            self.result.exchanged.append(bytes(self._rx))

    def _record(self, frame: ReadFrame) -> None:
        self.result.frames.append(frame)

    def _finish(self) -> Done:
        self._done = Done(self.result)
        return self._done

    def _retry_or_give_up(self) -> Action:
        self._attempt += 1
        if self._attempt <= self.retries:
            return self._send()
        if not self._corrupt_this_step:
            reason = f"{self._what()}: no answer after {self.retries + 1} attempt(s)"
            self._record(ReadFrame(FrameStatus.NO_ANSWER, b"", reason))
        return self._finish()

    def _advance(self, step: str) -> Send:
        self._exchanged_rx()
        self._step = step
        self._attempt = 0
        self._corrupt_this_step = False
        return self._send()

    def _on_frame(self, frame: Frame) -> Action | None:
        if self._step in (_SND_NKE, _SELECT):
            if isinstance(frame, SingleChar):
                return self._advance(_REQ_UD2)
            return None  # not the acknowledge we wait for; the timeout decides
        if not isinstance(frame, LongFrame):
            return None
        if (frame.control & _RSP_UD_MASK) != _RSP_UD:
            return None
        if self._secondary is None and frame.address != self._link_address:
            self._garbage.append(Garbage(frame.raw, f"answer from address {frame.address}, expected "
                                                    f"{self._link_address}"))
            return None
        self._exchanged_rx()
        self._rx = bytearray()
        try:
            telegram = self._decode(frame.raw)
        except ProtocolError as exc:
            self._record(ReadFrame(FrameStatus.FAILED, frame.raw, f"{self._what()} does not decode: {exc}"))
            # Intact checksum, undecodable content: asking again yields the same bytes.
            return self._finish()
        self._record(ReadFrame(FrameStatus.OK, frame.raw, None, telegram))
        if telegram.more_records_follow and len(self.result.telegrams) < self.max_telegrams:
            self._fcb = not self._fcb
            self._attempt = 0
            self._corrupt_this_step = False
            return self._send()
        return self._finish()
