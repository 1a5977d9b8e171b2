"""Scenario 6, "a peer": Stockbell's fan-out against a Celery task doing the same job.

Both sides deliver N back_in_stock webhooks (100,000; quick 10,000) to the same receiver
process, one after the other, never at the same time (each gets the machine to itself):

1. Stockbell, as in `fanout`: one count that fires N waiting subscriptions, delivered by
   `stockbell worker` (PostgreSQL) or serve's in-process dispatcher (SQLite). Latency of a
   delivery = its arrival at the receiver - the moment the restock's 200 was read, because
   that 200 is when the N events are durably accepted.
2. The peer (`bench/peer.py`): the harness, playing the shop's application, renders and signs
   each of the N bodies (a copy of the body Stockbell just sent, with a unique event id) and
   calls `send_webhook.delay(...)` for each, while a `celery worker` subprocess consumes them.
   Latency of a delivery = its arrival - the moment its `delay()` returned (when that one
   message is durably accepted by Redis).

Throughput on both sides is (received - 1) / (last - first arrival) at the receiver, as in
`fanout`. The receiver keeps (arrival time, webhook-id) per request to match arrivals to
their enqueue times (the webhook-id is the event id on both sides).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.env import ROOT, Env, Proc, free_port, vm_hwm_mib
from bench.report import Row, Table

CONCURRENCY = int(os.environ.get("BENCH_PEER_CONCURRENCY", "8"))  # see bench/peer.py


@dataclass
class Side:
    """What one side did: when it started, when each delivery was accepted, what arrived."""

    label: str
    started: float  # wall clock: restock request sent / first delay() called
    accepted: float = 0.0  # wall clock: restock 200 read / last delay() returned
    stats: dict[str, Any] = field(default_factory=dict)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    duplicates: int = 0
    strays: list[str] = field(default_factory=list)  # arrivals with an id this side never sent

    def match(self, accepted_at: dict[str, float] | float) -> None:
        """Latency per unique webhook-id (first arrival); later arrivals count as duplicates."""
        seen: set[str] = set()
        for arrived, msg_id in self.arrivals:
            if msg_id in seen:
                self.duplicates += 1
                continue
            seen.add(msg_id)
            t0 = accepted_at if isinstance(accepted_at, float) else accepted_at.get(msg_id)
            if t0 is not None:
                self.latencies_ms.append((arrived - t0) * 1000)
            else:
                self.strays.append(msg_id)
        self.latencies_ms.sort()

    def pct(self, p: float) -> float | None:
        xs = self.latencies_ms
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None

    @property
    def last_arrival(self) -> float | None:
        return max((a for a, _ in self.arrivals), default=None)


# --- processes ---------------------------------------------------------------------------------

def _start_receiver(env: Env) -> Proc:
    """Env.start_receiver, plus --arrivals (per-request arrival time and webhook-id)."""
    port = free_port()
    proc = env._spawn("receiver", [sys.executable, "-m", "bench.receiver", "--port", str(port),
                                   "--arrivals"], PYTHONPATH=str(ROOT))
    env.receiver_base = f"http://127.0.0.1:{port}"
    env.receiver_url = env.receiver_base + "/hook"
    env._wait_http(env.receiver_base + "/stats", proc)
    return proc


def _spawn_celery(env: Env) -> Proc:
    """The peer's worker as a real subprocess in its own session (process group, so that
    `_stop_celery` can reach the pool children too). Start-up is waited for separately, inside
    the caller's try/finally."""
    from bench import peer as shop

    shop.broker_db().delete(shop.READY_KEY)
    return env._spawn("celery", [
        sys.executable, "-m", "celery", "-A", "bench.peer", "worker", "--pool", "prefork",
        "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING", "--without-gossip",
        "--without-mingle", "--without-heartbeat", "--hostname", f"peer-{os.getpid()}@%h",
    ], PYTHONPATH=str(ROOT))


def _wait_ready(proc: Proc) -> None:
    """Until the worker's `worker_ready` handler sets the flag in Redis (consumer running)."""
    from bench import peer as shop

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"celery worker exited: {proc.log.read_text()[-3000:]}")
        if shop.broker_db().get(shop.READY_KEY):
            return
        time.sleep(0.1)
    raise RuntimeError(f"celery worker not ready in 30 s: {proc.log.read_text()[-3000:]}")


def _group_pids(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (the celery main process and its pool)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            pids.append(int(stat.parent.name))
    return pids


def _group_rss_mib(pgid: int) -> tuple[int, float, float]:
    """(processes, sum of VmHWM, largest VmHWM) over the group, in MiB."""
    hwms = [h for h in (vm_hwm_mib(p) for p in _group_pids(pgid)) if h is not None]
    return len(hwms), sum(hwms), max(hwms, default=0.0)


def _stop_celery(env: Env, proc: Proc) -> None:
    """Warm shutdown (SIGTERM to the main process, which stops its pool), then SIGKILL to
    whatever is left of the process group, pool children orphaned by a crash included."""
    try:
        env.stop_proc(proc)  # SIGTERM, 10 s, then SIGKILL of the main process
    finally:
        deadline = time.monotonic() + 10
        while _group_pids(proc.pid) and time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        if _group_pids(proc.pid):
            print(f"warning: celery processes left: {_group_pids(proc.pid)}", file=sys.stderr)


# --- the two sides -----------------------------------------------------------------------------

async def _arrivals(env: Env) -> list[tuple[float, str]]:
    async with aiohttp.ClientSession() as s, s.get(env.receiver_base + "/arrivals") as r:
        return [(float(t), str(i)) for t, i in orjson.loads(await r.read())]


async def _stockbell(env: Env, sku: str, n: int, cap: float) -> Side:
    from bench.scenarios import _count, _post_ok, _wait_received

    await env.receiver_reset()
    async with env.session(limit=1) as s:
        side = Side("Stockbell", time.time())
        data = await _post_ok(s, "/v1/inventory/changes", {"changes": [_count(sku, "LOC-000", 5)]})
        side.accepted = time.time()
    fired = orjson.loads(data)["notifications"]
    if fired != n:
        raise RuntimeError(f"expected {n} notifications, got {fired}")
    side.stats = await _wait_received(env, n, cap)
    side.arrivals = await _arrivals(env)
    side.match(side.accepted)
    return side


def _fallback_body() -> str:
    """Stockbell's native back_in_stock body as 0.1.0 sends it (1,161 bytes), used only if
    Stockbell delivered nothing to copy in this run."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    sub, item = "sub_" + "0" * 24, "item_" + "0" * 24
    nulls = dict.fromkeys
    doc = {"id": "evt_" + "0" * 24, "type": "back_in_stock", "timestamp": now,
           "occurred_at": now, "sequence": 2,
           "data": {"subscription_id": sub,
                    "subscription": {"id": sub, "status": "notified", "sku_code": "FAN-000000",
                                     "scope": {"type": "all", "code": None}, "threshold": "1",
                                     "customer": {"email": "c0@example.com",
                                                  **nulls(["external_id", "first_name",
                                                           "last_name"]),
                                                  "attributes": {}},
                                     "auto_resubscribe": False,
                                     **nulls(["expires_at", "reference", "reference_origin"]),
                                     "metadata": {}, "notify_count": 1, "notified_at": now,
                                     "created_at": now, "updated_at": now},
                    "item": {"id": item, "sku_code": "FAN-000000", "title": "FAN-000000",
                             **nulls(["variant_title", "upc", "product_id", "variant_id",
                                      "size", "width", "part_number", "generic_part_number"]),
                             "pricing": [], "attributes": {}, "created_at": now,
                             "updated_at": now},
                    "scope": {"type": "all", "code": None}, "availability": "5",
                    "previous_availability": "0", "threshold": "1"}}
    return orjson.dumps(doc).decode()


class Renderer:
    """The shop's side of the peer: each event gets its own id, body and Standard Webhooks
    signature (as Stockbell's worker renders and signs each delivery)."""

    def __init__(self, template: str) -> None:
        from standardwebhooks.webhooks import Webhook

        self.template = template
        self.template_id = str(orjson.loads(template)["id"])
        self.prefix = self.template_id[:-10]
        self.webhook = Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        self.headers = {"content-type": "application/json"}

    def __call__(self, i: int) -> tuple[str, str, dict[str, str]]:
        msg_id = f"{self.prefix}{i:010d}"  # same length as Stockbell's event ids
        body = self.template.replace(self.template_id, msg_id, 1)
        now = datetime.now(UTC)
        return msg_id, body, {**self.headers, "webhook-id": msg_id,
                              "webhook-timestamp": str(int(now.timestamp())),
                              "webhook-signature": self.webhook.sign(msg_id, now, body)}


def _celery_peer(env: Env, template: str, n: int, cap: float) -> tuple[Side, str]:
    """Enqueue n webhooks with `send_webhook.delay` while the celery worker consumes them."""
    import celery

    from bench import peer as shop
    from bench.scenarios import _wait_received

    render = Renderer(template)
    broker = shop.broker_db()
    broker.flushdb()
    proc: Proc | None = None
    try:
        proc = _spawn_celery(env)
        _wait_ready(proc)
        # one message end to end first: fails fast if the path is broken, opens the producer's
        # broker connection; then a clean slate at the receiver
        asyncio.run(env.receiver_reset())  # it still counts Stockbell's deliveries
        _, body, headers = render(n)
        shop.send_webhook.delay(env.receiver_url, body, headers)
        st = asyncio.run(_wait_received(env, 1, 20.0))
        if st["count"] < 1:
            raise RuntimeError(f"the peer's first webhook never arrived: "
                               f"{proc.log.read_text()[-3000:]}")
        asyncio.run(env.receiver_reset())
        enqueued: dict[str, float] = {}
        side = Side("Celery peer", time.time())
        for i in range(n):
            msg_id, body, headers = render(i)
            shop.send_webhook.delay(env.receiver_url, body, headers)
            enqueued[msg_id] = time.time()
        side.accepted = time.time()
        backlog = broker.info("memory")["used_memory_human"]
        side.stats = asyncio.run(_wait_received(env, n, cap))
        side.arrivals = asyncio.run(_arrivals(env))
        side.match(enqueued)
        count, total, largest = _group_rss_mib(proc.pid)
        about = (f"peer: Celery {celery.__version__} on {shop.BROKER_URL} (flushed before and "
                 f"after), prefork pool, concurrency {CONCURRENCY}, acks_late, autoretry with "
                 "backoff (max 8 retries), one requests.Session per process, no result "
                 "backend; the harness renders, signs and enqueues each event in one loop "
                 f"while the worker consumes ({n / (side.accepted - side.started):,.0f} "
                 f"delay() calls/s); {count} celery worker processes, peak RSS (VmHWM) "
                 f"{total:.0f} MiB in all, {largest:.0f} MiB the largest; Redis used {backlog} "
                 "when the last delay() returned")
        return side, about
    finally:
        try:
            if proc is not None:
                _stop_celery(env, proc)
        finally:
            broker.flushdb()
            broker.close()


# --- the scenario ------------------------------------------------------------------------------

def peer(db: str, quick: bool) -> Table:
    # imported here: bench.scenarios imports this module to register the scenario
    from bench import seed
    from bench.scenarios import UNIT, _memory_rows, _rate, load_note

    n = 10_000 if quick else 100_000
    cap = 25.0 if quick else 300.0  # seconds to wait for the last delivery (30 s stall ends it)
    t = Table(f"peer ({db}{', quick' if quick else ''})")
    t.notes.append(load_note())
    pg = db == "postgres"
    with Env(db) as env:
        _start_receiver(env)
        env.start_serve(dispatcher=not pg)
        if pg:
            env.start_worker()

        async def setup() -> str:
            async with env.session(limit=4) as s:
                skus, _ = await env.catalog(s, 1, 1, prefix="FAN")
                await env.call(s, "POST", "/v1/webhook-endpoints",
                               {"url": env.receiver_url, "event_types": ["back_in_stock"]})
                return skus[0]

        sku = asyncio.run(setup())
        account_id, item_ids = seed.ids(env, [sku])
        seeded = seed.subscriptions(env, account_id, [item_ids[sku]], [UNIT], n)
        ours = asyncio.run(_stockbell(env, sku, n, cap))
        env.note_peaks()
        for p in [*env.workers, env.serve]:  # the peer gets the machine to itself
            if p is not None:
                env.stop_proc(p)
        template = ours.stats.get("sample_body") or _fallback_body()
        theirs, about_peer = _celery_peer(env, template, n, cap)

        complete = all(s.stats.get("count", 0) >= n for s in (ours, theirs))
        who = "1 stockbell worker" if pg else "serve's in-process dispatcher"
        peer_label = f"Celery peer, prefork {CONCURRENCY}"
        rate = t.add(Row(f"deliveries/s at the receiver, {who}", _rate(ours.stats), "/s",
                         _rate(theirs.stats), peer_label, bar="ratio >= 3"),
                     lo=3.0, on_ratio=True)
        t.add(Row("latency p50: accepted -> received", ours.pct(0.50), "ms",
                  theirs.pct(0.50), peer_label))
        p99 = t.add(Row("latency p99: accepted -> received", ours.pct(0.99), "ms",
                        theirs.pct(0.99), peer_label, bar="ratio <= 0.2"),
                    hi=0.2, on_ratio=True)
        t.add(Row("latency max: accepted -> received", ours.pct(1.0), "ms",
                  theirs.pct(1.0), peer_label))
        t.add(Row(f"{n:,} events accepted (restock request / all delay() calls)",
                  ours.accepted - ours.started, "s", theirs.accepted - theirs.started,
                  peer_label))
        ends = [s.last_arrival for s in (ours, theirs)]
        t.add(Row(f"start -> last of {n:,} received",
                  None if ends[0] is None else ends[0] - ours.started, "s",
                  None if ends[1] is None else ends[1] - theirs.started, peer_label))
        if not complete:
            rate.ok = p99.ok = False  # a side that lost deliveries has no comparable figures
        for s in (ours, theirs):
            t.notes.append(f"{s.label}: {s.stats.get('count', 0):,} of {n:,} received "
                           f"({s.duplicates} duplicates, {len(s.latencies_ms):,} matched to "
                           f"their acceptance, {len(s.strays)} with an unknown id"
                           f"{' ' + repr(s.strays[:3]) if s.strays else ''}; waited at most "
                           f"{cap:.0f} s after acceptance)")
        t.notes.append("throughput = (received - 1) / (last - first arrival) at the receiver; "
                       "latency: Stockbell = arrival - the moment the restock's 200 was read; "
                       "peer = arrival - the moment that event's delay() returned (same clock)")
        t.notes.append(about_peer)
        t.notes.append(f"body: Stockbell's own back_in_stock body ({len(template.encode()):,} "
                       "bytes) with a unique event id per peer message"
                       + ("" if ours.stats.get("sample_body") else " (FALLBACK: Stockbell sent "
                                                                   "nothing to copy)"))
        t.notes.append(f"Stockbell: {n:,} subscriptions inserted directly ({seeded:.1f} s), one "
                       "endpoint on the receiver, default delivery settings (8 in flight per "
                       "endpoint and process); "
                       + ("serve --no-dispatcher + 1 stockbell worker, both" if pg else
                          "serve with its in-process dispatcher,")
                       + " stopped before the peer starts")
        _memory_rows(t, env)
    return t
