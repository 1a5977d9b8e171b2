"""RFC 9457 problem details: the native surface's one error format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from stockbell.domain.errors import StockbellError

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://stockbell.dev/problems/"


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem(status: int, title: str, detail: str | None, *, code: str, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + code, "title": title, "status": status,
                            "detail": detail, "instance": instance}
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error, before a surface renders it in its own format."""

    status: int
    title: str
    detail: str
    code: str
    field: str | None = None  # JSON pointer-ish path of the offending input, if known
    headers: dict[str, str] | None = None


SurfaceRenderer = Callable[[Request, ErrorInfo], Response]
# (path prefix, renderer): the seed surfaces answer errors in their vendor's format.
_SURFACES: list[tuple[str, SurfaceRenderer]] = []


def register_surface(prefix: str, renderer: SurfaceRenderer) -> None:
    """Errors on paths under `prefix` are rendered by `renderer` instead of problem details."""
    _SURFACES.append((prefix, renderer))
    _SURFACES.sort(key=lambda p: -len(p[0]))


def render(request: Request, info: ErrorInfo) -> Response:
    """`info` in the format of the surface the request's path belongs to (problem details
    for the native API)."""
    path = request.url.path
    for prefix, renderer in _SURFACES:
        if path.startswith(prefix):
            return renderer(request, info)
    errors = [{"pointer": info.field, "detail": info.detail}] if info.field else None
    return problem(info.status, info.title, info.detail, code=info.code, instance=path,
                   errors=errors, headers=info.headers)


def _pointer(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return "/" + "/".join(parts)


async def _on_domain(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StockbellError)
    field = "/" + exc.field.replace(".", "/") if exc.field else None
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return render(request, ErrorInfo(exc.status, exc.title, exc.detail, exc.code, field,
                                      headers))


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errs = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errs):
        return render(request, ErrorInfo(400, "Malformed JSON",
                                          "the request body is not valid JSON",
                                          "malformed_json"))
    if not errs:
        return render(request, ErrorInfo(422, "Invalid input", "invalid request",
                                          "validation_error"))
    if len(errs) > 1 and not any(p for p, _ in _SURFACES if request.url.path.startswith(p)):
        errors = [{"pointer": _pointer(tuple(e.get("loc", ()))), "detail": str(e.get("msg"))}
                  for e in errs]
        first = errors[0]
        return problem(422, "Invalid input", f"{first['pointer']}: {first['detail']}",
                       code="validation_error", instance=request.url.path, errors=errors)
    first_err = errs[0]
    pointer = _pointer(tuple(first_err.get("loc", ())))
    return render(request, ErrorInfo(422, "Invalid input",
                                      f"{pointer}: {first_err.get('msg')}",
                                      "validation_error", pointer))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 401: "Unauthorized",
              406: "Not acceptable", 413: "Payload too large", 415: "Unsupported media type"}
    title = titles.get(exc.status_code, "Error")
    return render(request, ErrorInfo(exc.status_code, title, str(exc.detail),
                                      title.lower().replace(" ", "_"),
                                      headers=getattr(exc, "headers", None)))


async def _on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Starlette still re-raises `exc` after sending this, so the error is logged as before.
    return problem(500, "Internal server error", None, code="internal_error",
                   instance=request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StockbellError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unhandled)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        # ERROR_RESPONSES point at #/components/schemas/Problem; publish it there.
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = \
                Problem.model_json_schema()
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Not `"model": Problem`: FastAPI would file that schema under application/json, a media type
# these responses never have, and leave application/problem+json without a schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
           "description": desc}
    for code, desc in (
        (400, "Malformed request"), (401, "Missing, invalid or expired token"),
        (403, "The key may not do this"), (404, "Not found"), (409, "Conflict"),
        (413, "Body over the size limit"), (422, "Invalid input"),
    )
}
