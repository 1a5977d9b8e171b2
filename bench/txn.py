"""`txn`: what one group-commit transaction of inventory changes costs, in one process.

Concurrent single-change requests share a transaction (`service/coalesce.py`), so a change's
cost is the transaction's fixed cost spread over its group plus a marginal cost per change.
This measures both without HTTP: `SqlDatabase.run(apply_grouped)` one transaction after
another, with groups of 1, 8 and 32 one-change requests (counts on 100 items x 4 locations,
as in `ingest`), and prints this process's CPU per transaction and per change, split into
user and system time. On PostgreSQL the server's CPU is counted apart. Bar 1's explanation in
docs/performance-history.md rests on these figures.
"""

from __future__ import annotations

import resource
import time
import uuid
from typing import Any

import uvloop

from bench.env import Env, postgres_cpu_seconds
from bench.report import Row, Table

GROUPS = (1, 8, 32)


async def _measure(url: str, rounds: int, per_round: int) -> dict[int, dict[str, float]]:
    from stockbell.domain.accounts import Mode, Tenant
    from stockbell.domain.catalog import Item, Location
    from stockbell.service import accounts, catalog
    from stockbell.service.inventory import ChangeInput, apply_grouped
    from stockbell.service.ports import UnitOfWork
    from stockbell.store.database import SqlDatabase

    db = SqlDatabase(url)
    try:
        async def setup(uow: UnitOfWork) -> Tenant:
            tenant = Tenant(await accounts.create_account(uow, f"txn-{uuid.uuid4().hex[:8]}"),
                            Mode.TEST)
            for k in range(100):
                await catalog.upsert_item(uow, tenant, Item(sku_code=f"SKU-{k:06d}"))
            for n in range(4):
                await catalog.upsert_location(uow, tenant, Location(code=f"LOC-{n:03d}"))
            return tenant

        tenant = await db.run(setup)
        i = 0

        def group(size: int) -> list[list[ChangeInput]]:
            nonlocal i
            out = []
            for _ in range(size):
                out.append([ChangeInput("count", f"SKU-{i % 100:06d}",
                                        f"LOC-{(i // 100) % 4:03d}", str(i % 50), "IN_STOCK")])
                i += 1
            return out

        async def one(size: int) -> None:
            requests = group(size)
            await db.run(lambda uow: apply_grouped(uow, tenant, requests))

        def server() -> float:
            return 0.0 if db.sqlite else postgres_cpu_seconds()

        results: dict[int, dict[str, float]] = {}
        for size in GROUPS:
            for _ in range(max(5, per_round // 10)):  # warm-up
                await one(size)
            best: dict[str, float] | None = None
            for _ in range(rounds):  # best round: the machine's noise only ever adds
                r0, p0, w0 = resource.getrusage(resource.RUSAGE_SELF), server(), time.monotonic()
                for _ in range(per_round):
                    await one(size)
                r1, p1, w1 = resource.getrusage(resource.RUSAGE_SELF), server(), time.monotonic()
                got = {"user": (r1.ru_utime - r0.ru_utime) / per_round * 1e6,
                       "sys": (r1.ru_stime - r0.ru_stime) / per_round * 1e6,
                       "server": (p1 - p0) / per_round * 1e6,
                       "wall": (w1 - w0) / per_round * 1e6}
                if best is None or got["user"] + got["sys"] < best["user"] + best["sys"]:
                    best = got
            assert best is not None
            results[size] = best
        return results
    finally:
        await db.dispose()


def txn(db: str, quick: bool) -> Table:
    rounds, per_round = (2, 40) if quick else (3, 300)
    t = Table(f"txn ({db}{', quick' if quick else ''})")
    with Env(db) as env:  # a fresh, migrated database (and a key this scenario does not use)
        env.cli("migrate")
        got = uvloop.run(_measure(env.url, rounds, per_round))  # the loop serve runs on
    one = got[1]["user"] + got[1]["sys"]
    for size in GROUPS:
        g = got[size]
        cpu = g["user"] + g["sys"]
        extra: dict[str, Any] = {}
        if size > 1:
            extra = {"baseline": one, "baseline_label": "a change in a transaction of its own"}
        t.add(Row(f"group of {size}: this process's CPU per change", cpu / size, "us", **extra))
        server = f", PostgreSQL's processes {g['server']:.0f} us" if db == "postgres" else ""
        t.notes.append(f"group of {size}: per transaction {cpu:.0f} us of CPU (user "
                       f"{g['user']:.0f}, system {g['sys']:.0f}){server}; wall {g['wall']:.0f} us")
    marginal = (got[32]["user"] + got[32]["sys"] - one) / 31
    t.notes.append(f"fixed cost ~ the one-change transaction, {one:.0f} us; marginal cost per "
                   f"further change ~ {marginal:.0f} us (from the groups of 1 and 32)")
    t.notes.append(f"best of {rounds} rounds of {per_round} transactions per group size, one "
                   "after another; SqlDatabase.run(apply_grouped) in this process, no HTTP; "
                   "a fresh database with 100 items and 4 locations; settings at their "
                   "defaults (SQLite synchronous=FULL)")
    return t
