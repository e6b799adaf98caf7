"""Serialisation of billing values: plain JSON-able data, canonical bytes and a digest.

Decimals become strings (never floats, exponent kept: "12.50"), dates and datetimes ISO 8601,
enums their value, dataclasses dicts of their fields in declaration order, tuples lists. The
canonical JSON (sorted keys, no spaces, UTF-8) of a run's inputs is what ``input_digest`` hashes,
so the adapter can store it beside the run and show that a re-run saw the same inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from .money import fmt

__all__ = ["canonical_json", "digest", "to_jsonable"]


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_jsonable(value: Any) -> Any:
    if value is None or type(value) in (str, int, bool):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return fmt(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_jsonable(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"cannot serialise {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
