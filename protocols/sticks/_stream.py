"""The receive buffer both stick framings share: garbage before a start byte is dropped and counted."""

from __future__ import annotations


class StartByteBuffer:
    def __init__(self, start: int) -> None:
        self._buffer = bytearray()
        self._start = start
        self.dropped_bytes = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _align(self) -> bool:
        """Drop everything before the next start byte; False when no start byte is buffered."""
        buf = self._buffer
        start = buf.find(self._start)
        if start < 0:
            self.dropped_bytes += len(buf)
            buf.clear()
            return False
        if start:
            self.dropped_bytes += start
            del buf[:start]
        return True
