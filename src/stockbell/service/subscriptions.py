"""Subscribing, changing and ending subscriptions, and the expiry sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stockbell.domain import events as ev
from stockbell.domain import subscription as rules
from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import InvalidInput, NotFound
from stockbell.domain.events import Event
from stockbell.domain.quantity import to_micro
from stockbell.domain.scope import ALL, Scope, ScopeKind
from stockbell.domain.subscription import Customer, Status, Subscription
from stockbell.service.clock import as_utc, utcnow
from stockbell.service.ids import new_id
from stockbell.service.outbox import persist_events
from stockbell.service.pagination import Page, PageRequest, make_page
from stockbell.service.ports import UnitOfWork
from stockbell.service.views import subscription_view

_UNSET: Any = object()


@dataclass(slots=True)
class SubscriptionInput:
    sku_code: str
    location: str | None = None
    market: str | None = None
    threshold: str = "1"
    customer: Customer = field(default_factory=Customer)
    auto_resubscribe: bool = False
    expires_at: datetime | None = None
    reference: str | None = None
    reference_origin: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SubscriptionPatch:
    """Only the fields a client sent; _UNSET marks the rest."""

    threshold: Any = _UNSET
    customer: Any = _UNSET
    auto_resubscribe: Any = _UNSET
    expires_at: Any = _UNSET
    reference: Any = _UNSET
    reference_origin: Any = _UNSET
    metadata: Any = _UNSET


def _threshold(value: str | int) -> int:
    return rules.validate_threshold(to_micro(value, field="threshold"))


async def _scope(uow: UnitOfWork, tenant: Tenant, location: str | None,
                 market: str | None) -> tuple[Scope, str | None]:
    if location and market:
        raise InvalidInput("give either location or market, not both", field="location")
    if location:
        found = await uow.catalog.locations_by_code(tenant, [location])
        loc = found.get(location)
        if loc is None or loc.id is None:
            raise InvalidInput(f"unknown location {location!r}", field="location")
        return Scope(ScopeKind.LOCATION, loc.id), location
    if market:
        mkt = await uow.catalog.get_market(tenant, market)
        if mkt is None or mkt.id is None:
            raise InvalidInput(f"unknown market {market!r}", field="market")
        return Scope(ScopeKind.MARKET, mkt.id), market
    return ALL, None


async def _emit(uow: UnitOfWork, tenant: Tenant, kind: str, sub: Subscription,
                now: datetime, change: str | None = None) -> None:
    """`change` says what an update did (activated, deactivated, updated), so formats that
    name topics per transition (Commerce Layer's activate/deactivate) can tell them apart."""
    data: dict[str, Any] = {"subscription_id": sub.id, "subscription": subscription_view(sub)}
    if change is not None:
        data["change"] = change
    await persist_events(uow, tenant, [Event(kind, now, data, item_id=sub.item_id)])


async def subscribe(uow: UnitOfWork, tenant: Tenant, inp: SubscriptionInput) -> Subscription:
    """Create an active subscription. It fires only on a later upward crossing, so one created
    while stock is already at or above its threshold waits for stock to fall and rise again."""
    now = utcnow()
    item = await uow.catalog.get_item(tenant, inp.sku_code)
    if item is None or item.id is None:
        raise InvalidInput(f"unknown item {inp.sku_code!r}", field="sku_code")
    scope, code = await _scope(uow, tenant, inp.location, inp.market)
    expires_at = as_utc(inp.expires_at) if inp.expires_at else None
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    sub = Subscription(
        id=new_id("bis"),
        item_id=item.id,
        scope=scope,
        threshold=_threshold(inp.threshold),
        customer=inp.customer,
        auto_resubscribe=inp.auto_resubscribe,
        expires_at=expires_at,
        reference=inp.reference,
        reference_origin=inp.reference_origin,
        metadata=inp.metadata,
        created_at=now,
        updated_at=now,
        sku_code=item.sku_code,
        scope_code=code,
    )
    sub = await uow.subscriptions.add(tenant, sub)
    await _emit(uow, tenant, ev.SUBSCRIPTION_CREATED, sub, now)
    if sub.customer.present:
        await _emit(uow, tenant, ev.BACK_IN_STOCK_REQUESTED, sub, now)
    return sub


async def find_waiting(uow: UnitOfWork, tenant: Tenant, item_id: int, origin: str,
                       reference: str) -> Subscription | None:
    """The active, unexpired subscription of (item, reference_origin, reference), if any."""
    now = utcnow()
    rows = await uow.subscriptions.active_by_reference(tenant, item_id, origin, reference)
    return next((sub for sub in rows if not rules.is_expired(sub, now)), None)


async def subscribe_once(uow: UnitOfWork, tenant: Tenant, inp: SubscriptionInput, *,
                         refresh: bool) -> tuple[Subscription, bool]:
    """Keep one waiting subscription per (item, reference_origin, reference), as vendor APIs
    do (TI: one per part number; Sequenzy: one per subscriber and variant). A repeat either
    refreshes the waiting one (threshold, expiry, auto-resubscribe, metadata) or leaves it be.
    Returns (subscription, created)."""
    if not inp.reference_origin or not inp.reference:
        raise InvalidInput("reference_origin and reference name what is kept once")
    item = await uow.catalog.get_item(tenant, inp.sku_code)
    if item is None or item.id is None:
        raise InvalidInput(f"unknown item {inp.sku_code!r}", field="sku_code")
    # Serialises concurrent requests for the item, so two cannot both create one.
    await uow.catalog.lock_items([item.id])
    waiting = await find_waiting(uow, tenant, item.id, inp.reference_origin, inp.reference)
    if waiting is None:
        return await subscribe(uow, tenant, inp), True
    if not refresh:
        return waiting, False
    patch = SubscriptionPatch(threshold=inp.threshold, auto_resubscribe=inp.auto_resubscribe,
                              expires_at=inp.expires_at, metadata=inp.metadata)
    return await update(uow, tenant, waiting.id, patch), False


async def _get_locked(uow: UnitOfWork, tenant: Tenant, sub_id: str) -> Subscription:
    """The subscription, read again after locking its item: every writer of a subscription
    (a restock firing it, a change of it) takes the item lock first, so they serialise in
    one order instead of deadlocking, and none acts on a status another just changed."""
    sub = await get(uow, tenant, sub_id)
    await uow.catalog.lock_items([sub.item_id])
    return await get(uow, tenant, sub_id)


async def get(uow: UnitOfWork, tenant: Tenant, sub_id: str) -> Subscription:
    sub = await uow.subscriptions.get(tenant, sub_id)
    if sub is None:
        raise NotFound(f"subscription {sub_id!r} does not exist")
    return sub


async def list_subscriptions(
    uow: UnitOfWork, tenant: Tenant, status: str | None, sku_code: str | None, page: PageRequest
) -> Page[Subscription]:
    filters: dict[str, Any] = {}
    if status is not None:
        try:
            filters["status"] = Status(status)
        except ValueError:
            raise InvalidInput(f"unknown status {status!r}", field="status") from None
    if sku_code is not None:
        filters["sku_code"] = sku_code
    rows = await uow.subscriptions.page(tenant, filters, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)


async def update(
    uow: UnitOfWork, tenant: Tenant, sub_id: str, patch: SubscriptionPatch
) -> Subscription:
    now = utcnow()
    sub = await _get_locked(uow, tenant, sub_id)
    if sub.status is Status.CANCELLED:
        raise InvalidInput("a cancelled subscription cannot be changed")
    if patch.threshold is not _UNSET:
        sub.threshold = _threshold(patch.threshold)
    if patch.customer is not _UNSET:
        sub.customer = patch.customer
    if patch.auto_resubscribe is not _UNSET:
        sub.auto_resubscribe = bool(patch.auto_resubscribe)
    if patch.expires_at is not _UNSET:
        sub.expires_at = as_utc(patch.expires_at) if patch.expires_at else None
    for name in ("reference", "reference_origin", "metadata"):
        value = getattr(patch, name)
        if value is not _UNSET:
            setattr(sub, name, value if name != "metadata" else (value or {}))
    sub.updated_at = now
    await uow.subscriptions.update(sub)
    await _emit(uow, tenant, ev.SUBSCRIPTION_UPDATED, sub, now, "updated")
    return sub


async def _transition(uow: UnitOfWork, tenant: Tenant, sub: Subscription, status: Status,
                      kind: str, now: datetime, change: str | None = None) -> Subscription:
    if sub.status is status:
        return sub
    sub.status = status
    sub.updated_at = now
    await uow.subscriptions.update(sub)
    await _emit(uow, tenant, kind, sub, now, change)
    return sub


async def activate(uow: UnitOfWork, tenant: Tenant, sub_id: str) -> Subscription:
    now = utcnow()
    sub = await _get_locked(uow, tenant, sub_id)
    return await _transition(uow, tenant, sub, rules.activate(sub, now),
                             ev.SUBSCRIPTION_UPDATED, now, "activated")


async def deactivate(uow: UnitOfWork, tenant: Tenant, sub_id: str) -> Subscription:
    now = utcnow()
    sub = await _get_locked(uow, tenant, sub_id)
    return await _transition(uow, tenant, sub, rules.deactivate(sub), ev.SUBSCRIPTION_UPDATED,
                             now, "deactivated")


async def cancel(uow: UnitOfWork, tenant: Tenant, sub_id: str) -> Subscription:
    now = utcnow()
    sub = await _get_locked(uow, tenant, sub_id)
    return await _transition(uow, tenant, sub, Status.CANCELLED, ev.SUBSCRIPTION_CANCELLED, now)


async def expire_due(uow: UnitOfWork, limit: int = 500) -> int:
    """Turn subscriptions past expires_at into `expired`, one event each. Returns how many."""
    now = utcnow()
    due = await uow.subscriptions.due_to_expire(now, limit)
    if not due:
        return 0
    await uow.catalog.lock_items(sorted({sub.item_id for _, sub in due}))
    due = await uow.subscriptions.due_to_expire(now, limit)  # as of the lock
    for tenant, sub in due:
        await _transition(uow, tenant, sub, Status.EXPIRED, ev.SUBSCRIPTION_EXPIRED, now)
    return len(due)
