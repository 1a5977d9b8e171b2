"""Subscriptions and their life cycle.

active -> notified (one-shot fired) | inactive (deactivated) | expired | cancelled.
Only `active`, unexpired subscriptions fire; with auto_resubscribe they stay active.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from stockbell.domain.errors import Conflict, InvalidInput
from stockbell.domain.scope import Scope


class Status(StrEnum):
    ACTIVE = "active"
    NOTIFIED = "notified"
    INACTIVE = "inactive"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Customer:
    email: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return bool(self.email or self.external_id)


@dataclass(slots=True)
class Subscription:
    id: str
    item_id: int
    scope: Scope
    threshold: int
    status: Status = Status.ACTIVE
    customer: Customer = field(default_factory=Customer)
    auto_resubscribe: bool = False
    expires_at: datetime | None = None
    reference: str | None = None
    reference_origin: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    notified_at: datetime | None = None
    notify_count: int = 0
    pk: int | None = None
    # Denormalised for rendering: the item's sku_code and the scope's location/market code.
    sku_code: str | None = None
    scope_code: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """The part of an active subscription the restock rule weighs. A batch may weigh many
    (a restock can cross 100,000 thresholds); only those that fire are loaded in full."""

    pk: int
    item_id: int
    scope_key: str
    threshold: int
    expires_at: datetime | None
    auto_resubscribe: bool
    notify_count: int
    # Read with the rest: an endpoint in TI's format hears only TI subscriptions' notices
    # (domain.webhooks.FORMAT_FILTERS), decided without loading the whole row.
    reference_origin: str | None = None


def validate_threshold(threshold: int) -> int:
    if threshold <= 0:
        raise InvalidInput("threshold must be greater than 0", field="threshold")
    return threshold


def is_expired(sub: Subscription | Candidate, now: datetime) -> bool:
    return sub.expires_at is not None and sub.expires_at <= now


def status_after_firing(sub: Subscription | Candidate) -> Status:
    return Status.ACTIVE if sub.auto_resubscribe else Status.NOTIFIED


def activate(sub: Subscription, now: datetime) -> Status:
    if sub.status is Status.CANCELLED:
        raise Conflict("a cancelled subscription cannot be activated")
    if is_expired(sub, now):
        raise Conflict("the subscription has expired; set a later expires_at or create a new one")
    return Status.ACTIVE


def deactivate(sub: Subscription) -> Status:
    if sub.status in (Status.CANCELLED, Status.EXPIRED):
        raise Conflict(f"a {sub.status.value} subscription cannot be deactivated")
    return Status.INACTIVE
