"""Constructors for the frozen, slotted dataclasses a run builds by the hundred thousand.

A frozen dataclass's generated ``__init__`` stores every field through
``__dataclass_builtins_object__.__setattr__`` (a global and an attribute looked up per field): on a
30-field ``BillingLine`` that is most of the line's cost. ``builder(cls)`` returns a function that
makes the same object - same class, same field values, so equality, hashing, pickling and
``replace`` are untouched - by ``object.__new__`` and the slots' own descriptors.

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
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    for i, name in enumerate(names):
        scope[f"s{i}"] = getattr(cls, name).__set__  # the slot's member descriptor
    args = ", ".join(f"a{i}" for i in range(len(names)))
    sets = "".join(f"    s{i}(o, a{i})\n" for i in range(len(names)))
    exec(f"def build({args}):\n    o = new(cls)\n{sets}    return o\n", scope)  # noqa: S102 - our own code
    build: Callable[..., T] = scope["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build
