"""Users, password hashes (argon2), short-lived JWT access tokens and property scoping.

Roles: ``admin``, ``staff``, ``technician`` see every property; ``board`` (board or manager) sees
the properties linked in ``user_property``; ``resident`` sees only their own apartment.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from central.db import Database
from central.models import Apartment, AuditLog, Property, User, UserProperty, utcnow

ROLES = ("admin", "staff", "technician", "board", "resident")
GLOBAL_ROLES = frozenset({"admin", "staff", "technician"})
TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name
DEMO_USER = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - the documented demo login, created in demo mode only

_hasher = PasswordHasher()
# Verifying against a dummy hash when the user does not exist keeps the timing the same.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AuthError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """The logged-in user as the API sees it."""

    user_id: int
    username: str
    role: str
    property_ids: frozenset[int]  # meaningful for board
    apartment_id: int | None  # meaningful for resident

    @property
    def sees_all(self) -> bool:
        return self.role in GLOBAL_ROLES

    @property
    def can_edit(self) -> bool:
        return self.role in ("admin", "staff")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(secret: str, username: str, minutes: int) -> str:
    now = utcnow()
    claims = {"sub": username, "iat": now, "exp": now + timedelta(minutes=minutes), "typ": "access"}
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


def token_subject(secret: str, token: str) -> str:
    try:
        claims = jwt.decode(token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    if claims.get("typ") != "access":
        raise AuthError("invalid token: not an access token")
    return str(claims["sub"])


async def authenticate(db: Database, username: str, password: str) -> User | None:
    async with db.sessions() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if user is None or not user.active:
        verify_password(_DUMMY_HASH, password)
        return None
    return user if verify_password(user.password_hash, password) else None


# -- brute-force limits on login -----------------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass(slots=True)
class LoginThrottle:
    """Failed logins counted per username and per client address, in this process.

    The first ``free_*`` failures cost nothing; each further failure locks that username (or address)
    for ``base_s * 2**(n - free)`` seconds, at most ``max_s``. While locked, a login is refused with
    429 *before* the password is checked, so a locked account gives an attacker no oracle. A success
    clears the username's count (not the address's: one good account must not launder an address
    that is guessing others). Counts are forgotten ``forget_s`` after the last failure. This is the
    inner layer; nginx's ``limit_req`` on ``/login`` and ``/api/auth/token`` is the outer one
    (``deploy/nginx``), and several API processes each keep their own counts.
    """

    free_per_user: int = 5
    free_per_address: int = 20
    base_s: float = 1.0
    max_s: float = 900.0
    forget_s: float = 3600.0
    max_entries: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _table: dict[tuple[str, str], _Failures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keys(self, username: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("user", username.casefold()), self.free_per_user)]
        if address:
            keys.append((("address", address), self.free_per_address))
        return keys

    def retry_after(self, username: str, address: str | None) -> float:
        """Seconds until a login for this username from this address may be tried; 0: now."""
        now = self.clock()
        with self._lock:
            waits = [
                entry.locked_until - now
                for key, _free in self._keys(username, address)
                if (entry := self._table.get(key)) is not None
            ]
        return max([0.0, *waits])

    def failed(self, username: str, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            if len(self._table) >= self.max_entries:
                self._prune(now)
            for key, free in self._keys(username, address):
                entry = self._table.get(key)
                if entry is None or now - entry.last > self.forget_s:
                    entry = self._table[key] = _Failures()
                entry.count += 1
                entry.last = now
                if entry.count > free:
                    wait = min(self.max_s, self.base_s * 2 ** min(entry.count - free - 1, 30))
                    entry.locked_until = max(entry.locked_until, now + wait)

    def succeeded(self, username: str, address: str | None) -> None:
        """Undo :meth:`failed` for an attempt that turned out right: the username starts afresh."""
        with self._lock:
            self._table.pop(("user", username.casefold()), None)
            entry = self._table.get(("address", address)) if address else None
            if entry is not None and entry.count > 0:
                entry.count -= 1
                if entry.count <= self.free_per_address:
                    entry.locked_until = 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._table.items() if now - e.last > self.forget_s]:
            del self._table[key]
        while len(self._table) >= self.max_entries:  # still full: drop the oldest
            del self._table[min(self._table, key=lambda k: self._table[k].last)]


class LoginThrottledError(AuthError):
    def __init__(self, retry_after_s: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many failed logins; try again in {self.retry_after} s")


def login_throttle(extras: MutableMapping[str, Any]) -> LoginThrottle:
    """The process's throttle, kept in the central state's ``extras``."""
    throttle = extras.get("login_throttle")
    if not isinstance(throttle, LoginThrottle):
        throttle = extras["login_throttle"] = LoginThrottle()
    return throttle


async def authenticate_throttled(
    db: Database, throttle: LoginThrottle, username: str, password: str, address: str | None
) -> User | None:
    """:func:`authenticate` behind the throttle: raises :class:`LoginThrottledError` while locked."""
    wait = throttle.retry_after(username, address)
    if wait > 0:
        raise LoginThrottledError(wait)
    # Counted as failed before the (slow, awaited) password check, so that parallel guesses see
    # each other; a right password undoes it.
    throttle.failed(username, address)
    user = await authenticate(db, username, password)
    if user is not None:
        throttle.succeeded(username, address)
    return user


async def principal_for(db: Database, username: str) -> Principal | None:
    async with db.sessions() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None or not user.active:
            return None
        props: frozenset[int] = frozenset()
        if user.role == "board":
            rows = await session.execute(
                select(UserProperty.property_id).where(UserProperty.user_id == user.id)
            )
            props = frozenset(rows.scalars())
        elif user.role == "resident" and user.apartment_id is not None:
            apartment = await session.get(Apartment, user.apartment_id)
            props = frozenset({apartment.property_id}) if apartment else frozenset()
        return Principal(user.id, user.username, user.role, props, user.apartment_id)


async def create_user(
    db: Database,
    username: str,
    password: str,
    role: str,
    *,
    properties: list[str] | None = None,
    apartment: str | None = None,
    actor: str | None = None,
    replace: bool = False,
) -> User:
    """Create (or with ``replace`` update) a user; properties by key, apartment by object number."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    if not username or len(username) > 64:
        raise ValueError("username: 1-64 characters")
    if len(password) < 4:
        raise ValueError("password: at least 4 characters")
    async with db.sessions.begin() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is not None and not replace:
            raise ValueError(f"username: {username!r} exists already")
        apartment_id = None
        if apartment is not None:
            query = select(Apartment).where(Apartment.object_number == apartment)
            if properties:
                query = query.join(Property, Apartment.property_id == Property.id).where(
                    Property.key.in_(properties)
                )
            rows = list((await session.execute(query)).scalars())
            if not rows:
                raise ValueError(f"apartment: no apartment with object number {apartment!r}")
            if len(rows) > 1:
                raise ValueError(f"apartment: {apartment!r} exists in several properties; name the property")
            apartment_id = rows[0].id
        if role == "resident" and apartment_id is None:
            raise ValueError("apartment: a resident needs an apartment")
        if user is None:
            user = User(username=username, created_at=utcnow(), password_hash="", role=role)
            session.add(user)
        user.password_hash = hash_password(password)
        user.role = role
        user.apartment_id = apartment_id
        user.active = True
        await session.flush()
        prop_ids = []
        for key in properties or []:
            prop = (await session.execute(select(Property).where(Property.key == key))).scalar_one_or_none()
            if prop is None:
                raise ValueError(f"properties: unknown property {key!r}")
            prop_ids.append(prop.id)
        existing = set(
            (
                await session.execute(select(UserProperty.property_id).where(UserProperty.user_id == user.id))
            ).scalars()
        )
        for pid in prop_ids:
            if pid not in existing:
                session.add(UserProperty(user_id=user.id, property_id=pid))
        session.add(
            AuditLog(
                at=utcnow(),
                actor=actor,
                action="user.create" if not existing else "user.update",
                entity="user",
                entity_id=username,
                detail=json.dumps({"role": role, "properties": properties or [], "apartment": apartment}),
            )
        )
    return user


async def ensure_demo_user(db: Database) -> None:
    """Demo mode only: user ``demo`` / ``demo`` with role admin."""
    async with db.sessions() as session:
        user = (await session.execute(select(User).where(User.username == DEMO_USER))).scalar_one_or_none()
    if user is not None and user.role == "admin" and verify_password(user.password_hash, DEMO_PASSWORD):
        return
    await create_user(db, DEMO_USER, DEMO_PASSWORD, "admin", actor="demo-mode", replace=True)
