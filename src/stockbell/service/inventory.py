"""Applying inventory changes, and the restock rule evaluated in the same transaction.

Per batch: resolve identifiers, lock the touched items in id order (a stable order, so two
concurrent batches cannot deadlock on PostgreSQL), load exactly the stock and availability rows
involved, apply each change in memory, and for every upward availability move fetch only the
subscriptions whose threshold lies in (before, after]. Stock rows, fired subscriptions and
events are written before the one commit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from stockbell.domain import events as ev
from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, Location
from stockbell.domain.errors import Conflict, InvalidInput, NotFound
from stockbell.domain.events import Event
from stockbell.domain.quantity import from_micro, to_micro
from stockbell.domain.restock import threshold_window
from stockbell.domain.scope import Scope, ScopeKind, scopes_of_location
from stockbell.domain.stock import (
    AVAILABLE,
    Adjustment,
    AvailabilityKey,
    AvailabilityMove,
    Change,
    Count,
    Outcome,
    StockKey,
    StockState,
)
from stockbell.domain.subscription import Status, Subscription, is_expired, status_after_firing
from stockbell.service.clock import as_utc, utcnow
from stockbell.service.outbox import persist_events
from stockbell.service.ports import UnitOfWork
from stockbell.service.views import iso, item_view, scope_view, subscription_view

MAX_BATCH = 1000
MAX_FUTURE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ChangeInput:
    """A change as a client names it (codes, decimal strings), before resolution."""

    type: str
    sku_code: str
    location: str
    quantity: str
    state: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    occurred_at: datetime | None = None


def _state(value: str | None, field: str, default: StockState | None = None) -> StockState:
    if value is None:
        if default is None:
            raise InvalidInput(f"{field} is required", field=field)
        return default
    try:
        return StockState(value)
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not a known state", field=field) from None


def _request_hash(changes: list[ChangeInput]) -> str:
    raw = json.dumps([asdict(c) for c in changes], default=str, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _resolve(
    inputs: list[ChangeInput],
    items: dict[str, Item],
    locations: dict[str, Location],
    now: datetime,
) -> list[Change]:
    out: list[Change] = []
    for i, c in enumerate(inputs):
        where = f"changes/{i}"
        item = items.get(c.sku_code)
        if item is None or item.id is None:
            raise InvalidInput(f"{where}: unknown item {c.sku_code!r}", field=f"{where}/sku_code")
        loc = locations.get(c.location)
        if loc is None or loc.id is None:
            raise InvalidInput(
                f"{where}: unknown location {c.location!r}", field=f"{where}/location"
            )
        qty = to_micro(c.quantity, field=f"{where}/quantity")
        when = as_utc(c.occurred_at) if c.occurred_at else now
        if when > now + MAX_FUTURE:
            raise InvalidInput(
                f"{where}: occurred_at is in the future", field=f"{where}/occurred_at"
            )
        if c.type == "count":
            state = _state(c.state, f"{where}/state", AVAILABLE)
            if state is StockState.NONE:
                raise InvalidInput(f"{where}: NONE cannot be counted", field=f"{where}/state")
            if qty < 0:
                raise InvalidInput(
                    f"{where}: a count must not be negative", field=f"{where}/quantity"
                )
            out.append(Count(item.id, loc.id, state, qty, when))
        elif c.type == "adjustment":
            src = _state(c.from_state, f"{where}/from_state")
            dst = _state(c.to_state, f"{where}/to_state")
            if src is dst:
                raise InvalidInput(
                    f"{where}: from_state and to_state must differ", field=f"{where}/to_state"
                )
            if qty <= 0:
                raise InvalidInput(
                    f"{where}: an adjustment moves a positive quantity", field=f"{where}/quantity"
                )
            out.append(Adjustment(item.id, loc.id, src, dst, qty, when))
        else:
            raise InvalidInput(
                f"{where}: type must be 'count' or 'adjustment'", field=f"{where}/type"
            )
    return out


def _keys(
    changes: list[Change], markets_of: dict[int, frozenset[int]]
) -> tuple[set[StockKey], set[AvailabilityKey]]:
    stock: set[StockKey] = set()
    avail: set[AvailabilityKey] = set()
    for c in changes:
        states = [c.state] if isinstance(c, Count) else [c.from_state, c.to_state]
        for s in states:
            if s is StockState.NONE:
                continue
            stock.add((c.item_id, c.location_id, s.value))
            if s is AVAILABLE:
                for scope in scopes_of_location(
                    c.location_id, markets_of.get(c.location_id, frozenset())
                ):
                    avail.add((c.item_id, scope.key))
    return stock, avail


class _Firing:
    """Collects what the restock rule decides across one batch."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.done: set[int] = set()  # one-shot subscriptions already fired or expired
        self.statuses: list[tuple[int, Status, bool]] = []
        # notify_count per subscription so far in this batch: `crossing` re-reads rows this batch
        # only writes at the end, so one firing twice would otherwise report n+1 twice
        self.counts: dict[int, int] = {}

    def decide(self, sub: Subscription) -> tuple[str, Subscription] | None:
        assert sub.pk is not None
        if sub.pk in self.done:
            return None
        if is_expired(sub, self.now):
            self.done.add(sub.pk)
            sub.status = Status.EXPIRED
            self.statuses.append((sub.pk, Status.EXPIRED, False))
            return ev.SUBSCRIPTION_EXPIRED, sub
        new = status_after_firing(sub)
        if new is not Status.ACTIVE:
            self.done.add(sub.pk)
        sub.status = new
        sub.notify_count = self.counts.get(sub.pk, sub.notify_count) + 1
        self.counts[sub.pk] = sub.notify_count
        sub.notified_at = self.now
        self.statuses.append((sub.pk, new, True))
        return ev.BACK_IN_STOCK, sub


async def apply_changes(
    uow: UnitOfWork,
    tenant: Tenant,
    inputs: list[ChangeInput],
    idempotency_key: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Apply a batch atomically. Returns (status, body); a replayed key returns the first one."""
    now = utcnow()
    if not inputs:
        raise InvalidInput("changes must hold at least one change", field="changes")
    if len(inputs) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} changes per request", field="changes")
    request_hash = _request_hash(inputs) if idempotency_key else ""
    if idempotency_key:
        stored = await uow.idempotency.get(tenant, idempotency_key)
        if stored is not None:
            if stored[0] != request_hash:
                raise Conflict("idempotency_key was already used with a different request body")
            return stored[1], stored[2]

    items = await uow.catalog.items_by_sku(tenant, {c.sku_code for c in inputs})
    locations = await uow.catalog.locations_by_code(tenant, {c.location for c in inputs})
    changes = _resolve(inputs, items, locations, now)
    item_by_id = {i.id: i for i in items.values()}
    loc_by_id = {loc.id: loc for loc in locations.values()}

    await uow.catalog.lock_items(sorted({c.item_id for c in changes}))
    markets_of = await uow.catalog.markets_of_locations({c.location_id for c in changes})
    stock_keys, avail_keys = _keys(changes, markets_of)
    ledger = await uow.stock.load(stock_keys, avail_keys)
    ledger.markets_of = markets_of
    # Location codes are at hand; market codes are looked up only if a market scope fires.
    codes = {f"L:{loc.id}": loc.code for loc in locations.values()}

    firing = _Firing(now)
    events: list[Event] = []
    outcomes: list[Outcome] = []
    for change in changes:
        outcome = ledger.apply(change)
        outcomes.append(outcome)
        if not outcome.applied:
            continue
        item = item_by_id[change.item_id]
        events.append(_count_event(outcome, item, loc_by_id[change.location_id], now))
        for move in outcome.moves:
            await _evaluate(uow, move, item, codes, firing, events)

    await uow.stock.save(ledger, now)
    await uow.stock.record(tenant, outcomes, now)
    if firing.statuses:
        await uow.subscriptions.set_statuses(firing.statuses, now)
    await persist_events(uow, tenant, events)

    body = {
        "changes": [_outcome_view(o, item_by_id, loc_by_id) for o in outcomes],
        "applied": sum(o.applied for o in outcomes),
        "ignored": sum(not o.applied for o in outcomes),
        "notifications": sum(e.type == ev.BACK_IN_STOCK for e in events),
    }
    if idempotency_key:
        await uow.idempotency.put(tenant, idempotency_key, request_hash, 200, body, now)
    return 200, body


async def _evaluate(
    uow: UnitOfWork,
    move: AvailabilityMove,
    item: Item,
    codes: dict[str, str],
    firing: _Firing,
    events: list[Event],
) -> None:
    window = threshold_window(move.before, move.after)
    if window is None:
        return
    for sub in await uow.subscriptions.crossing(move.item_id, move.scope.key, *window):
        decided = firing.decide(sub)
        if decided is None:
            continue
        kind, sub = decided
        if move.scope.ref is not None and move.scope.key not in codes:
            codes.update(await uow.catalog.scope_codes((), [move.scope.ref]))
        sub.sku_code = item.sku_code
        sub.scope_code = codes.get(move.scope.key)
        if kind == ev.BACK_IN_STOCK:
            data = {
                "subscription_id": sub.id,
                "subscription": subscription_view(sub),
                "item": item_view(item),
                "scope": scope_view(move.scope, sub.scope_code),
                "availability": from_micro(move.after),
                "previous_availability": from_micro(move.before),
                "threshold": from_micro(sub.threshold),
            }
        else:
            data = {"subscription_id": sub.id, "subscription": subscription_view(sub)}
        events.append(Event(kind, firing.now, data, item_id=move.item_id))


def _count_event(outcome: Outcome, item: Item, loc: Location, now: datetime) -> Event:
    change = outcome.change
    return Event(
        ev.INVENTORY_COUNT_UPDATED,
        change.occurred_at,
        {
            "sku_code": item.sku_code,
            "item_id": item.public_id,
            "location": loc.code,
            "change": "count" if isinstance(change, Count) else "adjustment",
            "counts": [
                {"state": s.value, "quantity": from_micro(q), "calculated_at": iso(now)}
                for s, q in outcome.counts
            ],
        },
        item_id=item.id,
    )


def _outcome_view(
    o: Outcome, items: dict[int | None, Item], locs: dict[int | None, Location]
) -> dict[str, Any]:
    c = o.change
    return {
        "type": "count" if isinstance(c, Count) else "adjustment",
        "sku_code": items[c.item_id].sku_code,
        "location": locs[c.location_id].code,
        "applied": o.applied,
        "occurred_at": iso(c.occurred_at),
        "counts": [{"state": s.value, "quantity": from_micro(q)} for s, q in o.counts],
    }


async def inventory_of(uow: UnitOfWork, tenant: Tenant, sku_code: str) -> dict[str, Any]:
    item = await uow.catalog.get_item(tenant, sku_code)
    if item is None or item.id is None:
        raise NotFound(f"item {sku_code!r} does not exist")
    rows = await uow.stock.stock_of_item(item.id)
    avail = await uow.stock.availability_of_item(item.id)
    loc_ids = {r[0] for r in rows} | {
        Scope.from_key(k).ref or 0 for k in avail if k.startswith("L:")
    }
    mkt_ids = {Scope.from_key(k).ref or 0 for k in avail if k.startswith("M:")}
    codes = await uow.catalog.scope_codes(loc_ids, mkt_ids)
    by_loc: dict[str, dict[str, str]] = {}
    for loc_id, state, qty in rows:
        by_loc.setdefault(codes.get(f"L:{loc_id}", str(loc_id)), {})[state] = from_micro(qty)
    scopes = []
    for key, qty in sorted(avail.items()):
        scope = Scope.from_key(key)
        view = scope_view(scope, codes.get(key))
        view["availability"] = from_micro(qty)
        scopes.append(view)
    if not any(s["type"] == ScopeKind.ALL.value for s in scopes):
        scopes.insert(0, {"type": "all", "code": None, "availability": "0"})
    return {
        "sku_code": item.sku_code,
        "locations": [{"location": k, "quantities": v} for k, v in sorted(by_loc.items())],
        "availability": scopes,
    }
