"""`retention`: the hourly purge's cost per event, on a log ten times larger (not a bar of
issue 5; outside `all`).

Retention deletes settled deliveries and the events no delivery names any more
(`stockbell.delivery.retention.purge`, the code the dispatcher runs, called here in
process). Until migration 0008 each deleted event made the database scan the deliveries
table for references (a foreign key with no index behind it), so the purge's time grew with
the square of the log: 29,000 old events took 12.8 s on PostgreSQL. The figure is the time
per purged event with N old events, the baseline the same with N / 10, measured in the same
run on the same database: a ratio near 1 is a purge that grows with the log, ~10 one that
grows with its square.

Each size is seeded directly (COPY / executemany): N old events, each with a settled
delivery except one in twenty (still pending, so their events stay), beside 20,000 recent
settled deliveries that stay too (the table a check would scan).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from typing import Any

import asyncpg

from bench import seed
from bench.env import PG, Env
from bench.report import Row, Table
from stockbell.delivery.retention import Purged, purge
from stockbell.service.clock import utcnow
from stockbell.store.database import SqlDatabase

_EVENT = ["id", "account_id", "mode", "type", "item_id", "sequence", "occurred_at",
          "created_at", "data"]
_DELIVERY = ["id", "account_id", "mode", "endpoint_pk", "event_id", "status", "attempts",
             "next_attempt_at", "created_at", "updated_at"]
_ENDPOINT = ("INSERT INTO webhook_endpoints (id, account_id, mode, url, enabled, format, "
             "secret, created_at, updated_at) VALUES ({})")
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
    now = int(time.time() * 1e6)
    endpoint = (f"ep_{tag}", account_id, "test", "http://127.0.0.1:9/", False, "native",
                "whsec_x", now, now)
    if env.db == "sqlite":
        con = sqlite3.connect(env.url.split("///", 1)[1])
        try:
            pk = con.execute(_ENDPOINT.format(", ".join("?" * 9)) + " RETURNING pk",
                             endpoint).fetchone()[0]
            events, deliveries = _log(tag, account_id, pk, n)
            con.executemany(f"INSERT INTO events ({', '.join(_EVENT)}) "
                            f"VALUES ({', '.join('?' * len(_EVENT))})", events)
            con.executemany(f"INSERT INTO deliveries ({', '.join(_DELIVERY)}) "
                            f"VALUES ({', '.join('?' * len(_DELIVERY))})", deliveries)
            con.commit()
        finally:
            con.close()
        return

    async def go() -> None:
        conn = await asyncpg.connect(database=env.pg_name, **PG)
        try:
            pk = await conn.fetchval(_ENDPOINT.format(", ".join(f"${i}" for i in range(1, 10)))
                                     + " RETURNING pk", *endpoint)
            events, deliveries = _log(tag, account_id, pk, n)
            await conn.copy_records_to_table("events", records=events, columns=_EVENT)
            await conn.copy_records_to_table("deliveries", records=deliveries,
                                             columns=_DELIVERY)
            await conn.execute("VACUUM ANALYZE events")
            await conn.execute("VACUUM ANALYZE deliveries")
        finally:
            await conn.close()

    asyncio.run(go())


def _purge(env: Env) -> tuple[float, Purged]:
    async def timed(db: SqlDatabase) -> tuple[float, Purged]:
        t0 = time.perf_counter()
        done = await purge(db, utcnow() - timedelta(days=30))
        return time.perf_counter() - t0, done

    return env.in_process(timed)


def retention(db: str, quick: bool) -> Table:
    n = 20_000 if quick else 200_000
    t = Table(f"retention ({db}{', quick' if quick else ''})")
    with Env(db) as env:
        account_id, _ = seed.ids(env, [])
        per: dict[int, float] = {}
        for tag, size in (("a", n // 10), ("b", n)):
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
                       f"and {_RECENT:,} recent settled deliveries per size; chunks of 5,000 "
                       "rows per transaction (delivery.retention.PURGE_CHUNK)")
    return t
