"""Square's Inventory API (seed 001): `POST /v2/inventory/changes/batch-create`.

A BatchChangeInventory request becomes one `service.inventory.apply_changes` batch: a
PHYSICAL_COUNT is a count, an ADJUSTMENT an adjustment; `catalog_object_id` is the item's
sku_code and `location_id` the location code. The answer holds the resulting counts in Square's
InventoryCount shape and echoes the changes, as Square does. Errors under `/v2/inventory/` are
Square's `{"errors": [{"category", "code", "detail", "field"}]}`. The notifications themselves
are the `square` payload format (`delivery/formats/square.py`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from stockbell.api.auth import SecretTenant
from stockbell.api.problems import ErrorInfo, register_surface
from stockbell.api.routing import Router
from stockbell.api.schemas import Code, Quantity, Ref, Timestamp
from stockbell.api.state import app_state
from stockbell.domain.errors import InvalidInput, NotFound, StockbellError
from stockbell.domain.quantity import from_micro, to_micro
from stockbell.domain.stock import StockState
from stockbell.service import inventory
from stockbell.service.clock import utcnow
from stockbell.service.inventory import MAX_BATCH, ChangeInput

PREFIX = "/v2/inventory/"
CATALOG_OBJECT_TYPE = "ITEM_VARIATION"
# Square's idempotency keys live apart from the native API's, so the two never collide.
KEY_NAMESPACE = "square:"

router = Router(prefix="/v2/inventory", tags=["square"])


# --- errors ----------------------------------------------------------------------------------

class SquareError(BaseModel):
    category: str
    code: str
    detail: str
    field: str | None = None


class SquareErrors(BaseModel):
    errors: list[SquareError]


def square_field(pointer: str | None) -> str | None:
    """/changes/0/physical_count/quantity -> changes[0].physical_count.quantity"""
    out = ""
    for part in (pointer or "").strip("/").split("/"):
        if part.isdigit():
            out += f"[{part}]"
        elif part:
            out += ("." if out else "") + part
    return out or None


def _category_code(info: ErrorInfo) -> tuple[int, str, str]:
    if info.status == 401:
        return 401, "AUTHENTICATION_ERROR", "UNAUTHORIZED"
    if info.status == 403:
        return 403, "AUTHENTICATION_ERROR", "FORBIDDEN"
    if info.status == 404:
        return 404, "INVALID_REQUEST_ERROR", "NOT_FOUND"
    if info.status == 405:
        return 405, "INVALID_REQUEST_ERROR", "METHOD_NOT_ALLOWED"
    if info.status == 409:  # the only conflict here: a reused idempotency key
        return 400, "INVALID_REQUEST_ERROR", "IDEMPOTENCY_KEY_REUSED"
    if info.status == 413:
        return 413, "INVALID_REQUEST_ERROR", "REQUEST_ENTITY_TOO_LARGE"
    if info.status == 415:
        return 415, "INVALID_REQUEST_ERROR", "UNSUPPORTED_MEDIA_TYPE"
    if info.status >= 500:
        return info.status, "API_ERROR", "INTERNAL_SERVER_ERROR"
    if info.code == "malformed_json":
        return 400, "INVALID_REQUEST_ERROR", "BAD_REQUEST"
    missing = "required" in info.detail.lower()
    return 400, "INVALID_REQUEST_ERROR", "MISSING_REQUIRED_PARAMETER" if missing \
        else "INVALID_VALUE"


def render_error(request: Request, info: ErrorInfo) -> Response:
    status, category, code = _category_code(info)
    detail = info.detail
    if info.field and detail.startswith(info.field + ": "):
        detail = detail[len(info.field) + 2:]
    error: dict[str, Any] = {"category": category, "code": code, "detail": detail}
    field = square_field(info.field)
    if field:
        error["field"] = field
    return JSONResponse({"errors": [error]}, status_code=status, headers=info.headers)


register_surface(PREFIX, render_error)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": SquareErrors, "description": desc}
    for status, desc in (
        (400, "INVALID_REQUEST_ERROR: MISSING_REQUIRED_PARAMETER, INVALID_VALUE, "
              "IDEMPOTENCY_KEY_REUSED, BAD_REQUEST"),
        (401, "AUTHENTICATION_ERROR: UNAUTHORIZED"),
        (403, "AUTHENTICATION_ERROR: FORBIDDEN"),
        (404, "INVALID_REQUEST_ERROR: NOT_FOUND (an unknown catalog object or location)"),
        (413, "INVALID_REQUEST_ERROR: REQUEST_ENTITY_TOO_LARGE"),
    )
}


# --- request and response bodies -------------------------------------------------------------

class _Square(BaseModel):
    # Square's objects carry more fields than Stockbell needs (team_member_id, source, ...).
    model_config = ConfigDict(extra="ignore")


class PhysicalCountIn(_Square):
    catalog_object_id: Code
    location_id: Code
    state: StockState
    quantity: Quantity
    occurred_at: Timestamp | None = None
    reference_id: Ref | None = None


class AdjustmentIn(_Square):
    catalog_object_id: Code
    location_id: Code
    from_state: StockState
    to_state: StockState
    quantity: Quantity
    occurred_at: Timestamp | None = None
    reference_id: Ref | None = None


class ChangeIn(_Square):
    type: Literal["PHYSICAL_COUNT", "ADJUSTMENT"]
    physical_count: PhysicalCountIn | None = None
    adjustment: AdjustmentIn | None = None


class BatchChangeIn(_Square):
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=128,
                                                      pattern=r"^[^\x00]*$")]
    changes: Annotated[list[ChangeIn], Field(min_length=1, max_length=MAX_BATCH)]
    # Accepted for compatibility; every count is recorded, an unchanged one moves nothing.
    ignore_unchanged_counts: StrictBool | None = None


class InventoryCountOut(BaseModel):
    catalog_object_id: str
    catalog_object_type: str
    state: str
    location_id: str
    quantity: str
    calculated_at: str


class PhysicalCountOut(BaseModel):
    reference_id: str | None = None
    catalog_object_id: str
    catalog_object_type: str
    state: str
    location_id: str
    quantity: str
    occurred_at: str
    created_at: str


class AdjustmentOut(BaseModel):
    reference_id: str | None = None
    catalog_object_id: str
    catalog_object_type: str
    from_state: str
    to_state: str
    location_id: str
    quantity: str
    occurred_at: str
    created_at: str


class ChangeOut(BaseModel):
    type: str
    physical_count: PhysicalCountOut | None = None
    adjustment: AdjustmentOut | None = None


class BatchChangeOut(BaseModel):
    counts: list[InventoryCountOut]
    changes: list[ChangeOut]


# --- translation -----------------------------------------------------------------------------

def _payload(change: ChangeIn, where: str) -> PhysicalCountIn | AdjustmentIn:
    payload = change.physical_count if change.type == "PHYSICAL_COUNT" else change.adjustment
    if payload is None:
        name = "physical_count" if change.type == "PHYSICAL_COUNT" else "adjustment"
        raise InvalidInput(f"{name} is required for a {change.type} change",
                           field=f"{where}/{name}")
    return payload


def _inputs(body: BatchChangeIn) -> list[ChangeInput]:
    out = []
    for i, change in enumerate(body.changes):
        p = _payload(change, f"changes/{i}")
        if isinstance(p, PhysicalCountIn):
            out.append(ChangeInput("count", p.catalog_object_id, p.location_id, str(p.quantity),
                                   state=p.state.value, occurred_at=p.occurred_at))
        else:
            out.append(ChangeInput("adjustment", p.catalog_object_id, p.location_id,
                                   str(p.quantity), from_state=p.from_state.value,
                                   to_state=p.to_state.value, occurred_at=p.occurred_at))
    return out


_CORE_FIELD = re.compile(r"^changes/(\d+)/(\w+)$")
_SQUARE_NAMES = {"sku_code": "catalog_object_id", "location": "location_id"}


def _in_square_terms(exc: StockbellError, body: BatchChangeIn) -> StockbellError:
    """Name the offending field as the client sent it; an unknown item or location (the
    core's 422 on sku_code/location) is Square's NOT_FOUND."""
    m = _CORE_FIELD.match(exc.field or "")
    if m is None or int(m[1]) >= len(body.changes):
        return exc
    change = body.changes[int(m[1])]
    name = m[2]
    field = (f"changes/{m[1]}/{change.type.lower()}/"
             f"{_SQUARE_NAMES.get(name, name)}")
    p = _payload(change, f"changes/{m[1]}")
    if isinstance(exc, InvalidInput) and name == "sku_code":
        return NotFound(f"Item variation with catalog object ID `{p.catalog_object_id}` "
                        "not found.", field=field)
    if isinstance(exc, InvalidInput) and name == "location":
        return NotFound(f"Location `{p.location_id}` not found.", field=field)
    exc.field = field
    exc.detail = re.sub(r"^changes/\d+: ", "", exc.detail)
    return exc


def _ts(value: datetime | str) -> str:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answer(body: BatchChangeIn, result: dict[str, Any], now: datetime) -> dict[str, Any]:
    counts: dict[tuple[str, str, str], dict[str, Any]] = {}
    for outcome in result["changes"]:
        for c in outcome["counts"]:
            # first appearance fixes the order, the last change the quantity
            counts[(outcome["sku_code"], outcome["location"], c["state"])] = {
                "catalog_object_id": outcome["sku_code"],
                "catalog_object_type": CATALOG_OBJECT_TYPE,
                "state": c["state"],
                "location_id": outcome["location"],
                "quantity": c["quantity"],
                "calculated_at": _ts(now),
            }
    changes = []
    for change, outcome in zip(body.changes, result["changes"], strict=True):
        p = _payload(change, "changes")
        echo: dict[str, Any] = {
            "reference_id": p.reference_id,
            "catalog_object_id": p.catalog_object_id,
            "catalog_object_type": CATALOG_OBJECT_TYPE,
            "location_id": p.location_id,
            "quantity": from_micro(to_micro(p.quantity)),
            "occurred_at": _ts(outcome["occurred_at"]),
            "created_at": _ts(now),
        }
        if isinstance(p, PhysicalCountIn):
            changes.append({"type": change.type, "physical_count": {**echo,
                                                                   "state": p.state.value}})
        else:
            changes.append({"type": change.type, "adjustment": {
                **echo, "from_state": p.from_state.value, "to_state": p.to_state.value}})
    return {"counts": list(counts.values()), "changes": changes}


# --- routes ----------------------------------------------------------------------------------

@router.post("/changes/batch-create", response_model=BatchChangeOut,
             response_model_exclude_none=True, responses=ERRORS,
             summary="Square BatchChangeInventory: apply physical counts and adjustments")
async def batch_create(body: BatchChangeIn, tenant: SecretTenant,
                       request: Request) -> dict[str, Any]:
    """All changes apply atomically (up to 1,000, a superset of Square's 100). A retried
    idempotency_key answers again without applying anything twice; the same key with other
    changes is IDEMPOTENCY_KEY_REUSED."""
    inputs = _inputs(body)
    key = KEY_NAMESPACE + body.idempotency_key
    try:
        _, result = await app_state(request).db.run(
            lambda uow: inventory.apply_changes(uow, tenant, inputs, key))
    except StockbellError as exc:
        raise _in_square_terms(exc, body) from None
    return _answer(body, result, utcnow())
