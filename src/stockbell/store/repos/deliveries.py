"""The delivery queue: one row per (event, endpoint), claimed with a lease.

On PostgreSQL the claim takes `FOR UPDATE SKIP LOCKED`, so any number of workers share the
queue without handing one delivery to two of them while its lease holds; a worker that dies
simply lets its lease run out and another picks the rows up (at-least-once).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import Event
from stockbell.domain.webhooks import (
    NOT_REPLAYED,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
)
from stockbell.service.ids import id_range, new_id, new_ids
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import Claimed, Settlement
from stockbell.store.repos.aging import next_chunk
from stockbell.store.repos.bulk import (
    INLINE_KEYS,
    driver,
    insert_rows,
    sqlite_many,
    sqlite_rows,
)
from stockbell.store.repos.webhooks import endpoints_by_pks
from stockbell.store.tables import PENDING
from stockbell.store.tables import deliveries as d
from stockbell.store.tables import delivery_attempts as da
from stockbell.store.tables import events as ev
from stockbell.store.tables import webhook_endpoints as we
from stockbell.store.types import from_micros, json_value, to_micros

NOTIFY_CHANNEL = "stockbell_deliveries"
EXCERPT_BYTES = 4096


def _delivery(m: Any) -> Delivery:
    return Delivery(
        id=m["id"], endpoint_id=m["endpoint_id"], event_id=m["event_id"],
        event_type=m["event_type"], status=DeliveryStatus(m["status"]),
        attempts=m["attempts"], next_attempt_at=m["next_attempt_at"],
        last_status_code=m["last_status_code"], last_error=m["last_error"],
        created_at=m["created_at"], updated_at=m["updated_at"], pk=m["pk"],
    )


_VIEW = (
    sa.select(d, we.c.id.label("endpoint_id"), ev.c.type.label("event_type"))
    .join(we, we.c.pk == d.c.endpoint_pk)
    .join(ev, ev.c.id == d.c.event_id)
)


_QUEUE_COLUMNS = ("id", "account_id", "mode", "event_id", "endpoint_pk", "status", "attempts",
                  "next_attempt_at", "created_at", "updated_at")

# SQLite: this many pairs and more go as one statement over a JSON array, run in aiosqlite's
# thread with the GIL released, the ids named by the database (`id_range`), instead of an
# executemany that binds ten parameters per row on the event loop's thread: a restock's
# 100,000 took that thread ~1 s.
_QUEUE_IN_STATEMENT = 500
_SQLITE_QUEUE = f"""
INSERT INTO deliveries ({', '.join(_QUEUE_COLUMNS)})
SELECT ?2 || printf('%013x', ?3 + key), ?4, ?5, value ->> 0, value ->> 1, ?6, 0, ?7, ?7, ?7
FROM json_each(?1)
"""

_ENABLED = sa.select(we.c.pk).where(we.c.enabled.is_(True))
_REPLAY_CHUNK = 5_000  # events a replay reads at a time


# --- the dispatcher's claim ------------------------------------------------------------------

# PostgreSQL: lease and read in one statement. The due rows are taken FOR UPDATE SKIP LOCKED,
# so concurrent claims by other workers pass over them instead of waiting or double-leasing.
_PG_CLAIM = f"""
UPDATE deliveries AS d SET lease_until = $2
FROM events AS e
WHERE d.pk IN (
        SELECT pk FROM deliveries
        WHERE {PENDING} AND next_attempt_at <= $1
          AND (lease_until IS NULL OR lease_until <= $1)
          AND endpoint_pk IN (SELECT pk FROM webhook_endpoints WHERE enabled)
        ORDER BY next_attempt_at
        LIMIT $3
        FOR UPDATE OF deliveries SKIP LOCKED)
  AND e.id = d.event_id
RETURNING d.pk, d.id, d.attempts, d.endpoint_pk, e.id, e.type, e.occurred_at, e.created_at,
          e.data, e.sequence, e.item_id, e.pk
"""

# SET LOCAL for both, as one statement (through the driver: SQLAlchemy's execution of it
# cost the dispatcher ~1 % of its CPU).
_PG_CLAIM_PLAN = ("SELECT set_config('enable_sort', 'off', true), "
                  "set_config('enable_bitmapscan', 'off', true)")

# SQLite, one writer at a time: read the due rows, then lease them (one statement each).
# Plain rows: read on the event loop's thread (bulk.sqlite_rows), they cost 3.3 us each
# against 6.2 packed into one JSON array (SQLite escapes each payload into it, orjson reads it
# back), measured on a claim of 64-256 from 100,000 queued. INDEXED BY: with the due index
# partial (migration 0006), SQLite's planner, short of statistics, would rather walk the
# endpoint's index (every delivery it ever had) and sort.
_SQLITE_CLAIM = f"""
SELECT d.pk, d.id, d.attempts, d.endpoint_pk, e.id, e.type, e.occurred_at, e.created_at,
       e.data, e.sequence, e.item_id, e.pk
FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
WHERE d.pk IN (
        SELECT pk FROM deliveries INDEXED BY ix_deliveries_due
        WHERE {PENDING} AND next_attempt_at <= ?1
          AND (lease_until IS NULL OR lease_until <= ?1)
          AND endpoint_pk IN (SELECT pk FROM webhook_endpoints WHERE enabled)
        ORDER BY next_attempt_at
        LIMIT ?2)
"""
_SQLITE_LEASE = "UPDATE deliveries SET lease_until = ? WHERE pk IN (SELECT value FROM json_each(?))"

# Results are written a batch at a time. PostgreSQL: one statement per batch, the rows passed
# as one JSON parameter (written by orjson in one call), since asyncpg would otherwise inspect
# every element of every array parameter. SQLite: an executemany (bulk.sqlite_many), which
# runs a batch on the event loop's thread: 2.2 us per attempt row and 5.5 per settled row,
# against 4.2 and 6.6 for the same batch of 200 as one JSON parameter read by `->>`.
_PG_ADD_ATTEMPTS = """
INSERT INTO delivery_attempts
    (delivery_pk, attempted_at, duration_ms, status_code, error, response_excerpt)
SELECT p, t, d, c, e, x
FROM json_to_recordset($1::json) AS a(p bigint, t bigint, d float8, c int, e text, x text)
"""
_SQLITE_ADD_ATTEMPTS = """
INSERT INTO delivery_attempts
    (delivery_pk, attempted_at, duration_ms, status_code, error, response_excerpt)
VALUES (?, ?, ?, ?, ?, ?)
"""
# A result sent under a lease (u.lease) lands only while that lease is still the row's.
_PG_SETTLE = """
UPDATE deliveries AS d
SET status = u.s, attempts = u.n, next_attempt_at = u.t, last_status_code = u.c,
    last_error = u.e, lease_until = NULL, updated_at = $2
FROM json_to_recordset($1::json) AS u(p bigint, s text, n int, t bigint, c int, e text,
                                      l bigint)
WHERE d.pk = u.p AND (u.l IS NULL OR d.lease_until = u.l)
"""
_SQLITE_SETTLE = """
UPDATE deliveries
SET status = ?1, attempts = ?2, next_attempt_at = ?3, last_status_code = ?4,
    last_error = ?5, lease_until = NULL, updated_at = ?6
WHERE pk = ?7 AND (?8 IS NULL OR lease_until = ?8)
"""


def _excerpt(a: Attempt) -> str | None:
    return (a.response_excerpt or "")[:EXCERPT_BYTES] or None


def _first(row: Sequence[Any]) -> Any:
    return row[0]


class SqlDeliveries:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.created = False  # read by the unit of work to wake in-process dispatchers
        self.queued = False  # new deliveries were queued in this transaction

    async def _notify(self) -> None:
        self.created = True
        if self.conn.dialect.name == "postgresql":
            # Delivered at commit, to every LISTENing worker on any machine.
            await self.conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))

    async def add_many(self, tenant: Tenant, pairs: Sequence[tuple[str, int]], now: datetime,
                       status: DeliveryStatus = DeliveryStatus.PENDING
                       ) -> list[tuple[int, str]]:
        if not pairs:
            return []
        rows = [
            {"id": new_id("dlv"), "account_id": tenant.account_id, "mode": tenant.mode.value,
             "event_id": event_id, "endpoint_pk": endpoint_pk, "status": status.value,
             "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
            for event_id, endpoint_pk in pairs
        ]
        res = await self.conn.execute(
            sa.insert(d).returning(d.c.pk, d.c.id, sort_by_parameter_order=True), rows)
        pks = [(int(r[0]), str(r[1])) for r in res]
        if status is DeliveryStatus.PENDING:
            await self._notify()
        return pks

    async def queue(self, tenant: Tenant, pairs: Sequence[tuple[str, int]],
                    now: datetime) -> None:
        """Pending deliveries for (event id, endpoint pk) pairs, written in bulk without
        reading anything back: a fan-out queues 100,000 in its transaction."""
        if not pairs:
            return
        account_id, mode = tenant.account_id, tenant.mode.value
        pending = DeliveryStatus.PENDING.value
        at = to_micros(now)
        if len(pairs) >= _QUEUE_IN_STATEMENT and self.conn.dialect.name == "sqlite":
            head, start = id_range("dlv", len(pairs))
            await sqlite_rows(await driver(self.conn), _SQLITE_QUEUE, (
                orjson.dumps(pairs).decode(), head, start, account_id, mode, pending, at),
                inline=False)
            self.queued = True
            await self._notify()
            return
        await insert_rows(self.conn, "deliveries", _QUEUE_COLUMNS, [
            (dlv, account_id, mode, event_id, endpoint_pk, pending, 0, at, at, at)
            for dlv, (event_id, endpoint_pk) in zip(new_ids("dlv", len(pairs)), pairs,
                                                    strict=True)
        ])
        self.queued = True
        await self._notify()

    async def replay(self, tenant: Tenant, endpoint: Endpoint, since: datetime,
                     now: datetime) -> int:
        """Queue a delivery to `endpoint` for every event it takes since `since`, in one
        transaction. The log is read _REPLAY_CHUNK events at a time (by pk), and their data
        only when the endpoint's format filters on it: a day's log of a busy shop is a
        million events, and read whole it took 1.2-1.4 KB of memory per event (`bench
        replay`)."""
        data = ev.c.data if endpoint.filters_on_data else sa.null()
        stmt = sa.select(ev.c.pk, ev.c.id, ev.c.type, data).where(
            ev.c.account_id == tenant.account_id, ev.c.mode == tenant.mode.value,
            ev.c.created_at >= since,
            ev.c.type.not_in(NOT_REPLAYED),
        ).order_by(ev.c.pk).limit(_REPLAY_CHUNK)
        if self.conn.dialect.name == "postgresql":
            # What the foreign key's check did until migration 0008: the purge passes over
            # an event locked here, so no delivery queued below names a deleted one.
            stmt = stmt.with_for_update(read=True, key_share=True)
        if endpoint.event_types is not None:
            stmt = stmt.where(ev.c.type.in_(endpoint.event_types))
        assert endpoint.pk is not None
        queued, after = 0, 0
        while True:
            rows = (await self.conn.execute(stmt.where(ev.c.pk > after))).all()
            pairs = [(eid, endpoint.pk) for _, eid, etype, payload in rows
                     if endpoint.wants(etype, payload)]
            await self.queue(tenant, pairs, now)
            queued += len(pairs)
            if len(rows) < _REPLAY_CHUNK:
                return queued
            after = rows[-1][0]

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        """Lease up to `limit` due deliveries; return them with their events and endpoints.

        PostgreSQL leases and reads in one statement (the due rows picked `FOR UPDATE SKIP
        LOCKED`, so two workers never lease the same row); SQLite, one writer at a time,
        reads and then leases. Each endpoint is loaded once per claim, not once per row."""
        rows: list[Any]
        if self.conn.dialect.name == "postgresql":
            # Walk ix_deliveries_due in order and stop at `limit`, whatever the statistics
            # say: right after a fan-out queued 100,000 rows (autovacuum analyses a minute
            # later, at best) the planner otherwise reads and sorts the whole queue for every
            # claim: 20 ms instead of 4 per 200 with 10,000 queued, and growing with the queue.
            raw = await driver(self.conn)
            await raw.execute(_PG_CLAIM_PLAN)
            rows = await raw.fetch(_PG_CLAIM, to_micros(now), to_micros(lease_until), limit)
        else:
            raw = await driver(self.conn)
            rows = await sqlite_rows(raw, _SQLITE_CLAIM, (to_micros(now), limit),
                                     inline=limit <= INLINE_KEYS)
            if rows:
                await sqlite_rows(raw, _SQLITE_LEASE, (
                    to_micros(lease_until), orjson.dumps([r[0] for r in rows]).decode()),
                    inline=len(rows) <= INLINE_KEYS)
        if not rows:
            return []
        endpoints = await endpoints_by_pks(self.conn, (r[3] for r in rows))
        out = []
        times: dict[int, datetime] = {}  # a fan-out's events share their timestamps
        for (pk, delivery_id, attempts, endpoint_pk, event_id, etype, occurred_at, created_at,
             data, sequence, item_id, event_pk) in sorted(rows, key=_first):
            endpoint = endpoints.get(endpoint_pk)
            if endpoint is None:  # deleted meanwhile: its deliveries go with it
                continue
            occurred = times.get(occurred_at) or times.setdefault(occurred_at,
                                                                  from_micros(occurred_at))
            created = times.get(created_at) or times.setdefault(created_at,
                                                                 from_micros(created_at))
            # The payload stays text until a format reads it (the native one never does).
            event = Event.stored(etype, occurred, data, json_value, item_id=item_id,
                                 sequence=sequence, id=event_id, created_at=created, pk=event_pk)
            out.append(Claimed(pk, delivery_id, attempts, endpoint, event, lease_until))
        return out

    async def add_attempts(self, rows: Sequence[tuple[int, Attempt]]) -> None:
        if not rows:
            return
        raw = await driver(self.conn)
        if self.conn.dialect.name == "postgresql":
            # The objects `json_to_recordset` reads, written as literals: a tuple per row
            # zipped with the keys cost 0.4 us more per row.
            await raw.execute(_PG_ADD_ATTEMPTS, orjson.dumps([
                {"p": pk, "t": to_micros(a.attempted_at), "d": a.duration_ms,
                 "c": a.status_code, "e": a.error, "x": _excerpt(a)}
                for pk, a in rows]).decode())
        else:
            await sqlite_many(raw, _SQLITE_ADD_ATTEMPTS, [
                (pk, to_micros(a.attempted_at), a.duration_ms, a.status_code, a.error,
                 _excerpt(a)) for pk, a in rows])

    async def settle(self, updates: Sequence[Settlement], now: datetime) -> None:
        """Record each delivery's outcome. A result sent under a lease only lands while that
        lease is still the delivery's: if it ran out and another worker re-claimed the row,
        the newer claim owns it and this stale result changes nothing."""
        if not updates:
            return
        at = to_micros(now)
        # A claim's deliveries share one lease time: converted once per batch.
        leased = functools.cache(to_micros)
        raw = await driver(self.conn)
        if self.conn.dialect.name == "postgresql":
            await raw.execute(_PG_SETTLE, orjson.dumps([
                {"p": pk, "s": st.value, "n": n, "t": to_micros(nxt), "c": code, "e": err,
                 "l": leased(lease)}
                for pk, st, n, nxt, code, err, lease in updates]).decode(), at)
        else:
            await sqlite_many(raw, _SQLITE_SETTLE, [
                (st.value, n, to_micros(nxt), code, err, at, pk, leased(lease))
                for pk, st, n, nxt, code, err, lease in updates])
        if any(u[1] is DeliveryStatus.PENDING for u in updates):
            await self._notify()

    async def get(self, tenant: Tenant, delivery_id: str) -> Delivery | None:
        res = await self.conn.execute(
            _VIEW.where(d.c.id == delivery_id, d.c.account_id == tenant.account_id,
                        d.c.mode == tenant.mode.value)
        )
        row = res.first()
        if row is None:
            return None
        delivery = _delivery(row._mapping)
        attempts = await self.conn.execute(
            sa.select(da).where(da.c.delivery_pk == delivery.pk).order_by(da.c.pk)
        )
        delivery.attempt_log = [
            Attempt(a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_excerpt)
            for a in attempts
        ]
        return delivery

    async def page(self, tenant: Tenant, endpoint: Endpoint, status: DeliveryStatus | None,
                   page: PageRequest) -> list[tuple[int, Delivery]]:
        stmt = _VIEW.where(d.c.endpoint_pk == endpoint.pk, d.c.account_id == tenant.account_id,
                           d.c.mode == tenant.mode.value)
        if status is not None:
            stmt = stmt.where(d.c.status == status.value)
        if page.after is not None:
            stmt = stmt.where(d.c.pk > page.after)
        res = await self.conn.execute(stmt.order_by(d.c.pk).limit(page.limit))
        out = [(r.pk, _delivery(r._mapping)) for r in res]
        # The listing promises "with their attempts": load them for the whole page at once.
        by_pk = {dl.pk: dl for _, dl in out}
        if by_pk:
            attempts = await self.conn.execute(
                sa.select(da).where(da.c.delivery_pk.in_(list(by_pk))).order_by(da.c.pk))
            for a in attempts:
                by_pk[a.delivery_pk].attempt_log.append(
                    Attempt(a.attempted_at, a.duration_ms, a.status_code, a.error,
                            a.response_excerpt))
        return out

    async def retry(self, tenant: Tenant, delivery_id: str, now: datetime) -> bool:
        res = await self.conn.execute(
            sa.update(d).where(d.c.id == delivery_id, d.c.account_id == tenant.account_id,
                               d.c.mode == tenant.mode.value)
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now,
                    lease_until=None, updated_at=now)
            .returning(d.c.pk)
        )
        found = res.first() is not None
        if found:
            await self._notify()
        return found

    async def queue_stats(self, now: datetime) -> tuple[int, float | None]:
        res = await self.conn.execute(
            sa.select(sa.func.count(), sa.func.min(d.c.created_at))
            .where(sa.text(PENDING), d.c.next_attempt_at <= now,
                   d.c.endpoint_pk.in_(_ENABLED))
        )
        count, oldest = res.one()
        if oldest is None:
            return int(count), None
        if not isinstance(oldest, datetime):
            oldest = from_micros(int(oldest))
        return int(count), (now - oldest).total_seconds()

    async def purge_before(self, cutoff: datetime, after: int,
                           limit: int) -> tuple[int, int | None]:
        """Delete, of the next `limit` deliveries by pk past `after`, the settled ones last
        changed before `cutoff`, with their attempts. Returns how many went and where the
        next chunk starts (None: done; the walk ends at the first delivery created on or
        after `cutoff`, none of which can be due, `aging`). On PostgreSQL they are locked as
        they are chosen, so a retry that makes one pending again either waits for the purge
        or is seen by it."""
        chunk = await next_chunk(self.conn, d.c.pk, d.c.created_at, cutoff, after, limit)
        if chunk is None:
            return 0, None
        old = (sa.select(d.c.pk)
               .where(d.c.pk > after, d.c.pk <= chunk.last,
                      d.c.status != DeliveryStatus.PENDING.value, d.c.updated_at < cutoff)
               .order_by(d.c.pk))
        if self.conn.dialect.name == "postgresql":
            old = old.with_for_update(skip_locked=True)
        pks = list((await self.conn.execute(old)).scalars())
        if pks:
            await self.conn.execute(sa.delete(da).where(da.c.delivery_pk.in_(pks)))
            await self.conn.execute(sa.delete(d).where(d.c.pk.in_(pks)))
        return len(pks), (None if chunk.final else chunk.last)
