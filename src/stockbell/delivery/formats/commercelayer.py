"""Commerce Layer's in-stock subscription webhooks (seed 003), and the JSON:API resource they
carry, shared with the `/api/in_stock_subscriptions` adapter so a webhook body is exactly what
a GET of the same subscription answers.

Topics: `in_stock_subscriptions.create | activate | deactivate | notify | destroy`, from
subscription.created, subscription.updated (change activated / deactivated), back_in_stock and
subscription.cancelled. No other event reaches a commercelayer endpoint (`FORMAT_EVENT_TYPES`
and `FORMAT_FILTERS` in domain/webhooks.py): Commerce Layer has no topic for an edit of
a subscription's attributes, nor for expiry. The one exception is the explicit test send, which
goes out as the native envelope under the topic `webhook.test`.

Signed as Commerce Layer signs: `X-CommerceLayer-Signature` is the base64 HMAC-SHA256 of the
raw body, keyed with the endpoint's shared secret (its secret string). The body is compact JSON
without ASCII escaping, so `JSON.stringify` of the parsed body (what Commerce Layer's own
verification sample hashes) usually gives the same bytes; verify against the raw body anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stockbell.delivery.formats import native
from stockbell.domain.events import (
    BACK_IN_STOCK,
    SUBSCRIPTION_CANCELLED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    Event,
)
from stockbell.domain.webhooks import Endpoint

RESOURCE_TYPE = "in_stock_subscriptions"
TOPIC_HEADER = "X-CommerceLayer-Topic"
SIGNATURE_HEADER = "X-CommerceLayer-Signature"
RELATIONSHIPS = ("market", "customer", "sku", "events", "versions")

# (event type, data["change"]) -> topic; None: any change.
_TOPICS: dict[tuple[str, str | None], str] = {
    (SUBSCRIPTION_CREATED, None): "create",
    (SUBSCRIPTION_UPDATED, "activated"): "activate",
    (SUBSCRIPTION_UPDATED, "deactivated"): "deactivate",
    (BACK_IN_STOCK, None): "notify",
    (SUBSCRIPTION_CANCELLED, None): "destroy",
}

# Commerce Layer knows three statuses. An expired subscription never fires again, as an
# inactive one; a cancelled one is deleted in Commerce Layer's terms (it is only ever shown in
# the `destroy` payload, as it was: no longer active).
_STATUSES = {"active": "active", "notified": "notified", "inactive": "inactive",
             "expired": "inactive", "cancelled": "inactive"}
# Core statuses each Commerce Layer status stands for (filters translate through this).
CORE_STATUSES: dict[str, tuple[str, ...]] = {
    "active": ("active",), "inactive": ("inactive", "expired"), "notified": ("notified",),
}


def topic(event: Event) -> str | None:
    change = event.data.get("change")
    name = _TOPICS.get((event.type, change if isinstance(change, str) else None)) \
        or _TOPICS.get((event.type, None))
    return f"{RESOURCE_TYPE}.{name}" if name else None


def timestamp(value: datetime | str | None) -> str | None:
    """UTC with milliseconds, as Commerce Layer writes times: 2018-01-01T12:00:00.000Z."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def status(core: str) -> str:
    return _STATUSES.get(core, core)


def stock_threshold(value: str) -> int | float:
    """Commerce Layer thresholds are integers; one set to a fraction through the native API
    is shown as the exact number it is."""
    dec = Decimal(value)
    return int(dec) if dec == dec.to_integral_value() else float(dec)


def signature(secret: str, body: str) -> str:
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def links(base: str, type_: str, id_: str) -> dict[str, str]:
    return {"self": f"{base}/api/{type_}/{id_}"}


def relationship_links(base: str, sub_id: str, name: str) -> dict[str, str]:
    own = f"{base}/api/{RESOURCE_TYPE}/{sub_id}"
    return {"self": f"{own}/relationships/{name}", "related": f"{own}/{name}"}


def subscription_resource(view: dict[str, Any], mode: str, base: str = "") -> dict[str, Any]:
    """The JSON:API resource object of a subscription (service.views.subscription_view).

    `base` is the public origin ("https://host"); webhook payloads, rendered where no request
    says which host the merchant calls Stockbell on, use root-relative links."""
    sub_id = str(view["id"])
    customer: dict[str, Any] = view.get("customer") or {}
    updated = view.get("updated_at")
    notified = view.get("notified_at")
    if notified and (updated is None
                     or datetime.fromisoformat(notified) > datetime.fromisoformat(updated)):
        updated = notified  # firing stamps the row's updated_at with the notification time
    return {
        "id": sub_id,
        "type": RESOURCE_TYPE,
        "links": links(base, RESOURCE_TYPE, sub_id),
        "attributes": {
            "status": status(str(view["status"])),
            "customer_email": customer.get("email"),
            "sku_code": view.get("sku_code"),
            "stock_threshold": stock_threshold(str(view["threshold"])),
            "created_at": timestamp(view.get("created_at")),
            "updated_at": timestamp(updated),
            "reference": view.get("reference"),
            "reference_origin": view.get("reference_origin"),
            "metadata": view.get("metadata") or {},
        },
        "relationships": {name: {"links": relationship_links(base, sub_id, name)}
                          for name in RELATIONSHIPS},
        "meta": {"mode": mode},
    }


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    name = topic(event)
    sub = event.data.get("subscription")
    if name is None or not isinstance(sub, dict):
        headers, body = native.render(event, endpoint)
        name = event.type
    else:
        mode = str(endpoint.extra.get("mode", "live"))
        headers = {"content-type": "application/json"}
        body = dumps({"data": subscription_resource(sub, mode)})
    headers[TOPIC_HEADER] = name
    headers[SIGNATURE_HEADER] = signature(endpoint.secret, body)
    return headers, body
