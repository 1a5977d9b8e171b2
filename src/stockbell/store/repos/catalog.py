"""Items, locations and markets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, Location, Market
from stockbell.service.pagination import PageRequest
from stockbell.store.repos.util import insert_for
from stockbell.store.tables import items, locations, market_locations, markets

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


def _location(m: Any) -> Location:
    return Location(m["code"], m["id"], m["name"], m["created_at"], m["updated_at"])


class SqlCatalog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

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
        res = await self.conn.execute(
            sa.select(items).where(_scoped(items, tenant), items.c.sku_code == sku_code)
        )
        row = res.first()
        return _item(row._mapping) if row else None

    async def items_by_sku(self, tenant: Tenant, sku_codes: Iterable[str]) -> dict[str, Item]:
        codes = list(sku_codes)
        if not codes:
            return {}
        res = await self.conn.execute(
            sa.select(items).where(_scoped(items, tenant), items.c.sku_code.in_(codes))
        )
        return {r.sku_code: _item(r._mapping) for r in res}

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
        wanted = list(codes)
        if not wanted:
            return {}
        res = await self.conn.execute(
            sa.select(locations).where(_scoped(locations, tenant), locations.c.code.in_(wanted))
        )
        return {r.code: _location(r._mapping) for r in res}

    async def list_locations(self, tenant: Tenant,
                             page: PageRequest) -> list[tuple[int, Location]]:
        stmt = sa.select(locations).where(_scoped(locations, tenant))
        if page.after is not None:
            stmt = stmt.where(locations.c.id > page.after)
        res = await self.conn.execute(stmt.order_by(locations.c.id).limit(page.limit))
        return [(r.id, _location(r._mapping)) for r in res]

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

    async def markets_of_locations(self, location_ids: Iterable[int]) -> dict[int, frozenset[int]]:
        ids = list(location_ids)
        if not ids:
            return {}
        res = await self.conn.execute(
            sa.select(market_locations.c.location_id, market_locations.c.market_id)
            .where(market_locations.c.location_id.in_(ids))
        )
        out: dict[int, set[int]] = {}
        for loc_id, market_id in res:
            out.setdefault(loc_id, set()).add(market_id)
        return {k: frozenset(v) for k, v in out.items()}

    async def scope_codes(self, location_ids: Iterable[int],
                          market_ids: Iterable[int]) -> dict[str, str]:
        out: dict[str, str] = {}
        loc_ids, mkt_ids = list(location_ids), list(market_ids)
        if loc_ids:
            res = await self.conn.execute(
                sa.select(locations.c.id, locations.c.code).where(locations.c.id.in_(loc_ids))
            )
            out.update({f"L:{i}": c for i, c in res})
        if mkt_ids:
            res = await self.conn.execute(
                sa.select(markets.c.id, markets.c.code).where(markets.c.id.in_(mkt_ids))
            )
            out.update({f"M:{i}": c for i, c in res})
        return out

    async def lock_items(self, item_ids: Sequence[int]) -> None:
        """Serialise writers per item on PostgreSQL (SQLite has one writer already)."""
        if self.conn.dialect.name != "postgresql" or not item_ids:
            return
        await self.conn.execute(
            sa.select(items.c.id).where(items.c.id.in_(list(item_ids)))
            .order_by(items.c.id).with_for_update()
        )

    async def bump_sequences(self, counts: dict[int, int]) -> dict[int, int]:
        """Advance each item's event sequence by its count; returns the new last values.
        One executemany and one read, whatever the number of items (the items are locked
        by the caller on PostgreSQL, and SQLite has one writer)."""
        if not counts:
            return {}
        await self.conn.execute(
            sa.update(items).where(items.c.id == sa.bindparam("b_id"))
            .values(sequence=items.c.sequence + sa.bindparam("b_n")),
            [{"b_id": i, "b_n": n} for i, n in sorted(counts.items())],
        )
        ids = sorted(counts)
        out: dict[int, int] = {}
        for i in range(0, len(ids), 5000):
            res = await self.conn.execute(
                sa.select(items.c.id, items.c.sequence).where(items.c.id.in_(ids[i:i + 5000])))
            out.update({int(r[0]): int(r[1]) for r in res})
        return out
