"""JSON views of core objects, shared by event payloads and API responses so both agree."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.events import Event
from stockbell.domain.quantity import from_micro
from stockbell.domain.scope import Scope, ScopeKind
from stockbell.domain.subscription import Subscription


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return _iso(value, value.utcoffset())


@functools.lru_cache(maxsize=8192)
def _iso(value: datetime, offset: timedelta | None) -> str:
    # Memoised: a fan-out renders the same few instants (now, the item's times) 100,000 times.
    # The offset is part of the key: equal instants in other zones are written differently.
    return value.isoformat().replace("+00:00", "Z")


def scope_view(scope: Scope, code: str | None) -> dict[str, Any]:
    if scope.kind is ScopeKind.ALL:
        return {"type": "all", "code": None}
    return {"type": scope.kind.value, "code": code}


def item_view(item: Item) -> dict[str, Any]:
    return {
        "id": item.public_id,
        "sku_code": item.sku_code,
        "title": item.title,
        "variant_title": item.variant_title,
        "upc": item.upc,
        "product_id": item.product_id,
        "variant_id": item.variant_id,
        "size": item.size,
        "width": item.width,
        "part_number": item.part_number,
        "generic_part_number": item.generic_part_number,
        "pricing": item.pricing,
        "attributes": item.attributes,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
    }


def location_view(loc: Location) -> dict[str, Any]:
    return {
        "code": loc.code,
        "name": loc.name,
        "created_at": iso(loc.created_at),
        "updated_at": iso(loc.updated_at),
    }


def market_view(market: Market) -> dict[str, Any]:
    return {
        "code": market.code,
        "name": market.name,
        "locations": market.location_codes,
        "created_at": iso(market.created_at),
        "updated_at": iso(market.updated_at),
    }


def subscription_view(sub: Subscription) -> dict[str, Any]:
    c = sub.customer
    return {
        "id": sub.id,
        "status": sub.status.value,
        "sku_code": sub.sku_code,
        "scope": scope_view(sub.scope, sub.scope_code),
        "threshold": from_micro(sub.threshold),
        "customer": {
            "email": c.email,
            "external_id": c.external_id,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "attributes": c.attributes,
        },
        "auto_resubscribe": sub.auto_resubscribe,
        "expires_at": iso(sub.expires_at),
        "reference": sub.reference,
        "reference_origin": sub.reference_origin,
        "metadata": sub.metadata,
        "notify_count": sub.notify_count,
        "notified_at": iso(sub.notified_at),
        "created_at": iso(sub.created_at),
        "updated_at": iso(sub.updated_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": iso(event.occurred_at),
        "created_at": iso(event.created_at),
        "sequence": event.sequence,
        "data": event.data,
    }
