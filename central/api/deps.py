"""Shared state and FastAPI dependencies: the database, the logged-in principal, role checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from central.auth import AuthError, Principal, principal_for, token_subject
from central.config import Settings
from central.db import Database
from central.keys import MeterKeyBox

TOKEN_COOKIE = "imd_token"  # noqa: S105 - the cookie's name, not a secret


@dataclass(slots=True)
class CentralState:
    settings: Settings
    db: Database
    keybox: MeterKeyBox
    token_secret: str
    ingest: Any = None  # MqttIngest when connected to a broker
    processor: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> CentralState:
    return request.app.state.central  # type: ignore[no-any-return]


async def get_session(state: Annotated[CentralState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with state.db.sessions() as session:
        yield session


oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="not logged in or token expired",
    headers={"WWW-Authenticate": "Bearer"},
)


async def principal_from_token(state: CentralState, token: str | None) -> Principal | None:
    if not token:
        return None
    try:
        username = token_subject(state.token_secret, token)
    except AuthError:
        return None
    return await principal_for(state.db, username)


async def current_principal(
    state: Annotated[CentralState, Depends(get_state)], token: Annotated[str | None, Depends(oauth2)]
) -> Principal:
    principal = await principal_from_token(state, token)
    if principal is None:
        raise UNAUTHORIZED
    return principal


def require_roles(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def check(who: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if who.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {who.role} may not do this")
        return who

    return check


StateDep = Annotated[CentralState, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
