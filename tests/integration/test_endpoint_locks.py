"""An endpoint deleted while changes queue deliveries to it, on the real PostgreSQL.

A transaction that queues deliveries locks the tenant's enabled endpoints (`FOR KEY SHARE`,
`SqlWebhooks.enabled`); a deletion locks its endpoint `FOR UPDATE` first. Whichever comes
second waits, and then sees what the first did: a change never queues a delivery for an
endpoint deleted under it (its foreign key check failed the whole change before: the
driver's COPY error is not one the unit of work retries), and a deletion removes every
delivery that was queued before it.

SQLite has one writer at a time: none of this can interleave there (the last test, on
what a worker records for an endpoint deleted while it sent, runs on both).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from stockbell.domain.errors import NotFound
from stockbell.domain.events import INVENTORY_COUNT_UPDATED, Event
from stockbell.domain.webhooks import Attempt, AttemptResult, DeliveryStatus, RetryPolicy
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.service.outbox import persist_events
from stockbell.store.database import SqlDatabase
from tests.integration.test_delivery_queue import claim, queued, run, url

__all__ = ["url"]  # the fixture, imported for the tests below
T = TypeVar("T")


@asynccontextmanager
async def _session(url: str) -> AsyncIterator[Any]:
    """Another session's open transaction; it commits on exit."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


async def _beside_a_deletion(url: str, endpoint_pk: int | None,
                             work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
    """Start `work` while another session has deleted the endpoint (the statements of
    `webhooks_service.delete_endpoint`, uncommitted); check that it waits, then commit the
    deletion. Returns `work`, running on."""
    async with _session(url) as deleting:
        await deleting.execute("SELECT pk FROM webhook_endpoints WHERE pk = $1 FOR UPDATE",
                               endpoint_pk)
        await deleting.execute("DELETE FROM delivery_attempts WHERE delivery_pk IN "
                               "(SELECT pk FROM deliveries WHERE endpoint_pk = $1)", endpoint_pk)
        await deleting.execute("DELETE FROM deliveries WHERE endpoint_pk = $1", endpoint_pk)
        await deleting.execute("DELETE FROM webhook_endpoints WHERE pk = $1", endpoint_pk)
        task = asyncio.ensure_future(work())
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the deletion's lock
    return task


async def _count(db: SqlDatabase, table: str) -> int:
    async def go(uow: Any) -> int:
        return int((await uow.conn.exec_driver_sql(f"SELECT count(*) FROM {table}"))
                   .scalar_one())
    return await db.run(go)


def _postgresql_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite has one writer at a time)")


def test_a_change_waits_for_an_endpoint_being_deleted_and_queues_nothing_for_it(
        url: str) -> None:
    _postgresql_only(url)

    async def go(db: SqlDatabase) -> None:
        tenant, ep, _ = await queued(db, 0)
        event = Event(INVENTORY_COUNT_UPDATED, utcnow(), {"sku": "A"})
        change = await _beside_a_deletion(
            url, ep.pk, lambda: db.run(lambda uow: persist_events(uow, tenant, [event])))
        # the deletion committed: the change commits too, its event kept, no delivery queued
        await asyncio.wait_for(change, 10)
        assert await _count(db, "events") == 1
        assert await _count(db, "deliveries") == 0

    run(url, go)


def test_a_deletion_waits_for_a_change_in_flight_and_removes_what_it_queued(url: str) -> None:
    _postgresql_only(url)

    async def go(db: SqlDatabase) -> None:
        tenant, ep, _ = await queued(db, 0)
        async with _session(url) as changing:
            # a change's own lock (`enabled`), then its delivery, not yet committed
            await changing.execute("SELECT pk FROM webhook_endpoints WHERE pk = $1 "
                                   "FOR KEY SHARE", ep.pk)
            await changing.execute(
                "INSERT INTO events (id, account_id, mode, type, occurred_at, created_at, data) "
                "VALUES ('evt_x', $1, $2, 'inventory.count.updated', 0, 0, '{}')",
                tenant.account_id, tenant.mode.value)
            await changing.execute(
                "INSERT INTO deliveries (id, account_id, mode, endpoint_pk, event_id, status, "
                "attempts, created_at, updated_at) "
                "VALUES ('dlv_x', $1, $2, $3, 'evt_x', 'pending', 0, 0, 0)",
                tenant.account_id, tenant.mode.value, ep.pk)
            deletion = asyncio.ensure_future(db.run(
                lambda uow: webhooks_service.delete_endpoint(uow, tenant, ep.id)))
            await asyncio.sleep(0.3)
            assert not deletion.done()  # waiting for the change's lock
        await asyncio.wait_for(deletion, 10)
        assert await _count(db, "deliveries") == 0  # the one queued meanwhile went with it

    run(url, go)


def test_a_test_delivery_to_an_endpoint_being_deleted_is_not_found(url: str) -> None:
    _postgresql_only(url)

    async def go(db: SqlDatabase) -> None:
        tenant, ep, _ = await queued(db, 0)
        test = await _beside_a_deletion(url, ep.pk, lambda: db.run(
            lambda uow: webhooks_service.create_test_delivery(uow, tenant, ep.id)))
        with pytest.raises(NotFound):
            await asyncio.wait_for(test, 10)
        assert await _count(db, "deliveries") == 0

    run(url, go)


def test_a_replay_to_an_endpoint_being_deleted_is_not_found(url: str) -> None:
    _postgresql_only(url)

    async def go(db: SqlDatabase) -> None:
        tenant, ep, _ = await queued(db, 3)
        since = utcnow() - timedelta(hours=1)
        replay = await _beside_a_deletion(url, ep.pk, lambda: db.run(
            lambda uow: webhooks_service.replay(uow, tenant, ep.id, since)))
        with pytest.raises(NotFound):
            await asyncio.wait_for(replay, 10)
        assert await _count(db, "deliveries") == 0

    run(url, go)


def test_results_for_an_endpoint_deleted_in_flight_do_not_sink_the_others(url: str) -> None:
    """A worker's flush records results for many endpoints in one transaction. Deleting an
    endpoint while its deliveries are being sent removes them; their results are dropped,
    and every other endpoint's are recorded (the flush used to fail on the attempts' key,
    and the whole batch was sent again once its leases ran out). Both databases."""

    async def go(db: SqlDatabase) -> None:
        tenant, gone, _ = await queued(db, 2)
        kept = await db.run(lambda uow: webhooks_service.create_endpoint(
            uow, tenant, "https://kept.example/hook", None, None, True, "native"))
        more = [Event(INVENTORY_COUNT_UPDATED, utcnow(), {"n": 9})]
        await db.run(lambda uow: persist_events(uow, tenant, more))  # to both endpoints
        claimed = await claim(db, utcnow())
        assert {c.endpoint.pk for c in claimed} == {gone.pk, kept.pk}
        await db.run(lambda uow: webhooks_service.delete_endpoint(uow, tenant, gone.id))
        results = [AttemptResult(c.pk, c.endpoint.pk or 0, c.attempts,
                                 Attempt(utcnow(), 1.0, 200, None, "ok"), None, c.lease_until)
                   for c in claimed]
        await db.run(lambda uow: webhooks_service.record_results(
            uow, results, RetryPolicy.parse("1"), timedelta(hours=1)))
        [mine] = [c for c in claimed if c.endpoint.pk == kept.pk]
        row = await db.run(lambda uow: uow.deliveries.get(tenant, mine.id))
        assert row is not None
        assert (row.status, row.attempts) == (DeliveryStatus.SUCCEEDED, 1)
        assert await _count(db, "deliveries") == 1
        assert await _count(db, "delivery_attempts") == 1

    run(url, go)
