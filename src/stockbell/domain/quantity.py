"""Exact decimal quantities as scaled integers (micro-units).

SQLite has no decimal type, so both databases store integers; threshold range queries then
compare integers exactly on either database.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation

from stockbell.domain.errors import InvalidInput

SCALE = 1_000_000
PLACES = 6
# Fits comfortably in a signed 64-bit column after scaling.
MAX_ABS = 10**12
_QUANTUM = Decimal(1).scaleb(-PLACES)
_FAST_DIGITS = len(str(MAX_ABS)) - 1  # any run of this many ASCII digits is within MAX_ABS


def to_micro(value: str | int | float | Decimal, *, field: str = "quantity") -> int:
    """Parse a client quantity ("12.375", 3, 2.5) into micro-units, refusing inexact input."""
    if type(value) is str and len(value) <= _FAST_DIGITS and value.isascii() and value.isdigit():
        # The common case, a whole number ("12"): what the exact path below would give, with
        # no Decimal (a batch parses a thousand of them).
        return int(value) * SCALE
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a decimal number", field=field)
    try:
        dec = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise InvalidInput(
            f"{field} must be a decimal number, got {value!r}", field=field
        ) from None
    if not dec.is_finite():
        raise InvalidInput(f"{field} must be a finite decimal number", field=field)
    # Bound first, then compare exactly: `dec * SCALE` rounds to the context's 28 digits (and
    # overflows or underflows to 0 on huge exponents), which would accept inexact input.
    if dec.copy_abs() > MAX_ABS:
        raise InvalidInput(f"{field} is out of range (at most {MAX_ABS})", field=field)
    exact = dec.quantize(_QUANTUM)
    if exact != dec:
        raise InvalidInput(f"{field} has more than {PLACES} decimal places", field=field)
    return int(exact.scaleb(PLACES))


@functools.lru_cache(maxsize=65536)
def from_micro(micro: int) -> str:
    """Render micro-units as the shortest exact decimal string ("12.375", "3", "-0.5").
    Memoised: a batch renders the same few quantities thousands of times."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), SCALE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")
