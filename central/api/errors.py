"""Client values the database cannot hold are the client's error (422 with the reason), not a 500.

Found by schemathesis against a running central: an id such as ``2243980218180024364171264`` in a
path or query (SQLite's driver raises OverflowError past 64 bits; PostgreSQL a data exception past
the column's range) and JSON text with a lone surrogate (``"\\udb53"``), which no UTF-8 database
accepts. Validating every id parameter in every route would repeat one rule in sixty places; the
database is where the range is known, so its refusal is translated here, once.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

log = logging.getLogger(__name__)


def _refused(request: Request, reason: str) -> JSONResponse:
    route = getattr(request.scope.get("route"), "path", "unmatched")
    log.warning("refused %s %s: %s", request.method, route, reason)
    return JSONResponse({"detail": reason}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    return _refused(request, "a value is out of range or not valid text for the database")


async def _overflow(request: Request, exc: Exception) -> JSONResponse:
    if "SQLite INTEGER" not in str(exc):  # any other overflow is a bug of ours: keep it a 500
        raise exc
    return _refused(request, "a number is out of range (at most 64-bit integers)")


async def _unicode(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, UnicodeEncodeError) or "surrogate" not in str(exc):
        raise exc
    return _refused(request, "text contains a lone UTF-16 surrogate (not valid Unicode)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(OverflowError, _overflow)
    app.add_exception_handler(UnicodeEncodeError, _unicode)
