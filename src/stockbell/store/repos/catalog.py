"""Items, locations and markets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, ItemRef, Location, Market
from stockbell.service.pagination import PageRequest
from stockbell.store.repos.bulk import RowWrite, defer_rows, fetch_rows
from stockbell.store.repos.stock import StockPrefetch
from stockbell.store.repos.util import insert_for
from stockbell.store.tables import accounts, items, locations, market_locations, markets
from stockbell.store.types import from_micros, json_value

_ITEM_FIELDS = (
    "title", "variant_title", "upc", "product_id", "variant_id", "size", "width",
    "part_number", "generic_part_number", "pricing", "attributes",
)


def _scoped(table: sa.Table, tenant: Tenant) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.account_id == tenant.account_id, table.c.mode == tenant.mode.value)


def _item(m: Any) -> Item:
    return Item(
        sku_code=m["sku_code"], id=m["id"], public_id=m["public_id"],
        **{f: m[f] for f in _ITEM_FIELDS},
        created_at=m["created_at"], updated_at=m["updated_at"],
    )


_ITEM_COLUMNS = ("id, public_id, sku_code, title, variant_title, upc, product_id, variant_id, "
                 "size, width, part_number, generic_part_number, pricing, attributes, "
                 "created_at, updated_at")
# Rows by code (SKU or location code, a text array parameter). A short list is a filter; a
# long one is joined, so PostgreSQL hashes it: as a filter (the array is a parameter, never
# hashed) every row of the account read is compared with each code in turn, and the lock of
# a batch of 1,000 changes over 250 of an account's 1,000 items took 17 ms instead of 1.4 ms
# (docs/performance.md, twentieth session). A short list stays a filter: a group commit of
# one-change requests keeps the plan it was measured with (bar 1). Codes must be distinct.
FEW_CODES = 32


def _codes_in(column: str, param: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(join, condition) keeping the rows whose `column` is one of the codes in `param`:
    for few codes, then for many."""
    codes = f"codes{param[1:]}"
    return (("", f"{column} = ANY({param}::text::text[])"),
            (f" JOIN unnest({param}::text::text[]) AS {codes}(code) "
             f"ON {column} = {codes}.code", "TRUE"))


def _few_many(template: str, column: str, param: str) -> tuple[str, str]:
    """`template` with {join} and {where} filled in for few codes, then for many."""
    (few_join, few_where), (many_join, many_where) = _codes_in(column, param)
    return (template.format(join=few_join, where=few_where),
            template.format(join=many_join, where=many_where))


def _many(codes: Sequence[str]) -> int:
    return int(len(codes) > FEW_CODES)


_REFS_BY_SKU_PG = _few_many(
    "SELECT items.id, items.public_id, items.sku_code FROM items{join} "
    "WHERE items.account_id = $1 AND items.mode = $2 AND {where}", "items.sku_code", "$3")
_LOCKED = " ORDER BY items.id FOR UPDATE OF items"  # as lock_items does
_REFS_BY_SKU_SQLITE = ("SELECT id, public_id, sku_code FROM items WHERE account_id = ?1 "
                       "AND mode = ?2 AND sku_code IN (SELECT value FROM json_each(?3))")
_ITEMS_BY_ID_PG = (f"SELECT {_ITEM_COLUMNS} FROM items WHERE account_id = $1 AND mode = $2 "
                   "AND id = ANY($3::text::bigint[])")
_ITEMS_BY_ID_SQLITE = (f"SELECT {_ITEM_COLUMNS} FROM items WHERE account_id = ?1 "
                       "AND mode = ?2 AND id IN (SELECT value FROM json_each(?3))")
# One item by SKU: GET /v1/items/{sku} and the seeds' item reads. Through the driver, not
# SQLAlchemy's statement building and execution: ~0.3 ms of `serve`'s CPU per read
# (docs/performance.md, twenty-second session).
_ITEM_BY_SKU_PG = (f"SELECT {_ITEM_COLUMNS} FROM items WHERE account_id = $1 AND mode = $2 "
                   "AND sku_code = $3")
_ITEM_BY_SKU_SQLITE = _ITEM_BY_SKU_PG.replace("$", "?")
_SCOPE_CODES_PG = ("SELECT 'L', id, code FROM locations WHERE id = ANY($1::text::bigint[]) "
                   "UNION ALL "
                   "SELECT 'M', id, code FROM markets WHERE id = ANY($2::text::bigint[])")
_SCOPE_CODES_SQLITE = ("SELECT 'L', id, code FROM locations "
                       "WHERE id IN (SELECT value FROM json_each(?1)) "
                       "UNION ALL SELECT 'M', id, code FROM markets "
                       "WHERE id IN (SELECT value FROM json_each(?2))")
_LOCATIONS_BY_CODE_PG = _few_many(
    "SELECT l.id, l.code, l.name, l.created_at, l.updated_at FROM locations AS l{join} "
    "WHERE l.account_id = $1 AND l.mode = $2 AND {where}", "l.code", "$3")
_LOCATIONS_BY_CODE_SQLITE = ("SELECT id, code, name, created_at, updated_at FROM locations "
                             "WHERE account_id = ?1 AND mode = ?2 "
                             "AND code IN (SELECT value FROM json_each(?3))")
_WITH_MARKETS = ("SELECT l.id, l.code, l.name, l.created_at, l.updated_at, m.market_id "
                 "FROM locations AS l{join} "
                 "LEFT JOIN market_locations AS m ON m.location_id = l.id "
                 "WHERE l.account_id = {account} AND l.mode = {mode} AND {where}")
_WITH_MARKETS_PG = _few_many(_WITH_MARKETS.replace("{account}", "$1").replace("{mode}", "$2"),
                             "l.code", "$3")
_WITH_MARKETS_SQLITE = _WITH_MARKETS.format(
    join="", account="?1", mode="?2", where="l.code IN (SELECT value FROM json_each(?3))")
_LOCK_ITEMS_PG = ("SELECT id, sequence FROM items WHERE id = ANY($1::text::bigint[]) "
                  "ORDER BY id FOR UPDATE")
# The items locked (in id order, as lock_items does), the locations with their markets, and
# the stock and availability rows of those items there, in one round trip; told apart by
# the first column. A statement reads from the snapshot it took before waiting for a lock,
# so each item's sequence comes twice: from the locked row (its last committed version) and
# as the snapshot saw it. Every write of stock bumps the sequences of its items under their
# lock, so where the two agree the stock rows read are current (`StockPrefetch`).
# The account's row is share-locked first, the same way: a change of market membership
# (`lock_membership`) locks it exclusively and rewrites it, so a statement whose snapshot
# predates that change sees two versions of the row (kind 4) and is run again.
_LOCKED_REFS_LOCATIONS_AND_STOCK = (
    "WITH a AS MATERIALIZED (SELECT xmin::text::bigint AS version FROM accounts "
    "WHERE id = $1 FOR KEY SHARE), "
    "i AS MATERIALIZED (SELECT items.id, items.public_id, items.sku_code, items.sequence "
    "FROM items{items_join} WHERE items.account_id = $1 AND items.mode = $2 "
    "AND {items_where} ORDER BY items.id FOR UPDATE OF items), "
    "l AS MATERIALIZED (SELECT l.id, l.code, l.name, l.created_at, l.updated_at, m.market_id "
    "FROM locations AS l{locations_join} LEFT JOIN market_locations AS m "
    "ON m.location_id = l.id WHERE l.account_id = $1 AND l.mode = $2 "
    "AND {locations_where}) "
    "SELECT 4, a.version, s.xmin::text::bigint, NULL, NULL, NULL, NULL::bigint "
    "FROM a, accounts AS s WHERE s.id = $1 "
    "UNION ALL SELECT 0, i.id, i.sequence, i.public_id, i.sku_code, s.sequence, NULL "
    "FROM i JOIN items AS s ON s.id = i.id "
    "UNION ALL SELECT 1, id, market_id, code, name, created_at, updated_at FROM l "
    "UNION ALL SELECT 2, item_id, location_id, state, NULL, quantity, counted_at FROM stock "
    "WHERE item_id = ANY(ARRAY(SELECT id FROM i)) "
    "AND location_id = ANY(ARRAY(SELECT id FROM l)) "
    "UNION ALL SELECT 3, item_id, NULL, scope_key, NULL, quantity, NULL FROM availability "
    "WHERE item_id = ANY(ARRAY(SELECT id FROM i)) AND scope_key = ANY(ARRAY(SELECT '*' "
    "UNION ALL SELECT 'L:' || id FROM l UNION ALL SELECT 'M:' || market_id FROM l "
    "WHERE market_id IS NOT NULL))")
# By (many SKUs, many location codes).
_LOCKED_REFS_LOCATIONS_AND_STOCK_PG = {
    (many_skus, many_codes): _LOCKED_REFS_LOCATIONS_AND_STOCK.format(
        items_join=skus[0], items_where=skus[1], locations_join=codes[0],
        locations_where=codes[1])
    for many_skus, skus in enumerate(_codes_in("items.sku_code", "$3"))
    for many_codes, codes in enumerate(_codes_in("l.code", "$4"))}
_BUMP_SEQUENCES_PG = (
    "UPDATE items SET sequence = items.sequence + b.n "
    "FROM unnest($1::text::bigint[], $2::text::bigint[]) AS b(id, n) WHERE items.id = b.id "
    "RETURNING items.id, items.sequence")
# One array of [id, n] pairs: the rows of json_each drive a primary-key lookup each.
_BUMP_SEQUENCES_SQLITE = (
    "UPDATE items SET sequence = items.sequence + json_extract(b.value, '$[1]') "
    "FROM json_each(?1) AS b WHERE items.id = json_extract(b.value, '$[0]') "
    "RETURNING items.id, items.sequence")


def _json(value: Any) -> Any:
    """A JSON column read through the driver: text on SQLite, already decoded on PostgreSQL
    (SQLAlchemy sets asyncpg's JSON codec)."""
    return json_value(value) if isinstance(value, str) else value


def _stored_item(r: Sequence[Any]) -> Item:
    """An item from a driver row of _ITEM_COLUMNS (storage form: JSON text, micros)."""
    return Item(
        sku_code=r[2], id=r[0], public_id=r[1], title=r[3], variant_title=r[4], upc=r[5],
        product_id=r[6], variant_id=r[7], size=r[8], width=r[9], part_number=r[10],
        generic_part_number=r[11], pricing=_json(r[12]), attributes=_json(r[13]),
        created_at=from_micros(r[14]), updated_at=from_micros(r[15]),
    )


def _with_markets(rows: Iterable[Sequence[Any]]
                  ) -> tuple[dict[str, Location], dict[int, frozenset[int]]]:
    """Locations by code and their markets by location id, from rows of (id, code, name,
    created_at, updated_at, market_id): a location in n markets comes n times."""
    found: dict[str, Location] = {}
    markets_of: dict[int, set[int]] = {}
    for loc_id, code, name, created, updated, market_id in rows:
        if code not in found:
            found[code] = Location(code, loc_id, name, from_micros(created),
                                   from_micros(updated))
        if market_id is not None:
            markets_of.setdefault(loc_id, set()).add(market_id)
    return found, {k: frozenset(v) for k, v in markets_of.items()}


def _location(m: Any) -> Location:
    return Location(m["code"], m["id"], m["name"], m["created_at"], m["updated_at"])


class SqlCatalog:
    def __init__(self, conn: AsyncConnection, prefetch: StockPrefetch | None = None) -> None:
        self.conn = conn
        # Where the stock rows read with the items' lock are left for `SqlStock.load`.
        self.prefetch = prefetch if prefetch is not None else StockPrefetch()
        # PostgreSQL: the event sequence of each item this transaction holds locked, as of
        # now. Read with the lock, so bumping needs no statement of its own that returns
        # the new values: the update is deferred with the transaction's other writes.
        self._sequences: dict[int, int] = {}

    async def upsert_item(self, tenant: Tenant, item: Item, now: datetime) -> Item:
        values = {f: getattr(item, f) for f in _ITEM_FIELDS}
        stmt = insert_for(self.conn, items).values(
            account_id=tenant.account_id, mode=tenant.mode.value, sku_code=item.sku_code,
            public_id=item.public_id, created_at=now, updated_at=now, **values,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "mode", "sku_code"],
            set_={**values, "updated_at": now},
        ).returning(*items.c)
        res = await self.conn.execute(stmt)
        return _item(res.one()._mapping)

    async def get_item(self, tenant: Tenant, sku_code: str) -> Item | None:
        rows = await fetch_rows(self.conn, _ITEM_BY_SKU_PG, _ITEM_BY_SKU_SQLITE,
                                [tenant.account_id, tenant.mode.value, sku_code])
        return _stored_item(rows[0]) if rows else None

    async def item_refs_by_sku(self, tenant: Tenant, sku_codes: Iterable[str], *,
                               lock: bool = False) -> dict[str, ItemRef]:
        """Read through the driver: every inventory batch resolves up to 1,000 SKUs. `lock`:
        also take the items' row locks, as `lock_items` would, in the same round trip
        (PostgreSQL; SQLite has one writer already)."""
        codes = list(dict.fromkeys(sku_codes))
        if not codes:
            return {}
        sql = _REFS_BY_SKU_PG[_many(codes)]
        rows = await fetch_rows(self.conn, sql + _LOCKED if lock else sql,
                                _REFS_BY_SKU_SQLITE, [tenant.account_id, tenant.mode.value, codes])
        return {r[2]: ItemRef(r[0], r[1], r[2]) for r in rows}

    async def items_by_id(self, tenant: Tenant, item_ids: Iterable[int]) -> dict[int, Item]:
        ids = sorted(item_ids)
        if not ids:
            return {}
        rows = await fetch_rows(self.conn, _ITEMS_BY_ID_PG, _ITEMS_BY_ID_SQLITE,
                                [tenant.account_id, tenant.mode.value, ids])
        return {r[0]: _stored_item(r) for r in rows}

    async def list_items(self, tenant: Tenant, filters: dict[str, str],
                         page: PageRequest) -> list[tuple[int, Item]]:
        stmt = sa.select(items).where(_scoped(items, tenant))
        for name, value in filters.items():
            stmt = stmt.where(items.c[name] == value)
        if page.after is not None:
            stmt = stmt.where(items.c.id > page.after)
        res = await self.conn.execute(stmt.order_by(items.c.id).limit(page.limit))
        return [(r.id, _item(r._mapping)) for r in res]

    async def upsert_location(self, tenant: Tenant, loc: Location, now: datetime) -> Location:
        stmt = insert_for(self.conn, locations).values(
            account_id=tenant.account_id, mode=tenant.mode.value, code=loc.code, name=loc.name,
            created_at=now, updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "mode", "code"],
            set_={"name": loc.name, "updated_at": now},
        ).returning(*locations.c)
        res = await self.conn.execute(stmt)
        return _location(res.one()._mapping)

    async def locations_by_code(self, tenant: Tenant,
                                codes: Iterable[str]) -> dict[str, Location]:
        wanted = list(dict.fromkeys(codes))
        if not wanted:
            return {}
        rows = await fetch_rows(self.conn, _LOCATIONS_BY_CODE_PG[_many(wanted)],
                                _LOCATIONS_BY_CODE_SQLITE,
                                [tenant.account_id, tenant.mode.value, wanted])
        return {code: Location(code, loc_id, name, from_micros(created), from_micros(updated))
                for loc_id, code, name, created, updated in rows}

    async def list_locations(self, tenant: Tenant,
                             page: PageRequest) -> list[tuple[int, Location]]:
        stmt = sa.select(locations).where(_scoped(locations, tenant))
        if page.after is not None:
            stmt = stmt.where(locations.c.id > page.after)
        res = await self.conn.execute(stmt.order_by(locations.c.id).limit(page.limit))
        return [(r.id, _location(r._mapping)) for r in res]

    async def lock_membership(self, tenant: Tenant) -> None:
        """Serialise a change of market membership with the account's inventory writes
        (PostgreSQL; SQLite has one writer already). Those read the membership in the
        statement that share-locks the account's row, from a snapshot taken before that
        lock is granted: this lock makes them wait until the change commits, and the
        rewrite of the row (a new version, same values) makes a statement that waited see
        that its snapshot is older and read again. Without it, a restock racing the change
        could miss the market, and the rebuilt availability miss its stock."""
        if self.conn.dialect.name != "postgresql":
            return
        mine = accounts.c.id == tenant.account_id
        await self.conn.execute(sa.select(accounts.c.id).where(mine).with_for_update())
        await self.conn.execute(sa.update(accounts).where(mine).values(name=accounts.c.name))

    async def upsert_market(self, tenant: Tenant, market: Market, location_ids: list[int],
                            now: datetime) -> Market:
        stmt = insert_for(self.conn, markets).values(
            account_id=tenant.account_id, mode=tenant.mode.value, code=market.code,
            name=market.name, created_at=now, updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "mode", "code"],
            set_={"name": market.name, "updated_at": now},
        ).returning(markets.c.id)
        market_id = int((await self.conn.execute(stmt)).scalar_one())
        await self.conn.execute(
            sa.delete(market_locations).where(market_locations.c.market_id == market_id)
        )
        if location_ids:
            await self.conn.execute(
                sa.insert(market_locations),
                [{"market_id": market_id, "location_id": i} for i in location_ids],
            )
        found = await self.get_market(tenant, market.code)
        assert found is not None
        return found

    async def _markets(self, where: sa.ColumnElement[bool],
                       page: PageRequest | None = None) -> list[tuple[int, Market]]:
        stmt = sa.select(markets).where(where)
        if page is not None:
            if page.after is not None:
                stmt = stmt.where(markets.c.id > page.after)
            stmt = stmt.order_by(markets.c.id).limit(page.limit)
        rows = list(await self.conn.execute(stmt))
        if not rows:
            return []
        links = await self.conn.execute(
            sa.select(market_locations.c.market_id, locations.c.code)
            .join(locations, locations.c.id == market_locations.c.location_id)
            .where(market_locations.c.market_id.in_([r.id for r in rows]))
            .order_by(locations.c.code)
        )
        codes: dict[int, list[str]] = {}
        for market_id, code in links:
            codes.setdefault(market_id, []).append(code)
        return [
            (r.id, Market(r.code, r.id, r.name, codes.get(r.id, []), r.created_at, r.updated_at))
            for r in rows
        ]

    async def get_market(self, tenant: Tenant, code: str) -> Market | None:
        found = await self._markets(sa.and_(_scoped(markets, tenant), markets.c.code == code))
        return found[0][1] if found else None

    async def list_markets(self, tenant: Tenant, page: PageRequest) -> list[tuple[int, Market]]:
        return await self._markets(_scoped(markets, tenant), page)

    async def locations_with_markets(
            self, tenant: Tenant, codes: Iterable[str]
    ) -> tuple[dict[str, Location], dict[int, frozenset[int]]]:
        """Locations by code, and the markets each one belongs to (by location id; a
        location in none is absent), in one statement: applying changes needs both, and on
        PostgreSQL each statement is a round trip inside the group commit."""
        wanted = list(dict.fromkeys(codes))
        if not wanted:
            return {}, {}
        return _with_markets(await fetch_rows(
            self.conn, _WITH_MARKETS_PG[_many(wanted)], _WITH_MARKETS_SQLITE,
            [tenant.account_id, tenant.mode.value, wanted]))

    async def locked_refs_and_locations(
            self, tenant: Tenant, sku_codes: Iterable[str], location_codes: Iterable[str]
    ) -> tuple[dict[str, ItemRef], dict[str, Location], dict[int, frozenset[int]]]:
        """`item_refs_by_sku(lock=True)` and `locations_with_markets` together: what applying
        changes resolves first. On PostgreSQL one statement (each is a round trip inside the
        group commit, waited for between HTTP requests), which also reads the items' stock at
        those locations for the `load` that follows; on SQLite the two."""
        codes, wanted = list(dict.fromkeys(sku_codes)), list(dict.fromkeys(location_codes))
        self.prefetch.rows = None
        if self.conn.dialect.name != "postgresql" or not codes or not wanted:
            refs = await self.item_refs_by_sku(tenant, codes, lock=True)
            return refs, *await self.locations_with_markets(tenant, wanted)
        params = [tenant.account_id, tenant.mode.value, codes, wanted]
        sql = _LOCKED_REFS_LOCATIONS_AND_STOCK_PG[_many(codes), _many(wanted)]
        rows = await fetch_rows(self.conn, sql, "", params)
        account = next((r for r in rows if r[0] == 4), None)  # the first row, in practice
        if account is not None and account[1] != account[2]:
            # The markets changed after the snapshot was taken: read everything again, in a
            # statement of its own (a new snapshot; the locks are held, nothing waits).
            rows = await fetch_rows(self.conn, sql, "", params)
        refs = {}
        current = True
        location_rows, stock_rows, avail_rows = [], [], []
        for kind, a, b, c, d, e, f in rows:
            if kind == 4:
                continue
            if kind == 0:
                refs[d] = ItemRef(a, c, d)
                self._sequences[a] = b
                current = current and b == e
            elif kind == 1:
                location_rows.append((a, c, d, e, f, b))
            elif kind == 2:
                stock_rows.append((a, b, c, e, f))
            else:
                avail_rows.append((a, c, e))
        found, markets_of = _with_markets(location_rows)
        if current:  # else `load` reads them again, now that the locks are held
            loc_ids = [loc.id for loc in found.values() if loc.id is not None]
            scopes = ["*", *(f"L:{i}" for i in loc_ids),
                      *(f"M:{m}" for ms in markets_of.values() for m in ms)]
            self.prefetch.keep(stock_rows, avail_rows, (r.id for r in refs.values()),
                               loc_ids, scopes)
        return refs, found, markets_of


    async def scope_codes(self, location_ids: Iterable[int],
                          market_ids: Iterable[int]) -> dict[str, str]:
        """Codes by scope key ("L:<id>", "M:<id>"), in one statement through the driver."""
        loc_ids, mkt_ids = sorted(location_ids), sorted(market_ids)
        if not loc_ids and not mkt_ids:
            return {}
        rows = await fetch_rows(self.conn, _SCOPE_CODES_PG, _SCOPE_CODES_SQLITE,
                                [loc_ids, mkt_ids])
        return {f"{kind}:{ref}": code for kind, ref, code in rows}

    async def lock_items(self, item_ids: Sequence[int]) -> None:
        """Serialise writers per item on PostgreSQL (SQLite has one writer already), taking
        the row locks in id order."""
        if self.conn.dialect.name != "postgresql" or not item_ids:
            return
        for item_id, sequence in await fetch_rows(self.conn, _LOCK_ITEMS_PG, "",
                                                  [sorted(item_ids)]):
            self._sequences[item_id] = sequence

    async def bump_sequences(self, counts: dict[int, int]) -> dict[int, int]:
        """Advance each item's event sequence by its count; returns the new last values.
        One statement, whatever the number of items (the items are locked by the caller on
        PostgreSQL, and SQLite has one writer). On PostgreSQL, for items this transaction
        locked, the new values are known here and the update is deferred (`defer_rows`)."""
        if not counts:
            return {}
        known = self._sequences
        if known and all(i in known for i in counts):
            last = {i: known[i] + n for i, n in counts.items()}
            known.update(last)
            await defer_rows(self.conn, [RowWrite("items", ("id", "sequence"),
                                                  ("bigint", "bigint"), sorted(last.items()),
                                                  key=("id",), update=True)])
            return last
        ids = sorted(counts)
        rows = await fetch_rows(self.conn, _BUMP_SEQUENCES_PG, _BUMP_SEQUENCES_SQLITE,
                                [ids, [counts[i] for i in ids]],
                                [[[i, counts[i]] for i in ids]])
        last = {int(item_id): int(sequence) for item_id, sequence in rows}
        if self.conn.dialect.name == "postgresql":
            known.update(last)  # the update locked these rows: the values stay true
        return last
