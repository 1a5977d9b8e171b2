"""`replay`: an endpoint's replay of a large log, its time per event and the memory it takes
(not a bar of issue 5; outside `all`).

`POST /v1/webhook-endpoints/{id}/replay` queues a delivery for every event since a time.
Until the twenty-third session it read the whole log since then, with every event's data,
before queueing: 200,000 events grew this scenario's process by 238 MiB on SQLite and
270 MiB on PostgreSQL (1.2-1.4 KB per event; 3 and 2 MiB since), so a day of a busy
shop's log (a million events) could take `serve` or a worker past a gigabyte. It now
reads 5,000 events at a time, and their data only for formats that filter on it. The
replay runs in this process (the service call the route makes), so the growth of its RSS
is read directly (VmHWM reset just before, minus VmRSS then); the baseline is the same
replay of N / 10 events in the same run.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from bench import seed
from bench.env import Env, vm_hwm_mib, vm_rss_mib
from bench.report import Row, Table
from stockbell.domain.accounts import Tenant
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.store.database import SqlDatabase


def _reset_peak() -> None:
    """Start this process's VmHWM afresh from its current RSS (Linux: clear_refs "5"), so
    the seeding's own peak does not hide the replay's."""
    Path("/proc/self/clear_refs").write_text("5")


def _replay(env: Env, tenant: Tenant, since_seconds: float) -> tuple[float, int, float]:
    """Seconds, deliveries queued and the growth of this process's peak RSS (MiB), for a
    replay to a new native endpoint."""
    async def timed(db: SqlDatabase) -> tuple[float, int, float]:
        ep = await db.run(lambda uow: webhooks_service.create_endpoint(
            uow, tenant, "https://receiver.example/hook", None, None, False, "native"))
        since = utcnow() - timedelta(seconds=since_seconds)
        before = vm_rss_mib(os.getpid()) or 0.0
        _reset_peak()
        t0 = time.perf_counter()
        n = await db.run(lambda uow: webhooks_service.replay(uow, tenant, ep.id, since))
        took = time.perf_counter() - t0
        return took, n, (vm_hwm_mib(os.getpid()) or 0.0) - before

    return env.in_process(timed)


def replay(db: str, quick: bool) -> Table:
    n = 20_000 if quick else 200_000
    t = Table(f"replay ({db}{', quick' if quick else ''})")
    with Env(db) as env:
        tenant = seed.tenant(env)
        per: dict[int, float] = {}
        total = 0
        for tag, size in (("a", n // 10), ("b", n - n // 10)):
            seed.events(env, tenant.account_id, tag, size)
            total += size
            env.settle()
            took, queued, grew = _replay(env, tenant, 3600)
            if queued != total:
                raise RuntimeError(f"replay queued {queued:,} deliveries, expected {total:,}")
            per[total] = took / total * 1e6
            t.notes.append(f"{total:,} events: replayed in {took:.2f} s ({total / took:,.0f} "
                           f"events/s); this process's peak RSS grew {grew:.0f} MiB")
        t.add(Row(f"replay, µs per event, {n:,} events", per[n], "µs", per[n // 10],
                  f"the same with {n // 10:,}"))
        t.notes.append("each replay to a new (disabled) native endpoint, in one transaction, "
                       "in this process; events of ~1 KB inserted directly")
    return t
