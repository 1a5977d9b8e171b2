"""Persisting the events a use case produced, inside its transaction (transactional outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import BACK_IN_STOCK, Event
from stockbell.domain.webhooks import Endpoint
from stockbell.service.clock import utcnow
from stockbell.service.ids import new_ids
from stockbell.service.ports import FiredRow, FiredScene, UnitOfWork


@dataclass(slots=True)
class FiredRun:
    """back_in_stock events of one move whose data the database renders from the fired
    subscriptions' rows (store/repos/fired_events.py): per subscription, (pk, status after
    firing, notify_count after firing, threshold as text, reference_origin)."""

    scene: FiredScene
    fired: list[tuple[int, str, int, str, str | None]] = field(default_factory=list)


async def persist_events(uow: UnitOfWork, tenant: Tenant,
                         entries: Sequence[Event | FiredRun]) -> None:
    """Store events and one delivery per (event, enabled endpoint that wants it), in the
    caller's transaction: no event without its deliveries, no delivery without its event.
    Each event gets the next per-item sequence so receivers can drop stale notices, and ids
    that ascend in the order given, which is the order they are inserted in."""
    per_item: dict[int, int] = {}
    total = 0
    for e in entries:
        if isinstance(e, FiredRun):
            item, n = e.scene.item_id, len(e.fired)
        elif e.item_id is not None:
            item, n = e.item_id, 1
        else:
            total += 1
            continue
        per_item[item] = per_item.get(item, 0) + n
        total += n
    if not total:
        return
    nxt: dict[int, int] = {}
    if per_item:
        last = await uow.catalog.bump_sequences(per_item)
        nxt = {i: last[i] - n + 1 for i, n in per_item.items()}
    ids = iter(new_ids("evt", total))
    # Written in the order given: a run of plain events, then a fired run, and so on.
    segments: list[list[Event] | tuple[FiredRun, list[FiredRow]]] = []
    plain: list[Event] | None = None
    for e in entries:
        if isinstance(e, FiredRun):
            item = e.scene.item_id
            rows = [(next(ids), nxt[item] + k, pk, status, count, threshold)
                    for k, (pk, status, count, threshold, _origin) in enumerate(e.fired)]
            nxt[item] += len(rows)
            segments.append((e, rows))
            plain = None
            continue
        e.id = e.id or next(ids)
        if e.item_id is not None:
            e.sequence = nxt[e.item_id]
            nxt[e.item_id] += 1
        if plain is None:
            plain = []
            segments.append(plain)
        plain.append(e)
    now = utcnow()
    for segment in segments:
        if isinstance(segment, list):
            await uow.events.add_many(tenant, segment)
        else:
            await uow.events.add_back_in_stock(tenant, segment[0].scene, segment[1], now)
    await _queue(uow, tenant, segments)


async def _queue(uow: UnitOfWork, tenant: Tenant,
                 segments: list[list[Event] | tuple[FiredRun, list[FiredRow]]]) -> None:
    endpoints = await uow.webhooks.enabled(tenant)
    if not endpoints:
        return
    pairs: list[tuple[str, int]] = []
    for segment in segments:
        if isinstance(segment, list):
            pairs += [(e.id, ep.pk) for e in segment for ep in endpoints
                      if ep.accepts(e.type, e.data) and e.id is not None
                      and ep.pk is not None]
            continue
        run, rows = segment
        takers = _Takers(endpoints)
        for (event_id, *_), (*_, origin) in zip(rows, run.fired, strict=True):
            pairs.extend((event_id, pk) for pk in takers.of(origin))
    if pairs:
        await uow.deliveries.queue(tenant, pairs, utcnow())


class _Takers:
    """The endpoints that take a back_in_stock event, per reference_origin of its
    subscription: the one field of such an event's data an endpoint's filter reads
    (domain.webhooks.FORMAT_FILTERS; tests/unit/test_webhook_rules.py checks it)."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.known: dict[str | None, list[int]] = {}

    def of(self, origin: str | None) -> list[int]:
        pks = self.known.get(origin)
        if pks is None:
            data: dict[str, Any] = {"subscription": {"reference_origin": origin}}
            pks = self.known[origin] = [ep.pk for ep in self.endpoints
                                        if ep.pk is not None
                                        and ep.accepts(BACK_IN_STOCK, data)]
        return pks
