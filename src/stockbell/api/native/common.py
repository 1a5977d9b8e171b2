"""Shared bits of the native routes: list query parameters and page rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Path, Query

from stockbell.service.pagination import MAX_LIMIT, Page, PageRequest, page_request

T = TypeVar("T")

CodePath = Annotated[str, Path(min_length=1, max_length=200)]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def paging(cursor: str | None, limit: int) -> PageRequest:
    return page_request(cursor, limit)


def render_page(page: Page[T], view: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {"data": [view(x) for x in page.data], "next_cursor": page.next_cursor}
