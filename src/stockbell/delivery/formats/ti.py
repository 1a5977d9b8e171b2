"""The TI store inventory push (seed 000): `{"type": "inventory", "data": {...}}`.

A `back_in_stock` event becomes TI's notification, built from the item the event carries
(`item_view`: part numbers, pricing, attributes) and the availability after the restock. A
`webhook.test` event becomes the document's own example for the test part TESTOPN, which is
what TI's `.../inventory/test` sends. A ti endpoint hears no other type (FORMAT_EVENT_TYPES);
anything else that reaches this function (never through the dispatcher's normal path) is
passed through as `{"type", "data"}` rather than failing the delivery.

Numbers are JSON numbers as in the document (`"price": 1.003`, `"quantity": 0`): whole
decimals become integers, others the shortest float that reads back as the same decimal.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from stockbell.domain.events import BACK_IN_STOCK, Event
from stockbell.domain.webhooks import WEBHOOK_TEST, Endpoint

# Item attributes copied into the payload, in the document's order (after `pricing`).
ATTRIBUTES = (
    "description", "minimumOrderQuantity", "standardPackQuantity",
    "exportControlClassificationNumber", "htsCode", "pinCount", "packageType",
    "packageCarrier", "customReel", "lifeCycle",
)
_INTEGERS = frozenset({"minimumOrderQuantity", "standardPackQuantity", "pinCount"})
_ALIASES = {"exportControlClassificationNumber": ("ECCN", "eccn")}

# The seed document's example, verbatim: the body TI's test endpoint sends.
TEST_PAYLOAD: dict[str, Any] = {
    "type": "inventory",
    "data": {
        "tiPartNumber": "TESTOPN",
        "genericPartNumber": "TESTGPN",
        "buyNowUrl": "",
        "quantity": 0,
        "pricing": [{"currency": "USD",
                     "priceBreaks": [{"priceBreakQuantity": 1, "price": 1.003}]}],
        "description": "Test product for test nofication",
        "minimumOrderQuantity": 1,
        "standardPackQuantity": 75,
        "exportControlClassificationNumber": "EAR99",
        "htsCode": "0123456789",
        "pinCount": 8,
        "packageType": "TESTOPN_8_SOIC_D",
        "packageCarrier": "TUBE",
        "customReel": False,
        "lifeCycle": "ACTIVE",
    },
}


def number(value: Any) -> Any:
    """A decimal (string or number) as a JSON number: int when whole, else float."""
    if isinstance(value, bool) or value is None:
        return value
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return value
    if not d.is_finite():
        return value
    return int(d) if d == d.to_integral_value() else float(d)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _attribute(attributes: dict[str, Any], name: str) -> Any:
    for key in (name, _snake(name), *_ALIASES.get(name, ())):
        if key in attributes:
            value = attributes[key]
            break
    else:
        return None
    if name in _INTEGERS and isinstance(value, str):
        return number(value) if value.strip() else None
    if name == "customReel" and isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value


def _pricing(pricing: list[dict[str, Any]], currency: str | None) -> list[dict[str, Any]]:
    """All price lists, or only the subscription's currency when the item is priced in it."""
    chosen = [p for p in pricing if currency and p.get("currency") == currency] or pricing
    return [
        {"currency": p.get("currency"),
         "priceBreaks": [{"priceBreakQuantity": number(b.get("quantity")),
                          "price": number(b.get("price"))}
                         for b in p.get("price_breaks", [])]}
        for p in chosen
    ]


def inventory_payload(item: dict[str, Any], quantity: Any,
                      currency: str | None = None) -> dict[str, Any]:
    """TI's notification for one item (an `item_view`) at one availability."""
    attributes: dict[str, Any] = item.get("attributes") or {}
    buy_now = _attribute(attributes, "buyNowUrl")
    data: dict[str, Any] = {
        "tiPartNumber": item.get("part_number") or item.get("sku_code"),
        "genericPartNumber": item.get("generic_part_number"),
        "buyNowUrl": "" if buy_now is None else buy_now,
        "quantity": number(quantity),
        "pricing": _pricing(item.get("pricing") or [], currency),
    }
    for name in ATTRIBUTES:
        data[name] = _attribute(attributes, name)
    return {"type": "inventory", "data": data}


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    if event.type == BACK_IN_STOCK and "item" in event.data:
        metadata = (event.data.get("subscription") or {}).get("metadata") or {}
        currency = metadata.get("currency") if isinstance(metadata, dict) else None
        body = inventory_payload(event.data["item"], event.data.get("availability", 0),
                                 currency if isinstance(currency, str) else None)
    elif event.type == WEBHOOK_TEST:
        body = TEST_PAYLOAD
    else:
        body = {"type": event.type, "data": event.data}
    return {"content-type": "application/json"}, json.dumps(body, separators=(",", ":"))
