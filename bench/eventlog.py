"""`eventlog`: the first page of `GET /v1/events?created_after=…` on a month's log, beside
the first page without a filter (not a bar of issue 5; outside `all`).

A receiver reconciles by listing the events created after its last sync. Until migration
0010 nothing indexed the events' age, and that first page walked the tenant's log from its
start: 300 ms per million events. The log here is N events of ~1 KB created evenly over 30
days (inserted directly); the pages are read through the events repository in this
process (what the route runs), each the median of 9 after one warm-up.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from bench import seed
from bench.env import Env
from bench.report import Row, Table
from stockbell.domain.accounts import Tenant
from stockbell.service.clock import utcnow
from stockbell.service.pagination import PageRequest
from stockbell.store.database import SqlDatabase

_DAYS = 30
_READS = 9


def _median_ms(env: Env, tenant: Tenant, filters: dict[str, Any]) -> float:
    async def timed(db: SqlDatabase) -> float:
        took = []
        for _ in range(_READS + 1):
            t0 = time.perf_counter()
            page = await db.read(lambda uow: uow.events.page(tenant, filters,
                                                             PageRequest(None, 50)))
            took.append(time.perf_counter() - t0)
            if len(page) != 50:
                raise RuntimeError(f"expected a full page for {filters}, got {len(page)}")
        return statistics.median(took[1:]) * 1000

    return env.in_process(timed)


def eventlog(db: str, quick: bool) -> Table:
    n = 100_000 if quick else 1_000_000
    t = Table(f"eventlog ({db}{', quick' if quick else ''})")
    with Env(db) as env:
        tenant = seed.tenant(env)
        started = time.monotonic()
        day = 86_400.0
        for part in range(10):  # in tenths, oldest first: fewer rows held at once
            seed.events(env, tenant.account_id, f"{part}_", n // 10, span_seconds=_DAYS * day / 10,
                        ending_seconds_ago=_DAYS * day * (9 - part) / 10)
        took = time.monotonic() - started
        env.settle()
        plain = _median_ms(env, tenant, {})
        for label, ago in (("an hour", timedelta(hours=1)), ("15 days", timedelta(days=15))):
            ms = _median_ms(env, tenant, {"created_after": utcnow() - ago})
            t.add(Row(f"first page (50), created_after {label} ago", ms, "ms", plain,
                      "first page, no filter"))
        t.notes.append(f"{n:,} events of ~1 KB over {_DAYS} days, one tenant, inserted "
                       f"directly ({took:.0f} s); medians of {_READS} reads after one warm-up")
    return t

