"""Writes kept back inside `combined_writes` (store/repos/bulk.py), on a real SQLite file and
the real PostgreSQL: a later statement through the driver sees them, a carried read takes
them along in its own statement, the scope's end sends what is left, and an item's event
sequence known from its lock stays true whatever mix of statements bumps it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.catalog import Item, ItemRef, Location, Market
from stockbell.service import accounts, catalog, inventory, webhooks
from stockbell.service.inventory import ChangeInput, apply_grouped
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase, SqlUnitOfWork
from stockbell.store.repos.bulk import RowWrite, defer_rows, driver, fetch_rows, write_rows
from stockbell.store.repos.catalog import FEW_CODES


async def _tenant(db: SqlDatabase, skus: list[str], codes: list[str]) -> Tenant:
    async def setup(uow: UnitOfWork) -> Tenant:
        tenant = Tenant(await accounts.create_account(uow, f"cw-{uuid.uuid4().hex[:12]}"),
                        Mode.TEST)
        for sku in skus:
            await catalog.upsert_item(uow, tenant, Item(sku_code=sku))
        for code in codes:
            await catalog.upsert_location(uow, tenant, Location(code=code))
        return tenant

    return await db.run(setup)


def _sql(uow: UnitOfWork) -> SqlUnitOfWork:
    assert isinstance(uow, SqlUnitOfWork)
    return uow


async def _sequence(uow: UnitOfWork, item_id: int) -> int:
    [(value,)] = await fetch_rows(_sql(uow).conn, "SELECT sequence FROM items WHERE id = $1",
                                  "SELECT sequence FROM items WHERE id = ?1", [item_id])
    return int(value)


async def test_many_codes_read_what_a_few_at_a_time_do(db_url: str) -> None:
    """Past FEW_CODES SKUs or location codes PostgreSQL joins the list instead of filtering
    by it: the same rows come back, each once (codes repeated or unknown, another
    account's alike), with the markets and the stock read ahead as `load` would read it."""
    db = SqlDatabase(db_url)
    try:
        skus = [f"M-{n:03d}" for n in range(3 * FEW_CODES)]
        codes = [f"L{n:03d}" for n in range(2 * FEW_CODES)]
        tenant = await _tenant(db, skus, codes)
        other = await _tenant(db, skus[:5], codes[:5])
        await db.run(lambda uow: catalog.upsert_market(
            uow, tenant, Market("EU", location_codes=codes[::3])))
        await db.run(lambda uow: inventory.apply_changes(uow, tenant, [
            ChangeInput("count", sku, codes[n % len(codes)], str(n % 7), state="IN_STOCK")
            for n, sku in enumerate(skus)]))
        wanted = [*skus, *skus[:10], "NOPE"]
        places = [*codes, *codes[:3], "NOWHERE"]

        def in_fews(names: list[str]) -> list[list[str]]:
            return [names[k:k + FEW_CODES] for k in range(0, len(names), FEW_CODES)]

        async def read(uow: UnitOfWork) -> None:
            few: dict[str, ItemRef] = {}
            for part in in_fews(wanted):
                few.update(await uow.catalog.item_refs_by_sku(tenant, part))
            assert sorted(few) == skus
            assert await uow.catalog.item_refs_by_sku(tenant, wanted) == few
            located: dict[str, Location] = {}
            markets: dict[int, frozenset[int]] = {}
            for part in in_fews(places):
                found, in_markets = await uow.catalog.locations_with_markets(tenant, part)
                located.update(found)
                markets.update(in_markets)
            assert sorted(located) == codes
            assert len(markets) == len(codes[::3])
            assert await uow.catalog.locations_with_markets(tenant, places) == (
                located, markets)
            assert await uow.catalog.locations_by_code(tenant, places) == located
            refs, locs, markets_of = await uow.catalog.locked_refs_and_locations(
                tenant, wanted, places)
            assert (refs, locs, markets_of) == (few, located, markets)
            keys = {(r.id, locs[codes[n % len(codes)]].id, "IN_STOCK")
                    for n, r in enumerate(refs[sku] for sku in skus)}
            ledger = await uow.stock.load(keys, set())
            for n, sku in enumerate(skus):
                item_id, place = refs[sku].id, locs[codes[n % len(codes)]]
                found = await uow.stock.item_stock(tenant, sku)
                assert found is not None
                assert found.stock == [(place.id, place.code, "IN_STOCK",
                                        ledger.quantities[item_id, place.id, "IN_STOCK"])]
            assert len({ledger.quantities[k] for k in keys}) == 7
            theirs = await uow.catalog.item_refs_by_sku(other, wanted)
            assert sorted(theirs) == skus[:5]
            assert {r.id for r in theirs.values()}.isdisjoint(r.id for r in few.values())
            assert sorted(await uow.catalog.locations_by_code(other, places)) == codes[:5]

        await db.run(read)
    finally:
        await db.dispose()


async def test_locked_refs_and_locations_read_what_the_two_reads_do(db_url: str) -> None:
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["A-1", "B-2"], ["L1", "L2", "L3"])
        await db.run(lambda uow: catalog.upsert_market(
            uow, tenant, Market("EU", location_codes=["L1", "L2"])))

        async def read(uow: UnitOfWork) -> None:
            skus, codes = ["A-1", "B-2", "NOPE"], ["L1", "L3", "L9"]
            got = await uow.catalog.locked_refs_and_locations(tenant, skus, codes)
            assert got == (await uow.catalog.item_refs_by_sku(tenant, skus),
                           *await uow.catalog.locations_with_markets(tenant, codes))
            assert set(got[0]) == {"A-1", "B-2"}
            assert set(got[1]) == {"L1", "L3"}
            assert got[2]
            assert all(len(m) == 1 for m in got[2].values())
            assert await uow.catalog.locked_refs_and_locations(tenant, [], codes) == (
                {}, *await uow.catalog.locations_with_markets(tenant, codes))
            assert await uow.catalog.locked_refs_and_locations(tenant, skus, []) == (
                await uow.catalog.item_refs_by_sku(tenant, skus), {}, {})

        await db.run(read)
    finally:
        await db.dispose()


async def test_a_sequence_known_from_its_lock_stays_true(db_url: str) -> None:
    """Bumps of locked items (computed here, the update deferred) and of an item not locked
    (a statement) mixed in one transaction, then bumped again in the next: every value is
    the count so far, in the database too."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["A", "B"], ["L1"])
        refs = await db.run(lambda uow: uow.catalog.item_refs_by_sku(tenant, ["A", "B"]))
        a, b = refs["A"].id, refs["B"].id

        async def work(uow: UnitOfWork) -> None:
            async with uow.combined_writes():
                await uow.catalog.locked_refs_and_locations(tenant, ["A"], ["L1"])
                assert await uow.catalog.bump_sequences({a: 2}) == {a: 2}
                assert await uow.catalog.bump_sequences({a: 1, b: 1}) == {a: 3, b: 1}
                assert await uow.catalog.bump_sequences({a: 1, b: 4}) == {a: 4, b: 5}
                assert await _sequence(uow, a) == 4  # a driver read sees the deferred write
            assert await _sequence(uow, b) == 5

        await db.run(work)
        assert await db.run(lambda uow: uow.catalog.bump_sequences({a: 1, b: 1})) == {
            a: 5, b: 6}
    finally:
        await db.dispose()


async def test_rows_updated_by_key(db_url: str) -> None:
    """`RowWrite(update=True)`: the rows matching each key get the other columns' values;
    a key that matches nothing writes nothing."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["U1", "U2", "U3"], [])
        refs = await db.run(lambda uow: uow.catalog.item_refs_by_sku(tenant, ["U1", "U2"]))

        async def work(uow: UnitOfWork) -> None:
            await write_rows(_sql(uow).conn, [RowWrite(
                "items", ("sequence", "id"), ("bigint", "bigint"),
                [(7, refs["U1"].id), (9, refs["U2"].id), (11, 10**12)], key=("id",),
                update=True)])

        await db.run(work)

        async def read(uow: UnitOfWork) -> list[int]:
            return [await _sequence(uow, refs[s].id) for s in ("U1", "U2")]

        assert await db.run(read) == [7, 9]
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_carried_read_takes_the_deferred_writes_along(db_url: str) -> None:
    """On PostgreSQL the deferred writes and a carried read are one statement; the writes
    are committed with the unit of work, and a failing unit of work leaves none."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite defers nothing")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["C1"], [])
        [item] = (await db.run(lambda uow: uow.catalog.item_refs_by_sku(
            tenant, ["C1"]))).values()
        queries: list[Any] = []

        async def work(uow: UnitOfWork, fail: bool) -> None:
            conn = _sql(uow).conn
            raw = await driver(conn)
            raw.add_query_logger(queries.append)
            async with uow.combined_writes():
                await defer_rows(conn, [RowWrite("items", ("id", "sequence"),
                                                 ("bigint", "bigint"), [(item.id, 41)],
                                                 key=("id",), update=True)])
                assert await uow.webhooks.enabled(tenant) == []
            await asyncio.sleep(0)  # the logger is called soon, not at once
            raw.remove_query_logger(queries.append)
            if fail:
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await db.run(lambda uow: work(uow, True))
        assert await db.run(lambda uow: _sequence(uow, item.id)) == 0
        queries.clear()
        await db.run(lambda uow: work(uow, False))
        [statement] = [q.query for q in queries]
        assert "UPDATE items" in statement
        assert "FROM webhook_endpoints" in statement
        assert await db.run(lambda uow: _sequence(uow, item.id)) == 41
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_group_commit_sends_two_statements_between_begin_and_commit(
        db_url: str) -> None:
    """The round trips of a PostgreSQL group commit of one-change requests: the items locked
    with the locations and their stock, and the writes (stock, availability, the changes,
    the items' sequences, the events) carried by the endpoints' read; here also the
    subscriptions waiting on the availability's rise, and the deliveries for the endpoint.
    Its events hold what was rendered, each with one delivery."""
    if not db_url.startswith("postgresql"):
        pytest.skip("round trips: PostgreSQL")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["G1", "G2"], ["L1"])
        await db.run(lambda uow: webhooks.create_endpoint(
            uow, tenant, "http://127.0.0.1:9/hook", None, None, True, "native"))
        requests = [[ChangeInput("count", sku, "L1", "5", "IN_STOCK")] for sku in ("G1", "G2")]
        queries: list[Any] = []

        async def work(uow: UnitOfWork) -> list[Any]:
            raw = await driver(_sql(uow).conn)
            raw.add_query_logger(queries.append)
            try:
                return await apply_grouped(uow, tenant, requests)
            finally:
                await asyncio.sleep(0)
                raw.remove_query_logger(queries.append)

        results = await db.run(work)
        assert [r["applied"] for r in results] == [1, 1]
        statements = [q.query for q in queries
                      if q.query.strip().upper() not in ("BEGIN;", "COMMIT;")]
        # The two and the subscriptions waiting on the rise (none); asyncpg does not log
        # the deliveries' COPY (they are counted below).
        assert len(statements) == 3, statements
        assert "FOR UPDATE" in statements[0]
        assert "market_locations" in statements[0]
        assert "FROM stock" in statements[0]
        assert "FROM availability" in statements[0]
        assert statements[1].startswith("SELECT s.pk, s.item_id, s.scope_key")
        assert "INSERT INTO events" in statements[2]
        assert "webhook_endpoints" in statements[2]

        async def read(uow: UnitOfWork) -> list[Any]:
            conn = _sql(uow).conn
            return list(await fetch_rows(
                conn, "SELECT e.type, e.sequence, e.data::text, count(d.pk) FROM events e "
                      "LEFT JOIN deliveries d ON d.event_id = e.id WHERE e.account_id = $1 "
                      "GROUP BY e.pk ORDER BY e.pk", "", [tenant.account_id]))

        rows = await db.run(read)
        assert [(r[0], r[1], r[3]) for r in rows] == [("inventory.count.updated", 1, 1)] * 2
        assert all('"quantity"' in r[2] for r in rows)
    finally:
        await db.dispose()


async def test_stock_read_with_the_lock_is_what_a_fresh_read_gives(db_url: str) -> None:
    """The stock and availability rows read with the items' lock (PostgreSQL) make the same
    ledger as `load` reading them alone: every state and scope asked for, markets included,
    rows of other locations and items left out; on PostgreSQL without a statement of its
    own. A second `load` (or one after a write) reads the database again."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["P1", "P2", "P3"], ["L1", "L2", "L3"])
        await db.run(lambda uow: catalog.upsert_market(
            uow, tenant, Market("EU", location_codes=["L1", "L2"])))
        batch = [ChangeInput("count", sku, loc, str(n), state)
                 for n, (sku, loc, state) in enumerate(
                     [(s, loc, st) for s in ("P1", "P2", "P3") for loc in ("L1", "L2", "L3")
                      for st in ("IN_STOCK", "WASTE")], start=1)]
        await db.run(lambda uow: apply_grouped(uow, tenant, [batch]))
        refs = await db.run(lambda uow: uow.catalog.item_refs_by_sku(tenant, ["P1", "P2"]))
        locs, markets_of = await db.run(
            lambda uow: uow.catalog.locations_with_markets(tenant, ["L1", "L3"]))
        p1, p2 = refs["P1"].id, refs["P2"].id
        l1, l3 = locs["L1"].id, locs["L3"].id
        assert p1
        assert p2
        assert l1
        assert l3
        [eu] = markets_of[l1]
        stock_keys = {(p1, l1, "IN_STOCK"), (p1, l3, "WASTE"), (p2, l3, "IN_STOCK"),
                      (p2, l1, "SOLD")}  # the last has no row
        avail_keys = {(p1, "*"), (p1, f"L:{l1}"), (p1, f"M:{eu}"), (p2, f"L:{l3}")}
        fresh = await db.run(lambda uow: uow.stock.load(stock_keys, avail_keys))
        assert fresh.quantities
        assert fresh.availability
        postgres = db_url.startswith("postgresql")
        queries: list[Any] = []

        async def work(uow: UnitOfWork) -> None:
            raw = await driver(_sql(uow).conn)
            await uow.catalog.locked_refs_and_locations(tenant, ["P1", "P2"], ["L1", "L3"])
            if postgres:
                raw.add_query_logger(queries.append)
            got = await uow.stock.load(stock_keys, avail_keys)
            assert (got.quantities, got.counted_at, got.availability) == (
                fresh.quantities, fresh.counted_at, fresh.availability)
            again = await uow.stock.load(stock_keys, avail_keys)
            assert (again.quantities, again.availability) == (
                fresh.quantities, fresh.availability)
            if postgres:
                await asyncio.sleep(0)
                raw.remove_query_logger(queries.append)

        await db.run(work)
        if postgres:  # the first load read nothing, the second the stock and availability
            assert [q.query[:30] for q in queries] == [
                "SELECT true, item_id, location"], queries
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_group_that_waited_for_the_lock_reads_the_stock_again(db_url: str) -> None:
    """A statement reads from the snapshot it took before it waited for a row lock. Here a
    group commit waits for another transaction that moves stock of the same item and
    commits: the group must count from what that transaction wrote (no lost update), having
    seen the item's sequence change and read the stock again."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only (SQLite has one writer)")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["W1"], ["L1"])
        move = [ChangeInput("adjustment", "W1", "L1", "5", from_state="NONE",
                            to_state="IN_STOCK")]
        await db.run(lambda uow: apply_grouped(uow, tenant, [move]))
        locked, release = asyncio.Event(), asyncio.Event()
        queries: list[Any] = []

        async def first(uow: UnitOfWork) -> None:
            await apply_grouped(uow, tenant, [move])
            locked.set()
            await release.wait()

        async def second(uow: UnitOfWork) -> list[Any]:
            raw = await driver(_sql(uow).conn)
            raw.add_query_logger(queries.append)
            try:
                return await apply_grouped(uow, tenant, [move])
            finally:
                await asyncio.sleep(0)
                raw.remove_query_logger(queries.append)

        holder = asyncio.ensure_future(db.run(first))
        await asyncio.wait_for(locked.wait(), 10)
        waiter = asyncio.ensure_future(db.run(second))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # waiting for the item's lock
        release.set()
        await holder
        [result] = await asyncio.wait_for(waiter, 10)
        assert result["applied"] == 1
        [change] = result["changes"]
        assert {"state": "IN_STOCK", "quantity": "15"} in change["counts"], change
        statements = [q.query for q in queries
                      if q.query.strip().upper() not in ("BEGIN;", "COMMIT;")]
        assert statements[1].startswith("SELECT true, item_id, location_id"), statements

        async def level(uow: UnitOfWork) -> tuple[list[Any], int]:
            refs = await uow.catalog.item_refs_by_sku(tenant, ["W1"])
            item_id = refs["W1"].id
            assert item_id is not None
            found = await uow.stock.item_stock(tenant, "W1")
            assert found is not None
            return found.stock, await uow.stock.availability(item_id, "*")

        rows, total = await db.run(level)
        assert [(r[2], r[3]) for r in rows] == [("IN_STOCK", 15_000_000)]
        assert total == 15_000_000
    finally:
        await db.dispose()
