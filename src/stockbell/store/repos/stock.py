"""Stock per (item, location, state), materialised availability, and the change ledger."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

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
from stockbell.service.ports import ItemStock
from stockbell.store.repos.aging import next_chunk
from stockbell.store.repos.bulk import RowWrite, defer_rows, fetch_rows, insert_rows
from stockbell.store.tables import availability, inventory_changes, market_locations, stock
from stockbell.store.types import from_micros, to_micros

_STOCK = ("item_id", "location_id", "state", "quantity", "counted_at", "updated_at")
_LOAD_STOCK_PG = (
    "SELECT item_id, location_id, state, quantity, counted_at FROM stock "
    "WHERE item_id = ANY($1::text::bigint[]) AND location_id = ANY($2::text::bigint[]) "
    "AND state = ANY($3::text::text[])")
_LOAD_STOCK_SQLITE = (
    "SELECT item_id, location_id, state, quantity, counted_at FROM stock "
    "WHERE item_id IN (SELECT value FROM json_each(?1)) "
    "AND location_id IN (SELECT value FROM json_each(?2)) "
    "AND state IN (SELECT value FROM json_each(?3))")
_LOAD_AVAILABILITY_PG = (
    "SELECT item_id, scope_key, quantity FROM availability "
    "WHERE item_id = ANY($1::text::bigint[]) AND scope_key = ANY($2::text::text[])")
_LOAD_AVAILABILITY_SQLITE = (
    "SELECT item_id, scope_key, quantity FROM availability "
    "WHERE item_id IN (SELECT value FROM json_each(?1)) "
    "AND scope_key IN (SELECT value FROM json_each(?2))")
# PostgreSQL: both reads in one round trip, told apart by the first column.
_LOAD_BOTH_PG = (
    "SELECT true, item_id, location_id, state, quantity, counted_at FROM stock "
    "WHERE item_id = ANY($1::text::bigint[]) AND location_id = ANY($2::text::bigint[]) "
    "AND state = ANY($3::text::text[]) "
    "UNION ALL SELECT false, item_id, NULL, scope_key, quantity, NULL FROM availability "
    "WHERE item_id = ANY($4::text::bigint[]) AND scope_key = ANY($5::text::text[])")
_STOCK_TYPES = ("bigint", "bigint", "text", "bigint", "bigint", "bigint")
_AVAILABILITY = ("item_id", "scope_key", "quantity")
_CHANGES = ("account_id", "mode", "item_id", "location_id", "kind", "state", "from_state",
            "to_state", "quantity", "occurred_at", "applied", "created_at")
# Up to this many changes are recorded in the statement that writes the stock (PostgreSQL:
# one round trip for the group commit's writes, where a COPY costs two); more go as COPY,
# whose per-row path is cheaper: a batch of 1,000 cost serve 7 % more instructions per
# change written as JSON (valgrind).
_CHANGES_IN_STATEMENT = 200
_CHANGES_TYPES = ("bigint", "text", "bigint", "bigint", "text", "text", "text", "text",
                  "bigint", "bigint", "boolean", "bigint")


class _Micros:
    """`to_micros`, remembered per instant: the changes of a batch mostly share one time."""

    def __init__(self) -> None:
        self.seen: dict[datetime | None, int | None] = {}

    def __call__(self, value: datetime | None) -> int | None:
        try:
            return self.seen[value]
        except KeyError:
            micros = self.seen[value] = to_micros(value)
            return micros


class StockPrefetch:
    """Stock and availability rows read with the items' lock (PostgreSQL, `SqlCatalog.
    locked_refs_and_locations`): every row of the locked items at the given locations and
    in the scopes those locations count towards, a superset of what `SqlStock.load` is then
    asked for. Used once, by the next `load` whose keys it covers: the round trip of that
    read is saved, and nothing written later in the transaction can be read back stale."""

    def __init__(self) -> None:
        self.rows: tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]] | None = None
        self.items: frozenset[int] = frozenset()
        self.locations: frozenset[int] = frozenset()
        self.scopes: frozenset[str] = frozenset()

    def keep(self, stock_rows: Sequence[Sequence[Any]], avail_rows: Sequence[Sequence[Any]],
             items: Iterable[int], locations: Iterable[int], scopes: Iterable[str]) -> None:
        self.rows = (stock_rows, avail_rows)
        self.items, self.locations = frozenset(items), frozenset(locations)
        self.scopes = frozenset(scopes)

    def take(self, stock_keys: set[StockKey], availability_keys: set[AvailabilityKey]
             ) -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]] | None:
        """The rows kept, if they cover every key asked for; forgotten either way."""
        rows, self.rows = self.rows, None
        if rows is None:
            return None
        items, locations, scopes = self.items, self.locations, self.scopes
        if all(k[0] in items and k[1] in locations for k in stock_keys) and all(
                k[0] in items and k[1] in scopes for k in availability_keys):
            return rows
        return None


# GET /v1/inventory/{sku} in one statement: the item (kind 0), its stock rows with their
# locations' codes (1) and its availability rows with their scopes' codes (2). Four
# statements until the twenty-fifth session, each a round trip (on PostgreSQL through
# autocommit, ~0.1 ms of `serve`'s CPU and a turn of its loop apiece). The codes are
# scalar subqueries, one primary-key probe per row whatever the plan (a join can be planned
# as a merge that reads the locations' key from its start). A scope key's id is cast only
# where its prefix says it is one (CASE keeps "*" from the cast).
_ITEM_STOCK = (
    "WITH i AS MATERIALIZED (SELECT id, sku_code FROM items "
    "WHERE account_id = {p1} AND mode = {p2} AND sku_code = {p3}) "
    "SELECT 0 AS kind, NULL AS ref, sku_code AS name, NULL AS quantity, NULL AS code FROM i "
    "UNION ALL SELECT 1, s.location_id, s.state, s.quantity, "
    "(SELECT code FROM locations WHERE id = s.location_id) "
    "FROM i JOIN stock AS s ON s.item_id = i.id "
    "UNION ALL SELECT 2, NULL, a.scope_key, a.quantity, "
    "coalesce((SELECT code FROM locations WHERE id = CASE WHEN substr(a.scope_key, 1, 2) = 'L:' "
    "THEN CAST(substr(a.scope_key, 3) AS {int}) END), "
    "(SELECT code FROM markets WHERE id = CASE WHEN substr(a.scope_key, 1, 2) = 'M:' "
    "THEN CAST(substr(a.scope_key, 3) AS {int}) END)) "
    "FROM i JOIN availability AS a ON a.item_id = i.id "
    "ORDER BY kind, ref, name")
_ITEM_STOCK_PG = _ITEM_STOCK.format(p1="$1", p2="$2", p3="$3", int="bigint")
_ITEM_STOCK_SQLITE = _ITEM_STOCK.format(p1="?1", p2="?2", p3="?3", int="INTEGER")


class SqlStock:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.prefetch = StockPrefetch()

    async def load(self, stock_keys: Iterable[StockKey],
                   availability_keys: Iterable[AvailabilityKey]) -> StockLedger:
        """The rows behind the given keys. Filtered by one array per column (a superset when
        a batch crosses items and locations), then trimmed here: a row-value IN list cost more
        to bind than to run. Read through the driver: a batch reads thousands of rows. On
        PostgreSQL stock and availability come in one statement (a round trip less per group
        commit); SQLite's two statements run on the loop's thread and cost no round trip.
        Rows read with the items' lock (`StockPrefetch`) save the statement altogether."""
        ledger = StockLedger()
        wanted = set(stock_keys)
        awanted = set(availability_keys)
        kept = self.prefetch.take(wanted, awanted)
        if kept is not None:
            return self._ledger(ledger, wanted, awanted, *kept)
        stock_params = [sorted({k[0] for k in wanted}), sorted({k[1] for k in wanted}),
                        sorted({k[2] for k in wanted})]
        avail_params = [sorted({k[0] for k in awanted}), sorted({k[1] for k in awanted})]
        stock_rows: Iterable[Sequence[Any]] = ()
        avail_rows: Iterable[Sequence[Any]] = ()
        if wanted and awanted and self.conn.dialect.name == "postgresql":
            both = await fetch_rows(self.conn, _LOAD_BOTH_PG, "", stock_params + avail_params)
            stock_rows = [r[1:] for r in both if r[0]]
            avail_rows = [(r[1], r[3], r[4]) for r in both if not r[0]]
        else:
            if wanted:
                stock_rows = await fetch_rows(self.conn, _LOAD_STOCK_PG, _LOAD_STOCK_SQLITE,
                                              stock_params)
            if awanted:
                avail_rows = await fetch_rows(self.conn, _LOAD_AVAILABILITY_PG,
                                              _LOAD_AVAILABILITY_SQLITE, avail_params)
        return self._ledger(ledger, wanted, awanted, stock_rows, avail_rows)

    @staticmethod
    def _ledger(ledger: StockLedger, wanted: set[StockKey], awanted: set[AvailabilityKey],
                stock_rows: Iterable[Sequence[Any]],
                avail_rows: Iterable[Sequence[Any]]) -> StockLedger:
        quantities, counted_at = ledger.quantities, ledger.counted_at
        times: dict[int, datetime] = {}  # rows counted by one batch share their time
        for item_id, loc_id, state, qty, counted in stock_rows:
            key = (item_id, loc_id, state)
            if key not in wanted:
                continue
            quantities[key] = qty
            if counted is not None:
                at = times.get(counted)
                if at is None:
                    at = times[counted] = from_micros(counted)
                counted_at[key] = at
        availability = ledger.availability
        for item_id, scope_key, qty in avail_rows:
            if (item_id, scope_key) in awanted:
                availability[(item_id, scope_key)] = qty
        return ledger

    async def save(self, tenant: Tenant, ledger: StockLedger, outcomes: Sequence[Outcome],
                   now: datetime) -> None:
        """Write the ledger's dirty rows back and record every change of the batch, applied
        or ignored (inventory_changes): on PostgreSQL one statement, one round trip (where
        the two upserts and a COPY were four), and a COPY more past 200 changes; deferred
        inside `combined_writes`."""
        self.prefetch.rows = None  # read before these writes: never to be read after them
        at = to_micros(now)
        micros = _Micros()
        account_id, mode = tenant.account_id, tenant.mode.value
        changes = []
        for o in outcomes:
            c = o.change
            if isinstance(c, Count):
                kind, state, src, dst = "count", c.state.value, None, None
            else:
                kind, state, src, dst = "adjustment", None, c.from_state.value, c.to_state.value
            changes.append((account_id, mode, c.item_id, c.location_id, kind, state, src, dst,
                            c.quantity, micros(c.occurred_at), o.applied, at))
        writes = [
            RowWrite("stock", _STOCK, _STOCK_TYPES, [
                (k[0], k[1], k[2], ledger.quantities[k], micros(ledger.counted_at.get(k)), at)
                for k in sorted(ledger.dirty_stock)], key=("item_id", "location_id", "state")),
            RowWrite("availability", _AVAILABILITY, ("bigint", "text", "bigint"), [
                (k[0], k[1], ledger.availability[k]) for k in sorted(ledger.dirty_availability)],
                key=("item_id", "scope_key")),
        ]
        if len(changes) > _CHANGES_IN_STATEMENT:
            await defer_rows(self.conn, writes)
            await insert_rows(self.conn, "inventory_changes", _CHANGES, changes)
            return
        await defer_rows(self.conn, [*writes,
                                     RowWrite("inventory_changes", _CHANGES, _CHANGES_TYPES,
                                              changes)])

    async def item_stock(self, tenant: Tenant, sku_code: str) -> ItemStock | None:
        """The item's stock and availability with their codes; None if there is no such
        item. Through the driver, not SQLAlchemy's execution (~0.2 ms of `serve`'s CPU per
        statement, docs/performance.md, twenty-second session)."""
        rows = await fetch_rows(self.conn, _ITEM_STOCK_PG, _ITEM_STOCK_SQLITE,
                                [tenant.account_id, tenant.mode.value, sku_code])
        if not rows:
            return None
        found = ItemStock(rows[0][2], [], [])
        for kind, ref, name, quantity, code in rows[1:]:
            if kind == 1:
                found.stock.append((ref, code, name, quantity))
            else:
                found.availability.append((name, code, quantity))
        return found

    async def availability(self, item_id: int, scope_key: str) -> int:
        res = await self.conn.execute(
            sa.select(availability.c.quantity).where(
                availability.c.item_id == item_id, availability.c.scope_key == scope_key
            )
        )
        value = res.scalar_one_or_none()
        return int(value) if value is not None else 0

    async def rebuild_market(self, tenant: Tenant, market_id: int) -> None:
        self.prefetch.rows = None
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

    async def purge_before(self, cutoff: datetime, after: int,
                           limit: int) -> tuple[int, int | None]:
        """Delete the change ledger's rows recorded before `cutoff` among the next `limit`
        by id past `after`. Returns how many went and where the next chunk starts (None:
        done). No index on the ledger's time (every change would pay for it): the walk goes
        by id and ends where the retained rows start (`aging`)."""
        ic = inventory_changes
        chunk = await next_chunk(self.conn, ic.c.id, ic.c.created_at, cutoff, after, limit)
        if chunk is None:
            return 0, None
        res = await self.conn.execute(sa.delete(ic).where(
            ic.c.id > after, ic.c.id <= chunk.last, ic.c.created_at < cutoff))
        return res.rowcount, (None if chunk.final else chunk.last)
