"""A JSON body read and validated by hand exactly as FastAPI (0.163) reads a body parameter.

For routes answered by their own handler (`api.routing.answered_by`). Every step keeps
FastAPI's outcome, so a client cannot tell the two apart: an empty body is a missing field;
a body whose Content-Type is not JSON (`application/json`, `application/*+json`) is validated
as bytes, which no model accepts; malformed JSON is a `json_invalid` error at the offset the
standard library reports (rendered as 400 Malformed JSON); a body that is not text is a 400.
Validation errors carry FastAPI's location (`body`, then the field's path).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

MISSING: Any = object()  # no body at all: FastAPI reports the field as missing


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test (with the email package's parsing of the media type): application/json
    or application/<anything>+json, parameters ignored, any letter case; a value without
    exactly one slash is text/plain. A missing Content-Type is not JSON (strict mode)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if media.count("/") != 1:
        return False
    main, sub = media.split("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def read_json(request: Request) -> Any:
    """The body as a JSON value, the raw bytes when it is not declared JSON, or MISSING.

    Parsed by the standard library, as FastAPI parses it: orjson is faster but not the same
    (it reads an integer beyond 64 bits as a float, and refuses NaN and lone surrogates)."""
    raw = await request.body()
    if not raw:
        return MISSING
    if not _is_json(request.headers.get("content-type")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg}}]) from exc
    except Exception as exc:  # not text in any encoding JSON allows
        raise HTTPException(status_code=400,
                            detail="There was an error parsing the body") from exc


def validate_body(model: type[M], value: Any, errors: list[dict[str, Any]]) -> M | None:
    """`value` (from `read_json`) as `model`, or None with its errors added to `errors`."""
    if value is MISSING:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required",
                       "input": None})
        return None
    try:
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors.extend(_located(exc, ("body",)))
        return None


def validate_param(adapter: TypeAdapter[T], value: Any, loc: tuple[str, ...],
                   errors: list[dict[str, Any]]) -> T | None:
    """A header, query or path value checked as FastAPI checks the declared parameter
    (`adapter` = TypeAdapter(Annotated[type, Header(...)])), errors located at `loc`."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        errors.extend(_located(exc, loc))
        return None


def _located(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]
