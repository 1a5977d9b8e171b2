"""What text and free-form JSON both databases can store and JSON can carry back out.

PostgreSQL rejects NUL in text; Python's JSON parser lets lone UTF-16 surrogates ("\\ud800"),
NaN and Infinity through, which no strict JSON encoder can write back. Every surface checks
client input with these before it reaches the store.
"""

from __future__ import annotations

import math
from typing import Any

MAX_JSON_DEPTH = 32


def storable(text: str) -> bool:
    """No NUL and no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH, *,
                 allow_nul: bool = True) -> str | None:
    """Why a free-form JSON value cannot be stored and served back, or None if it can.
    NUL is fine inside a JSON column (it is escaped) unless `allow_nul` is False."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > max_depth:
            return f"must not nest deeper than {max_depth} levels"
        if isinstance(node, dict):
            for key, item in node.items():
                stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            if not storable(node.replace("\x00", "") if allow_nul else node):
                return ("text must be valid Unicode (no lone surrogates)" if allow_nul
                        else "strings must be valid Unicode without NUL characters")
        elif isinstance(node, float) and not math.isfinite(node):
            return "numbers must be finite (no NaN or Infinity)"
    return None
