"""Public identifiers: a readable prefix and 128 random bits."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def new_ids(prefix: str, n: int) -> list[str]:
    """`n` ids from one draw of randomness: a fan-out names 100,000 rows at once."""
    raw = secrets.token_hex(12 * n)
    return [f"{prefix}_{raw[i:i + 24]}" for i in range(0, 24 * n, 24)]
