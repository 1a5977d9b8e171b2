"""Bulk rows written straight into the database (far faster than the API for 10^5..10^6)."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Iterator

from bench.env import PG, Env
from stockbell.domain.accounts import Mode, Tenant

COLUMNS = ["id", "account_id", "mode", "item_id", "scope_key", "threshold", "status",
           "customer_email", "customer_attributes", "auto_resubscribe", "metadata",
           "notify_count", "created_at", "updated_at"]


def _now_micros() -> int:
    return int(time.time() * 1_000_000)


def _rows(account_id: int, item_ids: list[int], thresholds: list[int], n: int,
          json_empty: object) -> Iterator[tuple[object, ...]]:
    now = _now_micros()
    for i in range(n):
        yield (f"sub_{secrets.token_hex(12)}", account_id, "test", item_ids[i % len(item_ids)],
               "*", thresholds[i % len(thresholds)], "active", f"c{i}@example.com",
               json_empty, False, json_empty, 0, now, now)


def _sqlite_path(env: Env) -> str:
    return env.url.split("///", 1)[1]


def ids(env: Env, skus: list[str]) -> tuple[int, dict[str, int]]:
    """The bench account's id and the item ids of `skus`."""
    if env.db == "sqlite":
        con = sqlite3.connect(_sqlite_path(env))
        try:
            acc = con.execute("SELECT id FROM accounts WHERE name=?", (env.account,)).fetchone()[0]
            found = dict(con.execute("SELECT sku_code, id FROM items WHERE account_id=?",
                                     (acc,)).fetchall())
        finally:
            con.close()
        return acc, {k: found[k] for k in skus}

    async def go() -> tuple[int, dict[str, int]]:
        import asyncpg

        conn = await asyncpg.connect(database=env.pg_name, **PG)
        try:
            acc = await conn.fetchval("SELECT id FROM accounts WHERE name=$1", env.account)
            rows = await conn.fetch("SELECT sku_code, id FROM items WHERE account_id=$1", acc)
        finally:
            await conn.close()
        found = {r["sku_code"]: r["id"] for r in rows}
        return acc, {k: found[k] for k in skus}

    return asyncio.run(go())


def tenant(env: Env) -> Tenant:
    """The bench account's test mode, for the service called from the harness's process."""
    account_id, _ = ids(env, [])
    return Tenant(account_id, Mode.TEST)


def subscriptions(env: Env, account_id: int, item_ids: list[int], thresholds: list[int],
                  n: int) -> float:
    """Insert `n` active one-shot subscriptions (scope: all locations), round-robin over
    `item_ids` and `thresholds` (micro-units). Returns the seconds it took."""
    t0 = time.monotonic()
    if env.db == "sqlite":
        con = sqlite3.connect(_sqlite_path(env))
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executemany(
                f"INSERT INTO subscriptions ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                _rows(account_id, item_ids, thresholds, n, "{}"))
            con.commit()
            con.execute("ANALYZE")
            # Fold the bulk load into the database file, as it would be long after such a
            # load in production; otherwise every read in the measurement consults a large WAL.
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        return time.monotonic() - t0

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(database=env.pg_name, **PG)
        try:
            chunk: list[tuple[object, ...]] = []
            for row in _rows(account_id, item_ids, thresholds, n, "{}"):
                chunk.append(row)
                if len(chunk) == 100_000:
                    await conn.copy_records_to_table("subscriptions", records=chunk,
                                                     columns=COLUMNS)
                    chunk = []
            if chunk:
                await conn.copy_records_to_table("subscriptions", records=chunk, columns=COLUMNS)
            # As long after such a load in production: autovacuum has been through the table
            # (else it starts mid-measurement and takes a core: seen once, 1.88x per change)
            # and the load's dirty pages are written out.
            await conn.execute("VACUUM ANALYZE subscriptions")
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    asyncio.run(go())
    return time.monotonic() - t0


def rows(env: Env, table: str, columns: list[str], values: list[tuple[object, ...]]) -> None:
    """Insert `values` into `table` directly (SQLite: executemany; PostgreSQL: COPY, then
    VACUUM ANALYZE, as long after such a load in production)."""
    if env.db == "sqlite":
        con = sqlite3.connect(_sqlite_path(env))
        try:
            con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                            f"VALUES ({', '.join('?' * len(columns))})", values)
            con.commit()
        finally:
            con.close()
        return

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(database=env.pg_name, **PG)
        try:
            await conn.copy_records_to_table(table, records=values, columns=columns)
            await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()

    asyncio.run(go())


EVENT_COLUMNS = ["id", "account_id", "mode", "type", "item_id", "sequence", "occurred_at",
                 "created_at", "data"]
# a back_in_stock event's size (~1 KB of JSON)
EVENT_DATA = ('{"subscription_id": "sub_x", "item": {"sku_code": "A"}, "pad": "'
              + "y" * 900 + '"}')


def events(env: Env, account_id: int, tag: str, n: int, span_seconds: float = 0.0,
           ending_seconds_ago: float = 0.0) -> None:
    """`n` back_in_stock events of ~1 KB, created evenly over `span_seconds` that end
    `ending_seconds_ago` (all now by default), in pk order."""
    end = _now_micros() - int(ending_seconds_ago * 1_000_000)
    span = int(span_seconds * 1_000_000)
    step = span // n if n else 0
    values = []
    for i in range(n):
        at = end - span + i * step
        values.append((f"evt_{tag}{i:020d}", account_id, "test", "back_in_stock", None, None,
                       at, at, EVENT_DATA))
    rows(env, "events", EVENT_COLUMNS, values)
