"""Serialisation of billing values: plain JSON-able data, canonical bytes and a digest.

Decimals become strings (never floats, exponent kept: "12.50"), dates and datetimes ISO 8601,
enums their value, dataclasses dicts of their fields in declaration order, tuples lists. The
canonical JSON (sorted keys, no spaces, UTF-8) of a run's inputs is what ``input_digest`` hashes,
so the adapter can store it beside the run and show that a re-run saw the same inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from json.encoder import encode_basestring as _quote
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
    """``json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    as UTF-8, byte for byte, but written directly: the input digest of a large property is on the
    run's hot path, and building the intermediate dicts cost a quarter of the run."""
    return _encode(value).encode()


# type -> function writing a value of exactly that type as canonical JSON text
_Encoder = Callable[[Any], str]
_ENCODERS: dict[type, _Encoder] = {}


def _encode(value: Any) -> str:
    enc = _ENCODERS.get(type(value))
    if enc is None:
        enc = _ENCODERS[type(value)] = _encoder_for(type(value), value)
    return enc(value)


def _encode_seq(v: list[Any] | tuple[Any, ...]) -> str:
    # Sequences are mostly of one type (readings, points): look its encoder up once.
    if not v:
        return "[]"
    first = type(v[0])
    enc = _ENCODERS.get(first)
    if enc is None:
        enc = _ENCODERS[first] = _encoder_for(first, v[0])
    return "[" + ",".join([enc(x) if type(x) is first else _encode(x) for x in v]) + "]"


# ``_datetime_json``'s parts: hours and minutes, seconds; days and UTC offsets as they come.
_CLOCK_HM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_CLOCK_S = [f"{sec:02d}" for sec in range(60)]
_DAY_JSON: dict[int, str] = {}  # proleptic ordinal -> '"YYYY-MM-DDT'
_OFFSET_JSON: dict[timedelta | None, str] = {}  # utcoffset() -> '+HH:MM"' ('"' when naive)


def _datetime_json(v: datetime) -> str:
    """``'"' + v.isoformat() + '"'`` for a ``datetime`` (not a subclass), the same text from cached
    parts: ``isoformat`` prints every field anew through C's printf, about 11,000 instructions, the
    largest single cost of hashing a reading; this is about 6,000 (``utcoffset`` is a third of it)."""
    offset = v.utcoffset()
    tail = _OFFSET_JSON.get(offset)
    if tail is None:
        # isoformat's own offset text (sign, hours, minutes; seconds and microseconds when present)
        tail = '"' if offset is None else datetime(2000, 1, 1, tzinfo=timezone(offset)).isoformat()[19:] + '"'
        _OFFSET_JSON[offset] = tail
    ordinal = v.toordinal()
    day = _DAY_JSON.get(ordinal)
    if day is None:
        day = _DAY_JSON[ordinal] = f'"{v.year:04d}-{v.month:02d}-{v.day:02d}T'
    us = v.microsecond
    return f"{day}{_CLOCK_HM[v.hour * 60 + v.minute]}{_CLOCK_S[v.second]}{f'.{us:06d}' if us else ''}{tail}"


def _encode_dict(v: dict[Any, Any]) -> str:
    items = sorted(((str(k), x) for k, x in v.items()), key=lambda kx: kx[0])
    return "{" + ",".join([_quote(k) + ":" + _encode(x) for k, x in items]) + "}"


def _field_code(name: str, sample: Any, scope: dict[str, Any]) -> str:
    """The expression writing field ``name`` of ``v``: a first branch for the type the field had in
    the first value seen (one type test on the hot path), then ``e`` - the general encoder, which
    writes every type exactly as that branch would - for anything else."""
    x = f"(x := v.{name})"
    t = type(getattr(sample, name)) if sample is not None else None
    if t is str:
        return f"(q(x) if type({x}) is str else e(x))"
    if t is Decimal:
        # str() when it has no exponent (the same text as format 'f', see money.fmt), else 'f'.
        return (
            f"('\"' + (y if 'E' not in (y := x.__str__()) and 'e' not in y else x.__format__('f')) + '\"'"
            f" if type({x}) is D else e(x))"
        )
    if t is datetime:
        return f"(dt(x) if type({x}) is DT else e(x))"
    if t is date:
        return f"('\"' + x.isoformat() + '\"' if type({x}) is DA else e(x))"
    if t is type(None):
        return f"('null' if {x} is None else e(x))"
    if t is tuple:
        return f"(s(x) if type({x}) is tuple else e(x))"
    if t is not None and issubclass(t, Enum):
        # Enum members are singletons: their text looked up by identity-hash, no call.
        table = f"E{len(scope)}"
        scope[table] = {member: _encode(member.value) for member in t}
        scope[table + "t"] = t
        return f"({table}[x] if type({x}) is {table}t else e(x))"
    return f"e({x})"


def _dataclass_encoder(cls: type, sample: Any = None) -> _Encoder:
    """An encoder written for ``cls``'s fields (sorted, as sort_keys would) as one expression: a run
    hashes every reading, so each field costs one type test for its usual type (``_field_code``)."""
    scope: dict[str, Any] = {
        "q": _quote, "D": Decimal, "DT": datetime, "DA": date, "e": _encode, "s": _encode_seq,
        "dt": _datetime_json,
    }  # fmt: skip
    names = sorted(_field_names(cls))
    if not names:
        return lambda v: "{}"
    # Each field's text into a local, then one f-string of them all: a single string built (no
    # per-field concatenation, no %-format parsed per object). Field names are identifiers, so
    # their JSON text holds no quote, backslash or brace to escape in the f-string.
    steps = "".join(f"    x{i} = {_field_code(name, sample, scope)}\n" for i, name in enumerate(names))
    body = ",".join(f"{_quote(name)}:{{x{i}}}" for i, name in enumerate(names))
    exec(f"def enc(v):\n{steps}    return f'{{{{{body}}}}}'\n", scope)  # noqa: S102 - our own code from field names
    enc: _Encoder = scope["enc"]
    return enc


def _encoder_for(cls: type, sample: Any = None) -> _Encoder:
    if cls is bool:
        return lambda v: "true" if v else "false"
    if cls is type(None):
        return lambda v: "null"
    if issubclass(cls, Enum):
        texts = {member: _encode(member.value) for member in cls}
        return texts.__getitem__
    if cls is str:
        return _quote
    if cls is int:
        return int.__repr__
    if issubclass(cls, Decimal):
        return lambda v: _quote(f"{v:f}")
    if cls is datetime:
        return _datetime_json
    if issubclass(cls, date):  # a datetime subclass too
        return lambda v: _quote(v.isoformat())
    if dataclasses.is_dataclass(cls):
        return _dataclass_encoder(cls, sample)
    if issubclass(cls, list | tuple):
        return _encode_seq
    if issubclass(cls, dict):
        return _encode_dict
    if issubclass(cls, str):
        return lambda v: _quote(str(v))
    if issubclass(cls, int):
        return lambda v: int.__repr__(int(v))
    raise TypeError(f"cannot serialise {cls.__name__}")


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


_HINTS: dict[type, dict[str, Any]] = {}


def from_jsonable(cls: Any, data: Any) -> Any:
    """The inverse of ``to_jsonable`` for the billing dataclasses: rebuilds a value of type ``cls``
    (a dataclass, enum, Decimal, date, datetime, ``X | None``, ``tuple[X, ...]``, fixed tuples) from
    its JSON-able form, so a stored run can be exported later without recomputing it."""
    import types
    import typing

    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if data is None:
            return None
        if len(args) != 1:
            raise TypeError(f"cannot rebuild the union {cls}")
        return from_jsonable(args[0], data)
    if origin is tuple:
        parts = typing.get_args(cls)
        if len(parts) == 2 and parts[1] is Ellipsis:
            return tuple(from_jsonable(parts[0], x) for x in data)
        return tuple(from_jsonable(a, x) for a, x in zip(parts, data, strict=True))
    if cls is Any or cls in (str, int, bool) or data is None:
        return data
    if cls is Decimal:
        return Decimal(data)
    if cls is datetime:
        return datetime.fromisoformat(data)
    if cls is date:
        return date.fromisoformat(data)
    if isinstance(cls, type) and issubclass(cls, Enum):
        return cls(data)
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        hints = _HINTS.get(cls)
        if hints is None:
            hints = _HINTS[cls] = typing.get_type_hints(cls)
        return cls(**{
            f.name: from_jsonable(hints[f.name], data[f.name])
            for f in dataclasses.fields(cls)
            if f.init and f.name in data
        })  # fmt: skip
    raise TypeError(f"cannot rebuild {cls!r}")


__all__ += ["from_jsonable"]
