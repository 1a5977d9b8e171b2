"""`floorparts` (PostgreSQL only, not a bar): how much of bar 4a's floor the indexes are.

On PostgreSQL the floor of bar 4a (`bench/floor.py`: a restock's reads and writes by the
shortest code, no HTTP) takes longer than the bar's 3 s on this machine, so no work on
Stockbell's code can make 4a hold there. What a different schema could do is the question left;
this answers it by measurement. The same floor runs step by step with the secondary indexes of
`subscriptions`, `events` or `deliveries` dropped, and of all three at once, each variant on an
item of its own with the same 100,000 waiting subscriptions (seeded just before its floor), in
turns (the order rotates each round), the indexes put back after each. Without any secondary
index nothing could read those tables (no event listing, no delivery queue, no subscription by
id), so the last variant is a bound: no choice of indexes takes the floor below it. The
crossing index stays in every variant: the floor's read goes through it, and a notified
subscription leaves it, so the writes never touch it.

One more variant asks what keeping every index could still give: a fired subscription's status
update written heap-only (HOT: no index entry at all, the pages' free space taking the new row
versions). PostgreSQL does that only when no index mentions a changed column and the page has
room, so in it the crossing index is replaced by one that does not name the status (`item_id,
scope_key, threshold` for every row: a real schema would keep the waiting subscriptions in a
table of their own instead), the expiry index is dropped, and that variant's subscriptions are
written with `fillfactor = 50` (a table twice the size). The share of the status updates that
were heap-only is printed for every variant.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from typing import Any

from bench import seed
from bench.env import PG, Env
from bench.floor import pg_floor_steps
from bench.report import Row, Table

TABLES = ("subscriptions", "events", "deliveries")
KEPT = frozenset({"ix_subscriptions_crossing"})
AS_MIGRATED = "as migrated"
HEAP_ONLY = "statuses heap-only, every other index kept"  # its schema: `plan`
# label -> the tables whose secondary indexes are dropped
VARIANTS: dict[str, tuple[str, ...]] = {
    AS_MIGRATED: (),
    "subscriptions without secondary indexes": ("subscriptions",),
    "events without secondary indexes": ("events",),
    "deliveries without secondary indexes": ("deliveries",),
    "none of the three with a secondary index": TABLES,
    HEAP_ONLY: (),
}
# the heap-only variant's stand-in for the crossing index: no status in it
_UNPARTIAL = ("CREATE INDEX ix_floorparts_crossing ON subscriptions "
              "(item_id, scope_key, threshold)")
STEPS = ("read", "events", "deliveries", "statuses", "commit", "total")

# Every non-primary index of the three tables; a unique constraint is dropped and added back
# as a constraint (its index cannot be dropped on its own).
_INDEXES = """
SELECT c.relname AS name, t.relname AS tbl, pg_get_indexdef(i.indexrelid) AS indexdef,
       con.conname, pg_get_constraintdef(con.oid) AS condef
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                           AND con.contype = 'u'
WHERE t.relname = ANY($1::text[]) AND NOT i.indisprimary AND t.relnamespace = 'public'::regnamespace
ORDER BY t.relname, c.relname
"""


def rotated(labels: Sequence[str], round_no: int) -> list[str]:
    """The variants' order in round `round_no`: each round starts one later, so no variant
    always runs first (the table grows with every floor, and the machine drifts)."""
    k = round_no % len(labels)
    return [*labels[k:], *labels[:k]]


async def definitions(conn: Any) -> dict[str, str]:
    """Every index of the three tables, primary keys included, as `CREATE INDEX` text."""
    rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE tablename = ANY($1::text[])", list(TABLES))
    return {r["indexname"]: r["indexdef"] for r in rows}


async def _updates(conn: Any) -> tuple[int, int]:
    """The subscriptions' updates and heap-only updates so far (this backend's own counts
    flushed first, so a floor's updates are in)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")
    row = await conn.fetchrow("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                              "WHERE relname = 'subscriptions'")
    return row[0], row[1]


def plan(label: str, indexes: dict[str, tuple[str, str, str]], before: dict[str, str]
         ) -> tuple[list[str], list[str]]:
    """The statements that give `label` its schema, and those that put it back.
    `indexes` is `_secondary`'s answer, `before` is `definitions`'."""
    if label == HEAP_ONLY:
        return ([_UNPARTIAL, indexes["ix_subscriptions_expiry"][1],
                 'DROP INDEX "ix_subscriptions_crossing"'],
                [indexes["ix_subscriptions_expiry"][2], before["ix_subscriptions_crossing"],
                 "DROP INDEX ix_floorparts_crossing"])
    names = [name for name, (table, _, _) in indexes.items() if table in VARIANTS[label]]
    return [indexes[name][1] for name in names], [indexes[name][2] for name in names]


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {step: statistics.median(run[step] for run in runs) for step in STEPS}


async def _secondary(conn: Any) -> dict[str, tuple[str, str, str]]:
    """name -> (table, statement that drops it, statement that puts it back)."""
    out = {}
    for r in await conn.fetch(_INDEXES, list(TABLES)):
        if r["name"] in KEPT:
            continue
        if r["conname"]:
            out[r["name"]] = (r["tbl"], f'ALTER TABLE {r["tbl"]} DROP CONSTRAINT "{r["conname"]}"',
                              f'ALTER TABLE {r["tbl"]} ADD CONSTRAINT "{r["conname"]}" '
                              f'{r["condef"]}')
        else:
            out[r["name"]] = (r["tbl"], f'DROP INDEX "{r["name"]}"', r["indexdef"])
    return out


def floorparts(db: str, quick: bool) -> Table:
    if db != "postgres":
        raise ValueError("floorparts measures PostgreSQL's floor only: run it with --db postgres")
    from bench.scenarios import UNIT  # (imported here: scenarios imports this module)

    n, rounds = (2_000, 1) if quick else (100_000, 5)
    t = Table(f"floorparts (postgres{', quick' if quick else ''})")
    labels = list(VARIANTS)
    with Env(db) as env:
        env.start_serve(dispatcher=False)

        async def setup() -> list[str]:
            async with env.session(limit=4) as s:
                skus, _ = await env.catalog(s, rounds * len(labels), 1, prefix="FLOOR")
                # never called: the floor's deliveries are due in ten years
                await env.call(s, "POST", "/v1/webhook-endpoints",
                               {"url": "http://127.0.0.1:9/never",
                                "event_types": ["back_in_stock"]})
                return skus

        skus = asyncio.run(setup())
        assert env.serve is not None
        env.stop_proc(env.serve)
        account_id, item_ids = seed.ids(env, skus)
        ids = iter(item_ids[sku] for sku in skus)
        items = {label: [next(ids) for _ in range(rounds)] for label in labels}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
        heap_only: dict[str, list[float]] = {label: [] for label in labels}
        secondary: set[str] = set()

        async def one(label: str, round_no: int) -> None:
            import asyncpg

            conn = await asyncpg.connect(database=env.pg_name, **PG)
            try:
                before = await definitions(conn)
                indexes = await _secondary(conn)
                secondary.update(indexes)
                change, restore = plan(label, indexes, before)
                for sql in change:
                    await conn.execute(sql)
                await conn.execute("CHECKPOINT")  # the previous floor's writes flushed first
                upd, hot = await _updates(conn)
                runs[label].append(await pg_floor_steps(conn, account_id,
                                                        items[label][round_no], n))
                upd2, hot2 = await _updates(conn)
                heap_only[label].append((hot2 - hot) / max(1, upd2 - upd))
                for sql in restore:
                    await conn.execute(sql)
                if await definitions(conn) != before:
                    raise RuntimeError(f"floorparts: indexes not restored after {label!r}")
            finally:
                await conn.close()

        for r in range(rounds):
            for label in rotated(labels, r):
                # Seeded just before its floor: the earlier floors' row versions (not
                # heap-only) would otherwise fill the room the heap-only variant's pages keep.
                if label == HEAP_ONLY:
                    asyncio.run(_execute(env, "ALTER TABLE subscriptions SET (fillfactor = 50)"))
                seed.subscriptions(env, account_id, [items[label][r]], [UNIT], n)
                if label == HEAP_ONLY:
                    asyncio.run(_execute(env, "ALTER TABLE subscriptions RESET (fillfactor)"))
                asyncio.run(one(label, r))
        base = medians(runs[AS_MIGRATED])
        for label in labels:
            m = medians(runs[label])
            t.add(Row(f"floor, {label}", m["total"], "s",
                      None if label == AS_MIGRATED else base["total"],
                      "" if label == AS_MIGRATED else "as migrated, same run"))
            t.notes.append(f"{label}: " + ", ".join(f"{s} {m[s]:.2f} s" for s in STEPS[:-1])
                           + f"; status updates heap-only {min(heap_only[label]):.0%}"
                           f" to {max(heap_only[label]):.0%}")
        t.notes.append(f"{n:,} waiting subscriptions per item, one item per floor; median of "
                       f"{rounds} round(s), the variants' order rotating; secondary indexes: "
                       + ", ".join(sorted(secondary)))
    return t


async def _execute(env: Env, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database=env.pg_name, **PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
