"""TI store inventory subscriptions (seed 000), over the core's subscriptions and webhooks.

- `POST /v1/oauth/accesstoken`: form-encoded client credentials -> a bearer token valid for
  3599 s, as TI's gateway answers (errors in its gateway's `{"ErrorCode", "Error"}` form).
- `POST /v2/store/subscriptions/inventory`: create or update the one active subscription per
  part number (per account and mode): item = the item whose `part_number` is `tiPartNumber`,
  scope = all locations, threshold = `quantity` (or `requestedQty`), `autoSubscribe` =
  auto_resubscribe, `expiration` days -> expires_at. TI's own fields (currency, expiration
  days) live in the subscription's metadata, `reference` = the part number and
  `reference_origin` = "ti" mark the subscription as this surface's.
- `GET` lists the active, unexpired ones; `DELETE` cancels one (tiPartNumber in the JSON body
  or the query string); `POST .../test` sends TI's example notification to the account's
  endpoint of format "ti" and answers the receiver's status code.

Errors answer in TI's documented shape, `{"errors": [{"errorCode", "type", "section",
"field", "reason", "message"}]}`. The restock rule, expiry and one-shot removal are the
core's; this module only translates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from stockbell.api.auth import SecretTenant, issue_token
from stockbell.api.problems import ErrorInfo, register_surface
from stockbell.api.routing import Router
from stockbell.api.state import app_state
from stockbell.delivery.formats.ti import number
from stockbell.delivery.test_send import send_test
from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item
from stockbell.domain.errors import InvalidInput, NotFound, StockbellError, Unauthorized
from stockbell.domain.quantity import from_micro
from stockbell.domain.subscription import Subscription, is_expired
from stockbell.domain.text import storable
from stockbell.domain.webhooks import Endpoint
from stockbell.service import accounts as accounts_service
from stockbell.service import catalog as catalog_service
from stockbell.service import subscriptions as subs
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.service.pagination import MAX_LIMIT, PageRequest, page_request
from stockbell.service.ports import UnitOfWork

TOKEN_PATH = "/v1/oauth/accesstoken"
PREFIX = "/v2/store/subscriptions/inventory"
TOKEN_TTL = 3599
ORIGIN = "ti"
FORMAT = "ti"
DEFAULT_EXPIRATION = 30  # days; TI's maximum too
MAX_QUANTITY = 1_000_000_000
VALIDATION_CODE = "ERR-TICOM-INV-API-1001"
SECTION = "inventorySubscription"
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

router = Router(tags=["TI store inventory subscriptions (seed 000)"])


# --- response shapes, for the OpenAPI document ----------------------------------------------

class _Camel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class TiError(_Camel):
    error_code: str = Field(alias="errorCode")
    type: str
    section: str
    field: str | None
    reason: str
    message: str


class TiErrors(BaseModel):
    errors: list[TiError]


class TiSubscription(_Camel):
    ti_part_number: str = Field(alias="tiPartNumber")
    requested_qty: int | float = Field(alias="requestedQty")
    currency: str
    auto_subscribe: bool = Field(alias="autoSubscribe")
    expiration: int


class TiTestResult(_Camel):
    status: Literal["accepted", "failed"]
    response_code: int | None = Field(alias="responseCode")
    message: str | None = None


class TiToken(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    issued_at: str
    client_id: str
    created_at: int


class GatewayError(_Camel):
    error_code: str = Field(alias="ErrorCode")
    error: str = Field(alias="Error")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {400: "Malformed request", 401: "Missing, invalid or expired access token",
                    403: "The key may not do this", 404: "Not found",
                    422: "Invalid field (see errors[].field)"}
    return {s: {"model": TiErrors, "description": descriptions[s]} for s in statuses}


_SUBSCRIPTION_IN = {
    "type": "object",
    "required": ["tiPartNumber"],
    "properties": {
        "tiPartNumber": {"type": "string", "description": "The item's part_number"},
        "quantity": {"type": "integer", "minimum": 1,
                     "description": "Notify when availability reaches this (default 1)"},
        "requestedQty": {"type": "integer", "minimum": 1, "description": "Alias of quantity"},
        "currency": {"type": "string", "description": "ISO 4217 code (default USD)"},
        "autoSubscribe": {"type": "boolean", "description": "Stay subscribed after firing"},
        "expiration": {"type": "integer", "minimum": 1, "maximum": 30,
                       "description": "Days until the subscription expires (default 30)"},
    },
}
_PART_IN = {"type": "object", "properties": {"tiPartNumber": {"type": "string"}}}
_TOKEN_IN = {
    "type": "object",
    "required": ["grant_type", "client_id", "client_secret"],
    "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                   "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
}


def _body_doc(schema: dict[str, Any], media: str = "application/json",
              required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {media: {"schema": schema}}}}


# --- errors in TI's shape -------------------------------------------------------------------

_ERROR_TYPES = {400: "ValidationError", 401: "AuthenticationError",
                403: "AuthorizationError", 404: "NotFoundError", 405: "MethodNotAllowed",
                409: "ConflictError", 413: "ValidationError", 422: "ValidationError"}


def render_error(request: Request, info: ErrorInfo) -> Response:
    field = (info.field or "").strip("/").replace("/", ".") or None
    validation = info.status in (400, 422)
    body = {"errors": [{
        "errorCode": VALIDATION_CODE if validation else f"ERR-TICOM-INV-API-{info.status:04d}",
        "type": _ERROR_TYPES.get(info.status, "ApplicationError"),
        "section": SECTION,
        "field": field,
        "reason": f"Invalid {field}" if validation and field else info.title,
        "message": info.detail,
    }]}
    return JSONResponse(body, status_code=info.status, headers=info.headers)


def render_token_error(request: Request, info: ErrorInfo) -> Response:
    if info.status == 401:
        code = "invalid_client"
    elif info.field == "/grant_type":
        code = "unsupported_grant_type"
    else:
        code = "invalid_request"
    return JSONResponse({"ErrorCode": code, "Error": info.detail}, status_code=info.status,
                        headers=info.headers)


register_surface(PREFIX, render_error)
register_surface(TOKEN_PATH, render_token_error)


# --- parsing TI's dialect -------------------------------------------------------------------

def _text(value: Any, name: str, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required. Please provide it and resubmit your "
                               "request.", field=name)
        return None
    if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
        raise InvalidInput(f"{name} must be a string of at most 200 characters.", field=name)
    if not storable(value):
        raise InvalidInput(f"{name} must be valid Unicode text.", field=name)
    return value


def _echo(value: Any) -> str:
    """A client's value quoted back in a message: short, and always encodable."""
    text = str(value)
    text = text if len(text) <= 40 else text[:40] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


async def _json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return {}
        raise StockbellError("the request body must be a JSON object")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise StockbellError("the request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise StockbellError("the request body must be a JSON object")
    return parsed


@dataclass(frozen=True, slots=True)
class _Request:
    part: str
    quantity: int
    currency: str
    auto_subscribe: bool
    expiration: int


def _parse(body: dict[str, Any]) -> _Request:
    part = _text(body.get("tiPartNumber"), "tiPartNumber")
    assert part is not None
    qty_field = "quantity" if body.get("quantity") is not None else "requestedQty"
    raw_qty = body.get(qty_field, 1)
    qty = _integer(1 if raw_qty is None else raw_qty)
    if qty is None or not 0 < qty <= MAX_QUANTITY:
        raise InvalidInput(f"{qty_field} ('{_echo(raw_qty)}') must be an integer and greater "
                           "than 0. Please correct and resubmit your request.", field=qty_field)
    raw_currency = body.get("currency")
    currency = "USD" if raw_currency is None else raw_currency
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidInput(f"currency ('{_echo(raw_currency)}') is not a valid ISO 4217 currency "
                           "code. Please provide a valid currency and resubmit your request.",
                           field="currency")
    auto = body.get("autoSubscribe")
    if auto is not None and not isinstance(auto, bool):
        raise InvalidInput(f"autoSubscribe ('{_echo(auto)}') must be true or false.",
                           field="autoSubscribe")
    raw_exp = body.get("expiration")
    expiration = DEFAULT_EXPIRATION if raw_exp is None else _integer(raw_exp)
    if expiration is None or not 1 <= expiration <= DEFAULT_EXPIRATION:
        raise InvalidInput(f"expiration ('{_echo(raw_exp)}') must be a whole number of days from 1 "
                           f"to {DEFAULT_EXPIRATION}, the maximum period allowed. Please "
                           "correct and resubmit your request.", field="expiration")
    return _Request(part, qty, currency.upper(), bool(auto), expiration)


def view(sub: Subscription) -> dict[str, Any]:
    md = sub.metadata
    return {
        "tiPartNumber": sub.reference,
        "requestedQty": number(from_micro(sub.threshold)),
        "currency": md.get("currency", "USD"),
        "autoSubscribe": sub.auto_resubscribe,
        "expiration": md.get("expiration", DEFAULT_EXPIRATION),
    }


# --- core calls, each route's inside one transaction -----------------------------------------

async def _item(uow: UnitOfWork, tenant: Tenant, part: str) -> Item | None:
    page = await catalog_service.list_items(uow, tenant, {"part_number": part},
                                            PageRequest(None, 1))
    return page.data[0] if page.data else None


async def _active(uow: UnitOfWork, tenant: Tenant, sku_code: str | None) -> list[Subscription]:
    """This surface's active, unexpired subscriptions (of one item, or all), oldest first."""
    now = utcnow()
    found: list[Subscription] = []
    cursor: str | None = None
    while True:
        page = await subs.list_subscriptions(uow, tenant, "active", sku_code,
                                             page_request(cursor, MAX_LIMIT))
        found += [s for s in page.data
                  if s.reference_origin == ORIGIN and not is_expired(s, now)]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def _upsert(uow: UnitOfWork, tenant: Tenant, req: _Request) -> Subscription:
    """TI: an active subscription for the part is updated (new quantity, new expiration),
    otherwise a new one is created."""
    item = await _item(uow, tenant, req.part)
    if item is None or item.id is None:
        raise InvalidInput(f"tiPartNumber ('{req.part}') does not exist. Verify the part "
                           "number and resubmit your request.", field="tiPartNumber")
    sub, _ = await subs.subscribe_once(uow, tenant, subs.SubscriptionInput(
        sku_code=item.sku_code, threshold=str(req.quantity),
        auto_resubscribe=req.auto_subscribe,
        expires_at=utcnow() + timedelta(days=req.expiration), reference=req.part,
        reference_origin=ORIGIN,
        metadata={"currency": req.currency, "expiration": req.expiration}), refresh=True)
    return sub


async def _remove(uow: UnitOfWork, tenant: Tenant, part: str) -> Subscription:
    item = await _item(uow, tenant, part)
    existing = await _active(uow, tenant, item.sku_code) if item is not None else []
    if not existing:
        raise NotFound(f"tiPartNumber ('{part}') has no active inventory subscription.")
    for sub in existing:
        await subs.cancel(uow, tenant, sub.id)
    return existing[0]


async def _endpoint(uow: UnitOfWork, tenant: Tenant) -> Endpoint:
    """The account's configured API: its oldest enabled webhook endpoint of format ti."""
    cursor: str | None = None
    while True:
        page = await webhooks_service.list_endpoints(uow, tenant,
                                                     page_request(cursor, MAX_LIMIT))
        for ep in page.data:
            if ep.format == FORMAT and ep.enabled:
                return ep
        if page.next_cursor is None:
            raise NotFound('no enabled webhook endpoint with format "ti" is configured; '
                           'register one with POST /v1/webhook-endpoints '
                           '{"url": "...", "format": "ti"}')
        cursor = page.next_cursor


# --- routes ---------------------------------------------------------------------------------

@router.post(TOKEN_PATH, response_model=TiToken, openapi_extra=_body_doc(
                 _TOKEN_IN, "application/x-www-form-urlencoded"),
             responses={s: {"model": GatewayError, "description": d}
                        for s, d in ((400, "Bad grant or body"), (401, "Bad credentials"))},
             summary="TI: exchange client credentials for an access token (3599 s)")
async def access_token(request: Request) -> JSONResponse:
    raw = await request.body()
    try:
        fields = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise StockbellError("the form body is not valid UTF-8") from None
    if fields.get("grant_type") != "client_credentials":
        raise StockbellError("grant_type must be client_credentials", field="grant_type")
    client_id, client_secret = fields.get("client_id", ""), fields.get("client_secret", "")
    if not client_id or not client_secret:
        raise Unauthorized("client_id and client_secret are required")
    if "\x00" in client_id + client_secret:  # no key has one; PostgreSQL text cannot hold it
        raise Unauthorized("invalid client credentials")
    state = app_state(request)
    principal = await state.db.run(
        lambda uow: accounts_service.verify_client(uow, client_id, client_secret))
    token = issue_token(state, principal, client_id, ttl=TOKEN_TTL)
    token |= {"issued_at": str(token["created_at"] * 1000), "client_id": client_id}
    return JSONResponse(token, headers={"Cache-Control": "no-store"})


@router.post(PREFIX, response_model=TiSubscription, openapi_extra=_body_doc(_SUBSCRIPTION_IN),
             responses=_errors(400, 401, 403, 422),
             summary="TI: subscribe to a part (updates the active subscription if any)")
async def subscribe(tenant: SecretTenant, request: Request) -> JSONResponse:
    req = _parse(await _json_object(request))
    sub = await app_state(request).db.run(lambda uow: _upsert(uow, tenant, req))
    return JSONResponse(view(sub))


@router.get(PREFIX, response_model=list[TiSubscription], responses=_errors(401, 403),
            summary="TI: the active subscriptions")
async def list_active(tenant: SecretTenant, request: Request) -> JSONResponse:
    found = await app_state(request).db.read(lambda uow: _active(uow, tenant, None))
    return JSONResponse([view(s) for s in found])


_DELETE_ERRORS = _errors(401, 403, 404, 422) | {400: {
    "description": "Malformed body, or a NUL byte in the URL (refused before routing)",
    "content": {"application/json": {"schema": TiErrors.model_json_schema()},
                "application/problem+json": {}},
}}


@router.delete(PREFIX, response_model=TiSubscription,
               openapi_extra=_body_doc(_PART_IN, required=False),
               responses=_DELETE_ERRORS,
               summary="TI: remove the subscription of a part (tiPartNumber in body or query)")
async def remove(tenant: SecretTenant, request: Request,
                 part: Annotated[str | None, Query(alias="tiPartNumber",
                                                   max_length=200)] = None) -> JSONResponse:
    body = await _json_object(request, empty_ok=True)
    name = _text(part if part else body.get("tiPartNumber"), "tiPartNumber")
    assert name is not None
    sub = await app_state(request).db.run(lambda uow: _remove(uow, tenant, name))
    return JSONResponse(view(sub))


@router.post(PREFIX + "/test", response_model=TiTestResult, responses=_errors(401, 403, 404),
             summary="TI: send the example notification to your API; answers its status")
async def test(tenant: SecretTenant, request: Request) -> JSONResponse:
    state = app_state(request)
    ep = await state.db.run(lambda uow: _endpoint(uow, tenant))
    attempt = (await send_test(state.db, state.sender, state.disable_after, tenant,
                               ep.id)).attempt
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return JSONResponse({"status": "accepted", "responseCode": code})
    message = attempt.response_excerpt if code is not None else attempt.error
    return JSONResponse({"status": "failed", "responseCode": code, "message": message or ""})
