"""Events are plain records the rules append while they work; the service persists them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

INVENTORY_COUNT_UPDATED = "inventory.count.updated"
BACK_IN_STOCK = "back_in_stock"
BACK_IN_STOCK_REQUESTED = "back_in_stock.requested"
SUBSCRIPTION_CREATED = "subscription.created"
SUBSCRIPTION_UPDATED = "subscription.updated"
SUBSCRIPTION_EXPIRED = "subscription.expired"
SUBSCRIPTION_CANCELLED = "subscription.cancelled"

ALL_TYPES = (
    INVENTORY_COUNT_UPDATED,
    BACK_IN_STOCK,
    BACK_IN_STOCK_REQUESTED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_EXPIRED,
    SUBSCRIPTION_CANCELLED,
)


@dataclass(slots=True)
class Event:
    type: str
    occurred_at: datetime
    data: dict[str, Any]
    item_id: int | None = None
    sequence: int | None = None  # per-item, assigned when persisted
    id: str | None = None
    created_at: datetime | None = None
    pk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
