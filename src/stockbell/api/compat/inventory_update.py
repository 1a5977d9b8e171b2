"""Inventory update API (seed 004): `POST /api/product/inventory` sets a store's stock.

The product is found by `upc`, or by `sku` (the item's product_id) + `size` + `width` (the
variant); `store` is a location code; `quantity` becomes the item's IN_STOCK count at that
store through `service.inventory.apply_changes`, so a restock fires subscriptions and events
flow exactly as for the native API. A count is absolute, so a retried request is harmless.

Errors answer as the document shows, `{"error": "Missing required field: sku"}`: 400 for a
missing field (the first one, in the order sku/upc, size, width, store, quantity), a bad
value or malformed JSON; 401 for a missing or invalid token; 404 for an unknown product or
store. The vendor has no 422, so the core's input errors are answered as 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from stockbell.api.auth import SecretTenant
from stockbell.api.problems import ErrorInfo, register_surface
from stockbell.api.routing import Router
from stockbell.api.state import app_state
from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import InvalidInput, NotFound, StockbellError
from stockbell.domain.quantity import MAX_ABS
from stockbell.domain.stock import AVAILABLE
from stockbell.domain.text import storable
from stockbell.service import catalog as catalog_service
from stockbell.service import inventory
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import UnitOfWork

PATH = "/api/product/inventory"
BY_UPC = ("upc", "store", "quantity")
BY_SKU = ("sku", "size", "width", "store", "quantity")

router = Router(tags=["Inventory update (seed 004)"])


class UpdateOut(BaseModel):
    success: bool
    item: str
    store: str
    quantity: int
    applied: bool
    notifications: int


class ErrorOut(BaseModel):
    error: str


def render_error(request: Request, info: ErrorInfo) -> Response:
    status = 400 if info.status == 422 else info.status
    return JSONResponse({"error": info.detail}, status_code=status, headers=info.headers)


register_surface("/api/product/", render_error)


@dataclass(frozen=True, slots=True)
class _Update:
    filters: dict[str, str]  # item filters: upc, or product_id + size + width
    store: str
    quantity: int

    @property
    def product(self) -> str:
        names = {"product_id": "sku"}
        return ", ".join(f"{names.get(k, k)} {v}" for k, v in self.filters.items())


def _present(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _code(value: Any, name: str) -> str:
    """Identifiers are strings; a JSON integer (store 3) is taken as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
        raise StockbellError(f"Invalid field: {name} must be a string of at most 200 "
                             "characters", field=name)
    if not storable(value):
        raise StockbellError(f"Invalid field: {name} must be valid Unicode text", field=name)
    return value.strip()


def _quantity(value: Any) -> int:
    qty: int | None = None
    if isinstance(value, bool):
        qty = None
    elif isinstance(value, int):
        qty = value
    elif isinstance(value, float) and value.is_integer():
        qty = int(value)
    elif (isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
          and len(value.strip()) <= 18):
        qty = int(value.strip())
    if qty is None or not 0 <= qty <= MAX_ABS:
        raise StockbellError("Invalid field: quantity must be a non-negative integer",
                             field="quantity")
    return qty


def parse(body: dict[str, Any]) -> _Update:
    """The first missing field wins: `sku` when neither upc nor sku is given."""
    fields = BY_UPC if _present(body, "upc") else BY_SKU
    for name in fields:
        if not _present(body, name):
            raise StockbellError(f"Missing required field: {name}", field=name)
    codes = {n: _code(body[n], n) for n in fields if n != "quantity"}
    store = codes.pop("store")
    quantity = _quantity(body["quantity"])
    if "sku" in codes:
        codes = {"product_id": codes.pop("sku"), **codes}
    return _Update(codes, store, quantity)


async def _apply(uow: UnitOfWork, tenant: Tenant, req: _Update) -> dict[str, Any]:
    page = await catalog_service.list_items(uow, tenant, req.filters, PageRequest(None, 1))
    if not page.data:
        raise NotFound(f"Product not found: {req.product}")
    item = page.data[0]
    change = inventory.ChangeInput(type="count", sku_code=item.sku_code, location=req.store,
                                   quantity=str(req.quantity), state=AVAILABLE.value)
    try:
        _, result = await inventory.apply_changes(uow, tenant, [change])
    except InvalidInput as exc:
        if exc.field == "changes/0/location":
            raise NotFound(f"Store not found: {req.store}") from None
        raise
    return {"success": True, "item": item.sku_code, "store": req.store,
            "quantity": req.quantity, "applied": result["applied"] == 1,
            "notifications": result["notifications"]}


_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object",
    "description": "Either upc, or sku + size + width; store and quantity always.",
    "properties": {
        "upc": {"type": "string", "example": "849632048260"},
        "sku": {"type": "string", "description": "The product (item product_id)",
                "example": "ZOOT-SUIT"},
        "size": {"type": "string", "example": "34"},
        "width": {"type": "string", "example": "D"},
        "store": {"type": "string", "description": "A location code", "example": "3"},
        "quantity": {"type": "integer", "minimum": 0, "example": 44},
    },
}}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": desc} for status, desc in (
        (400, "Missing field, bad value or malformed JSON"),
        (401, "Missing or invalid Bearer token"), (403, "A publishable key may not do this"),
        (404, "Unknown product or store"),
    )
}


@router.post(PATH, response_model=UpdateOut, openapi_extra=_BODY_DOC, responses=_ERRORS,
             summary="Set a product's stock at a store (by UPC, or SKU + size + width)")
async def update_inventory(tenant: SecretTenant, request: Request) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise StockbellError("Malformed JSON in request body") from None
    if not isinstance(body, dict):
        raise StockbellError("Request body must be a JSON object")
    req = parse(body)
    result = await app_state(request).db.run(lambda uow: _apply(uow, tenant, req))
    return JSONResponse(result)
