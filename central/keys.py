"""Secrets kept in files beside (not inside) the database: the meter-key cipher and the token secret.

Meter keys are encrypted at rest with Fernet; the Fernet key lives in a file that is not in the
database, so a copy of the database alone does not reveal meter keys. Neither secret is ever logged.

The meter-key file holds one Fernet key per line: the first encrypts, every line decrypts
(``MultiFernet``). That is what makes rotation safe (``imd central rotate-keys``,
:func:`rotate_meter_keys`): the new key is put first while the old ones stay, every stored key is
re-encrypted in small transactions, and only when every row reads with the new key alone are the
old keys dropped. A crash at any point leaves a file that decrypts every row. Running processes
notice the rewritten file (its inode changes) and reload it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from central.db import Database


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


def write_secret_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (0600) so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named like the file, so that a crash's leftover is excluded from backups with it
    # (deploy/backup/backup.sh excludes meter-keys.fernet*).
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _parse_keys(path: Path, data: bytes) -> list[bytes]:
    keys = [line.strip() for line in data.splitlines() if line.strip() and not line.startswith(b"#")]
    if not keys:
        raise KeyFileError(f"meter key file {path} holds no key")
    for key in keys:
        try:
            Fernet(key)
        except ValueError as exc:
            raise KeyFileError(f"meter key file {path} holds a line that is not a Fernet key") from exc
    return keys


def _read_keys(path: Path) -> list[bytes]:
    return _parse_keys(path, path.read_bytes())


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class MeterKeyBox:
    """Encrypts and decrypts meter keys (32 hex digits) with the Fernet keys from a file."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        _read_or_create(key_file, Fernet.generate_key())
        self._load()

    def _load(self) -> None:
        signature = _signature(self.key_file)
        self._keys = _parse_keys(self.key_file, self.key_file.read_bytes())
        self._fernet = MultiFernet([Fernet(k) for k in self._keys])
        self._primary = Fernet(self._keys[0])
        self._signature = signature

    def _reload_if_changed(self) -> bool:
        try:
            if _signature(self.key_file) == self._signature:
                return False
        except OSError:
            return False  # a file being replaced right now: keep what we have
        self._load()
        return True

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def encrypt(self, key_hex: str) -> bytes:
        # A rotation may have put a new first key in the file: encrypt with that one, never an old one.
        self._reload_if_changed()
        return self._fernet.encrypt(bytes.fromhex(key_hex))

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            if self._reload_if_changed():
                return self.decrypt(token)
            raise KeyFileError("meter key cannot be decrypted with this key file") from None

    def rotate(self, token: bytes) -> bytes:
        """The same meter key, encrypted with the first key of the file."""
        return self._fernet.rotate(token)

    def primary_decrypts(self, token: bytes) -> bool:
        try:
            self._primary.decrypt(token)
        except InvalidToken:
            return False
        return True

    @staticmethod
    def hint(key_hex: str | None) -> str | None:
        """What the API may show of a key: its last four hex digits only."""
        return None if key_hex is None else f"…{key_hex[-4:].upper()}"


def token_secret(path: Path) -> str:
    return _read_or_create(path, secrets.token_urlsafe(48).encode()).decode()


# -- rotation -----------------------------------------------------------------------------------------


class RotationError(RuntimeError):
    pass


@dataclass(slots=True)
class RotationReport:
    key_file: str
    stored_keys: int = 0
    rotated: int = 0
    unreadable: int = 0
    retired_file: str | None = None
    passes: int = 0
    unreadable_ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("unreadable_ids")
        return out


async def _token_rows(db: Database, after: int, batch: int) -> list[tuple[int, bytes]]:
    from sqlalchemy import select

    from central.models import Meter

    async with db.sessions() as session:
        rows = await session.execute(
            select(Meter.id, Meter.key_encrypted)
            .where(Meter.key_encrypted.is_not(None), Meter.id > after)
            .order_by(Meter.id)
            .limit(batch)
        )
        return [(ident, token) for ident, token in rows.all() if token is not None]


async def _rewrite(db: Database, box: MeterKeyBox, rows: Sequence[tuple[int, bytes]]) -> int:
    """Re-encrypt one batch in one transaction; a row changed meanwhile is left for the next pass."""
    from sqlalchemy import update

    from central.models import Meter

    count = 0
    async with db.sessions.begin() as session:
        for ident, token in rows:
            result = await session.execute(
                update(Meter)
                .where(Meter.id == ident, Meter.key_encrypted == token)
                .values(key_encrypted=box.rotate(token))
            )
            count += result.rowcount or 0  # type: ignore[attr-defined]
    return count


async def rotate_meter_keys(
    db: Database,
    key_file: Path,
    *,
    batch: int = 500,
    keep_retired: bool = True,
    after_batch: Callable[[int], Awaitable[None]] | None = None,
) -> RotationReport:
    """Re-encrypt every stored meter key under a new Fernet key; see the module docstring.

    ``after_batch`` (tests) is awaited after each committed batch with the count so far.
    """
    report = RotationReport(str(key_file))
    old_keys = _read_keys(key_file)
    new_key = Fernet.generate_key()
    # Step 1: the new key first, the old ones after it. From here every row reads, whatever happens.
    write_secret_atomically(key_file, b"\n".join([new_key, *old_keys]) + b"\n")
    box = MeterKeyBox(key_file)
    unreadable: set[int] = set()

    # Step 2: every row to the new key, batch by batch; passes repeat until no row is left on an old
    # key (a process that had not yet reloaded the file may have written one meanwhile).
    while True:
        report.passes += 1
        left = 0
        after = 0
        while rows := await _token_rows(db, after, batch):
            after = rows[-1][0]
            todo = []
            for ident, token in rows:
                if box.primary_decrypts(token):
                    continue
                try:
                    box.decrypt(token)
                except KeyFileError:
                    unreadable.add(ident)  # unreadable before we started: not ours to lose
                    continue
                todo.append((ident, token))
            left += len(todo)
            report.rotated += await _rewrite(db, box, todo)
            if after_batch is not None:
                await after_batch(report.rotated)
        if left == 0 or report.passes >= 10:
            break
    if left:
        raise RotationError(f"{left} meter keys kept changing during rotation; run rotate-keys again")

    # Step 3: drop the old keys, keeping them aside for restores of backups taken before today.
    if keep_retired:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        retired = key_file.with_name(f"{key_file.name}.retired-{stamp}")
        write_secret_atomically(retired, b"\n".join(old_keys) + b"\n")
        report.retired_file = str(retired)
    write_secret_atomically(key_file, new_key + b"\n")

    # Step 4: a last look; a row written with an old key in the meantime puts the old keys back.
    final = MeterKeyBox(key_file)
    after = 0
    stored = 0
    stragglers = 0
    while rows := await _token_rows(db, after, batch):
        after = rows[-1][0]
        stored += len(rows)
        stragglers += sum(
            1 for ident, token in rows if ident not in unreadable and not final.primary_decrypts(token)
        )
    if stragglers:
        write_secret_atomically(key_file, b"\n".join([new_key, *old_keys]) + b"\n")
        raise RotationError(
            f"{stragglers} meter keys were written with an old key during rotation; the old keys are "
            "back in the key file (every key reads); run rotate-keys again"
        )
    report.stored_keys = stored
    report.unreadable = len(unreadable)
    report.unreadable_ids = sorted(unreadable)
    return report


__all__ = [
    "KeyFileError",
    "MeterKeyBox",
    "RotationError",
    "RotationReport",
    "rotate_meter_keys",
    "token_secret",
    "write_secret_atomically",
]
