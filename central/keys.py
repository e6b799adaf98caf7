"""Secrets kept in files beside (not inside) the database: the meter-key cipher and the token secret.

Meter keys are encrypted at rest with Fernet; the Fernet key lives in a file that is not in the
database, so a copy of the database alone does not reveal meter keys. Neither secret is ever logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class KeyFileError(RuntimeError):
    pass


def _read_or_create(path: Path, make: bytes) -> bytes:
    if path.exists():
        data = path.read_bytes().strip()
        if not data:
            raise KeyFileError(f"secret file {path} is empty")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting together must not overwrite each other's fresh secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_or_create(path, make)
    with os.fdopen(fd, "wb") as handle:
        handle.write(make + b"\n")
    return make


class MeterKeyBox:
    """Encrypts and decrypts meter keys (32 hex digits) with a Fernet key from a file."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        try:
            self._fernet = Fernet(_read_or_create(key_file, Fernet.generate_key()))
        except ValueError as exc:
            raise KeyFileError(f"meter key file {key_file} does not hold a Fernet key") from exc

    def encrypt(self, key_hex: str) -> bytes:
        return self._fernet.encrypt(bytes.fromhex(key_hex))

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise KeyFileError("meter key cannot be decrypted with this key file") from exc

    @staticmethod
    def hint(key_hex: str | None) -> str | None:
        """What the API may show of a key: its last four hex digits only."""
        return None if key_hex is None else f"…{key_hex[-4:].upper()}"


def token_secret(path: Path) -> str:
    return _read_or_create(path, secrets.token_urlsafe(48).encode()).decode()
