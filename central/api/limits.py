"""Request body limits: 413 with the reason before a large body is read into memory.

Imports (CSV registers, tenancy registers) may be up to 10 MiB, every other request body (JSON,
forms) 1 MiB - a supplier invoice or a collector registration is a few kilobytes. A declared
``Content-Length`` over the limit is refused without reading a byte; a chunked body is counted as
it arrives and refused at the first chunk past the limit. nginx allows 20 MiB in front of this
(deploy/central/nginx-imd.conf), so the reason a client sees is central's.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse

MiB = 1024 * 1024
IMPORT_LIMIT = 10 * MiB
DEFAULT_LIMIT = 1 * MiB
IMPORT_PATHS = re.compile(
    r"^/api/(properties/[^/]+/imports/[^/]+|billing/properties/[^/]+/tenancies/import)$"
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


def limit_for(path: str) -> tuple[int, str]:
    if IMPORT_PATHS.match(path):
        return IMPORT_LIMIT, "imports"
    return DEFAULT_LIMIT, "request bodies"


def _reason(limit: int, what: str, size: int | None) -> str:
    got = f" (this one: {size:,} bytes)" if size is not None else ""
    return f"request body too large: {what} may be at most {limit // MiB} MiB{got}"


class BodyLimitMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse(
                {"detail": _reason(limit, what, declared)}, status_code=status.HTTP_413_CONTENT_TOO_LARGE
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # an HTTPException: FastAPI's body reading and the endpoints let it through,
                    # and the exception handler answers it as JSON with the reason
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=_reason(limit, what, None))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
