"""Errors carry the HTTP status they mean so every surface can render them in its own format.

The status is a plain int: the domain knows nothing of HTTP frameworks, but every caller
agrees on what "not found" or "conflict" means.
"""

from __future__ import annotations


class StockbellError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(StockbellError):
    status = 422
    code = "validation_error"
    title = "Invalid input"


class NotFound(StockbellError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(StockbellError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthorized(StockbellError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(StockbellError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class Unreachable(StockbellError):
    """A remote party (a webhook receiver) could not be reached."""

    status = 502
    code = "receiver_unreachable"
    title = "Receiver unreachable"
