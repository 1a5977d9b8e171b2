"""Request and response bodies of the native API (their JSON Schema is the OpenAPI contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from stockbell.domain.stock import StockState
from stockbell.domain.text import json_problem

# No NUL bytes (PostgreSQL cannot store them) and lengths that fit the columns.
_NO_NUL = r"^[^\x00]*$"
Code = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_NO_NUL)]
Short = Annotated[str, StringConstraints(max_length=64, pattern=_NO_NUL)]
Name = Annotated[str, StringConstraints(max_length=200, pattern=_NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=10_000, pattern=_NO_NUL)]
Ref = Annotated[str, StringConstraints(max_length=500, pattern=_NO_NUL)]
Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$")]


def _not_bool(value: Any) -> Any:
    # pydantic's lax `int` turns JSON true/false into 1/0; a quantity is never a boolean.
    if isinstance(value, bool):
        raise ValueError("must be a decimal number, not a boolean")
    return value


# Quantities travel as decimal strings ("12.375"); integers are accepted too.
Quantity = Annotated[
    str | int,
    BeforeValidator(_not_bool),
    Field(description="A decimal number, as a string (\"12.375\") or an integer"),
]
JsonObject = dict[str, Any]


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """A free-form object must survive storage on either database and go back out as strict
    JSON (see domain/text.py); responses cannot be serialized past ~250 levels of nesting."""
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Free-form request objects (attributes, metadata); responses use plain JsonObject.
JsonIn = Annotated[dict[str, Any], AfterValidator(_storable_json)]


def _as_utc(value: datetime) -> datetime:
    # Stored as UTC microseconds: 0001-01-01T00:00:00+01:00 has no UTC datetime, and would
    # otherwise overflow deep in the service. Naive datetimes are read as UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceBreakIn(Strict):
    quantity: Annotated[int, Field(ge=1, le=10**9, strict=True)]
    price: Annotated[Decimal, Field(ge=0, le=10**12, decimal_places=6)]


class PricingIn(Strict):
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    price_breaks: list[PriceBreakIn] = []


class ItemIn(Strict):
    title: LongText | None = None
    variant_title: LongText | None = None
    upc: Short | None = None
    product_id: Name | None = None
    variant_id: Name | None = None
    size: Short | None = None
    width: Short | None = None
    part_number: Name | None = None
    generic_part_number: Name | None = None
    pricing: list[PricingIn] = []
    attributes: JsonIn = {}


class PriceBreakOut(BaseModel):
    quantity: int
    price: str


class PricingOut(BaseModel):
    currency: str
    price_breaks: list[PriceBreakOut]


class ItemOut(BaseModel):
    id: str
    sku_code: str
    title: str | None
    variant_title: str | None
    upc: str | None
    product_id: str | None
    variant_id: str | None
    size: str | None
    width: str | None
    part_number: str | None
    generic_part_number: str | None
    pricing: list[PricingOut]
    attributes: JsonObject
    created_at: str
    updated_at: str


class LocationIn(Strict):
    name: LongText | None = None


class LocationOut(BaseModel):
    code: str
    name: str | None
    created_at: str
    updated_at: str


class MarketIn(Strict):
    name: LongText | None = None
    locations: Annotated[list[Code], Field(max_length=1000)] = []


class MarketOut(BaseModel):
    code: str
    name: str | None
    locations: list[str]
    created_at: str
    updated_at: str


class CountIn(Strict):
    type: Literal["count"]
    sku_code: Code
    location: Code
    state: StockState = StockState.IN_STOCK
    quantity: Quantity
    occurred_at: Timestamp | None = None


class AdjustmentIn(Strict):
    type: Literal["adjustment"]
    sku_code: Code
    location: Code
    from_state: StockState
    to_state: StockState
    quantity: Quantity
    occurred_at: Timestamp | None = None


ChangeIn = Annotated[CountIn | AdjustmentIn, Field(discriminator="type")]


class ChangesIn(Strict):
    changes: Annotated[list[ChangeIn], Field(min_length=1, max_length=1000)]
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255,
                                                      pattern=_NO_NUL)] | None = None


class CountOut(BaseModel):
    state: str
    quantity: str


class ChangeOut(BaseModel):
    type: str
    sku_code: str
    location: str
    applied: bool
    occurred_at: str
    counts: list[CountOut]


class ChangesOut(BaseModel):
    changes: list[ChangeOut]
    applied: int
    ignored: int
    notifications: int


class ScopeOut(BaseModel):
    type: Literal["all", "location", "market"]
    code: str | None


class ScopeAvailability(ScopeOut):
    availability: str


class LocationStock(BaseModel):
    location: str
    quantities: dict[str, str]


class InventoryOut(BaseModel):
    sku_code: str
    locations: list[LocationStock]
    availability: list[ScopeAvailability]


class CustomerIn(Strict):
    email: Email | None = None
    external_id: Name | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    attributes: JsonIn = {}


class CustomerOut(BaseModel):
    email: str | None
    external_id: str | None
    first_name: str | None
    last_name: str | None
    attributes: JsonObject


class SubscriptionIn(Strict):
    sku_code: Code
    location: Code | None = None
    market: Code | None = None
    threshold: Quantity = 1
    customer: CustomerIn | None = None
    auto_resubscribe: StrictBool = False
    expires_at: Timestamp | None = None
    reference: Ref | None = None
    reference_origin: Ref | None = None
    metadata: JsonIn = {}


class SubscriptionPatchIn(Strict):
    threshold: Quantity | None = None
    customer: CustomerIn | None = None
    auto_resubscribe: StrictBool | None = None
    expires_at: Timestamp | None = None
    reference: Ref | None = None
    reference_origin: Ref | None = None
    metadata: JsonIn | None = None


class SubscriptionOut(BaseModel):
    id: str
    status: Literal["active", "notified", "inactive", "expired", "cancelled"]
    sku_code: str
    scope: ScopeOut
    threshold: str
    customer: CustomerOut
    auto_resubscribe: bool
    expires_at: str | None
    reference: str | None
    reference_origin: str | None
    metadata: JsonObject
    notify_count: int
    notified_at: str | None
    created_at: str
    updated_at: str


class EventOut(BaseModel):
    id: str
    type: str
    occurred_at: str
    created_at: str
    sequence: int | None
    data: JsonObject


class ItemPage(BaseModel):
    data: list[ItemOut]
    next_cursor: str | None


class LocationPage(BaseModel):
    data: list[LocationOut]
    next_cursor: str | None


class MarketPage(BaseModel):
    data: list[MarketOut]
    next_cursor: str | None


class SubscriptionPage(BaseModel):
    data: list[SubscriptionOut]
    next_cursor: str | None


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


def _parsable_url(value: str) -> str:
    # What delivery will do with it: split it, read the port, IDNA-encode the host to resolve
    # it. Each raises ValueError (UnicodeError) on e.g. "http://[abc/", ":99999", "a..b".
    try:
        parts = urlsplit(value)
        _ = parts.port
        (parts.hostname or "").encode("idna")
    except ValueError as exc:
        raise ValueError(f"is not a usable URL ({exc})") from None
    return value


Url = Annotated[str, StringConstraints(min_length=8, max_length=2048,
                                       pattern=r"^https?://[^\s\x00]+$"),
                AfterValidator(_parsable_url)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_NO_NUL)]


class EndpointIn(Strict):
    url: Url
    description: LongText | None = None
    event_types: Annotated[list[EventType], Field(max_length=50)] | None = None
    enabled: StrictBool = True
    format: Annotated[str, StringConstraints(max_length=32, pattern=_NO_NUL)] = "native"


class EndpointPatchIn(Strict):
    url: Url | None = None
    description: LongText | None = None
    event_types: Annotated[list[EventType], Field(max_length=50)] | None = None
    enabled: StrictBool | None = None
    format: Annotated[str, StringConstraints(max_length=32, pattern=_NO_NUL)] | None = None


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str | None
    event_types: list[str] | None
    enabled: bool
    format: str
    disabled_reason: str | None
    failing_since: str | None
    created_at: str
    updated_at: str


class EndpointWithSecret(EndpointOut):
    secret: str


class EndpointPage(BaseModel):
    data: list[EndpointOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    attempted_at: str
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class DeliveryOut(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


class ReplayIn(Strict):
    since: Timestamp


class ReplayOut(BaseModel):
    queued: int


class TestOut(BaseModel):
    status_code: int
    ok: bool
    duration_ms: float
    delivery_id: str
    event_id: str
