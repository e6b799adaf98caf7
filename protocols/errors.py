"""The small error tree every decoder in ``protocols`` raises from.

Callers catch :class:`ProtocolError` and get a readable reason; nothing else escapes a decoder.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error a protocol decoder reports about the bytes it was given."""


class FrameError(ProtocolError):
    """The link layer frame is broken: start/stop byte, length, checksum or CRC."""


class DecodeError(ProtocolError):
    """The frame is intact but its application data cannot be decoded."""


class UnsupportedError(DecodeError):
    """The data uses a feature (CI field, data type) this decoder does not implement."""


class SecurityError(DecodeError):
    """Encrypted data could not be opened: key missing or decryption/authentication failed."""


class MessageError(ProtocolError):
    """An edge <-> central message does not match the schema."""
