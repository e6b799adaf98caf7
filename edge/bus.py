"""The serial driver for the sans-IO M-Bus master: pyserial, 8E1, select() with the machine's windows.

Blocking by design (one bus = one half-duplex line, one conversation at a time); the daemon runs it
in a worker thread per bus. Nothing here knows M-Bus rules: :mod:`protocols.mbus.master` and
:mod:`protocols.mbus.search` decide what to send and how long to wait.
"""

from __future__ import annotations

import logging
import os
import select
import termios
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

import serial

from protocols.mbus.link import Garbage, LinkParser, SingleChar, snd_nke
from protocols.mbus.master import Done, Listen, MeterReadout, ReadoutResult, Send, Timing
from protocols.mbus.search import SearchResult, SecondarySearch

log = logging.getLogger(__name__)


class BusError(Exception):
    """The serial port cannot be used (missing, unplugged, permission)."""


class Machine(Protocol):
    def start(self) -> Send | Listen | Done | Any: ...
    def feed(self, data: bytes) -> Send | Listen | Done | Any: ...
    def timeout(self) -> Send | Listen | Done | Any: ...


class SerialBus:
    """One wired M-Bus segment behind a serial port (a level converter or the simulator's pty)."""

    def __init__(
        self,
        port: str,
        baud: int = 2400,
        *,
        retries: int = 2,
        send_nke: bool = True,
        max_telegrams: int = 16,
        margin_s: float = 0.015,
        serial_factory: Callable[..., serial.Serial] = serial.Serial,
    ) -> None:
        self.port = port
        self.baud = baud
        self.retries = retries
        self.send_nke = send_nke
        self.max_telegrams = max_telegrams
        self.timing = Timing(baud, margin_s=margin_s)
        self._factory = serial_factory
        self._ser: serial.Serial | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- port lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        if self._ser is not None:
            return
        try:
            self._ser = self._open(serial.PARITY_EVEN)
        except termios.error as exc:
            # A pseudo-terminal has no parity; some kernels reject PARENB on a pty once it was set
            # and cleared before. Only there fall back to "none": a real UART always gets 8E1.
            if not os.path.realpath(self.port).startswith("/dev/pts/"):
                raise BusError(f"cannot configure {self.port}: {exc}") from exc
            try:
                self._ser = self._open(serial.PARITY_NONE)
            except (serial.SerialException, OSError, ValueError, termios.error) as exc2:
                raise BusError(f"cannot open {self.port}: {exc2}") from exc2
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BusError(f"cannot open {self.port}: {exc}") from exc

    def _open(self, parity: str) -> serial.Serial:
        return self._factory(
            self.port,
            self.baud,
            bytesize=serial.EIGHTBITS,
            parity=parity,
            stopbits=serial.STOPBITS_ONE,
            timeout=0,
            write_timeout=5,
            exclusive=True,
        )

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser = None

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def __enter__(self) -> SerialBus:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- driving a machine ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self._ser is not None
        try:
            # Late answers to an earlier request must not be taken for this one's.
            self._ser.reset_input_buffer()
            self._ser.write(data)
        except (serial.SerialException, OSError, termios.error) as exc:
            # termios.error (tcflush on a vanished device) is not an OSError
            self.close()
            raise BusError(f"{self.port}: write failed: {exc}") from exc
        self.bytes_sent += len(data)

    def _read(self, deadline: float) -> bytes:
        """Bytes available before ``deadline`` (monotonic), or b"" when the window closed."""
        assert self._ser is not None
        fd = self._ser.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b""
            try:
                readable, _, _ = select.select([fd], [], [], remaining)
                if not readable:
                    return b""
                data = os.read(fd, 4096)
            except (OSError, ValueError) as exc:
                self.close()
                raise BusError(f"{self.port}: read failed: {exc}") from exc
            if data:
                self.bytes_received += len(data)
                return data
            # A readable fd that yields nothing: the device went away (USB unplug, pty closed).
            self.close()
            raise BusError(f"{self.port}: device disappeared")

    def drive(self, machine: Machine) -> Any:
        """Run a sans-IO machine to completion and return its ``Done`` payload."""
        self.open()
        action = machine.start()
        deadline = 0.0
        while True:
            if isinstance(action, Send):
                self._write(action.data)
                deadline = time.monotonic() + action.timeout_s
            elif isinstance(action, Listen):
                deadline = time.monotonic() + action.timeout_s
            elif isinstance(action, Done):
                return action.result
            else:  # the search machine's own actions share the same shape
                kind = getattr(action, "kind", None)
                if kind == "done":
                    return action.result
                raise TypeError(f"unknown action {action!r}")
            data = self._read(deadline)
            action = machine.feed(data) if data else machine.timeout()

    # -- operations ----------------------------------------------------------------------------

    def read_meter(self, address: int | str, *, retries: int | None = None) -> ReadoutResult:
        machine = MeterReadout(
            address,
            retries=self.retries if retries is None else retries,
            send_nke=self.send_nke,
            max_telegrams=self.max_telegrams,
            timing=self.timing,
        )
        result: ReadoutResult = self.drive(machine)
        return result

    def ping(self, address: int, attempts: int = 2) -> str:
        """SND_NKE to one primary address: "ack", "collision" (garbled answer) or "none"."""
        self.open()
        for _ in range(attempts):
            request = snd_nke(address)
            self._write(request)
            deadline = time.monotonic() + self.timing.answer_window(len(request))
            parser = LinkParser()
            garbled = False
            while True:
                data = self._read(deadline)
                if not data:
                    garbled = garbled or any(isinstance(i, Garbage) for i in parser.flush())
                    break
                items = parser.feed(data)
                if any(isinstance(i, SingleChar) for i in items):
                    return "ack"
                garbled = garbled or any(isinstance(i, Garbage) for i in items)
                deadline = time.monotonic() + self.timing.idle_window(1)
            if garbled:
                return "collision"
        return "none"

    def primary_scan(self, addresses: Iterable[int] = range(251), attempts: int = 2) -> list[int]:
        """Primary addresses that acknowledge SND_NKE (a garbled answer also means someone is there)."""
        return [a for a in addresses if self.ping(a, attempts) != "none"]

    def secondary_search_result(self) -> SearchResult:
        result: SearchResult = self.drive(SecondarySearch(timing=self.timing))
        return result

    def secondary_search(self) -> list[str]:
        """Every meter's 16-hex secondary address, found by wildcard selection."""
        return self.secondary_search_result().found
