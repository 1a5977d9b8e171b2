"""Group commit of inventory changes (service/coalesce.py) on both databases.

Concurrent requests share transactions, yet each is applied as if alone and in arrival
order, gets exactly its own answer, and a request with bad input fails alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.catalog import Item, Location
from stockbell.domain.errors import InvalidInput
from stockbell.service import accounts, catalog, inventory, subscriptions
from stockbell.service.coalesce import ChangeCoalescer
from stockbell.service.inventory import ChangeInput
from stockbell.service.ports import UnitOfWork
from stockbell.service.subscriptions import SubscriptionInput
from stockbell.store.database import SqlDatabase
from tests.support import Server

T = TypeVar("T")


class Counted:
    """The real database, counting the transactions it was asked to run."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        self.runs = 0

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        self.runs += 1
        return await self.db.run(work)


def plus_one(sku: str = "A") -> list[ChangeInput]:
    return [ChangeInput("adjustment", sku, "L1", "1", from_state="NONE", to_state="IN_STOCK")]


async def tenant_with_item_a(uow: UnitOfWork) -> Tenant:
    """A fresh account with item A and location L1."""
    account_id = await accounts.create_account(uow, f"co-{uuid.uuid4().hex[:12]}")
    tenant = Tenant(account_id, Mode.TEST)
    await catalog.upsert_item(uow, tenant, Item(sku_code="A"))
    await catalog.upsert_location(uow, tenant, Location(code="L1"))
    return tenant


async def test_concurrent_requests_share_commits_and_keep_their_own_answers(db_url: str) -> None:
    db = SqlDatabase(db_url)
    try:
        tenant = await db.run(tenant_with_item_a)
        await db.run(lambda uow: subscriptions.subscribe(
            uow, tenant, SubscriptionInput("A", threshold="3")))
        counted = Counted(db)
        coalescer = ChangeCoalescer(counted)
        requests = [plus_one() for _ in range(20)]
        requests.insert(5, plus_one("NOPE"))  # unknown item: fails alone
        requests.insert(9, [])  # empty batch: fails alone
        results: list[Any] = await asyncio.gather(
            *(coalescer.submit(tenant, r) for r in requests), return_exceptions=True)

        assert isinstance(results.pop(9), InvalidInput)
        assert isinstance(results.pop(5), InvalidInput)
        # Applied one after another in arrival order: request n saw n units in stock.
        assert [r["changes"][0]["counts"] for r in results] == [
            [{"state": "IN_STOCK", "quantity": str(n)}] for n in range(1, 21)]
        assert all(r["applied"] == 1 and r["ignored"] == 0 for r in results)
        # Only the request that took availability from 2 to 3 reports the notification.
        assert [r["notifications"] for r in results] == [0, 0, 1] + [0] * 17
        assert counted.runs < len(requests) / 2, counted.runs

        view = await db.run(lambda uow: inventory.inventory_of(uow, tenant, "A"))
        assert view["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "20"}}]
    finally:
        await db.dispose()


async def test_a_request_right_after_an_answer_is_applied_without_waiting_for_another(
        db_url: str) -> None:
    """A client that submits again as soon as it has its answer: the drainer that answered
    it has just found the queue empty and is finishing. The new request must start a
    drainer of its own; it once waited, forever on a quiet server, for someone else's
    request to start one."""
    db = SqlDatabase(db_url)
    try:
        tenant = await db.run(tenant_with_item_a)
        coalescer = ChangeCoalescer(db)

        async def one_after_another() -> list[str]:
            answers = [await coalescer.submit(tenant, plus_one()) for _ in range(5)]
            return [a["changes"][0]["counts"][0]["quantity"] for a in answers]

        assert await asyncio.wait_for(one_after_another(), 20) == ["1", "2", "3", "4", "5"]
    finally:
        await db.dispose()


class InFlight:
    """The real database, recording how many transactions were in flight at most. Each
    waits a little before it starts, so that transactions allowed to overlap do."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        self.now = 0
        self.most = 0

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.01)
            return await self.db.run(work)
        finally:
            self.now -= 1


async def test_one_transaction_per_tenant_at_a_time_and_tenants_in_parallel(
        db_url: str) -> None:
    """A tenant's requests that arrive while its transaction runs wait for its next group
    (larger groups, the same fixed cost per transaction) unless they make a second group as
    large (next test); other tenants' groups run alongside, up to `parallel`. Every request
    is applied, in arrival order per tenant."""
    db = SqlDatabase(db_url)
    try:
        tenants = [await db.run(tenant_with_item_a) for _ in range(3)]
        one = InFlight(db)
        coalescer = ChangeCoalescer(one, parallel=4, pair_min=100)  # no second group

        async def burst(tenant: Tenant, n: int) -> list[str]:
            answers = await asyncio.gather(*(coalescer.submit(tenant, plus_one())
                                             for _ in range(n)))
            return [a["changes"][0]["counts"][0]["quantity"] for a in answers]

        async def waves(tenant: Tenant) -> list[str]:
            running = []
            for _ in range(3):  # each wave arrives while the previous one's transaction runs
                running.append(asyncio.ensure_future(burst(tenant, 8)))
                await asyncio.sleep(0.003)
            return [q for wave in await asyncio.gather(*running) for q in wave]

        assert await asyncio.wait_for(waves(tenants[0]), 30) == [str(n) for n in range(1, 25)]
        assert one.most == 1

        many = InFlight(db)
        coalescer = ChangeCoalescer(many, parallel=4)
        results = await asyncio.wait_for(
            asyncio.gather(*(burst(t, 8) for t in tenants)), 30)
        assert results == [[str(n) for n in range(25, 33)]] + [
            [str(n) for n in range(1, 9)]] * 2
        assert many.most == 3
    finally:
        await db.dispose()


async def test_full_groups_of_one_tenant_run_alongside_each_other(db_url: str) -> None:
    """Requests that fill a group by themselves gain nothing by waiting for the tenant's
    running transaction (batches of 1,000 took turns): they start at once, up to
    `parallel`. Smaller ones still wait, and every change is applied exactly once."""
    db = SqlDatabase(db_url)
    try:
        tenant = await db.run(tenant_with_item_a)
        many = InFlight(db)
        coalescer = ChangeCoalescer(many, max_changes=2, parallel=4)
        full = [plus_one() * 2 for _ in range(3)]
        answers = await asyncio.wait_for(
            asyncio.gather(*(coalescer.submit(tenant, r) for r in full)), 30)
        assert many.most == 3
        assert all(a["applied"] == 2 for a in answers)
        view = await db.run(lambda uow: inventory.inventory_of(uow, tenant, "A"))
        assert view["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "6"}}]

        small = InFlight(db)
        coalescer = ChangeCoalescer(small, max_changes=2, parallel=4)
        first = asyncio.ensure_future(coalescer.submit(tenant, plus_one()))
        await asyncio.sleep(0)  # its transaction is in flight
        await asyncio.wait_for(asyncio.gather(first, coalescer.submit(tenant, plus_one())), 30)
        assert small.most == 1
    finally:
        await db.dispose()


async def test_a_second_group_as_large_as_the_running_one_starts_alongside_it(
        db_url: str) -> None:
    """Clients answered together send again together: once as many changes wait as the
    running group holds (and at least `pair_min`), they start a second group instead of
    idling behind it, one such group at a time; fewer wait. Every change is applied once,
    the groups in the order they started (the second waits for the first's row locks)."""
    db = SqlDatabase(db_url)
    try:
        tenant = await db.run(tenant_with_item_a)
        flight = InFlight(db)
        coalescer = ChangeCoalescer(flight, parallel=4, pair_min=4)

        async def burst(n: int) -> list[str]:
            answers = await asyncio.gather(*(coalescer.submit(tenant, plus_one())
                                             for _ in range(n)))
            return [a["changes"][0]["counts"][0]["quantity"] for a in answers]

        first = asyncio.ensure_future(burst(6))
        await asyncio.sleep(0.003)  # the group of 6 is in flight
        fewer = asyncio.ensure_future(burst(5))  # 5 < 6 wait ...
        await asyncio.sleep(0.001)
        assert flight.now == 1
        more = asyncio.ensure_future(burst(1))  # ... until 6 do
        await asyncio.sleep(0.001)
        assert flight.now == 2
        third = asyncio.ensure_future(burst(8))  # a third waits, whatever its size
        await asyncio.sleep(0.001)
        assert flight.now == 2
        got = await asyncio.wait_for(asyncio.gather(first, fewer, more, third), 30)
        assert got == [[str(n) for n in range(1, 7)], [str(n) for n in range(7, 12)],
                       ["12"], [str(n) for n in range(13, 21)]]
        assert flight.most == 2

        small = InFlight(db)
        coalescer = ChangeCoalescer(small, parallel=4, pair_min=8)
        first = asyncio.ensure_future(burst(6))
        await asyncio.sleep(0.003)
        await asyncio.wait_for(asyncio.gather(first, burst(6)), 30)  # 6 >= 6, but < 8
        assert small.most == 1
        view = await db.run(lambda uow: inventory.inventory_of(uow, tenant, "A"))
        assert view["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "32"}}]
    finally:
        await db.dispose()


async def test_a_busy_tenant_does_not_hold_up_another(db_url: str) -> None:
    """parallel=1: a request of tenant B that arrives while A's transaction runs, behind
    more of A's requests, is still applied (by A's drainer once A's transaction ends)."""
    db = SqlDatabase(db_url)
    try:
        a, b = [await db.run(tenant_with_item_a) for _ in range(2)]
        coalescer = ChangeCoalescer(InFlight(db), parallel=1)
        first = asyncio.ensure_future(coalescer.submit(a, plus_one()))
        await asyncio.sleep(0)  # A's transaction is in flight
        later = [coalescer.submit(a, plus_one()), coalescer.submit(b, plus_one()),
                 coalescer.submit(a, plus_one())]
        answers = await asyncio.wait_for(asyncio.gather(first, *later), 20)
        assert [x["changes"][0]["counts"][0]["quantity"] for x in answers] == \
            ["1", "2", "1", "3"]
    finally:
        await db.dispose()


def test_over_http_each_concurrent_request_gets_its_own_status(seeded: Any,
                                                                server: Server) -> None:
    """Through the real server: 24 requests at once from separate connections, two of them
    bad; the good ones all land and the bad ones get their own problem response."""

    async def go() -> list[httpx.Response]:
        headers = dict(seeded.client.headers)
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers,
                                     timeout=30) as client:
            def body(i: int) -> dict[str, Any]:
                sku = "NOPE" if i in (3, 17) else "SKU-1"
                return {"changes": [{"type": "adjustment", "sku_code": sku, "location": "L2",
                                     "from_state": "NONE", "to_state": "IN_STOCK",
                                     "quantity": "1"}]}

            return list(await asyncio.gather(
                *(client.post("/v1/inventory/changes", json=body(i)) for i in range(24))))

    responses = asyncio.run(go())
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 22, codes
    assert codes.count(422) == 2, codes
    assert responses[3].json()["detail"].startswith("changes/0: unknown item")
    quantities = sorted(int(r.json()["changes"][0]["counts"][0]["quantity"])
                        for r in responses if r.status_code == 200)
    assert quantities == list(range(1, 23))  # each saw its own step, none lost or doubled
    view = seeded.get("/v1/inventory/SKU-1").json()
    assert {"location": "L2", "quantities": {"IN_STOCK": "22"}} in view["locations"]
