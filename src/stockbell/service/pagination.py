"""Opaque cursors over an ever-increasing internal key: stable while rows are added."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from stockbell.domain.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Row keys are signed 64-bit on PostgreSQL and SQLite; a larger one would fail in the driver.
MAX_KEY = 2**63 - 1
_KEY = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PageRequest:
    after: int | None = None
    limit: int = DEFAULT_LIMIT


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"c1:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, pk = raw.partition(":")
        if tag != "c1" or not _KEY.fullmatch(pk) or int(pk) > MAX_KEY:
            raise ValueError(tag)
        return int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid; use next_cursor from a previous page",
                           field="cursor") from None


def page_request(cursor: str | None, limit: int | None) -> PageRequest:
    if limit is None:
        limit = DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    return PageRequest(decode_cursor(cursor), limit)


def make_page(rows: list[tuple[int, T]], req: PageRequest) -> Page[T]:
    """`rows` were fetched with limit+1, so an extra row means there is a next page."""
    more = len(rows) > req.limit
    rows = rows[: req.limit]
    cursor = encode_cursor(rows[-1][0]) if more and rows else None
    return Page([r for _, r in rows], cursor)
