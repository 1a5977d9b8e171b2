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
from stockbell.domain.catalog import Item, Location, Market
from stockbell.service import accounts, catalog, webhooks
from stockbell.service.inventory import ChangeInput, apply_grouped
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase, SqlUnitOfWork
from stockbell.store.repos.bulk import RowWrite, defer_rows, driver, fetch_rows, write_rows


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
async def test_a_group_commit_sends_three_statements_between_begin_and_commit(
        db_url: str) -> None:
    """The round trips of a PostgreSQL group commit of one-change requests: the items locked
    with the locations, the stock read, and the writes (stock, availability, the changes,
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
        # The three and the subscriptions waiting on the rise (none); asyncpg does not log
        # the deliveries' COPY (they are counted below).
        assert len(statements) == 4, statements
        assert "FOR UPDATE" in statements[0]
        assert "market_locations" in statements[0]
        assert statements[1].startswith("SELECT true, item_id, location_id")
        assert statements[2].startswith("SELECT s.pk, s.item_id, s.scope_key")
        assert "INSERT INTO events" in statements[3]
        assert "webhook_endpoints" in statements[3]

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
