"""The floor of bar 4a: one restock's reads and writes with nothing of Stockbell around them.

A restock that fires n subscriptions must, in one transaction, read them, write n
back_in_stock events and n pending deliveries, and mark the n subscriptions notified
(DESIGN.md: events and their deliveries are written with their cause). Here the same rows
and the same tables and indexes are written by the shortest code that can do it: plain
sqlite3 on one thread, or asyncpg (COPY for the deliveries), one statement per step, no
HTTP, no domain objects, no lock or ledger, no restock rule. The events' data is built by
the database, by the very statement Stockbell sends (`store.repos.fired_events`), here once
for all n rather than per chunk of 2,000; until the eighteenth session Stockbell rendered
them in Python, and so did this floor (with orjson), which Stockbell's restock then beat.
The `fanout` scenario prints it next to Stockbell's restock, measured in the same run on the
same data, so the bar's absolute 3 s can be read against what the machine allows that day.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from bench.env import PG, Env
from stockbell.domain.accounts import Mode, Tenant
from stockbell.service.ids import new_ids
from stockbell.service.ports import FiredRow, FiredScene
from stockbell.service.views import iso
from stockbell.store.repos.fired_events import pg_statement, sqlite_statement
from stockbell.store.types import from_micros

_SUBS = "pk, notify_count"
_ITEM = ("public_id, sku_code, title, variant_title, upc, product_id, variant_id, size, width, "
         "part_number, generic_part_number, pricing, attributes, created_at, updated_at")
_DELIVERY_COLUMNS = ("id", "account_id", "mode", "event_id", "endpoint_pk", "status",
                     "attempts", "next_attempt_at", "created_at", "updated_at")
_TEN_YEARS = 10 * 365 * 86_400 * 1_000_000  # micro-seconds


def _iso(micros: int | None) -> str | None:
    """Stockbell's own rendering of a stored time, so the events have the same text."""
    return None if micros is None else iso(from_micros(micros))


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def _rows(subs: list[Any], item: Any, item_id: int, endpoint_pk: int, tenant: Tenant,
          now: int) -> tuple[FiredScene, list[FiredRow], list[tuple[Any, ...]]]:
    """What the events share, one row per event for the database to render, and the
    deliveries, shaped as Stockbell's."""
    item_view = dict(zip(("id", "sku_code", "title", "variant_title", "upc", "product_id",
                          "variant_id", "size", "width", "part_number", "generic_part_number",
                          "pricing", "attributes"), item[:13], strict=True))
    item_view.update(pricing=_json(item[11]), attributes=_json(item[12]),
                     created_at=_iso(item[13]), updated_at=_iso(item[14]))
    at = from_micros(now)
    notified = iso(at)
    assert notified is not None
    scene = FiredScene(item_id, item[1], {"type": "all", "code": None}, item_view, "5", "0",
                       notified, at)
    # Stockbell's own ids: they sort by time, so the rows land at the end of the id indexes
    event_ids, delivery_ids = new_ids("evt", len(subs)), new_ids("dlv", len(subs))
    fired: list[FiredRow] = [(event_ids[k], k + 1, pk, "notified", count + 1, "1")
                             for k, (pk, count) in enumerate(subs)]
    # Pending, as a restock's, but due in ten years: on PostgreSQL the floor writes into the
    # bench's live database, and its deliveries must not be sent.
    deliveries = [(delivery_ids[k], tenant.account_id, tenant.mode.value, event_ids[k],
                   endpoint_pk, "pending", 0, now + _TEN_YEARS, now, now)
                  for k in range(len(subs))]
    return scene, fired, deliveries


def sqlite_floor(env: Env, account_id: int, item_id: int, n: int) -> float:
    """Seconds for the floor on a copy of the database (SQLite's backup API, a consistent
    snapshot even with `serve` running), with Stockbell's pragmas; the copy is removed."""
    src = sqlite3.connect(env.url.split("///", 1)[1])
    copy = env.tmp / "floor.db"
    dst = sqlite3.connect(copy, isolation_level=None)
    try:
        src.backup(dst)
        src.close()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            dst.execute(f"PRAGMA {pragma}")
        endpoint_pk = dst.execute("SELECT min(pk) FROM webhook_endpoints").fetchone()[0]
        os.sync()
        t0 = time.perf_counter()
        dst.execute("BEGIN IMMEDIATE")
        subs = dst.execute(f"SELECT {_SUBS} FROM subscriptions WHERE item_id = ? "
                           "AND scope_key = '*' AND status = 'active' ORDER BY pk",
                           (item_id,)).fetchall()
        item = dst.execute(f"SELECT {_ITEM} FROM items WHERE id = ?", (item_id,)).fetchone()
        tenant = Tenant(account_id, Mode.TEST)
        now = int(time.time() * 1e6)
        scene, fired, deliveries = _rows(subs, item, item_id, endpoint_pk, tenant, now)
        dst.execute(*sqlite_statement(tenant, scene, fired, from_micros(now)))
        dst.executemany(f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_DELIVERY_COLUMNS))})", deliveries)
        dst.execute("UPDATE subscriptions SET status = 'notified', notify_count = "
                    "notify_count + 1, notified_at = ?1, updated_at = ?1 "
                    "WHERE pk IN (SELECT value FROM json_each(?2))",
                    (now, orjson.dumps([pk for pk, _ in subs]).decode()))
        dst.execute("COMMIT")
        took = time.perf_counter() - t0
    finally:
        dst.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    if len(subs) != n:
        raise RuntimeError(f"floor: expected {n} subscriptions, read {len(subs)}")
    return took


async def pg_floor_steps(conn: Any, account_id: int, item_id: int, n: int) -> dict[str, float]:
    """Seconds for each step of the floor on one asyncpg connection (`read` includes building
    the rows in Python; `total` is the transaction's, `COMMIT` included)."""
    endpoint_pk = await conn.fetchval("SELECT min(pk) FROM webhook_endpoints")
    steps: dict[str, float] = {}
    t0 = mark = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal mark
        now_ = time.perf_counter()
        steps[step], mark = now_ - mark, now_

    async with conn.transaction():
        subs = await conn.fetch(f"SELECT {_SUBS} FROM subscriptions WHERE item_id = $1 "
                                "AND scope_key = '*' AND status = 'active' "
                                "ORDER BY pk", item_id)
        item = await conn.fetchrow(f"SELECT {_ITEM} FROM items WHERE id = $1", item_id)
        tenant = Tenant(account_id, Mode.TEST)
        now = int(time.time() * 1e6)
        scene, fired, deliveries = _rows(subs, item, item_id, endpoint_pk, tenant, now)
        lap("read")
        sql, params = pg_statement(tenant, scene, fired, from_micros(now))
        await conn.execute(sql, *params)
        lap("events")
        await conn.copy_records_to_table("deliveries", records=deliveries,
                                         columns=list(_DELIVERY_COLUMNS))
        lap("deliveries")
        await conn.execute("UPDATE subscriptions SET status = 'notified', "
                           "notify_count = notify_count + 1, notified_at = $1, "
                           "updated_at = $1 WHERE pk = ANY($2::bigint[])",
                           now, [pk for pk, _ in subs])
        lap("statuses")
    lap("commit")
    steps["total"] = mark - t0
    if len(subs) != n:
        raise RuntimeError(f"floor: expected {n} subscriptions, read {len(subs)}")
    return steps


def postgres_floor(env: Env, account_id: int, item_id: int, n: int) -> float:
    """Seconds for the floor on an item of its own (seeded like the measured ones), in the
    bench's database: the same tables and indexes the restock writes to."""

    async def go() -> float:
        import asyncpg

        conn = await asyncpg.connect(database=env.pg_name, **PG)
        try:
            return (await pg_floor_steps(conn, account_id, item_id, n))["total"]
        finally:
            await conn.close()

    return asyncio.run(go())
