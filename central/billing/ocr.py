"""OCR payment references (Bankgirot): digits, optional length digit, Luhn (mod 10) check digit.

With the length digit the reference ends ``<base><length % 10><check>``, where the length counts
every digit including the length and check digits; Bankgirot's "hård kontroll" checks both.
"""

from __future__ import annotations

__all__ = ["OcrError", "is_valid_ocr", "luhn_digit", "ocr_reference"]

MIN_LEN, MAX_LEN = 2, 25


class OcrError(ValueError):
    """Not a possible OCR reference (non-digits, too long)."""


def luhn_digit(digits: str) -> str:
    """The mod-10 check digit for ``digits``: weights 2,1,2,1... from the right, digit sums."""
    if not digits.isdigit():
        raise OcrError(f"not digits: {digits!r}")
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def ocr_reference(base: str | int, *, length_digit: bool = False) -> str:
    digits = str(base)
    if not digits.isdigit():
        raise OcrError(f"an OCR base must be digits: {digits!r}")
    if length_digit:
        digits += str((len(digits) + 2) % 10)
    ref = digits + luhn_digit(digits)
    if not MIN_LEN <= len(ref) <= MAX_LEN:
        raise OcrError(f"OCR reference must be {MIN_LEN}-{MAX_LEN} digits, got {len(ref)}")
    return ref


def is_valid_ocr(ref: str, *, length_digit: bool = False) -> bool:
    if not ref.isdigit() or not MIN_LEN <= len(ref) <= MAX_LEN:
        return False
    if luhn_digit(ref[:-1]) != ref[-1]:
        return False
    return not (length_digit and (len(ref) < 3 or int(ref[-2]) != len(ref) % 10))
