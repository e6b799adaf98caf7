"""Simulated time: a clock that can run faster than real time, or be stepped by hand in tests."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated wall clock: ``now() = start + (real seconds since creation) * speed``.

    ``speed=60`` runs an hour per real minute; ``speed=0`` freezes time so tests move it with
    :meth:`advance` / :meth:`set`. Always timezone-aware (UTC).
    """

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._lock = threading.Lock()
        self._start = start
        self._t0 = time.monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._t0) * self._speed
            return self._start + timedelta(seconds=elapsed)

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        with self._lock:
            self._start = at
            self._t0 = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    def real_seconds(self, simulated: timedelta) -> float:
        """Real seconds until ``simulated`` has passed (inf when frozen)."""
        if self._speed == 0:
            return float("inf")
        return simulated.total_seconds() / self._speed
