"""`retention`: the hourly purge's cost per event, on a log ten times larger (not a bar of
issue 5; outside `all`).

Retention deletes settled deliveries and the events no delivery names any more
(`stockbell.delivery.retention.purge`, the code the dispatcher runs, called here in
process). Until migration 0008 each deleted event made the database scan the deliveries
table for references (a foreign key with no index behind it), so the purge's time grew with
the square of the log: 29,000 old events took 12.8 s on PostgreSQL. The figure is the time
per purged event with N old events, the baseline the same with N / 10, measured in the same
run (each size on a fresh database): a ratio near 1 is a purge that grows with the log, ~10
one that grows with its square.

Each size is seeded directly (COPY / executemany): N old events, each with a settled
delivery except one in twenty (still pending, so their events stay), beside 20,000 recent
settled deliveries that stay too (the table a check would scan).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench import seed
from bench.env import Env
from bench.report import Row, Table
from stockbell.delivery.retention import Purged, purge
from stockbell.domain.accounts import Mode, Tenant
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.store.database import SqlDatabase

_DELIVERY = ["id", "account_id", "mode", "endpoint_pk", "event_id", "status", "attempts",
             "next_attempt_at", "created_at", "updated_at"]
_PENDING = 20  # one old event in this many keeps a pending delivery
_RECENT = 20_000
_DAY = 86_400 * 1_000_000  # micro-seconds


def _log(tag: str, account_id: int, endpoint_pk: int, n: int
         ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    now = int(time.time() * 1e6)
    old, recent = now - 40 * _DAY, now - _DAY
    events, deliveries = [], []
    for i in range(n + _RECENT):
        at = old if i < n else recent
        event_id = f"evt_{tag}{i:020d}"
        events.append((event_id, account_id, "test", "back_in_stock", None, None, at, at,
                       f'{{"n": {i}}}'))
        status = "pending" if i < n and i % _PENDING == 0 else "succeeded"
        deliveries.append((f"dlv_{tag}{i:020d}", account_id, "test", endpoint_pk, event_id,
                           status, 1, at if status == "pending" else None, at, at))
    return events, deliveries


def _seed(env: Env, account_id: int, tag: str, n: int) -> None:
    async def endpoint(db: SqlDatabase) -> int:
        ep = await db.run(lambda uow: webhooks_service.create_endpoint(
            uow, Tenant(account_id, Mode.TEST), f"https://{tag}.example/hook", None, None,
            False, "native"))
        assert ep.pk is not None
        return ep.pk

    events, deliveries = _log(tag, account_id, env.in_process(endpoint), n)
    seed.rows(env, "events", seed.EVENT_COLUMNS, events)
    seed.rows(env, "deliveries", _DELIVERY, deliveries)


def _purge(env: Env) -> tuple[float, Purged]:
    async def timed(db: SqlDatabase) -> tuple[float, Purged]:
        t0 = time.perf_counter()
        done = await purge(db, utcnow() - timedelta(days=30))
        return time.perf_counter() - t0, done

    return env.in_process(timed)


def retention(db: str, quick: bool) -> Table:
    n = 20_000 if quick else 200_000
    t = Table(f"retention ({db}{', quick' if quick else ''})")
    per: dict[int, float] = {}
    for tag, size in (("a", n // 10), ("b", n)):
        # A database per size, written in time order as a log is: the purge walks by pk
        # and stops at the first recent row (store/repos/aging.py), so old rows seeded
        # after an earlier size's recent ones would be left for the next hour's purge.
        with Env(db) as env:
            account_id = seed.tenant(env).account_id
            _seed(env, account_id, tag, size)
            env.settle()
            took, done = _purge(env)
        expected = size - size // _PENDING
        if (done.deliveries, done.events) != (expected, expected):
            raise RuntimeError(f"purge of {size:,}: deleted {done.deliveries:,} deliveries "
                               f"and {done.events:,} events, expected {expected:,} of each")
        per[size] = took / expected * 1e6
        t.notes.append(f"{size:,} old events: {expected:,} deliveries and {expected:,} "
                       f"events purged in {took:.2f} s ({expected / took:,.0f} events/s)")
    t.add(Row(f"purge, µs per event, {n:,} old events", per[n], "µs", per[n // 10],
              f"the same with {n // 10:,}"))
    t.notes.append(f"besides: one old event in {_PENDING} with a pending delivery (kept), "
                   f"and {_RECENT:,} recent settled deliveries after them, each size on a "
                   "database of its own; chunks of 5,000 rows per transaction "
                   "(delivery.retention.PURGE_CHUNK)")
    return t
