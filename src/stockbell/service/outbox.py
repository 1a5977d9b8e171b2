"""Persisting the events a use case produced, inside its transaction (transactional outbox)."""

from __future__ import annotations

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import Event
from stockbell.service.clock import utcnow
from stockbell.service.ports import UnitOfWork


async def persist_events(uow: UnitOfWork, tenant: Tenant, events: list[Event]) -> None:
    """Store events and one delivery per (event, enabled endpoint that wants it), in the
    caller's transaction: no event without its deliveries, no delivery without its event.
    Each event gets the next per-item sequence so receivers can drop stale notices."""
    per_item: dict[int, int] = {}
    for e in events:
        if e.item_id is not None:
            per_item[e.item_id] = per_item.get(e.item_id, 0) + 1
    if per_item:
        last = await uow.catalog.bump_sequences(per_item)
        nxt = {i: last[i] - n + 1 for i, n in per_item.items()}
        for e in events:
            if e.item_id is not None:
                e.sequence = nxt[e.item_id]
                nxt[e.item_id] += 1
    if not events:
        return
    await uow.events.add_many(tenant, events)
    endpoints = await uow.webhooks.enabled(tenant)
    pairs = [(e.id, ep.pk) for e in events for ep in endpoints
             if ep.accepts(e.type, e.data) and e.id is not None
             and ep.pk is not None]
    if pairs:
        await uow.deliveries.queue(tenant, pairs, utcnow())
