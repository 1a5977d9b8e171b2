"""Stock per (item, location, state), materialised availability, and the change ledger."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

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
from stockbell.store.repos.bulk import insert_rows, upsert_rows
from stockbell.store.tables import availability, market_locations, stock
from stockbell.store.types import to_micros

_CHUNK = 500
T = TypeVar("T")


def _chunks(values: list[T]) -> Iterable[list[T]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


_STOCK = ("item_id", "location_id", "state", "quantity", "counted_at", "updated_at")
_CHANGES = ("account_id", "mode", "item_id", "location_id", "kind", "state", "from_state",
            "to_state", "quantity", "occurred_at", "applied", "created_at")


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
        """Write the ledger's dirty rows back (through the driver: a batch writes thousands)."""
        at = to_micros(now)
        await upsert_rows(
            self.conn, "stock", _STOCK, ("item_id", "location_id", "state"),
            [(k[0], k[1], k[2], ledger.quantities[k], to_micros(ledger.counted_at.get(k)), at)
             for k in sorted(ledger.dirty_stock)])
        await upsert_rows(
            self.conn, "availability", ("item_id", "scope_key", "quantity"),
            ("item_id", "scope_key"),
            [(k[0], k[1], ledger.availability[k]) for k in sorted(ledger.dirty_availability)])

    async def record(self, tenant: Tenant, outcomes: Sequence[Outcome], now: datetime) -> None:
        at = to_micros(now)
        account_id, mode = tenant.account_id, tenant.mode.value
        rows = []
        for o in outcomes:
            c = o.change
            if isinstance(c, Count):
                kind, state, src, dst = "count", c.state.value, None, None
            else:
                kind, state, src, dst = "adjustment", None, c.from_state.value, c.to_state.value
            rows.append((account_id, mode, c.item_id, c.location_id, kind, state, src, dst,
                         c.quantity, to_micros(c.occurred_at), o.applied, at))
        await insert_rows(self.conn, "inventory_changes", _CHANGES, rows)

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
