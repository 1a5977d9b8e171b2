"""The store's reads and writes sent straight through the driver (store/repos/bulk.py
`fetch_rows`, `write_rows`), on a real SQLite file and the real PostgreSQL: they read and
write exactly what the SQLAlchemy statements they replaced did, inside the unit of work's
transaction even when they are its first statement."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.stock import Adjustment, Count, Outcome, StockLedger, StockState
from stockbell.service import accounts, catalog, inventory, webhooks
from stockbell.service.inventory import ChangeInput
from stockbell.service.ports import ItemStock, UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.repos.bulk import pg_array
from stockbell.store.repos.webhooks import endpoints_by_pks
from stockbell.store.tables import inventory_changes

T0 = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


async def _tenant(db: SqlDatabase, skus: list[str], codes: list[str]) -> Tenant:
    async def setup(uow: UnitOfWork) -> Tenant:
        tenant = Tenant(await accounts.create_account(uow, f"drv-{uuid.uuid4().hex[:12]}"),
                        Mode.TEST)
        for sku in skus:
            await catalog.upsert_item(uow, tenant, Item(
                sku_code=sku, title=f"title {sku}", upc="0123",
                pricing=[{"currency": "EUR", "priceBreaks": [{"priceBreakQuantity": 1,
                                                             "price": "9.99"}]}],
                attributes={"big": 2**70, "name": "Zoë"} if sku.endswith("1") else {}))
        for code in codes:
            await catalog.upsert_location(uow, tenant, Location(code=code, name=f"n {code}"))
        return tenant

    return await db.run(setup)


async def test_catalog_reads_match_the_sqlalchemy_reads(db_url: str) -> None:
    db = SqlDatabase(db_url)
    try:
        skus = ["Ä-1", "B-2", "C'3"]
        tenant = await _tenant(db, skus, ["L1", "L2"])
        other = await _tenant(db, skus, ["L1"])  # same codes, another account

        async def read(uow: UnitOfWork) -> None:
            refs = await uow.catalog.item_refs_by_sku(tenant, [*skus, "NOPE"])
            assert sorted(refs) == sorted(skus)
            by_id = await uow.catalog.items_by_id(tenant, [r.id for r in refs.values()])
            for sku in skus:
                item = await uow.catalog.get_item(tenant, sku)
                assert item is not None
                assert (refs[sku].id, refs[sku].public_id, refs[sku].sku_code) == (
                    item.id, item.public_id, sku)
                assert by_id[refs[sku].id] == item
            assert by_id[refs["Ä-1"].id].attributes == {"big": 2**70, "name": "Zoë"}
            theirs = await uow.catalog.item_refs_by_sku(other, skus)
            assert {i.id for i in theirs.values()}.isdisjoint(i.id for i in refs.values())
            # another tenant's ids read nothing
            assert await uow.catalog.items_by_id(other, [r.id for r in refs.values()]) == {}

            locs = await uow.catalog.locations_by_code(tenant, ["L1", "L2", "L3"])
            assert sorted(locs) == ["L1", "L2"]
            assert locs["L1"].name == "n L1"
            assert locs["L1"].created_at is not None
            assert (await uow.catalog.locations_by_code(other, ["L2"])) == {}

        await db.run(read)
    finally:
        await db.dispose()


async def test_point_reads_match_the_sqlalchemy_statements_they_replaced(db_url: str) -> None:
    """GET /v1/items/{sku}, /v1/inventory/{sku} and /v1/subscriptions/{id} read, and a new
    subscription is written, through the driver since the twenty-second session
    (SQLAlchemy's execution cost ~0.2 ms of CPU per statement). Each must read exactly what
    the SQLAlchemy statement it replaced reads, which is kept here as the reference: scopes
    of all three kinds, JSON, times, None."""
    from stockbell.domain.subscription import Customer
    from stockbell.service import subscriptions as subs_service
    from stockbell.store.repos.catalog import _item
    from stockbell.store.repos.subscriptions import _SELECT, _sub
    from stockbell.store.repos.subscriptions import s as subs_table
    from stockbell.store.tables import availability, items, locations, markets, stock

    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["P-1", "P-2"], ["L1", "L2"])
        await db.run(lambda uow: catalog.upsert_market(
            uow, tenant, Market(code="EU", name="Europe", location_codes=["L1", "L2"])))
        for loc, qty in (("L1", "3"), ("L2", "4")):
            await db.run(lambda uow, loc=loc, qty=qty: inventory.apply_grouped(
                uow, tenant, [[ChangeInput("count", "P-1", loc, qty, "IN_STOCK")]]))
        made = []
        for scope in ({}, {"location": "L2"}, {"market": "EU"}):
            made.append(await db.run(lambda uow, scope=scope: subs_service.subscribe(
                uow, tenant, subs_service.SubscriptionInput(
                    sku_code="P-1", threshold="9", metadata={"n": 1.5, "z": "Zoë"},
                    customer=Customer("a@example.com", None, "Ann", None, {"vip": True}),
                    expires_at=datetime.now(UTC) + timedelta(days=3), **scope))))

        for n in range(2):  # two with one reference (plain subscribe keeps no one-of rule)
            made.append(await db.run(lambda uow, n=n: subs_service.subscribe(
                uow, tenant, subs_service.SubscriptionInput(
                    sku_code="P-1", reference_origin="ti", reference="R-9",
                    threshold=str(n + 1), market="EU"))))

        # a change written through the driver too (SqlSubscriptions.update)
        await db.run(lambda uow: subs_service.update(uow, tenant, made[1].id,
                                                     subs_service.SubscriptionPatch(
                                                         metadata={"k": [1, None, "ü"]},
                                                         threshold="12")))

        async def compare(uow: UnitOfWork) -> None:
            conn = uow.conn  # type: ignore[attr-defined]
            for sku in ("P-1", "P-2"):
                ref = (await conn.execute(sa.select(items).where(
                    items.c.account_id == tenant.account_id, items.c.sku_code == sku))).one()
                assert await uow.catalog.get_item(tenant, sku) == _item(ref._mapping)
            assert await uow.catalog.get_item(tenant, "NOPE") is None
            item = await uow.catalog.get_item(tenant, "P-1")
            assert item is not None
            assert item.id is not None
            loc_ids = [r[0] for r in await conn.execute(sa.select(locations.c.id).where(
                locations.c.account_id == tenant.account_id))]
            mkt_ids = [r[0] for r in await conn.execute(sa.select(markets.c.id).where(
                markets.c.account_id == tenant.account_id))]
            codes = await uow.catalog.scope_codes(loc_ids, mkt_ids)
            assert sorted(codes.values()) == ["EU", "L1", "L2"]
            # the inventory view's one statement against SQLAlchemy's statements per part
            ref_stock = [tuple(r) for r in await conn.execute(
                sa.select(stock.c.location_id, locations.c.code, stock.c.state,
                          stock.c.quantity)
                .join(locations, locations.c.id == stock.c.location_id)
                .where(stock.c.item_id == item.id)
                .order_by(stock.c.location_id, stock.c.state))]
            found = await uow.stock.item_stock(tenant, "P-1")
            assert found is not None
            assert found.sku_code == "P-1"
            assert found.stock == ref_stock
            assert len(ref_stock) == 2
            ref_avail = {r[0]: r[1] for r in await conn.execute(
                sa.select(availability.c.scope_key, availability.c.quantity)
                .where(availability.c.item_id == item.id))}
            assert sorted(found.availability) == sorted(
                (key, codes.get(key), qty) for key, qty in ref_avail.items())
            assert {k[:2] for k in ref_avail} == {"*", "L:", "M:"}  # every kind of scope
            assert await uow.stock.item_stock(tenant, "P-2") == ItemStock("P-2", [], [])
            assert await uow.stock.item_stock(tenant, "NOPE") is None
            assert await uow.catalog.scope_codes([], []) == {}
            for sub in made:
                ref_sub = (await conn.execute(_SELECT.where(subs_table.c.id == sub.id))).one()
                assert await uow.subscriptions.get(tenant, sub.id) == _sub(ref_sub._mapping)
            got = [await uow.subscriptions.get(tenant, sub.id) for sub in made]
            assert [g.scope_code for g in got if g] == [None, "L2", "EU", "EU", "EU"]
            _, ref_page = await uow.subscriptions.search(tenant, [
                [("sku_code", "eq", "P-1")], [("reference_origin", "eq", "ti")],
                [("reference", "eq", "R-9")], [("status", "eq", "active")]], [], 0, 50)
            by_ref = await uow.subscriptions.active_by_reference(tenant, item.id, "ti", "R-9")
            assert by_ref == ref_page
            assert [x.id for x in by_ref] == [made[3].id, made[4].id]
            assert await uow.subscriptions.active_by_reference(tenant, item.id, "ti", "R") == []
            # written through the driver too (SqlSubscriptions.add): JSON stored as JSON
            assert got[0] is not None
            assert (got[0].metadata, got[0].customer.attributes) == (
                {"n": 1.5, "z": "Zoë"}, {"vip": True})
            assert got[0].expires_at == made[0].expires_at
            assert got[1] is not None
            assert got[1].metadata == {"k": [1, None, "ü"]}
            assert got[1].threshold == 12_000_000  # micro-units
            assert got[1].customer.attributes == {"vip": True}  # untouched
            assert got[0].pk == made[0].pk
            assert await uow.subscriptions.get(tenant, "bis_nope") is None
            other = Tenant(tenant.account_id, Mode.LIVE)
            assert await uow.subscriptions.get(other, made[0].id) is None

        await db.run(compare)
        await db.read(compare)
    finally:
        await db.dispose()


async def test_sequences_advance_by_each_items_count(db_url: str) -> None:
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, [f"S-{i}" for i in range(40)], [])
        ids = await db.run(lambda uow: uow.catalog.item_refs_by_sku(
            tenant, [f"S-{i}" for i in range(40)]))
        counts = {ids[f"S-{i}"].id: i % 5 + 1 for i in range(40)}
        first = await db.run(lambda uow: uow.catalog.bump_sequences(counts))
        assert first == counts
        again = await db.run(lambda uow: uow.catalog.bump_sequences(
            {k: 2 for k in list(counts)[:7]}))
        assert again == {k: counts[k] + 2 for k in list(counts)[:7]}
    finally:
        await db.dispose()


async def test_ledger_round_trip_inserts_then_overwrites(db_url: str) -> None:
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["A", "B"], ["L1", "L2"])

        async def ids(uow: UnitOfWork) -> tuple[list[int], list[int]]:
            items = await uow.catalog.item_refs_by_sku(tenant, ["A", "B"])
            locs = await uow.catalog.locations_by_code(tenant, ["L1", "L2"])
            return ([items[k].id for k in ("A", "B")],
                    [locs[k].id or 0 for k in ("L1", "L2")])

        (a, b), (l1, l2) = await db.run(ids)
        keys = {(a, l1, "IN_STOCK"), (a, l2, "SOLD"), (b, l1, "IN_STOCK")}
        akeys = {(a, "*"), (a, f"L:{l1}"), (b, "*")}

        async def write(quantity: int, at: datetime) -> None:
            async def go(uow: UnitOfWork) -> None:
                ledger = StockLedger()
                for k in keys:
                    ledger.quantities[k] = quantity
                    ledger.counted_at[k] = at
                    ledger.dirty_stock.add(k)
                for k in akeys:
                    ledger.availability[k] = quantity * 2
                    ledger.dirty_availability.add(k)
                await uow.stock.save(tenant, ledger, [
                    Outcome(Count(a, l1, StockState.IN_STOCK, quantity, at), True, (), ()),
                    Outcome(Adjustment(b, l2, StockState.IN_STOCK, StockState.SOLD, 1, at),
                            False, (), ())], at)
            await db.run(go)

        await write(5_000_000, T0)
        await write(7_500_000, T0 + timedelta(hours=1))  # every row now exists: overwrites
        # asked for more keys than exist, and a superset of items x locations x states
        wanted = keys | {(b, l2, "SOLD"), (b, l2, "IN_STOCK")}
        loaded = await db.run(lambda uow: uow.stock.load(wanted, akeys | {(b, f"L:{l2}")}))
        assert loaded.quantities == dict.fromkeys(keys, 7_500_000)
        assert loaded.counted_at == dict.fromkeys(keys, T0 + timedelta(hours=1))
        assert loaded.availability == dict.fromkeys(akeys, 15_000_000)
        assert (await db.run(lambda uow: uow.stock.availability(a, "*"))) == 15_000_000

        async def recorded(uow: UnitOfWork) -> list[tuple[Any, ...]]:
            c = inventory_changes.c
            res = await uow.conn.execute(  # type: ignore[attr-defined]
                sa.select(c.item_id, c.location_id, c.kind, c.state, c.from_state, c.to_state,
                          c.quantity, c.occurred_at, c.applied, c.account_id, c.mode)
                .where(c.account_id == tenant.account_id).order_by(c.id))
            return [tuple(r) for r in res]

        m = tenant.mode.value
        assert await db.run(recorded) == [
            (a, l1, "count", "IN_STOCK", None, None, 5_000_000, T0, True, tenant.account_id, m),
            (b, l2, "adjustment", None, "IN_STOCK", "SOLD", 1, T0, False, tenant.account_id, m),
            (a, l1, "count", "IN_STOCK", None, None, 7_500_000, T0 + timedelta(hours=1), True,
             tenant.account_id, m),
            (b, l2, "adjustment", None, "IN_STOCK", "SOLD", 1, T0 + timedelta(hours=1), False,
             tenant.account_id, m)]
    finally:
        await db.dispose()


@pytest.mark.parametrize("n", [200, 201])
async def test_every_change_is_recorded_however_many(db_url: str, n: int) -> None:
    """PostgreSQL records up to 200 changes in the statement that writes the stock and more
    by COPY: on both sides of that line every change is recorded once, in order."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["A"], ["L1"])
        refs = await db.run(lambda uow: uow.catalog.item_refs_by_sku(tenant, ["A"]))
        locs = await db.run(lambda uow: uow.catalog.locations_by_code(tenant, ["L1"]))
        a, l1 = refs["A"].id, locs["L1"].id
        assert l1 is not None
        outcomes = [Outcome(Count(a, l1, StockState.IN_STOCK, k, T0), k % 3 == 0, (), ())
                    for k in range(n)]
        await db.run(lambda uow: uow.stock.save(tenant, StockLedger(), outcomes, T0))

        async def recorded(uow: UnitOfWork) -> list[tuple[Any, ...]]:
            c = inventory_changes.c
            res = await uow.conn.execute(  # type: ignore[attr-defined]
                sa.select(c.quantity, c.applied).where(c.account_id == tenant.account_id)
                .order_by(c.id))
            return [tuple(r) for r in res]

        assert await db.run(recorded) == [(k, k % 3 == 0) for k in range(n)]
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["lock_items", "item_refs_by_sku", "locked_refs_and_locations"])
async def test_a_first_statement_through_the_driver_runs_inside_the_transaction(
        db_url: str, how: str) -> None:
    """On PostgreSQL, SQLAlchemy begins the transaction with its first statement; the row
    locks of `lock_items` (or of `item_refs_by_sku(lock=True)` or `locked_refs_and_locations`,
    which applying changes uses),
    sent through the driver as the unit of work's very first statement, must still hold until
    the commit."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only (SQLite has one writer)")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["LOCKED"], ["L1"])
        [item] = (await db.run(lambda uow: uow.catalog.item_refs_by_sku(
            tenant, ["LOCKED"]))).values()
        assert item.id is not None
        locked, release = asyncio.Event(), asyncio.Event()

        async def hold(uow: UnitOfWork) -> None:
            if how == "lock_items":  # the first statement
                await uow.catalog.lock_items([item.id])
            elif how == "item_refs_by_sku":
                await uow.catalog.item_refs_by_sku(tenant, ["LOCKED"], lock=True)
            else:
                await uow.catalog.locked_refs_and_locations(tenant, ["LOCKED"], ["L1"])
            locked.set()
            await release.wait()

        holder = asyncio.ensure_future(db.run(hold))
        await asyncio.wait_for(locked.wait(), 10)
        conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            with pytest.raises(asyncpg.LockNotAvailableError):
                await conn.fetch("SELECT id FROM items WHERE id = $1 FOR UPDATE NOWAIT",
                                 item.id)
        finally:
            release.set()
            await holder
            await conn.close()
    finally:
        await db.dispose()


async def test_locations_come_with_the_markets_they_belong_to(db_url: str) -> None:
    """`locations_with_markets`: the locations `locations_by_code` reads, and per location id
    the markets holding it (none for a location in no market), another tenant's left out."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, [], ["L1", "L2", "L3"])
        other = await _tenant(db, [], ["L1"])

        async def setup(uow: UnitOfWork) -> tuple[int, int]:
            both = await catalog.upsert_market(uow, tenant, Market("EU", location_codes=["L1",
                                                                                      "L2"]))
            one = await catalog.upsert_market(uow, tenant, Market("DE", location_codes=["L1"]))
            await catalog.upsert_market(uow, other, Market("EU", location_codes=["L1"]))
            assert both.id is not None
            assert one.id is not None
            return both.id, one.id

        eu, de = await db.run(setup)

        async def read(uow: UnitOfWork) -> None:
            found, markets_of = await uow.catalog.locations_with_markets(
                tenant, ["L1", "L2", "L3", "L4"])
            assert found == await uow.catalog.locations_by_code(tenant, ["L1", "L2", "L3"])
            assert markets_of == {found["L1"].id: frozenset({eu, de}),
                                  found["L2"].id: frozenset({eu})}
            assert await uow.catalog.locations_with_markets(tenant, []) == ({}, {})

        await db.run(read)
    finally:
        await db.dispose()


async def test_array_literals_read_back_exactly(db_url: str) -> None:
    """`pg_array`'s text, cast by PostgreSQL, is the list it was made from: every string is
    data, whatever quotes, backslashes, braces, commas, blanks or NULLs it holds."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's array literals")
    texts = ["plain", "", "NULL", "null", 'quo"te', "back\\slash", "\\", '\\"', "{a,b}",
             "com,ma", " lead and trail ", "tab\there", "new\nline", "Zoë ☃", "'single'"]
    ints = [0, -1, 2**63 - 1, -(2**63), 42]
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        got_texts, got_ints, empty = await conn.fetchrow(
            "SELECT $1::text::text[], $2::text::bigint[], $3::text::bigint[]",
            pg_array(texts), pg_array(ints), pg_array([]))
    finally:
        await conn.close()
    assert got_texts == texts
    assert got_ints == ints
    assert empty == []


@pytest.mark.parametrize("fails", [False, True])
async def test_a_driver_write_first_commits_or_rolls_back_with_the_unit_of_work(
        db_url: str, fails: bool) -> None:
    """A write sent through the driver as the unit of work's first statement belongs to its
    transaction: committed with it, or rolled back when the work raises. On PostgreSQL the
    transaction is begun through SQLAlchemy's asyncpg adapter, without a statement through
    SQLAlchemy (`bulk._begin_postgres`): none is seen here."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["SEQ-1"], [])
        [item] = (await db.run(lambda uow: uow.catalog.item_refs_by_sku(
            tenant, ["SEQ-1"]))).values()
        seen: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        async def work(uow: UnitOfWork) -> None:
            await uow.catalog.bump_sequences({item.id: 5})
            if fails:
                raise RuntimeError("the work fails after its first statement")

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            if fails:
                with pytest.raises(RuntimeError):
                    await db.run(work)
            else:
                await db.run(work)
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        if db_url.startswith("postgresql"):
            assert seen == []
        after = await db.run(lambda uow: uow.catalog.bump_sequences({item.id: 1}))
        assert after[item.id] == (1 if fails else 6)
    finally:
        await db.dispose()


async def test_a_pooled_connection_the_server_closed_is_replaced_transparently(
        db_url: str) -> None:
    """The pool lends connections without pinging them first (a round trip per transaction):
    a unit of work whose connection died before its commit runs again on a fresh one, and
    nothing of the first attempt is committed."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a server that closes connections: PostgreSQL")
    db = SqlDatabase(db_url, pool_size=1)
    try:
        async def backend(uow: UnitOfWork) -> int:
            return int((await uow.conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())

        first = await db.run(backend)
        admin = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the server has closed it; the pool does not know yet

        runs: list[int] = []

        async def count_and_read(uow: UnitOfWork) -> int:
            runs.append(1)
            return await backend(uow)

        second = await db.run(count_and_read)
        assert second != first
        assert len(runs) == 2  # the first try met the dead connection, the second a new one
        assert await db.run(backend) == second  # and the pool keeps the new one

        # the same for a read (autocommit, see the next test)
        admin = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", second)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
        runs.clear()
        third = await db.read(count_and_read)
        assert third not in (first, second)
        assert len(runs) == 2
    finally:
        await db.dispose()


async def test_a_postgresql_read_sends_no_begin_or_commit(db_url: str) -> None:
    """At READ COMMITTED every statement takes its own snapshot, so BEGIN and COMMIT around
    a read bought nothing but two round trips. A SAVEPOINT is what tells a transaction block
    from none: PostgreSQL refuses it outside one."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: SQLite reads keep their transaction (one snapshot)")
    db = SqlDatabase(db_url, pool_size=1)
    try:
        async def savepoint(uow: UnitOfWork) -> str:
            await uow.conn.exec_driver_sql("SAVEPOINT probe")
            return str((await uow.conn.exec_driver_sql(
                "SELECT current_setting('transaction_isolation')")).scalar_one())

        for _ in range(2):  # one pooled connection, lent in turn to writers and readers
            assert await db.run(savepoint) == "read committed"
            with pytest.raises(DBAPIError, match="can only be used in transaction blocks"):
                await db.read(savepoint)
    finally:
        await db.dispose()


async def test_a_read_does_not_wait_for_a_write_in_progress_and_may_not_write(
        db_url: str) -> None:
    """`SqlDatabase.read` sees the last commit while a write transaction is open (on SQLite
    it does not queue behind the one writer) and refuses to write on SQLite, where it runs on
    read-only connections."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["R-1"], [])
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_write(uow: UnitOfWork) -> None:
            await catalog.upsert_item(uow, tenant, Item(sku_code="R-2", title="not yet"))
            started.set()
            await release.wait()

        writer = asyncio.ensure_future(db.run(slow_write))
        try:
            await asyncio.wait_for(started.wait(), 10)
            found = await asyncio.wait_for(db.read(lambda uow: uow.catalog.item_refs_by_sku(
                tenant, ["R-1", "R-2"])), 5)
            assert set(found) == {"R-1"}  # the open write is not visible
        finally:
            release.set()
            await writer
        found = await db.read(lambda uow: uow.catalog.item_refs_by_sku(tenant, ["R-1", "R-2"]))
        assert set(found) == {"R-1", "R-2"}
        if db.sqlite:
            with pytest.raises(OperationalError, match="readonly database"):
                await db.read(lambda uow: catalog.upsert_item(
                    uow, tenant, Item(sku_code="R-3", title="refused")))
    finally:
        await db.dispose()


async def test_a_small_sqlite_transaction_makes_two_trips_to_the_driver_thread(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite a small unit of work runs its statements on the event loop's thread and
    sends only COMMIT and an open-ended read to aiosqlite's thread (store/repos/bulk.py; its
    BEGIN IMMEDIATE too while the write lock is free, store/engine.py): each trip costs
    ~50 us of CPU, and a one-change transaction used to make 18. It still reads and writes
    what it did: the change, its event and its delivery are all there afterwards."""
    if not db_url.startswith("sqlite"):
        pytest.skip("aiosqlite's thread: SQLite only")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["TRIP"], ["L1"])
        await db.run(lambda uow: webhooks.create_endpoint(
            uow, tenant, "http://127.0.0.1:9/hook", None, None, True, "native"))
        trips: list[str] = []
        real = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
            trips.append(str(args[0])[:20] if args else getattr(fn, "__name__", "?"))
            return await real(self, fn, *args, **kw)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        change = [ChangeInput("count", "TRIP", "L1", "7", "IN_STOCK")]
        [result] = await db.run(lambda uow: inventory.apply_grouped(uow, tenant, [change]))
        # The stock rose, so the rule looked for subscriptions to fire: that query's result
        # may be 100,000 rows, so it alone of the statements goes to the thread.
        assert trips == ["SELECT s.pk, s.item_", "commit"]
        monkeypatch.undo()
        assert not isinstance(result, Exception)
        assert result["applied"] == 1
        found = await db.read(lambda uow: inventory.inventory_of(uow, tenant, "TRIP"))
        assert found["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "7"}}]
        async with db.engine.connect() as conn:
            n_events, n_deliveries = (await conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM events WHERE account_id = ?),"
                " (SELECT count(*) FROM deliveries WHERE account_id = ?)",
                (tenant.account_id, tenant.account_id))).one()
        assert (n_events, n_deliveries) == (1, 1)
    finally:
        await db.dispose()


async def test_a_sqlite_read_runs_without_a_trip_to_the_driver_thread(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`SqlDatabase.read` on SQLite runs every statement, SQLAlchemy's included, on the event
    loop's thread (store/inline_sqlite.py): an item's inventory view used to make 13 trips.
    It reads the same rows, still sees only committed data and still may not write."""
    if not db_url.startswith("sqlite"):
        pytest.skip("aiosqlite's thread: SQLite only")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["INL-1"], ["L1", "L2"])
        change = [ChangeInput("count", "INL-1", "L2", "4", "IN_STOCK")]
        await db.run(lambda uow: inventory.apply_grouped(uow, tenant, [change]))
        trips: list[object] = []
        real = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
            trips.append(fn)
            return await real(self, fn, *args, **kw)

        await db.read(lambda uow: uow.catalog.get_item(tenant, "INL-1"))  # a pooled reader
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        item = await db.read(lambda uow: uow.catalog.get_item(tenant, "INL-1"))
        view = await db.read(lambda uow: inventory.inventory_of(uow, tenant, "INL-1"))
        assert trips == []
        monkeypatch.undo()
        assert item is not None
        assert (item.title, item.upc) == ("title INL-1", "0123")
        assert view["locations"] == [{"location": "L2", "quantities": {"IN_STOCK": "4"}}]
        with pytest.raises(OperationalError, match="readonly database"):
            await db.read(lambda uow: catalog.upsert_item(uow, tenant, Item(sku_code="INL-2")))
        assert await db.read(lambda uow: uow.catalog.get_item(tenant, "INL-2")) is None
    finally:
        await db.dispose()


async def test_endpoints_read_through_the_driver_match_the_sqlalchemy_read(db_url: str) -> None:
    """The endpoints every restock and claim read through the driver (`enabled`,
    `endpoints_by_pks`) are exactly those SQLAlchemy's typed read gives: filter list, flags,
    times, secrets. (A filter left as JSON text would still "match" by substring.)"""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, [], [])
        filtered = await db.run(lambda uow: webhooks.create_endpoint(
            uow, tenant, "http://127.0.0.1:9/a", "first", ["back_in_stock"], True, "native"))
        every = await db.run(lambda uow: webhooks.create_endpoint(
            uow, tenant, "http://127.0.0.1:9/b", None, None, True, "square"))
        await db.run(lambda uow: webhooks.create_endpoint(
            uow, tenant, "http://127.0.0.1:9/c", None, None, False, "native"))

        async def both(uow: UnitOfWork) -> tuple[list[Any], list[Any], dict[int, Any]]:
            typed = [await uow.webhooks.get(tenant, e.id) for e in (filtered, every)]
            enabled = await uow.webhooks.enabled(tenant)
            by_pk = await endpoints_by_pks(uow.conn, [e.pk or 0 for e in enabled])
            return typed, enabled, by_pk

        typed, enabled, by_pk = await db.read(both)
        assert enabled == typed  # the disabled one is left out, in pk order
        assert enabled[0].event_types == ["back_in_stock"]
        assert enabled[1].event_types is None
        assert by_pk == {e.pk: e for e in typed}
    finally:
        await db.dispose()


async def test_a_sqlite_writer_waits_for_a_lock_another_process_holds_off_the_loop(
        db_url: str) -> None:
    """BEGIN IMMEDIATE is tried on the event loop's thread without waiting; while another
    connection (another process, in production) holds the write lock it fails there, and the
    unit of work waits for the lock in aiosqlite's thread instead: the loop keeps running
    meanwhile, and the write lands once the lock is released."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["W-1"], ["L1"])
        other = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None,
                                check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        change = [ChangeInput("count", "W-1", "L1", "3", "IN_STOCK")]
        writing = asyncio.ensure_future(
            db.run(lambda uow: inventory.apply_grouped(uow, tenant, [change])))
        started = time.monotonic()
        for _ in range(20):  # 0.4 s in which the loop must keep running
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 5
        assert not writing.done()
        other.execute("COMMIT")
        other.close()
        [result] = await asyncio.wait_for(writing, 10)
        assert not isinstance(result, Exception)
        assert result["applied"] == 1
        found = await db.read(lambda uow: inventory.inventory_of(uow, tenant, "W-1"))
        assert found["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "3"}}]
    finally:
        await db.dispose()


async def test_a_transaction_the_pool_gets_back_open_is_rolled_back(db_url: str) -> None:
    """SQLite connections go back to the pool without SQLAlchemy's ROLLBACK (every unit of
    work ends its transaction; the ROLLBACK was one more trip per transaction), but one left
    open behind SQLAlchemy's back is still rolled back: its write is gone and its lock free."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the pool's reset on SQLite")
    db = SqlDatabase(db_url)
    try:
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.execute_fetchall("BEGIN IMMEDIATE")
            await raw.execute_fetchall(
                "INSERT INTO server_secrets (name, value) VALUES ('left-open', 'x')")
        tenant = await asyncio.wait_for(_tenant(db, ["AFTER"], []), 10)  # the lock is free
        assert tenant.account_id
        async with db.engine.connect() as conn:
            left = (await conn.exec_driver_sql(
                "SELECT count(*) FROM server_secrets WHERE name = 'left-open'")).scalar_one()
        assert left == 0
    finally:
        await db.dispose()


async def test_concurrent_units_of_work_reuse_the_pools_connections(db_url: str) -> None:
    """More units of work at once than the pool holds: they wait for a pooled connection
    instead of opening one that is closed again when it comes back (overflow). With overflow,
    32 concurrent reads opened a new connection every two or three reads."""
    db = SqlDatabase(db_url)
    try:
        tenant = await _tenant(db, ["P-1"], ["L1"])
        opened: list[int] = []
        for engine in {db.engine, db._readers or db.engine}:
            event.listen(engine.sync_engine, "connect", lambda *_: opened.append(1))

        async def read(uow: UnitOfWork) -> None:
            assert list(await uow.catalog.locations_by_code(tenant, ["L1"])) == ["L1"]

        for _ in range(20):
            await asyncio.gather(*(db.read(read) for _ in range(32)),
                                 *(db.run(read) for _ in range(8)))
        capacity = sum(e.sync_engine.pool.size()
                       for e in {db.engine, db._readers or db.engine})
        assert 0 < len(opened) <= capacity
    finally:
        await db.dispose()
