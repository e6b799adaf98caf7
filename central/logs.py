"""Logging set-up for ``imd central serve``: text (default) or one JSON object per line.

``--log-format json`` (or ``IMD_LOG_FORMAT=json``) writes ``{"ts", "level", "logger", "msg", ...}``
per record, with the structured extras a record carries (the HTTP line's method, route, status and
ms) and the traceback as one string. Both formats pass every message through :func:`redact`:
nothing in central logs a secret on purpose, and a bearer token, an API token (JWT), a password
field or the password in a broker URL that slips into a message is masked anyway.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
ENV = "IMD_LOG_FORMAT"
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_FIELD = re.compile(
    r"""(?i)\b(password|passwd|secret|token|key)(["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&}]+)"""
)

# attributes every LogRecord has: whatever else a record carries came in through ``extra=``
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}

_active = "text"


def redact(text: str) -> str:
    text = _JWT.sub("<token>", text)
    text = _BEARER.sub(r"\1<token>", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _FIELD.sub(r"\1\2***", text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included, newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value if isinstance(value, int | float | bool | None) else redact(str(value))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def resolve(fmt: str | None) -> str:
    """The format from the flag, else ``IMD_LOG_FORMAT``, else text; ValueError for anything else."""
    chosen = (fmt or os.environ.get(ENV) or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: choose one of {', '.join(FORMATS)}")
    return chosen


def configure(level: int, fmt: str | None = None) -> str:
    """Set up the root logger for this process; returns the format in use."""
    global _active  # noqa: PLW0603 - one logging set-up per process, like logging itself
    _active = resolve(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if _active == "json" else RedactingFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return _active


def uvicorn_log_config() -> dict[str, Any] | None:
    """What to hand uvicorn: None under JSON, so its loggers go through our root handler."""
    if _active == "json":
        return None
    import uvicorn.config

    return uvicorn.config.LOGGING_CONFIG
