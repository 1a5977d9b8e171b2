"""Sequenzy's e-commerce events (seed 002): `ecommerce.back_in_stock_requested` when a shopper
asks, `ecommerce.back_in_stock` when a product upsert (or any stock change) brings the variant
back for a waiting subscriber.

The envelope follows Sequenzy's outbound webhooks (`id` to de-duplicate, `object: "event"`,
`type`, `created_at`, a snake_case `data` object) and its event API (`event`, `email`), so a
receiver may read either name. Product ids, titles and the subscriber id come from the
snapshot the back-in-stock request stored in the subscription's metadata (`sequenzy`), falling
back to the item for subscriptions made through another API.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from stockbell.domain.events import BACK_IN_STOCK, BACK_IN_STOCK_REQUESTED, Event
from stockbell.domain.webhooks import Endpoint

EVENT_NAMES = {
    BACK_IN_STOCK: "ecommerce.back_in_stock",
    BACK_IN_STOCK_REQUESTED: "ecommerce.back_in_stock_requested",
}
METADATA_KEY = "sequenzy"


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_data(event: Event) -> dict[str, Any]:
    sub: dict[str, Any] = event.data.get("subscription") or {}
    customer: dict[str, Any] = sub.get("customer") or {}
    snap: dict[str, Any] = (sub.get("metadata") or {}).get(METADATA_KEY) or {}
    item: dict[str, Any] = event.data.get("item") or {}
    product_id = snap.get("productId") or item.get("product_id") or sub.get("sku_code")
    data: dict[str, Any] = {
        "subscriber_id": snap.get("subscriberId"),
        "email": customer.get("email"),
        "external_id": customer.get("external_id"),
        "first_name": customer.get("first_name"),
        "last_name": customer.get("last_name"),
        "product_id": product_id,
        "variant_id": snap.get("variantId") or item.get("variant_id") or product_id,
        "product_title": snap.get("productTitle") or item.get("title"),
        "variant_title": snap.get("variantTitle") or item.get("variant_title"),
        "sku": sub.get("sku_code"),
        "request_id": event.data.get("subscription_id"),
        "requested_at": sub.get("created_at"),
    }
    if event.type == BACK_IN_STOCK:
        data["in_stock"] = True
        data["inventory_quantity"] = event.data.get("availability")
    return data


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    assert event.id is not None
    assert event.created_at is not None
    name = EVENT_NAMES.get(event.type, event.type)
    data = event_data(event) if event.type in EVENT_NAMES else dict(event.data)
    body = {
        "id": event.id,
        "object": "event",
        "type": name,
        "event": name,
        "created_at": _iso(event.created_at),
        "email": data.get("email"),
        "data": data,
        "occurred_at": _iso(event.occurred_at),
        "sequence": event.sequence,
    }
    return {"content-type": "application/json"}, json.dumps(body, separators=(",", ":"))
