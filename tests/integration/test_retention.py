"""Retention: old settled deliveries and events go; events still owed to a receiver stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from stockbell.delivery import retention
from stockbell.delivery.retention import Purged
from stockbell.domain.accounts import Mode
from stockbell.domain.accounts import Tenant as Scope
from stockbell.domain.events import INVENTORY_COUNT_UPDATED, Event
from stockbell.domain.webhooks import DeliveryStatus
from stockbell.service import accounts as accounts_service
from stockbell.service.clock import utcnow
from stockbell.service.outbox import persist_events
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.tables import deliveries as deliveries_table
from stockbell.store.tables import events as events_table
from stockbell.store.tables import inventory_changes
from tests.integration.test_delivery_queue import claim, ok, queued, run, url
from tests.support import Server, Tenant

__all__ = ["url"]  # the fixture: a database of the test's own


def test_purge_keeps_events_with_pending_deliveries(server: Server, seeded: Tenant) -> None:
    # An endpoint on a closed port: its deliveries stay pending (retried), never settled.
    endpoint = seeded.post("/v1/webhook-endpoints", json={
        "url": "https://example.invalid/hook", "event_types": ["back_in_stock"]})
    assert endpoint.status_code == 201, endpoint.text
    assert seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).status_code == 201
    r = seeded.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "2"}]})
    assert r.json()["notifications"] == 1
    before = seeded.get("/v1/events", params={"limit": 200}).json()["data"]
    assert {e["type"] for e in before} >= {"inventory.count.updated", "back_in_stock"}

    future = utcnow() + timedelta(hours=1)
    run(server.db_url, lambda db: retention.purge(db, future))

    after = seeded.get("/v1/events", params={"limit": 200}).json()["data"]
    # back_in_stock still has a pending delivery (its receiver is unreachable) -> kept;
    # the events nobody is owed went.
    kept = {e["type"] for e in after}
    assert "back_in_stock" in kept
    assert "inventory.count.updated" not in kept
    assert {e["id"] for e in after} <= {e["id"] for e in before}




def test_an_idempotency_key_past_retention_is_a_new_request(server: Server,
                                                             seeded: Tenant) -> None:
    def change(qty: str) -> dict[str, object]:
        return {"changes": [{"type": "count", "sku_code": "SKU-1", "location": "L1",
                             "quantity": qty}]}

    key = {"Idempotency-Key": "kept-a-while"}
    assert seeded.post("/v1/inventory/changes", json=change("2"), headers=key).status_code == 200
    assert seeded.post("/v1/inventory/changes", json=change("3"),
                       headers=key).status_code == 409
    run(server.db_url, lambda db: retention.purge(db, utcnow() + timedelta(hours=1)))
    again = seeded.post("/v1/inventory/changes", json=change("3"), headers=key)
    assert again.status_code == 200, again.text
    [loc] = seeded.get("/v1/inventory/SKU-1").json()["locations"]
    assert loc["quantities"]["IN_STOCK"] == "3"

def test_the_change_ledger_follows_retention_and_the_stock_stays(server: Server,
                                                                 seeded: Tenant) -> None:
    async def ledger(db: SqlDatabase) -> int:
        return await _count(db, "inventory_changes")

    before = run(server.db_url, ledger)
    for qty in ("2", "5"):
        r = seeded.post("/v1/inventory/changes", json={"changes": [
            {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": qty}]})
        assert r.status_code == 200, r.text
    assert run(server.db_url, ledger) == before + 2
    run(server.db_url, lambda db: retention.purge(db, utcnow() - timedelta(hours=1)))
    assert run(server.db_url, ledger) == before + 2  # recorded after the cutoff: kept
    done = run(server.db_url, lambda db: retention.purge(db, utcnow() + timedelta(hours=1)))
    assert done.changes == before + 2
    assert run(server.db_url, ledger) == 0
    # the ledger is a record of what came in; the stock it moved is not touched
    [loc] = seeded.get("/v1/inventory/SKU-1").json()["locations"]
    assert loc["quantities"]["IN_STOCK"] == "5"


# --- the purge itself, each test on a database of its own --------------------------------------

def _settle(pks: list[int], status: DeliveryStatus) -> Callable[[UnitOfWork], Awaitable[None]]:
    return lambda uow: uow.deliveries.settle(
        [(pk, status, 1, None, 200, None, None) for pk in pks], utcnow())


async def _event_ids(db: SqlDatabase, tenant: Scope) -> set[str]:
    rows = await db.read(lambda uow: uow.events.page(tenant, {}, PageRequest(None, 500)))
    return {e.id for _, e in rows if e.id is not None}


async def _count(db: SqlDatabase, table: str) -> int:
    async def go(uow: UnitOfWork) -> int:
        return int((await uow.conn.exec_driver_sql(  # type: ignore[attr-defined]
            f"SELECT count(*) FROM {table}")).scalar_one())
    return await db.run(go)


@asynccontextmanager
async def _holding(url: str, lock: str, event_id: str | None) -> AsyncIterator[Any]:
    """Another session's transaction holding a row lock on one event; it commits on exit."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            await conn.execute(f"SELECT pk FROM events WHERE id = $1 {lock}", event_id)
            yield conn
    finally:
        await conn.close()


def test_the_purge_walks_the_log_in_chunks_and_keeps_what_is_owed(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, _, events = await queued(db, 11)
        by_event = {c.event.id: c.pk for c in await claim(db, utcnow())}
        await db.run(lambda uow: uow.deliveries.add_attempts(
            [(pk, ok()) for pk in by_event.values()]))
        # of 11 deliveries: 5 succeeded, 3 failed for good, 3 pending (owed)
        settled = [by_event[e.id] for e in events[:8]]
        await db.run(_settle(settled[:5], DeliveryStatus.SUCCEEDED))
        await db.run(_settle(settled[5:], DeliveryStatus.FAILED))
        # and an account with no endpoint, whose 4 events no delivery ever named
        quiet_id = await db.run(lambda uow: accounts_service.create_account(uow, "quiet"))
        quiet = Scope(quiet_id, Mode.TEST)
        lone = [Event(INVENTORY_COUNT_UPDATED, utcnow(), {"lone": i}) for i in range(4)]
        await db.run(lambda uow: persist_events(uow, quiet, lone))

        # a cutoff before all of it deletes nothing
        # idempotency keys: 3 stored two days ago, 2 now
        for i in range(5):
            at = utcnow() - timedelta(days=2 if i < 3 else 0)
            await db.run(lambda uow, i=i, at=at: uow.idempotency.put(
                tenant, f"key-{i}", "hash", 200, {"n": i}, at))

        # a cutoff a day back: only the old keys are due, 2 + 1 in chunks of 2
        assert await retention.purge(db, utcnow() - timedelta(days=1), chunk=2) == Purged(
            0, 0, 3, 0)
        assert await db.run(lambda uow: uow.idempotency.get(tenant, "key-2")) is None
        assert await db.run(lambda uow: uow.idempotency.get(tenant, "key-3")) is not None
        future = utcnow() + timedelta(hours=1)
        # chunks of 2: the sweep walks on past the chunks it keeps whole
        assert await retention.purge(db, future, chunk=2) == Purged(8, 12, 2, 0)
        assert await _event_ids(db, tenant) == {e.id for e in events[8:]}
        assert await _event_ids(db, quiet) == set()
        # the settled deliveries' attempts went with them, the pending ones' stayed
        assert (await _count(db, "deliveries"), await _count(db, "delivery_attempts")) == (3, 3)
        assert await retention.purge(db, future, chunk=2) == Purged(0, 0, 0, 0)

    run(url, go)


def test_an_event_being_replayed_is_left_for_the_next_purge(url: str) -> None:
    """With no foreign key from deliveries to events on PostgreSQL (migration 0008), a
    replay locks the events it queues deliveries for; the purge passes over a locked event
    instead of deleting it under the replay."""
    if not url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite has one writer at a time)")

    async def go(db: SqlDatabase) -> None:
        quiet_id = await db.run(lambda uow: accounts_service.create_account(uow, "quiet"))
        quiet = Scope(quiet_id, Mode.TEST)
        lone = [Event(INVENTORY_COUNT_UPDATED, utcnow(), {"lone": i}) for i in range(3)]
        await db.run(lambda uow: persist_events(uow, quiet, lone))
        future = utcnow() + timedelta(hours=1)
        # the replay's own statement form: FOR KEY SHARE
        async with _holding(url, "FOR KEY SHARE", lone[1].id):
            assert await retention.purge(db, future) == Purged(0, 2, 0, 0)
            assert await _event_ids(db, quiet) == {lone[1].id}
        assert await retention.purge(db, future) == Purged(0, 1, 0, 0)

    run(url, go)


def test_a_replay_queues_only_events_that_are_still_there(url: str) -> None:
    """The other order: the purge holds the event when the replay comes; the replay waits
    for it and then finds the event gone, so it queues nothing that names it."""
    if not url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite has one writer at a time)")

    async def go(db: SqlDatabase) -> None:
        tenant, endpoint, events = await queued(db, 1)
        [c] = await claim(db, utcnow())
        await db.run(_settle([c.pk], DeliveryStatus.SUCCEEDED))
        future = utcnow() + timedelta(hours=1)
        assert await db.run(lambda uow: uow.deliveries.purge_before(future, 0, 10)) == (1, None)
        # the event, no longer owed, is locked by a purge in progress
        async with _holding(url, "FOR UPDATE", events[0].id) as purging:
            since = utcnow() - timedelta(hours=1)
            replay = asyncio.ensure_future(db.run(lambda uow: uow.deliveries.replay(
                tenant, endpoint, since, utcnow())))
            await asyncio.sleep(0.3)
            assert not replay.done()  # waiting for the purge's lock
            await purging.execute("DELETE FROM events WHERE id = $1", events[0].id)
        assert await asyncio.wait_for(replay, 10) == 0
        assert await _count(db, "deliveries") == 0

    run(url, go)


def test_created_after_starts_at_the_first_event_after_the_time_whatever_its_tenant(
        url: str) -> None:
    """`created_after` starts the walk at the smallest pk created after the time (migration
    0010), not at the event first in time: a transaction that commits late gives its events
    a larger pk than events created after them, and none may be skipped."""
    async def go(db: SqlDatabase) -> None:
        quiet_id = await db.run(lambda uow: accounts_service.create_account(uow, "quiet"))
        other_id = await db.run(lambda uow: accounts_service.create_account(uow, "other"))
        mine, theirs = Scope(quiet_id, Mode.TEST), Scope(other_id, Mode.TEST)
        log = [(mine, 0), (theirs, 1), (mine, 2), (mine, 3), (theirs, 4)]
        for tenant, i in log:
            await db.run(lambda uow, tenant=tenant, i=i: persist_events(
                uow, tenant, [Event(INVENTORY_COUNT_UPDATED, utcnow(), {"n": i})]))
        t0 = utcnow()
        # created_at against pk order: later pks created earlier (seconds after t0)
        skew = {0: 9, 1: 5, 2: 7, 3: 2, 4: 8}

        async def reorder(uow: UnitOfWork) -> None:
            for n, seconds in skew.items():
                await uow.conn.exec_driver_sql(  # type: ignore[attr-defined]
                    "UPDATE events SET created_at = "
                    f"{int((t0 + timedelta(seconds=seconds)).timestamp() * 1e6)} "
                    f"WHERE data LIKE '%\"n\": {n}}}%' OR data LIKE '%\"n\":{n}}}%'")

        await db.run(reorder)
        since = t0 + timedelta(seconds=6)  # after: n 0 (9 s), 2 (7 s), 4 (8 s, not mine)
        rows = await db.read(lambda uow: uow.events.page(
            mine, {"created_after": since}, PageRequest(None, 50)))
        assert [e.data["n"] for _, e in rows] == [0, 2]
        rows = await db.read(lambda uow: uow.events.page(
            mine, {"created_after": t0 + timedelta(seconds=10)}, PageRequest(None, 50)))
        assert rows == []

    run(url, go)


def _aged_rows(table: str, account_id: int, endpoint_pk: int,
               times: list[datetime]) -> list[dict[str, Any]]:
    """Rows of `table` written at `times`, in that order (so their pks follow it)."""
    tenant = {"account_id": account_id, "mode": "test"}
    if table == "inventory_changes":
        return [{**tenant, "item_id": 1, "location_id": 1, "kind": "count",
                 "state": "IN_STOCK", "quantity": i, "occurred_at": at, "applied": True,
                 "created_at": at} for i, at in enumerate(times)]
    if table == "events":
        return [{**tenant, "id": f"evt_aged{i:02d}", "type": "back_in_stock",
                 "occurred_at": at, "created_at": at, "data": {"n": i}}
                for i, at in enumerate(times)]
    return [{**tenant, "id": f"dlv_aged{i:02d}", "endpoint_pk": endpoint_pk,
             "event_id": "evt_named", "status": "succeeded", "attempts": 1,
             "created_at": at, "updated_at": at} for i, at in enumerate(times)]


@pytest.mark.parametrize("table", ["inventory_changes", "events", "deliveries"])
def test_the_purge_walks_by_pk_and_stops_where_the_recent_rows_start(url: str,
                                                                     table: str) -> None:
    """The walk goes by pk and ends at the first chunk that reaches a row written after the
    cutoff, instead of reading the retained part of the table every hour (the ledger has no
    index on its time at all). An old row past that one (a transaction that committed late)
    is left for the next purge, whose cutoff has moved on."""
    now = utcnow()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    # rows 0-4 old, 5-7 recent, 8 old again (the late commit), 9 recent
    times = [old] * 5 + [recent] * 3 + [old, recent]
    rows = {"inventory_changes": inventory_changes, "events": events_table,
            "deliveries": deliveries_table}[table]

    async def go(db: SqlDatabase) -> None:
        tenant, endpoint, _ = await queued(db, 0)
        assert endpoint.pk is not None

        async def write(uow: UnitOfWork) -> None:
            conn = uow.conn  # type: ignore[attr-defined]
            if table == "deliveries":  # their event (SQLite keeps their key to it)
                [event] = _aged_rows("events", tenant.account_id, endpoint.pk, [now])
                await conn.execute(sa.insert(events_table), [{**event, "id": "evt_named"}])
            await conn.execute(sa.insert(rows), _aged_rows(
                table, tenant.account_id, endpoint.pk, times))
        await db.run(write)

        async def left() -> list[int]:
            async def read(uow: UnitOfWork) -> list[int]:
                pk = rows.c.id if table == "inventory_changes" else rows.c.pk
                res = await uow.conn.execute(  # type: ignore[attr-defined]
                    sa.select(pk).order_by(pk))
                return list(res.scalars())
            return await db.run(read)

        def purged(n: int) -> Purged:
            return Purged(n if table == "deliveries" else 0, n if table == "events" else 0,
                          0, n if table == "inventory_changes" else 0)

        pks = await left()
        # chunks of 2: [0 1] [2 3] [4 5]; row 5 is recent, the walk ends there
        assert await retention.purge(db, now - timedelta(days=30), chunk=2) == purged(5)
        assert await left() == pks[5:]
        # a month and a half later every row is past the cutoff, the late one included
        done = await retention.purge(db, now + timedelta(days=45), chunk=2)
        assert done.deliveries + done.events + done.changes >= 5
        assert await left() == []

    run(url, go)
