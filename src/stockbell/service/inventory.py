"""Applying inventory changes, and the restock rule evaluated in the same transaction.

Per batch: resolve identifiers, lock the touched items in id order (a stable order, so two
concurrent batches cannot deadlock on PostgreSQL), load exactly the stock and availability rows
involved, apply each change in memory, and for every upward availability move fetch only the
subscriptions whose threshold lies in (before, after]. Stock rows, fired subscriptions and
events are written before the one commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from stockbell.domain import events as ev
from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, ItemRef, Location
from stockbell.domain.errors import Conflict, InvalidInput, NotFound, StockbellError
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
from stockbell.domain.subscription import (
    Candidate,
    Status,
    Subscription,
    is_expired,
    status_after_firing,
)
from stockbell.service.clock import as_utc, utcnow
from stockbell.service.outbox import FiredRun, persist_events
from stockbell.service.ports import FiredScene, UnitOfWork
from stockbell.service.views import iso, item_view, scope_view, subscription_view

MAX_BATCH = 1000
MAX_FUTURE = timedelta(minutes=5)


@dataclass(slots=True)
class ChangeInput:
    """A change as a client names it (codes, decimal strings), before resolution. Not frozen:
    a batch builds a thousand, and a frozen dataclass costs three times as much to build."""

    type: str
    sku_code: str
    location: str
    quantity: str
    state: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    occurred_at: datetime | None = None


_STATES: dict[str, StockState] = {s.value: s for s in StockState}


def _state(value: str | None, where: str, name: str,
           default: StockState | None = None) -> StockState:
    if value is None:
        if default is None:
            raise InvalidInput(f"{where}/{name} is required", field=f"{where}/{name}")
        return default
    state = _STATES.get(value)
    if state is None:
        raise InvalidInput(f"{where}/{name} {value!r} is not a known state",
                           field=f"{where}/{name}")
    return state


def _request_hash(changes: list[ChangeInput]) -> str:
    raw = json.dumps([asdict(c) for c in changes], default=str, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _resolve(
    inputs: list[ChangeInput],
    items: dict[str, ItemRef],
    locations: dict[str, Location],
    now: datetime,
) -> list[Change]:
    out: list[Change] = []
    horizon = now + MAX_FUTURE
    for i, c in enumerate(inputs):
        where = f"changes/{i}"
        item = items.get(c.sku_code)
        if item is None:
            raise InvalidInput(f"{where}: unknown item {c.sku_code!r}", field=f"{where}/sku_code")
        loc = locations.get(c.location)
        if loc is None or loc.id is None:
            raise InvalidInput(
                f"{where}: unknown location {c.location!r}", field=f"{where}/location"
            )
        qty = to_micro(c.quantity, field=f"{where}/quantity")
        when = as_utc(c.occurred_at) if c.occurred_at else now
        if when > horizon:
            raise InvalidInput(
                f"{where}: occurred_at is in the future", field=f"{where}/occurred_at"
            )
        if c.type == "count":
            state = _state(c.state, where, "state", AVAILABLE)
            if state is StockState.NONE:
                raise InvalidInput(f"{where}: NONE cannot be counted", field=f"{where}/state")
            if qty < 0:
                raise InvalidInput(
                    f"{where}: a count must not be negative", field=f"{where}/quantity"
                )
            out.append(Count(item.id, loc.id, state, qty, when))
        elif c.type == "adjustment":
            src = _state(c.from_state, where, "from_state")
            dst = _state(c.to_state, where, "to_state")
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
    for c in changes:
        if isinstance(c, Count):
            stock.add((c.item_id, c.location_id, c.state.value))
            continue
        for s in (c.from_state, c.to_state):
            if s is not StockState.NONE:
                stock.add((c.item_id, c.location_id, s.value))
    avail: set[AvailabilityKey] = set()
    for item_id, location_id, state in stock:
        if state == AVAILABLE.value:
            for scope in scopes_of_location(location_id,
                                            markets_of.get(location_id, frozenset())):
                avail.add((item_id, scope.key))
    return stock, avail


@dataclass(slots=True)
class _Fired:
    """One decision of the restock rule, rendered into an event once its row is loaded."""

    pk: int
    kind: str
    status: Status
    notify_count: int
    move: AvailabilityMove
    threshold: int
    reference_origin: str | None
    in_database: bool = False  # rendered by the database (see _IN_DATABASE)


class _Firing:
    """Collects what the restock rule decides across one batch."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.done: set[int] = set()  # one-shot subscriptions already fired or expired
        self.statuses: list[tuple[int, Status, bool]] = []
        # notify_count per subscription so far in this batch: candidates are read once per
        # batch, so one firing twice would otherwise report n+1 twice
        self.counts: dict[int, int] = {}

    def decide(self, sub: Candidate, move: AvailabilityMove) -> _Fired | None:
        if sub.pk in self.done:
            return None
        if is_expired(sub, self.now):
            self.done.add(sub.pk)
            self.statuses.append((sub.pk, Status.EXPIRED, False))
            return _Fired(sub.pk, ev.SUBSCRIPTION_EXPIRED, Status.EXPIRED,
                          self.counts.get(sub.pk, sub.notify_count), move, sub.threshold,
                          sub.reference_origin)
        new = status_after_firing(sub)
        if new is not Status.ACTIVE:
            self.done.add(sub.pk)
        count = self.counts.get(sub.pk, sub.notify_count) + 1
        self.counts[sub.pk] = count
        self.statuses.append((sub.pk, new, True))
        return _Fired(sub.pk, ev.BACK_IN_STOCK, new, count, move, sub.threshold,
                      sub.reference_origin)


# Fired subscriptions are loaded and turned into events this many at a time, so a restock
# that fires 100,000 never holds them all in memory.
_EVENT_CHUNK = 2000
# A move that fires at least this many back_in_stock events in a row has their data rendered
# by the database from the subscriptions' rows (store/repos/fired_events.py), not loaded and
# rendered here: loading and rendering kept the event loop busy 5.1-5.5 s of a 6.2-6.5 s
# restock of 100,000, against 0.9 of 4.0 s now (docs/performance.md, eighteenth session).
# Fewer (the group commit's single changes) stay here, where they ride with the group's
# writes.
_IN_DATABASE = 100


async def apply_changes(
    uow: UnitOfWork,
    tenant: Tenant,
    inputs: list[ChangeInput],
    idempotency_key: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Apply a batch atomically. Returns (status, body); a replayed key returns the first one."""
    now = utcnow()
    _check_size(inputs)
    request_hash = _request_hash(inputs) if idempotency_key else ""
    if idempotency_key:
        stored = await uow.idempotency.get(tenant, idempotency_key)
        if stored is not None:
            if stored[0] != request_hash:
                raise Conflict("idempotency_key was already used with a different request body")
            return stored[1], stored[2]
    [result] = await apply_grouped(uow, tenant, [inputs], now)
    if isinstance(result, StockbellError):
        raise result
    if idempotency_key:
        await uow.idempotency.put(tenant, idempotency_key, request_hash, 200, result, now)
    return 200, result


def _check_size(inputs: list[ChangeInput]) -> None:
    if not inputs:
        raise InvalidInput("changes must hold at least one change", field="changes")
    if len(inputs) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} changes per request", field="changes")


async def apply_grouped(
    uow: UnitOfWork, tenant: Tenant, requests: list[list[ChangeInput]],
    now: datetime | None = None,
) -> list[dict[str, Any] | StockbellError]:
    """Apply several requests' batches in one transaction, each as if applied alone and in
    the order given: a request whose input is invalid gets its error and changes nothing;
    the others get their own response body. Concurrent single-change requests share one
    transaction this way (see `service/coalesce.py`), one commit for all of them."""
    now = now or utcnow()
    results: list[dict[str, Any] | StockbellError] = []
    # Locked as they are read, with the locations (PostgreSQL: one round trip where it was
    # four, the stock `load` below reads included); a SKU of a request that fails is locked
    # too, which only serialises a little more.
    items, locations, markets_of = await uow.catalog.locked_refs_and_locations(
        tenant, {c.sku_code for r in requests for c in r},
        {c.location for r in requests for c in r})
    resolved: list[list[Change]] = []
    for inputs in requests:
        try:
            _check_size(inputs)
            resolved.append(_resolve(inputs, items, locations, now))
            results.append({})
        except StockbellError as exc:
            resolved.append([])
            results.append(exc)
    changes = [c for group in resolved for c in group]
    if not changes:
        return results
    item_by_id = {i.id: i for i in items.values()}
    loc_by_id = {loc.id: loc for loc in locations.values()}

    stock_keys, avail_keys = _keys(changes, markets_of)
    ledger = await uow.stock.load(stock_keys, avail_keys)
    ledger.markets_of = markets_of

    # Pass 1: apply every change in memory, remembering each upward move in order.
    plan: list[Event | AvailabilityMove | int] = []
    rises: list[AvailabilityMove] = []
    outcomes: list[list[Outcome]] = []
    calculated_at = iso(now)
    for n, group in enumerate(resolved):
        plan.append(n)  # marks where request n's events start
        mine: list[Outcome] = []
        for change in group:
            outcome = ledger.apply(change)
            mine.append(outcome)
            if not outcome.applied:
                continue
            plan.append(_count_event(outcome, item_by_id[change.item_id],
                                     loc_by_id[change.location_id], calculated_at))
            for m in outcome.moves:
                if threshold_window(m.before, m.after):
                    plan.append(m)
                    rises.append(m)
        outcomes.append(mine)

    # Pass 2: one range query for every (item, scope) that rose, over the union of its
    # windows; then the rule decides per move, in order, exactly as if asked move by move.
    firing = _Firing(now)
    decided = await _decide(uow, plan, rises, firing)

    async def write() -> dict[int, int]:
        # On PostgreSQL the stock, the sequences and a few events go as one statement, with
        # the endpoints' read (see store/repos/bulk.py, combined_writes).
        async with uow.combined_writes():
            await uow.stock.save(tenant, ledger, [o for mine in outcomes for o in mine], now)
            if firing.statuses:
                await uow.subscriptions.set_statuses(firing.statuses, now)
            return await _persist(uow, tenant, decided, loc_by_id, now)

    # The writes go to the database (SQLite works in its own thread, PostgreSQL in its own
    # process) while the answers are rendered here; only `write` uses the connection.
    writing = asyncio.ensure_future(write())
    try:
        views: list[list[dict[str, Any]]] = []
        for mine in outcomes:
            views.append([])
            for k, o in enumerate(mine):
                if k % 250 == 249:
                    await asyncio.sleep(0)  # let the writes take their next step
                views[-1].append(_outcome_view(o, item_by_id, loc_by_id))
    finally:
        notifications = await writing

    for n, mine in enumerate(outcomes):
        if isinstance(results[n], StockbellError):
            continue
        applied = sum(o.applied for o in mine)
        results[n] = {
            "changes": views[n],
            "applied": applied,
            "ignored": len(mine) - applied,
            "notifications": notifications.get(n, 0),
        }
    return results


async def _decide(uow: UnitOfWork, plan: list[Event | AvailabilityMove | int],
                  rises: list[AvailabilityMove], firing: _Firing) -> list[Event | _Fired | int]:
    windows: dict[AvailabilityKey, tuple[int, int]] = {}
    for move in rises:
        key = (move.item_id, move.scope.key)
        window = windows.get(key)
        windows[key] = ((move.before, move.after) if window is None
                        else (min(window[0], move.before), max(window[1], move.after)))
    by_key: dict[AvailabilityKey, list[Candidate]] = {}
    if windows:
        for cand in await uow.subscriptions.candidates(
                [(i, k, low, high) for (i, k), (low, high) in windows.items()]):
            by_key.setdefault((cand.item_id, cand.scope_key), []).append(cand)
    if not by_key:  # nothing waits in any window: no move can fire anything
        return [step for step in plan if not isinstance(step, AvailabilityMove)]
    out: list[Event | _Fired | int] = []
    for step in plan:
        if not isinstance(step, AvailabilityMove):
            out.append(step)
            continue
        for cand in by_key.get((step.item_id, step.scope.key), ()):
            if step.before < cand.threshold <= step.after:
                fired = firing.decide(cand, step)
                if fired is not None:
                    out.append(fired)
    return out


async def _persist(uow: UnitOfWork, tenant: Tenant, decided: list[Event | _Fired | int],
                   loc_by_id: dict[int | None, Location], now: datetime) -> dict[int, int]:
    """Turn decisions into events chunk by chunk and store them with their deliveries;
    returns how many back_in_stock notifications each request (by its marker) recorded."""
    codes = {f"L:{loc.id}": loc.code for loc in loc_by_id.values()}
    fired = [f for f in decided if isinstance(f, _Fired)]
    market_refs = {f.move.scope.ref for f in fired
                   if f.move.scope.kind is ScopeKind.MARKET and f.move.scope.ref is not None}
    if market_refs:
        codes.update(await uow.catalog.scope_codes((), market_refs))
    fired_items = await uow.catalog.items_by_id(tenant, {f.move.item_id for f in fired})
    if len(fired) >= _IN_DATABASE:
        _mark_in_database(decided)
    render = _Renderer(fired_items, codes, now)
    chunks = [decided[i:i + _EVENT_CHUNK] for i in range(0, len(decided), _EVENT_CHUNK)]
    # Pipelined: while chunk k is written (SQLite works in its own thread, PostgreSQL in its
    # own process), chunk k+1 is rendered here. The connection is only ever used by one
    # side at a time: rows for k+1 are read before k's write starts.
    events = await render.chunk(chunks[0], await _rows(uow, chunks[0])) if chunks else []
    for k in range(len(chunks)):
        subs = await _rows(uow, chunks[k + 1]) if k + 1 < len(chunks) else {}
        writing = asyncio.ensure_future(persist_events(uow, tenant, events))
        try:
            events = await render.chunk(chunks[k + 1], subs) if k + 1 < len(chunks) else []
        finally:
            await writing
    return render.notifications


def _mark_in_database(decided: list[Event | _Fired | int]) -> None:
    """Mark the back_in_stock decisions that come in runs of at least _IN_DATABASE for one
    move (a restock's are one run, in the order the rule decided them)."""
    run: list[_Fired] = []
    for step in [*decided, 0]:
        if (isinstance(step, _Fired) and step.kind == ev.BACK_IN_STOCK
                and (not run or run[-1].move is step.move)):
            run.append(step)
            continue
        if len(run) >= _IN_DATABASE:
            for fired in run:
                fired.in_database = True
        run = [step] if isinstance(step, _Fired) and step.kind == ev.BACK_IN_STOCK else []


async def _rows(uow: UnitOfWork, chunk: list[Event | _Fired | int]) -> dict[int, Subscription]:
    return await uow.subscriptions.by_pks([f.pk for f in chunk if isinstance(f, _Fired)
                                           and not f.in_database])


class _Renderer:
    """Turns a chunk of decisions into events (or runs the database renders), counting
    notifications per request."""

    def __init__(self, item_by_id: dict[int, Item], codes: dict[str, str],
                 now: datetime) -> None:
        self.item_by_id = item_by_id
        self.codes = codes
        self.now = now
        self.items_json: dict[int, dict[str, Any]] = {}
        self.scenes: dict[int, FiredScene] = {}
        self.notifications: dict[int, int] = {}
        self.request = 0

    async def chunk(self, chunk: list[Event | _Fired | int],
                    subs: dict[int, Subscription]) -> list[Event | FiredRun]:
        events: list[Event | FiredRun] = []
        run: FiredRun | None = None
        for n, step in enumerate(chunk):
            if n % 250 == 249:
                await asyncio.sleep(0)  # let a concurrent write take its next step
            if isinstance(step, int):
                self.request = step
                continue
            if isinstance(step, Event):
                events.append(step)
                run = None
                continue
            item = self.item_by_id[step.move.item_id]
            if step.move.item_id not in self.items_json:
                self.items_json[step.move.item_id] = item_view(item)
            if step.kind == ev.BACK_IN_STOCK:
                self.notifications[self.request] = self.notifications.get(self.request, 0) + 1
            if not step.in_database:
                events.append(_fired_event(step, subs[step.pk], item.sku_code,
                                           self.items_json, self.codes, self.now))
                run = None
                continue
            scene = self._scene(step.move, item.sku_code)
            if run is None or run.scene is not scene:
                run = FiredRun(scene)
                events.append(run)
            run.fired.append((step.pk, step.status.value, step.notify_count,
                              from_micro(step.threshold), step.reference_origin))
        return events

    def _scene(self, move: AvailabilityMove, sku_code: str) -> FiredScene:
        scene = self.scenes.get(id(move))
        if scene is None:
            scene = self.scenes[id(move)] = FiredScene(
                move.item_id, sku_code, scope_view(move.scope, self.codes.get(move.scope.key)),
                self.items_json[move.item_id], from_micro(move.after), from_micro(move.before),
                iso(self.now) or "", self.now)
        return scene


def _fired_event(fired: _Fired, sub: Subscription, sku_code: str,
                 items_json: dict[int, dict[str, Any]], codes: dict[str, str],
                 now: datetime) -> Event:
    move = fired.move
    sub.sku_code = sku_code
    sub.scope_code = codes.get(move.scope.key)
    sub.status = fired.status
    sub.notify_count = fired.notify_count
    if fired.kind == ev.BACK_IN_STOCK:
        sub.notified_at = now
        data = {
            "subscription_id": sub.id,
            "subscription": subscription_view(sub),
            "item": items_json[move.item_id],
            "scope": scope_view(move.scope, sub.scope_code),
            "availability": from_micro(move.after),
            "previous_availability": from_micro(move.before),
            "threshold": from_micro(sub.threshold),
        }
    else:
        data = {"subscription_id": sub.id, "subscription": subscription_view(sub)}
    return Event(fired.kind, now, data, item_id=move.item_id)


def _count_event(outcome: Outcome, item: ItemRef, loc: Location, calculated_at: str | None
                 ) -> Event:
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
                {"state": s.value, "quantity": from_micro(q), "calculated_at": calculated_at}
                for s, q in outcome.counts
            ],
        },
        item_id=item.id,
    )


def _outcome_view(
    o: Outcome, items: dict[int, ItemRef], locs: dict[int | None, Location]
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
    found = await uow.stock.item_stock(tenant, sku_code)
    if found is None:
        raise NotFound(f"item {sku_code!r} does not exist")
    by_loc: dict[str, dict[str, str]] = {}
    for loc_id, code, state, qty in found.stock:
        by_loc.setdefault(code if code is not None else str(loc_id), {})[state] = \
            from_micro(qty)
    scopes = []
    for key, code, qty in sorted(found.availability):
        view = scope_view(Scope.from_key(key), code)
        view["availability"] = from_micro(qty)
        scopes.append(view)
    if not any(s["type"] == ScopeKind.ALL.value for s in scopes):
        scopes.insert(0, {"type": "all", "code": None, "availability": "0"})
    return {
        "sku_code": found.sku_code,
        "locations": [{"location": k, "quantities": v} for k, v in sorted(by_loc.items())],
        "availability": scopes,
    }
