"""Exact money and quantity arithmetic: öre rounding and the largest-remainder split.

Everything here is ``Decimal`` or integers (exact for the values we feed them); no binary
float ever touches an amount. The split is the heart of the *nollsummespel*: whatever the weights,
the parts add up to the total to the öre.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Context, Decimal
from enum import StrEnum
from typing import TypeVar

ORE = Decimal("0.01")
ZERO = Decimal(0)

# A private context: wide enough that a product of two register values and a price never rounds
# before we quantize it on purpose, and independent of whatever the caller did to the thread context.
EXACT = Context(prec=60)


class Rounding(StrEnum):
    """Rounding rules a customer may choose (the names are ``decimal``'s)."""

    HALF_UP = ROUND_HALF_UP
    HALF_EVEN = ROUND_HALF_EVEN
    DOWN = ROUND_DOWN
    UP = ROUND_UP


def to_ore(value: Decimal, rounding: Rounding = Rounding.HALF_UP) -> Decimal:
    """Round a money amount to whole öre with ``rounding``."""
    ctx = _ORE_CONTEXTS.get(rounding)
    if ctx is None:
        return value.quantize(ORE, rounding=str(rounding), context=EXACT)
    # A run rounds every line: a context per rule is a positional C call, where the keyword form
    # parses its arguments each time. Same precision, rounding and traps as EXACT.
    return ctx.quantize(value, ORE)


_ORE_CONTEXTS = {rule: Context(prec=60, rounding=str(rule)) for rule in Rounding}


def ore_context(rounding: Rounding) -> Context:
    """The context whose ``quantize(value, ORE)`` is ``to_ore(value, rounding)``."""
    return _ORE_CONTEXTS.get(rounding) or Context(prec=60, rounding=str(rounding))


def quantize_step(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def mul(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.multiply(a, b)


K = TypeVar("K", bound=Hashable)


def allocate(total: Decimal, weights: Sequence[tuple[K, Decimal]], step: Decimal = ORE) -> dict[K, Decimal]:
    """Split ``total`` over ``weights`` so the parts add up to ``total`` exactly, in units of ``step``.

    The largest-remainder (Hare) method: every key first gets its exact quota rounded toward zero to a
    whole ``step``; the units still missing go one each to the keys with the largest remainders, ties
    broken by the key in ascending order (the apartment id, so a tie always favours the same
    apartment and two runs of the same input give the same bytes). The quotas are computed in
    integers (weights scaled exactly) so the comparison of remainders is exact, not rounded.

    Weights must be >= 0 and the total a whole number of ``step``. All-zero weights are an error
    for the caller to decide on (see the fördelning's fallback key): splitting by nothing is not a
    split.
    """
    if not weights:
        if total != 0:
            raise ValueError("nothing to allocate a non-zero total to")
        return {}
    units_dec = total / step
    if units_dec != units_dec.to_integral_value():
        raise ValueError(f"total {total} is not a whole number of {step}")
    units = int(units_dec)
    sign = -1 if units < 0 else 1
    units = abs(units)
    # Scale the weights to integers exactly (by 10^d, d the most decimals among them) so that quotas
    # and remainders are integer divisions: quota_i = units * w_i / W, remainders compared as integers
    # (a common scale factor changes neither the quotas nor the order of the remainders).
    decs = [w if isinstance(w, Decimal) else Decimal(w) for _, w in weights]
    if any(w < 0 for w in decs):
        raise ValueError("negative weight")
    places = max(0, *(-w.as_tuple().exponent for w in decs))  # type: ignore[operator]
    ints = [int(w.scaleb(places, context=EXACT)) for w in decs]
    weight_sum = sum(ints)
    if weight_sum == 0:
        raise ValueError("all weights are zero")
    if len(weights) == 1:
        return {weights[0][0]: step * (sign * units)}
    base: dict[K, int] = {}
    rests: list[int] = []
    for (key, _), w in zip(weights, ints, strict=True):
        if key in base:
            raise ValueError(f"key {key!r} given twice")
        whole, rest = divmod(units * w, weight_sum)
        base[key] = whole
        rests.append(rest)
    missing = units - sum(base.values())
    if missing:
        # Largest remainder first; among equal remainders the smallest key first.
        order = sorted(
            ((-rest, _sort_key(key), key) for (key, _), rest in zip(weights, rests, strict=True)),
            key=lambda item: (item[0], item[1]),
        )
        for _, _, key in order[:missing]:
            base[key] += 1
    return {key: step * (sign * base[key]) for key, _ in weights}


def _sort_key(key: object) -> tuple[str, str]:
    # Keys are ids (str or int or tuples of them); comparing their repr keeps mixed types ordered.
    if isinstance(key, int):
        return ("0", f"{key:020d}")
    return ("1", repr(key))


def fmt(value: Decimal) -> str:
    """Plain (never scientific) text of a Decimal, keeping its exponent: 12.50 stays ``12.50``."""
    if type(value) is Decimal:
        # str() is the same text whenever it has no exponent (to-scientific-string only writes one
        # for a positive exponent or a very small number) at a third of format()'s cost.
        text = str(value)
        if "E" not in text and "e" not in text:
            return text
    return f"{value:f}"
