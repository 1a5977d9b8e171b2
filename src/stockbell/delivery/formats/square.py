"""Square's `inventory.count.updated` notification (seed 001).

`data` carries the counts twice, so receivers of either kind work unchanged: `inventory_counts`
exactly where the seed's listener reads them, and Square's live-API envelope
`{"type": "inventory", "id", "object": {"inventory_counts"}}`. Stockbell emits one event per
applied change, so a notification holds one count (a physical count) or two (an adjustment:
the before-state and the after-state count), always within Square's limit of 100; a bulk update
of more than 100 counts therefore spans several notifications, as Square's own do.

Signed as Square signs: `x-square-hmacsha256-signature` is the base64 HMAC-SHA256 of the
notification URL followed by the body, keyed with the endpoint's secret string (its "signature
key"). Only inventory.count.updated reaches a square endpoint (`FORMAT_EVENT_TYPES`); a
`webhook.test` send renders the same envelope with no counts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from stockbell.domain.events import INVENTORY_COUNT_UPDATED, Event
from stockbell.domain.webhooks import Endpoint

MAX_COUNTS = 100
SIGNATURE_HEADER = "x-square-hmacsha256-signature"
CATALOG_OBJECT_TYPE = "ITEM_VARIATION"


def merchant_id(account_id: int, mode: str) -> str:
    """The account as Square names a seller: "SB", the account id in 8 digits, then "T" (test
    mode) or "L" (live mode): stable for the account, distinct per mode, like Square's
    sandbox and production merchants."""
    return f"SB{account_id:08d}{'T' if mode == 'test' else 'L'}"


def signature(key: str, url: str, body: str) -> str:
    digest = hmac.new(key.encode(), (url + body).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def timestamp(value: datetime | str) -> str:
    """RFC 3339 in UTC with milliseconds, as Square writes times."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def inventory_counts(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Square InventoryCount objects of an inventory.count.updated event, in the seed's order."""
    counts = [
        {
            "location_id": data["location"],
            "catalog_object_id": data["sku_code"],
            "catalog_object_type": CATALOG_OBJECT_TYPE,
            "state": c["state"],
            "quantity": c["quantity"],
            "calculated_at": timestamp(c["calculated_at"]),
        }
        for c in data["counts"]
    ]
    if len(counts) > MAX_COUNTS:
        raise ValueError(f"a Square notification holds at most {MAX_COUNTS} counts")
    return counts


def _merchant(endpoint: Endpoint) -> str:
    account = endpoint.extra.get("account_id")
    if account is None:  # an endpoint not loaded from the store (unit tests)
        return endpoint.id
    return merchant_id(int(account), str(endpoint.extra.get("mode", "live")))


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    assert event.id is not None
    assert event.created_at is not None
    counts = inventory_counts(event.data) if event.type == INVENTORY_COUNT_UPDATED else []
    obj: dict[str, Any] = {"inventory_counts": counts}
    if event.type != INVENTORY_COUNT_UPDATED:
        obj = {**event.data, **obj}
    body = {
        "type": event.type,
        "event_id": event.id,
        "created_at": timestamp(event.created_at),
        "merchant_id": _merchant(endpoint),
        "data": {
            "type": "inventory" if event.type == INVENTORY_COUNT_UPDATED else event.type,
            "id": event.id,
            "object": obj,
            "inventory_counts": counts,
        },
        # Stockbell's own, in every format: drop a notice older than one already handled.
        "occurred_at": timestamp(event.occurred_at),
        "sequence": event.sequence,
    }
    text = json.dumps(body, separators=(",", ":"))
    return {"content-type": "application/json",
            SIGNATURE_HEADER: signature(endpoint.secret, endpoint.url, text)}, text
