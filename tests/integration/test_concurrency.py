"""Concurrent inventory changes on PostgreSQL (DESIGN §1, correctness traps).

Writers that raise the same item at different locations at once must together fire every
threshold they cross exactly once, and batches touching the same items in opposite orders must
neither deadlock nor need a retry. SQLite has a single writer, so these run on PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import pytest

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.events import BACK_IN_STOCK
from stockbell.service import accounts, catalog, inventory, subscriptions
from stockbell.service.events import list_events
from stockbell.service.inventory import ChangeInput
from stockbell.service.pagination import PageRequest, decode_cursor
from stockbell.service.ports import UnitOfWork
from stockbell.service.subscriptions import SubscriptionInput
from stockbell.store.database import SqlDatabase
from stockbell.store.repos.catalog import FEW_CODES
from tests.support import postgres_database

pytestmark = pytest.mark.postgres

T = TypeVar("T")
LOCATIONS = ("L1", "L2", "L3", "L4")
ROUNDS = 12


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


class Counted:
    """A database whose transactions are counted: `work` runs once per attempt, so more
    attempts than runs means a transparent retry (a deadlock or serialization failure)."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        self.runs = 0
        self.attempts = 0

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        self.runs += 1

        async def counted(uow: UnitOfWork) -> T:
            self.attempts += 1
            return await work(uow)

        return await self.db.run(counted)


async def new_tenant(db: SqlDatabase, skus: tuple[str, ...]) -> Tenant:
    async def work(uow: UnitOfWork) -> Tenant:
        account_id = await accounts.create_account(uow, f"conc-{uuid.uuid4().hex[:12]}")
        tenant = Tenant(account_id, Mode.TEST)
        for sku in skus:
            await catalog.upsert_item(uow, tenant, Item(sku_code=sku))
        for code in LOCATIONS:
            await catalog.upsert_location(uow, tenant, Location(code=code))
        await catalog.upsert_market(uow, tenant, Market(code="EU", location_codes=["L1", "L2"]))
        return tenant

    return await db.run(work)


async def fired_events(db: SqlDatabase, tenant: Tenant) -> list[Any]:
    async def work(uow: UnitOfWork) -> list[Any]:
        out: list[Any] = []
        after: int | None = None
        while True:
            page = await list_events(uow, tenant, BACK_IN_STOCK, None, PageRequest(after, 200))
            out.extend(page.data)
            if page.next_cursor is None:
                return out
            after = decode_cursor(page.next_cursor)

    return await db.run(work)


def add(sku: str, location: str, qty: Decimal) -> ChangeInput:
    return ChangeInput("adjustment", sku, location, str(qty), from_state="NONE",
                       to_state="IN_STOCK")


def count(sku: str, location: str, qty: Decimal) -> ChangeInput:
    return ChangeInput("count", sku, location, str(qty), state="IN_STOCK")


async def test_concurrent_raises_fire_every_crossed_threshold_exactly_once(pg_url: str) -> None:
    rng = random.Random(20240501)
    db = SqlDatabase(pg_url, pool_size=len(LOCATIONS) * 2)
    try:
        tenant = await new_tenant(db, ("SKU-X",))
        # "all" scope: thresholds every 0.5 up to the largest possible total (4 x 3.5 = 14),
        # auto-resubscribing so each round checks again, plus one-shot ones; and the market
        # {L1, L2} at every 0.5 up to 7.
        grid = [Decimal(n) / 2 for n in range(1, 29)]
        subs: dict[str, tuple[str, Decimal, bool]] = {}

        async def subscribe(market: str | None, threshold: Decimal, auto: bool) -> None:
            inp = SubscriptionInput("SKU-X", market=market, threshold=str(threshold),
                                    auto_resubscribe=auto)
            sub = await db.run(lambda uow: subscriptions.subscribe(uow, tenant, inp))
            subs[sub.id] = ("*" if market is None else market, threshold, auto)

        for t in grid:
            await subscribe(None, t, True)
            await subscribe(None, t, False)
        for t in grid[:14]:
            await subscribe("EU", t, True)

        expected: Counter[str] = Counter()
        notified = 0
        counted = Counted(db)
        for _ in range(ROUNDS):
            # back to zero everywhere (a drop fires nothing), then raise all locations at once
            await db.run(lambda uow: inventory.apply_changes(
                uow, tenant, [count("SKU-X", loc, Decimal(0)) for loc in LOCATIONS]))
            rises = {loc: Decimal(rng.randint(1, 7)) / 2 for loc in LOCATIONS}
            total = sum(rises.values(), Decimal(0))
            eu = rises["L1"] + rises["L2"]
            batches = [
                [add("SKU-X", loc, q)] if i % 2 else [count("SKU-X", loc, q)]
                for i, (loc, q) in enumerate(rises.items())
            ]
            results = await asyncio.gather(*(
                counted.run(partial(inventory.apply_changes, tenant=tenant, inputs=b))
                for b in batches
            ))
            notified += sum(body["notifications"] for _, body in results)
            for sub_id, (scope, threshold, auto) in subs.items():
                reached = threshold <= (total if scope == "*" else eu)
                if reached and (auto or expected[sub_id] == 0):
                    expected[sub_id] += 1

        events = await fired_events(db, tenant)
        got = Counter(e.data["subscription_id"] for e in events)
        lost = {subs[k][:2]: v - got[k] for k, v in expected.items() if got[k] < v}
        doubled = {subs[k][:2]: got[k] - expected[k] for k in got if got[k] > expected[k]}
        assert not lost, f"crossings lost (scope, threshold): missing fires {lost}"
        assert not doubled, f"thresholds fired twice (scope, threshold): extra fires {doubled}"
        assert notified == sum(expected.values())
        # every fire saw its own consecutive window: (previous, availability] never overlap
        for e in events:
            assert Decimal(e.data["previous_availability"]) < Decimal(e.data["threshold"])
            assert Decimal(e.data["threshold"]) <= Decimal(e.data["availability"])

        view = await db.run(lambda uow: inventory.inventory_of(uow, tenant, "SKU-X"))
        avail = {(a["type"], a["code"]): Decimal(a["availability"])
                 for a in view["availability"]}
        assert avail[("all", None)] == total
        assert avail[("market", "EU")] == eu
        for sub_id, (_, _, auto) in subs.items():
            sub = await db.run(partial(subscriptions.get, tenant=tenant, sub_id=sub_id))
            assert sub.notify_count == expected[sub_id]
            want = "active" if auto or expected[sub_id] == 0 else "notified"
            assert sub.status.value == want
    finally:
        await db.dispose()


async def test_batches_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    db = SqlDatabase(pg_url, pool_size=8)
    try:
        tenant = await new_tenant(db, ("SKU-A", "SKU-B"))
        sub = await db.run(lambda uow: subscriptions.subscribe(
            uow, tenant, SubscriptionInput("SKU-B", threshold="1", auto_resubscribe=True)))
        counted = Counted(db)
        forward = [add("SKU-A", "L1", Decimal(1)), add("SKU-B", "L2", Decimal(1)),
                   add("SKU-A", "L2", Decimal("0.5"))]
        backward = [add("SKU-B", "L1", Decimal(1)), add("SKU-A", "L1", Decimal(1)),
                    add("SKU-B", "L2", Decimal("0.5"))]
        pairs = 10
        for _ in range(pairs):
            results = await asyncio.wait_for(asyncio.gather(
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, forward)),
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, backward)),
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, forward)),
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, backward)),
            ), timeout=30)
            assert all(status == 200 and body["applied"] == 3 for status, body in results)
        assert counted.attempts == counted.runs, "a transaction was retried (deadlock?)"

        for sku in ("SKU-A", "SKU-B"):
            view = await db.run(partial(inventory.inventory_of, tenant=tenant, sku_code=sku))
            avail = {(a["type"], a["code"]): Decimal(a["availability"])
                     for a in view["availability"]}
            assert avail[("all", None)] == Decimal("2.5") * 2 * pairs
            assert avail[("market", "EU")] == Decimal("2.5") * 2 * pairs
        # stock only ever rose from 0, so the "all" subscription crossed 1 exactly once
        got = await db.run(lambda uow: subscriptions.get(uow, tenant, sub.id))
        assert got.notify_count == 1
    finally:
        await db.dispose()


async def test_long_batches_in_opposite_orders_do_not_deadlock(pg_url: str) -> None:
    """Past FEW_CODES SKUs the items are found by a join instead of a filter: they are still
    locked in id order, so long batches over the same items in opposite orders neither
    deadlock nor need a retry, and every change counts."""
    skus = tuple(f"SKU-{n:03d}" for n in range(2 * FEW_CODES))
    db = SqlDatabase(pg_url, pool_size=8)
    try:
        tenant = await new_tenant(db, skus)
        counted = Counted(db)
        forward = [add(sku, "L1", Decimal(1)) for sku in skus]
        backward = [add(sku, "L2", Decimal(1)) for sku in reversed(skus)]
        rounds = 5
        for _ in range(rounds):
            results = await asyncio.wait_for(asyncio.gather(
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, forward)),
                counted.run(lambda uow: inventory.apply_changes(uow, tenant, backward)),
            ), timeout=30)
            assert all(body["applied"] == len(skus) for _, body in results)
        assert counted.attempts == counted.runs, "a transaction was retried (deadlock?)"
        for sku in (skus[0], skus[-1]):
            view = await db.run(partial(inventory.inventory_of, tenant=tenant, sku_code=sku))
            avail = {(a["type"], a["code"]): Decimal(a["availability"])
                     for a in view["availability"]}
            assert avail[("market", "EU")] == 2 * rounds
    finally:
        await db.dispose()


async def test_cancel_racing_a_restock_neither_deadlocks_nor_resurrects(pg_url: str) -> None:
    """Cancelling (or deactivating) a subscription while a restock fires it: the two serialise
    on the item, so no retry is needed, and a cancelled subscription never ends up `notified`
    (it either fired first and was then cancelled, or was cancelled and did not fire)."""
    db = SqlDatabase(pg_url, pool_size=8)
    try:
        tenant = await new_tenant(db, ("SKU-C",))
        counted = Counted(db)
        for n in range(12):
            await db.run(lambda uow: inventory.apply_changes(
                uow, tenant, [count("SKU-C", "L1", Decimal(0))]))
            subs = [await db.run(lambda uow: subscriptions.subscribe(
                uow, tenant, SubscriptionInput("SKU-C", threshold="1"))) for _ in range(4)]
            end = subscriptions.cancel if n % 2 else subscriptions.deactivate
            await asyncio.wait_for(asyncio.gather(
                counted.run(lambda uow: inventory.apply_changes(
                    uow, tenant, [count("SKU-C", "L1", Decimal(5))])),
                *(counted.run(partial(end, tenant=tenant, sub_id=s.id)) for s in subs),
            ), timeout=30)
            for s in subs:
                final = await db.run(partial(subscriptions.get, tenant=tenant, sub_id=s.id))
                assert final.status.value in ("cancelled", "inactive"), final.status
        assert counted.attempts == counted.runs, "a transaction was retried (deadlock?)"
    finally:
        await db.dispose()


async def _lock_waiters(db: SqlDatabase) -> int:
    """Sessions of this database waiting for a lock (another session's row lock here)."""
    async def work(uow: UnitOfWork) -> int:
        conn = uow.conn  # type: ignore[attr-defined]
        res = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")
        return int(res.scalar_one())

    return await db.run(work)


async def test_market_change_racing_a_restock_loses_neither(pg_url: str) -> None:
    """A location joins a market while a change raises stock there. Whichever commits
    first, the market's availability ends up counting that stock and the market's waiting
    subscription fires: the change is held until the membership commits, then reads it."""
    db = SqlDatabase(pg_url, pool_size=4)
    try:
        tenant = await new_tenant(db, ("SKU-M",))  # market EU = {L1, L2}
        sub = await db.run(lambda uow: subscriptions.subscribe(
            uow, tenant, SubscriptionInput("SKU-M", market="EU", threshold="1")))
        changed, release = asyncio.Event(), asyncio.Event()

        async def grow_market(uow: UnitOfWork) -> None:
            await catalog.upsert_market(
                uow, tenant, Market(code="EU", location_codes=["L1", "L2", "L3"]))
            changed.set()
            await release.wait()  # commit only once the restock has started

        market = asyncio.ensure_future(db.run(grow_market))
        await asyncio.wait_for(changed.wait(), timeout=10)
        restock = asyncio.ensure_future(db.run(lambda uow: inventory.apply_changes(
            uow, tenant, [count("SKU-M", "L3", Decimal(5))])))
        for _ in range(200):  # until the restock waits for the market's transaction
            if restock.done() or await _lock_waiters(db):
                break
            await asyncio.sleep(0.01)
        assert not restock.done(), "the change did not wait for the membership change"
        release.set()
        await asyncio.wait_for(market, timeout=10)
        status, body = await asyncio.wait_for(restock, timeout=10)
        assert status == 200
        assert body["applied"] == 1

        view = await db.run(lambda uow: inventory.inventory_of(uow, tenant, "SKU-M"))
        avail = {(a["type"], a["code"]): Decimal(a["availability"])
                 for a in view["availability"]}
        assert avail.get(("market", "EU")) == Decimal(5), avail
        fired = await db.run(lambda uow: subscriptions.get(uow, tenant, sub.id))
        assert fired.notify_count == 1
        assert fired.status.value == "notified"
    finally:
        await db.dispose()
