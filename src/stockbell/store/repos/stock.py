"""Stock per (item, location, state), materialised availability, and the change ledger."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.stock import (
    AVAILABLE,
    AvailabilityKey,
    Count,
    Outcome,
    StockKey,
    StockLedger,
)
from stockbell.store.repos.util import insert_for
from stockbell.store.tables import availability, inventory_changes, market_locations, stock

_CHUNK = 500
T = TypeVar("T")


def _chunks(values: list[T]) -> Iterable[list[T]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


@functools.lru_cache(maxsize=4)
def _upserts(dialect: str) -> tuple[Any, Any]:
    """The stock and availability upserts, built once per dialect: `excluded` copies the
    table's columns, which cost more than the statement on every small transaction."""
    ins = insert_for(dialect, stock)
    ains = insert_for(dialect, availability)
    return (
        ins.on_conflict_do_update(
            index_elements=["item_id", "location_id", "state"],
            set_={"quantity": ins.excluded.quantity, "counted_at": ins.excluded.counted_at,
                  "updated_at": ins.excluded.updated_at}),
        ains.on_conflict_do_update(
            index_elements=["item_id", "scope_key"],
            set_={"quantity": ains.excluded.quantity}),
    )


class SqlStock:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def load(self, stock_keys: Iterable[StockKey],
                   availability_keys: Iterable[AvailabilityKey]) -> StockLedger:
        """The rows behind the given keys. Filtered by plain IN lists per column (a superset
        when a batch crosses items and locations), then trimmed here: a row-value IN list
        cost more to bind than to run."""
        ledger = StockLedger()
        wanted = set(stock_keys)
        item_ids = sorted({k[0] for k in wanted})
        loc_ids = sorted({k[1] for k in wanted})
        states = sorted({k[2] for k in wanted})
        for chunk in _chunks(item_ids):
            res = await self.conn.execute(
                sa.select(stock.c.item_id, stock.c.location_id, stock.c.state,
                          stock.c.quantity, stock.c.counted_at)
                .where(stock.c.item_id.in_(chunk), stock.c.location_id.in_(loc_ids),
                       stock.c.state.in_(states))
            )
            for item_id, loc_id, state, qty, counted_at in res:
                key = (item_id, loc_id, state)
                if key not in wanted:
                    continue
                ledger.quantities[key] = qty
                if counted_at is not None:
                    ledger.counted_at[key] = counted_at
        awanted = set(availability_keys)
        a_items = sorted({k[0] for k in awanted})
        scope_keys = sorted({k[1] for k in awanted})
        for achunk in _chunks(a_items):
            res2 = await self.conn.execute(
                sa.select(availability.c.item_id, availability.c.scope_key,
                          availability.c.quantity)
                .where(availability.c.item_id.in_(achunk),
                       availability.c.scope_key.in_(scope_keys))
            )
            for item_id, key, qty in res2:
                if (item_id, key) in awanted:
                    ledger.availability[(item_id, key)] = qty
        return ledger

    async def save(self, ledger: StockLedger, now: datetime) -> None:
        srows = [
            {"item_id": k[0], "location_id": k[1], "state": k[2],
             "quantity": ledger.quantities[k], "counted_at": ledger.counted_at.get(k),
             "updated_at": now}
            for k in sorted(ledger.dirty_stock)
        ]
        if srows:
            await self.conn.execute(_upserts(self.conn.dialect.name)[0], srows)
        arows = [
            {"item_id": k[0], "scope_key": k[1], "quantity": ledger.availability[k]}
            for k in sorted(ledger.dirty_availability)
        ]
        if arows:
            await self.conn.execute(_upserts(self.conn.dialect.name)[1], arows)

    async def record(self, tenant: Tenant, outcomes: Sequence[Outcome], now: datetime) -> None:
        rows = []
        for o in outcomes:
            c = o.change
            base = {"account_id": tenant.account_id, "mode": tenant.mode.value,
                    "item_id": c.item_id, "location_id": c.location_id,
                    "quantity": c.quantity, "occurred_at": c.occurred_at,
                    "applied": o.applied, "created_at": now}
            if isinstance(c, Count):
                rows.append({**base, "kind": "count", "state": c.state.value,
                             "from_state": None, "to_state": None})
            else:
                rows.append({**base, "kind": "adjustment", "state": None,
                             "from_state": c.from_state.value, "to_state": c.to_state.value})
        if rows:
            await self.conn.execute(sa.insert(inventory_changes), rows)

    async def stock_of_item(self, item_id: int) -> list[tuple[int, str, int]]:
        res = await self.conn.execute(
            sa.select(stock.c.location_id, stock.c.state, stock.c.quantity)
            .where(stock.c.item_id == item_id)
            .order_by(stock.c.location_id, stock.c.state)
        )
        return [(r[0], r[1], r[2]) for r in res]

    async def availability_of_item(self, item_id: int) -> dict[str, int]:
        res = await self.conn.execute(
            sa.select(availability.c.scope_key, availability.c.quantity)
            .where(availability.c.item_id == item_id)
        )
        return {k: q for k, q in res}

    async def availability(self, item_id: int, scope_key: str) -> int:
        res = await self.conn.execute(
            sa.select(availability.c.quantity).where(
                availability.c.item_id == item_id, availability.c.scope_key == scope_key
            )
        )
        value = res.scalar_one_or_none()
        return int(value) if value is not None else 0

    async def rebuild_market(self, tenant: Tenant, market_id: int) -> None:
        key = f"M:{market_id}"
        await self.conn.execute(sa.delete(availability).where(availability.c.scope_key == key))
        members = sa.select(market_locations.c.location_id).where(
            market_locations.c.market_id == market_id
        )
        totals = (
            sa.select(stock.c.item_id, sa.literal(key), sa.func.sum(stock.c.quantity))
            .where(stock.c.state == AVAILABLE.value, stock.c.location_id.in_(members))
            .group_by(stock.c.item_id)
        )
        await self.conn.execute(
            sa.insert(availability).from_select(["item_id", "scope_key", "quantity"], totals)
        )
