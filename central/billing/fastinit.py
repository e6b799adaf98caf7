"""Constructors for the frozen, slotted dataclasses a run builds by the hundred thousand.

A frozen dataclass's generated ``__init__`` stores every field through
``__dataclass_builtins_object__.__setattr__`` (a global and an attribute looked up per field): on a
30-field ``BillingLine`` that is most of the line's cost. ``builder(cls)`` returns a function that
makes the same object - same class, same field values, so equality, hashing, pickling and
``replace`` are untouched - without ``__init__``: on an unfrozen twin class with the same slots
(plain attribute stores) whose class is then set to ``cls``, or else through the slots' descriptors.

The function takes *every* field positionally, in declaration order, ``init=False`` fields included:
the caller passes what ``__post_init__`` would have derived. No defaults, no ``__post_init__``, no
checks: only for the engine's own hot paths, whose results a test compares with the plain
constructor's (tests/billing/test_billing_speed_paths.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["builder"]

T = TypeVar("T")


def builder(cls: type[T]) -> Callable[..., T]:
    if not (dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    names = [f.name for f in dataclasses.fields(cls)]
    build = _shadow_builder(cls, names) or _descriptor_builder(cls, names)
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build


def _descriptor_builder(cls: type[T], names: list[str]) -> Callable[..., T]:
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    for i, name in enumerate(names):
        scope[f"s{i}"] = getattr(cls, name).__set__  # the slot's member descriptor
    args = ", ".join(f"a{i}" for i in range(len(names)))
    sets = "".join(f"    s{i}(o, a{i})\n" for i in range(len(names)))
    exec(f"def build({args}):\n    o = new(cls)\n{sets}    return o\n", scope)  # noqa: S102 - our own code
    build: Callable[..., T] = scope["build"]
    return build


def _shadow_builder(cls: type[T], names: list[str]) -> Callable[..., T] | None:
    """Fields stored on an unfrozen twin of ``cls`` (same slots, same layout), whose plain attribute
    stores the interpreter specialises to a slot write, then the object's class set to ``cls``: a
    third of the descriptor calls' cost on a 30-field line. None when the layouts differ (a base
    class with slots of its own): the descriptors then."""
    if cls.__bases__ != (object,) or tuple(cls.__dict__["__slots__"]) != tuple(names):
        return None
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(names)})
    scope: dict[str, Any] = {"new": object.__new__, "twin": twin, "cls": cls}
    args = ", ".join(f"a{i}" for i in range(len(names)))
    sets = "".join(f"    o.{name} = a{i}\n" for i, name in enumerate(names))
    exec(  # noqa: S102 - our own code from field names
        f"def build({args}):\n    o = new(twin)\n{sets}    o.__class__ = cls\n    return o\n", scope
    )
    build: Callable[..., T] = scope["build"]
    try:
        build(*([None] * len(names)))
    except TypeError:  # "object layout differs"
        return None
    return build
