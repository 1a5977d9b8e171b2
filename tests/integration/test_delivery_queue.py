"""The delivery queue's own guarantees, on a real SQLite file and the real PostgreSQL: a claim
leases due deliveries and hands out each one once while its lease holds; settlement is
lease-guarded; every attempt is recorded. The dispatcher tests (test_delivery.py) show the
same end to end; these pin the repository the dispatcher stands on, statement by statement.

Each test runs on a database of its own, with no dispatcher: nothing but the test claims.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.events import INVENTORY_COUNT_UPDATED, Event
from stockbell.domain.webhooks import Attempt, DeliveryStatus, Endpoint
from stockbell.service import accounts as accounts_service
from stockbell.service import webhooks as webhooks_service
from stockbell.service.outbox import persist_events
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.repos import deliveries as deliveries_repo
from stockbell.store.repos.bulk import driver
from stockbell.store.repos.deliveries import _PG_CLAIM, _PG_CLAIM_PLAN
from tests.support import own_database

T = TypeVar("T")
LEASE = timedelta(seconds=60)


@pytest.fixture
def url(db_url: str) -> Iterator[str]:
    with own_database(db_url) as fresh:
        yield fresh


def run(url: str, work: Callable[[SqlDatabase], Awaitable[T]]) -> T:
    async def go() -> T:
        db = SqlDatabase(url, pool_size=4)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


async def queued(db: SqlDatabase, n: int, *, name: str = "shop",
                 data: dict[str, Any] | None = None) -> tuple[Tenant, Endpoint, list[Event]]:
    """An account with one native endpoint and `n` events, each with its delivery queued."""
    account_id = await db.run(lambda uow: accounts_service.create_account(uow, name))
    tenant = Tenant(account_id, Mode.TEST)
    ep = await db.run(lambda uow: webhooks_service.create_endpoint(
        uow, tenant, "https://receiver.example/hook", None, None, True, "native"))
    at = datetime.now(UTC) - timedelta(seconds=1)
    events = [Event(INVENTORY_COUNT_UPDATED, at, data or {"n": i}) for i in range(n)]

    async def store(uow: UnitOfWork) -> None:
        await persist_events(uow, tenant, events)

    await db.run(store)
    return tenant, ep, events


def claim(db: SqlDatabase, now: datetime, limit: int = 100) -> Awaitable[Any]:
    return db.run(lambda uow: uow.deliveries.claim(now, now + LEASE, limit))


def ok(status: int | None = 200, excerpt: str | None = "ok",
       error: str | None = None) -> Attempt:
    return Attempt(datetime.now(UTC), 1.5, status, error, excerpt)


def test_a_claim_leases_due_deliveries_with_their_event_and_endpoint(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, ep, events = await queued(db, 3, data={"sku": "SKU-1", "qty": "5"})
        now = datetime.now(UTC)
        got = await claim(db, now)
        assert len(got) == 3
        assert {c.event.id for c in got} == {e.id for e in events}
        for c in got:
            assert c.attempts == 0
            assert c.lease_until == now + LEASE
            assert c.event.type == INVENTORY_COUNT_UPDATED
            assert c.event.data == {"sku": "SKU-1", "qty": "5"}
            assert c.event.created_at is not None
            assert c.event.created_at.tzinfo is not None
            assert abs(c.event.occurred_at - events[0].occurred_at) < timedelta(milliseconds=1)
            assert (c.endpoint.pk, c.endpoint.id, c.endpoint.url, c.endpoint.secret) == \
                (ep.pk, ep.id, ep.url, ep.secret)
            assert c.endpoint.extra == {"account_id": tenant.account_id, "mode": "test"}
        assert len({id(c.endpoint) for c in got}) == 1  # loaded once per claim
        # leased: nobody gets them again while the lease holds ...
        assert await claim(db, now + timedelta(seconds=30)) == []
        # ... and they come back once it ran out (the worker that held them died)
        again = await claim(db, now + LEASE + timedelta(seconds=1))
        assert {c.pk for c in again} == {c.pk for c in got}

    run(url, go)


def test_a_large_queue_names_and_orders_its_deliveries_as_a_small_one(url: str) -> None:
    """1,200 pairs go as one statement on SQLite, the ids named by the database: each
    delivery is pending and due, for its own event, with an id of the usual form, unique and
    ascending in the order queued, as the 3 of a small queue are."""
    async def go(db: SqlDatabase) -> None:
        for n in (1_200, 3):
            _, ep, events = await queued(db, n, name=f"shop{n}")
            ids = [e.id for e in events]
            got = await claim(db, datetime.now(UTC), limit=5_000)
            mine = sorted((c for c in got if c.endpoint.pk == ep.pk), key=lambda c: c.pk)
            assert [c.event.id for c in mine] == ids
            names = [c.id for c in mine]
            assert all(re.fullmatch(r"dlv_[0-9a-f]{24}", name) for name in names)
            assert names == sorted(set(names))
            assert {c.attempts for c in mine} == {0}

    run(url, go)


def test_a_claim_takes_at_most_its_limit_and_nothing_of_a_disabled_endpoint(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, ep, _ = await queued(db, 5)
        now = datetime.now(UTC)
        first = await claim(db, now, limit=2)
        assert len(first) == 2
        await db.run(lambda uow: webhooks_service.update_endpoint(
            uow, tenant, ep.id, webhooks_service.EndpointPatch(enabled=False)))
        assert await claim(db, now) == []  # held, not lost
        await db.run(lambda uow: webhooks_service.update_endpoint(
            uow, tenant, ep.id, webhooks_service.EndpointPatch(enabled=True)))
        rest = await claim(db, now)
        assert len(rest) == 3
        assert not {c.pk for c in first} & {c.pk for c in rest}

    run(url, go)


def test_settlement_lands_only_under_the_lease_it_was_sent_under(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, _, _ = await queued(db, 3)
        now = datetime.now(UTC)
        [a, b, c] = sorted(await claim(db, now), key=lambda x: x.pk)

        def settle(pk: int, lease: datetime | None, status: DeliveryStatus,
                   code: int) -> Callable[[UnitOfWork], Awaitable[None]]:
            return lambda uow: uow.deliveries.settle(
                [(pk, status, 1, None, code, None, lease)], datetime.now(UTC))

        async def state(delivery_id: str) -> tuple[DeliveryStatus, int, int | None]:
            row = await db.run(lambda uow: uow.deliveries.get(tenant, delivery_id))
            assert row is not None
            return row.status, row.attempts, row.last_status_code

        # the holder's result lands; so does one sent outside the queue (no lease)
        await db.run(settle(b.pk, b.lease_until, DeliveryStatus.SUCCEEDED, 200))
        await db.run(settle(c.pk, None, DeliveryStatus.FAILED, 410))
        assert await state(b.id) == (DeliveryStatus.SUCCEEDED, 1, 200)
        assert await state(c.id) == (DeliveryStatus.FAILED, 1, 410)
        # a's lease runs out and a second worker claims it again
        later = now + LEASE + timedelta(seconds=1)
        [a2] = await claim(db, later)
        assert a2.pk == a.pk
        assert a2.lease_until != a.lease_until
        # the first worker's late result changes nothing: the newer claim owns the row
        await db.run(settle(a.pk, a.lease_until, DeliveryStatus.FAILED, 500))
        assert await state(a.id) == (DeliveryStatus.PENDING, 0, None)
        await db.run(settle(a.pk, a2.lease_until, DeliveryStatus.SUCCEEDED, 200))
        assert await state(a.id) == (DeliveryStatus.SUCCEEDED, 1, 200)
        # settled rows are claimed no more, even after every lease ran out
        assert await claim(db, later + LEASE + LEASE) == []

    run(url, go)


def test_a_retry_reschedules_and_frees_the_delivery(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, _, _ = await queued(db, 1)
        now = datetime.now(UTC)
        [c] = await claim(db, now)
        retry_at = now + timedelta(seconds=300)
        await db.run(lambda uow: uow.deliveries.settle(
            [(c.pk, DeliveryStatus.PENDING, 1, retry_at, 503, "HTTP 503", c.lease_until)],
            now))
        row = await db.run(lambda uow: uow.deliveries.get(tenant, c.id))
        assert row is not None
        assert (row.status, row.attempts, row.last_error) == \
            (DeliveryStatus.PENDING, 1, "HTTP 503")
        assert row.next_attempt_at == retry_at
        assert await claim(db, now + timedelta(seconds=299)) == []  # not due yet
        [again] = await claim(db, retry_at)  # due, and the old lease is gone
        assert (again.pk, again.attempts) == (c.pk, 1)

    run(url, go)


def test_every_attempt_is_recorded_with_a_bounded_excerpt(url: str) -> None:
    async def go(db: SqlDatabase) -> None:
        tenant, _, _ = await queued(db, 1)
        [c] = await claim(db, datetime.now(UTC))
        odd = '{"error": "bad \\"quote\\" \\\\ \u2028 \U0001f600"}\n\t'  # JSON-hostile text
        attempts = [ok(500, "é" * 5000), ok(None, None, "timeout"), ok(204, ""),
                    ok(400, odd, 'a "b" \\ c')]
        await db.run(lambda uow: uow.deliveries.add_attempts([(c.pk, a) for a in attempts]))
        row = await db.run(lambda uow: uow.deliveries.get(tenant, c.id))
        assert row is not None
        log = row.attempt_log
        assert [(a.status_code, a.error) for a in log] == [
            (500, None), (None, "timeout"), (204, None), (400, 'a "b" \\ c')]
        assert log[3].response_excerpt == attempts[3].response_excerpt  # verbatim
        assert log[0].response_excerpt == "é" * 4096
        assert log[1].response_excerpt is None
        assert log[2].response_excerpt is None
        assert all(abs(a.attempted_at - b.attempted_at) < timedelta(milliseconds=1)
                   and a.duration_ms == 1.5 for a, b in zip(log, attempts, strict=True))

    run(url, go)


def test_attempts_and_settlement_commit_or_roll_back_together(url: str) -> None:
    """The attempts go through the driver as the transaction's first statement: they must
    still belong to it, so a flush that fails leaves neither attempts nor settlement."""

    async def go(db: SqlDatabase) -> None:
        tenant, _, _ = await queued(db, 1)
        [c] = await claim(db, datetime.now(UTC))

        async def failing(uow: UnitOfWork) -> None:
            await uow.deliveries.add_attempts([(c.pk, ok(200))])  # the first statement
            await uow.deliveries.settle([(c.pk, DeliveryStatus.SUCCEEDED, 1, None, 200, None,
                                          c.lease_until)], datetime.now(UTC))
            raise RuntimeError("the flush fails after both writes")

        with pytest.raises(RuntimeError):
            await db.run(failing)
        row = await db.run(lambda uow: uow.deliveries.get(tenant, c.id))
        assert row is not None
        assert (row.status, row.attempts, row.attempt_log) == (DeliveryStatus.PENDING, 0, [])

    run(url, go)


def test_concurrent_claims_never_hand_out_a_delivery_twice(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: claims cannot overlap")

    async def go(db: SqlDatabase) -> None:
        await queued(db, 300)
        now = datetime.now(UTC)
        rounds = [await asyncio.gather(*(claim(db, now, limit=40) for _ in range(4)))
                  for _ in range(3)]
        pks = [c.pk for batch in rounds for got in batch for c in got]
        assert len(pks) == len(set(pks))  # no delivery in two claims
        assert len(pks) == 300  # a claim passes over rows another claim holds, not stops
        assert await claim(db, now, limit=1000) == []

    run(url, go)


def test_postgresql_leaves_room_for_the_lease_update(url: str) -> None:
    """Migration 0004: deliveries' pages keep room for a leased row's new version (a HOT
    update, no index writes); and a claim walks the due index in order however stale the
    statistics (a fan-out's rows are claimed before autovacuum analyses them)."""
    if not url.startswith("postgresql"):
        pytest.skip("fillfactor and planner settings: PostgreSQL only")

    async def go(db: SqlDatabase) -> None:
        await queued(db, 5000)  # committed, not yet analysed: as right after a fan-out

        async def inspect(uow: UnitOfWork) -> tuple[Any, str]:
            options = (await uow.conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = 'deliveries'")).scalar()
            await uow.conn.exec_driver_sql(_PG_CLAIM_PLAN)  # as the claim does
            raw = await driver(uow.conn)
            plan = "\n".join(r[0] for r in await raw.fetch("EXPLAIN " + _PG_CLAIM, 0, 1, 200))
            return options, plan

        options, plan = await db.run(inspect)
        assert options == ["fillfactor=70"]
        assert "Index Scan using ix_deliveries_due" in plan
        assert "Sort" not in plan

    run(url, go)


def test_postgresql_append_only_tables_do_not_lock_their_account(url: str) -> None:
    """Migration 0005: events, inventory_changes and deliveries have no foreign key to
    accounts on PostgreSQL (each check locked the account row once per row written); the
    relationships that see deletes keep theirs: a delivery to an unknown endpoint is still
    refused. Since migration 0008 a delivery's event is not checked by a key on PostgreSQL
    (test_retention.py covers what keeps the two together instead)."""
    if not url.startswith("postgresql"):
        pytest.skip("the constraints are dropped on PostgreSQL only")

    async def go(db: SqlDatabase) -> None:
        tenant, ep, [event] = await queued(db, 1)

        async def fks(uow: UnitOfWork) -> set[tuple[str, str]]:
            rows = await uow.conn.exec_driver_sql(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f'")
            return {(r[0], r[1]) for r in rows}

        found = await db.run(fks)
        for table in ("events", "inventory_changes", "deliveries"):
            assert (table, "accounts") not in found
        assert ("items", "accounts") in found
        assert ("deliveries", "webhook_endpoints") in found
        assert ("deliveries", "events") not in found  # migration 0008

        async def orphan(uow: UnitOfWork) -> None:
            assert ep.pk is not None
            await uow.deliveries.queue(tenant, [(event.id or "", ep.pk + 1000)],
                                       datetime.now(UTC))

        with pytest.raises(Exception, match="foreign key"):
            await db.run(orphan)

    run(url, go)


def test_event_data_is_stored_as_sent_and_read_back_as_json(url: str) -> None:
    """Migration 0007: events.data is text on PostgreSQL (as JSON always was on SQLite): the
    text written is the text stored, character for character, the dispatcher's claim reads
    it as such, and the event log reads it back as the JSON value it holds."""
    data = {"sku": "SKU-ü", "qty": "5", "nested": {"list": [1, 2.5, None, True]}}

    async def go(db: SqlDatabase) -> None:
        tenant, _, events = await queued(db, 1, data=data)

        async def stored(uow: UnitOfWork) -> tuple[str | None, str]:
            kind = None
            if url.startswith("postgresql"):
                kind = (await uow.conn.exec_driver_sql(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'events' AND column_name = 'data'")).scalar()
            text = (await uow.conn.exec_driver_sql("SELECT data FROM events")).scalar()
            return kind, text

        kind, text = await db.run(stored)
        if url.startswith("postgresql"):
            assert kind == "text"
        assert text == '{"sku":"SKU-ü","qty":"5","nested":{"list":[1,2.5,null,true]}}'
        listed = await db.run(lambda uow: uow.events.page(tenant, {}, PageRequest(None, 10)))
        assert [e.data for _, e in listed] == [data]
        got = await claim(db, datetime.now(UTC))
        assert [c.event.data for c in got] == [data]
        assert got[0].event.id == events[0].id

    run(url, go)


def test_a_replay_reads_the_log_in_chunks_and_queues_each_event_once(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay reads the log a chunk at a time (by pk), so its memory does not grow with
    the log; across the chunks' seams every event it takes is queued exactly once."""
    monkeypatch.setattr(deliveries_repo, "_REPLAY_CHUNK", 3)

    async def go(db: SqlDatabase) -> None:
        tenant, ep, events = await queued(db, 7)
        assert ep.pk is not None
        since = datetime.now(UTC) - timedelta(hours=1)
        assert await db.run(lambda uow: uow.deliveries.replay(
            tenant, ep, since, datetime.now(UTC))) == 7
        # another endpoint that takes one type only: the filter holds in every chunk
        other = await db.run(lambda uow: webhooks_service.create_endpoint(
            uow, tenant, "https://other.example/hook", None, ["back_in_stock"], True,
            "native"))
        more = [Event("back_in_stock", datetime.now(UTC), {"n": i}) for i in range(4)]

        async def store(uow: UnitOfWork) -> None:
            await persist_events(uow, tenant, more)

        await db.run(store)
        assert await db.run(lambda uow: uow.deliveries.replay(
            tenant, other, since, datetime.now(UTC))) == 4
        page = await db.read(lambda uow: uow.deliveries.page(
            tenant, ep, None, PageRequest(None, 100)))
        # ep: 7 queued at first, 7 replayed, and the 4 new ones queued with their events
        named = Counter(d.event_id for _, d in page)
        assert named == Counter({e.id: 2 for e in events} | {e.id: 1 for e in more})
        page = await db.read(lambda uow: uow.deliveries.page(
            tenant, other, None, PageRequest(None, 100)))
        assert Counter(d.event_id for _, d in page) == Counter({e.id: 2 for e in more})

    run(url, go)
