"""At-least-once, proven with real processes on PostgreSQL.

A real API process (`stockbell serve --no-dispatcher`), several `stockbell worker` processes
and a real HTTP receiver on loopback. Workers are SIGKILLed mid-flight and restarted while
thousands of deliveries flow; every event must still arrive, and a re-sent delivery must carry
the same `webhook-id` and the same signed body. A second test walks a receiver through 500s,
hangs past the timeout and connection resets before it recovers: nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from stockbell.domain.accounts import Mode
from stockbell.service import accounts as accounts_service
from stockbell.service.ports import UnitOfWork
from tests.support import free_port, postgres_database, run_db

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STOCKBELL = [sys.executable, "-m", "stockbell"]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# --- the receiver ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    answer: str  # what the receiver did: "200", "500", "hang", "reset"


class Receiver:
    """An aiohttp server on 127.0.0.1 in a thread of its own, recording every POST.

    `mode` decides the answer: "ok" (200 after a small random delay, so requests are in
    flight when workers die), "500", "hang" (sleep past the sender's timeout) or "reset"
    (abort the TCP connection with RST before answering)."""

    def __init__(self, delay: tuple[float, float] = (0.005, 0.04),
                 hang_seconds: float = 4.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.delay = delay
        self.hang_seconds = hang_seconds
        self.mode = "ok"
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.inflight = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        mode = self.mode
        answer = {"ok": "200"}.get(mode, mode)
        rec = Received(request.headers.get("webhook-id", ""),
                       {k.lower(): v for k, v in request.headers.items()}, body, answer)
        with self.lock:
            self.received.append(rec)
            self.inflight += 1
        try:
            if mode == "500":
                return web.Response(status=500, text="receiver is down")
            if mode == "hang":
                await asyncio.sleep(self.hang_seconds)
                return web.Response(status=500, text="too late")
            if mode == "reset":
                transport = request.transport
                assert transport is not None
                sock = transport.get_extra_info("socket")
                if sock is not None:  # RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
                raise web.HTTPInternalServerError()  # never reaches the sender
            await asyncio.sleep(random.uniform(*self.delay))
            return web.Response(text="ok")
        finally:
            with self.lock:
                self.inflight -= 1

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc
            self._started.set()
        finally:
            self._loop.close()

    def start(self) -> Receiver:
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"receiver did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def acked_ids(self) -> set[str]:
        return {r.webhook_id for r in self.snapshot() if r.answer == "200"}

    def wait_inflight(self, at_least: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.inflight >= at_least:
                    return True
            time.sleep(0.005)
        return False


# --- processes -------------------------------------------------------------------------------

class Processes:
    """Every process the test starts, each with its own log file; all reaped at the end."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.all: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.kills = 0

    def spawn(self, name: str, args: list[str],
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}-{len(self.all)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*STOCKBELL, *args], env={**self.env, **(extra_env or {})},
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.all.append((name, proc, log))
        return proc

    def start_worker(self, worker_env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = self.spawn("worker", ["worker"], worker_env)
        self.workers.append(proc)
        return proc

    def wait_workers_ready(self, timeout: float = 60) -> None:
        """Until every live worker has its dispatcher running (and so its signal handlers)."""
        logs = {proc: log for _, proc, log in self.all}

        def ready() -> bool:
            for proc in self.workers:
                assert proc.poll() is None, f"worker {proc.pid} exited:\n{self.log_tail()}"
                if b"dispatcher.started" not in logs[proc].read_bytes():
                    return False
            return True

        wait_until(ready, timeout, "the workers to start", self.log_tail)

    def sigkill(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.poll() is None, f"worker {proc.pid} died by itself:\n{self.log_tail()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.workers.remove(proc)
        self.kills += 1

    def stop_workers_gracefully(self) -> list[int | None]:
        self.wait_workers_ready()
        for proc in self.workers:
            assert proc.poll() is None, f"worker {proc.pid} died by itself:\n{self.log_tail()}"
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.workers:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def cleanup(self) -> None:
        for _, proc, _ in self.all:
            if proc.poll() is None:
                proc.kill()
        for _, proc, _ in self.all:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - last resort
                proc.kill()
                proc.wait()

    def log_text(self, name: str = "worker") -> str:
        return "\n".join(log.read_text(errors="replace") for n, _, log in self.all
                         if n == name and log.exists())

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for _, _, log in self.all if log.exists())


def base_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKBELL_")}
    env.update({
        "STOCKBELL_DATABASE_URL": db_url,
        "STOCKBELL_WEBHOOK_ALLOW": "127.0.0.0/8",
        "STOCKBELL_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 f"{on_timeout()}")
        time.sleep(0.2)


@dataclass
class Api:
    """The real API process and a client authenticated with a key made by the real CLI."""

    base_url: str
    client: httpx.Client
    procs: Processes

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        r = self.client.request(method, path, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def walk(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = self.ok("GET", path, params={**params, "limit": 200,
                                                **({"cursor": cursor} if cursor else {})})
            out += body["data"]
            cursor = body["next_cursor"]
            if cursor is None:
                return out


@contextmanager
def stockbell_stack(tmp_path: Path) -> Iterator[Api]:
    """A fresh PostgreSQL database, `stockbell serve --no-dispatcher`, an account and a key."""
    with postgres_database() as db_url:
        procs = Processes(tmp_path, base_env(db_url))
        client: httpx.Client | None = None
        try:
            port = free_port()
            server = procs.spawn("api", ["serve", "--no-dispatcher", "--host", "127.0.0.1",
                                         "--port", str(port)],
                                 {"STOCKBELL_LOG_LEVEL": "warning"})

            async def make_key(uow: UnitOfWork) -> accounts_service.IssuedKey:
                await accounts_service.create_account(uow, "shop")
                return await accounts_service.create_key(uow, "shop", Mode.TEST, False)

            key = run_db(db_url, make_key)  # while the API process starts
            base_url = f"http://127.0.0.1:{port}"
            client = httpx.Client(base_url=base_url, timeout=30,
                                  headers={"Authorization": f"Bearer {key.client_secret}"})

            def up() -> bool:
                assert server.poll() is None, f"API process exited:\n{procs.log_tail()}"
                try:
                    return httpx.get(f"{base_url}/openapi.json", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 30, "the API process")
            yield Api(base_url, client, procs)
        finally:
            if client is not None:
                client.close()
            procs.cleanup()


def catalog(api: Api, skus: int, locations: int) -> list[tuple[str, str]]:
    for i in range(skus):
        api.ok("PUT", f"/v1/items/SKU-{i}", json={"title": f"Item {i}"})
    for j in range(locations):
        api.ok("PUT", f"/v1/locations/L{j}", json={})
    return [(f"SKU-{i}", f"L{j}") for i in range(skus) for j in range(locations)]


def produce(api: Api, pairs: list[tuple[str, str]], batch: int) -> int:
    """One batch of counts, one per (sku, location), each newer than the last: all apply."""
    changes = [{"type": "count", "sku_code": sku, "location": loc, "quantity": batch + 1,
                "occurred_at": (T0 + timedelta(seconds=batch)).isoformat()}
               for sku, loc in pairs]
    body = api.ok("POST", "/v1/inventory/changes", json={"changes": changes})
    assert body["applied"] == len(pairs), body
    return int(body["applied"])


def check_received(received: list[Received], events: list[dict[str, Any]],
                   secret: str) -> None:
    """Every request is signed; a webhook-id always comes with one identical body (the
    event's), so duplicates are recognisable and harmless."""
    by_id = {e["id"]: e for e in events}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    hook = Webhook(secret)
    for r in received:
        assert r.webhook_id in by_id, f"received an unknown webhook-id {r.webhook_id}"
        payload = hook.verify(r.body, r.headers)
        event = by_id[r.webhook_id]
        assert payload["id"] == r.webhook_id
        assert payload["type"] == event["type"]
        assert payload["data"] == event["data"]
        assert payload["sequence"] == event["sequence"]
        bodies[r.webhook_id].add(r.body)
    multi = {k: v for k, v in bodies.items() if len(v) != 1}
    assert not multi, f"re-sent deliveries changed their body: {list(multi)[:5]}"


# --- the tests -------------------------------------------------------------------------------

WORKERS = 3
BATCHES = 22  # x 100 (sku, location) pairs = 2,200 events and deliveries
PACE = 0.4  # seconds between batches
KILL_PLAN = ["one", "all", "one"]  # 1 + 3 + 1 = 5 SIGKILLs, each followed by a restart


def test_sigkilled_workers_lose_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    receiver = Receiver().start()
    try:
        with stockbell_stack(tmp_path) as api:
            procs = api.procs
            worker_env = {
                "STOCKBELL_DELIVERY_LEASE_SECONDS": "2",
                "STOCKBELL_RETRY_SCHEDULE": "0,0.5,0.5,1,1,2,2,2,2,2",
                "STOCKBELL_DELIVERY_BATCH": "50",
                "STOCKBELL_DELIVERY_POLL_SECONDS": "0.5",
            }
            for _ in range(WORKERS):
                procs.start_worker(worker_env)  # they boot while the catalog is made
            ep = api.ok("POST", "/v1/webhook-endpoints", expect=201,
                        json={"url": receiver.url, "description": "at-least-once"})
            pairs = catalog(api, skus=20, locations=5)

            produced = 0
            failure: list[BaseException] = []

            def producer() -> None:
                nonlocal produced
                try:
                    for b in range(BATCHES):
                        produced += produce(api, pairs, b)
                        # Paced, so production (and delivery) spans the whole kill plan: a
                        # batch takes milliseconds to apply now.
                        time.sleep(PACE)
                except BaseException as exc:
                    failure.append(exc)

            setup_done = time.monotonic()
            thread = threading.Thread(target=producer, name="producer")
            thread.start()
            mid_flight: list[str] = []  # the kill rounds that hit requests in flight
            try:
                for plan in KILL_PLAN:
                    procs.wait_workers_ready()  # kill workers that work, not ones booting
                    time.sleep(random.uniform(0.5, 1.5))
                    # Kill only while requests are in flight at the receiver: the killed
                    # worker(s) never learn the answer, so their leases must run out.
                    if receiver.wait_inflight(at_least=3, timeout=10):
                        mid_flight.append(plan)
                    victims = list(procs.workers) if plan == "all" else [
                        random.choice(procs.workers)]
                    for v in victims:
                        procs.sigkill(v)
                    time.sleep(random.uniform(0.1, 0.4))
                    for _ in victims:
                        procs.start_worker(worker_env)
            finally:
                thread.join(timeout=120)
            assert not failure, f"producer failed: {failure[0]!r}"
            produced_at = time.monotonic()
            assert produced == BATCHES * len(pairs) >= 2000
            assert procs.kills >= 3
            assert len(mid_flight) >= 2, "kills did not land while deliveries were in flight"
            assert "all" in mid_flight, "no worker-wide kill landed while requests were in flight"

            events = api.walk("/v1/events")
            event_ids = {e["id"] for e in events}
            assert len(event_ids) == len(events) == produced
            assert {e["type"] for e in events} == {"inventory.count.updated"}

            def pending(status: str) -> list[Any]:
                return list(api.ok("GET", f"/v1/webhook-endpoints/{ep['id']}/deliveries",
                                   params={"status": status, "limit": 5})["data"])

            def all_delivered() -> bool:
                return event_ids <= receiver.acked_ids() and not pending("pending")

            def progress() -> str:
                missing = event_ids - receiver.acked_ids()
                return (f"{len(missing)} events never arrived, e.g. {sorted(missing)[:5]}; "
                        f"pending {pending('pending')}\n{procs.log_tail()}")

            wait_until(all_delivered, 120, "every event to arrive", progress)
            assert not pending("failed"), "a delivery went dead although the receiver is up"
            drained_at = time.monotonic()

            codes = procs.stop_workers_gracefully()
            assert codes == [0] * WORKERS, f"workers did not stop cleanly: {codes}"
            logs = procs.log_text()
            for bad in ("dispatcher.crashed", "delivery.task_failed", "record_failed"):
                assert bad not in logs, f"{bad} in worker logs:\n{procs.log_tail()}"

            received = receiver.snapshot()
            check_received(received, events, ep["secret"])
            per_id = Counter(r.webhook_id for r in received)
            assert set(per_id) == event_ids
            duplicates = len(received) - len(per_id)
            # Killing every worker while requests were in flight leaves requests the receiver
            # saw but no worker recorded: they must have been sent again.
            assert duplicates >= 1

            deliveries = api.walk(f"/v1/webhook-endpoints/{ep['id']}/deliveries")
            assert len(deliveries) == produced
            assert {d["status"] for d in deliveries} == {"succeeded"}
            assert {d["event_id"] for d in deliveries} == event_ids
            recorded = sum(d["attempts"] for d in deliveries)
            print(f"\nat-least-once: {produced} events, {len(received)} requests, "
                  f"{duplicates} duplicates ({len([n for n in per_id.values() if n > 1])} ids "
                  f"sent more than once, max {max(per_id.values())}), {recorded} attempts "
                  f"recorded, {procs.kills} SIGKILLs ({len(mid_flight)} kill rounds with "
                  f"requests in flight); setup {setup_done - started:.1f}s, producing and "
                  f"killing {produced_at - setup_done:.1f}s, draining "
                  f"{drained_at - produced_at:.1f}s, total {time.monotonic() - started:.1f}s")
    finally:
        receiver.stop()


def test_receiver_500_hang_reset_then_recovery_loses_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    receiver = Receiver(hang_seconds=4.0).start()
    try:
        with stockbell_stack(tmp_path) as api:
            procs = api.procs
            ep = api.ok("POST", "/v1/webhook-endpoints", expect=201,
                        json={"url": receiver.url, "event_types": ["inventory.count.updated"]})
            pairs = catalog(api, skus=10, locations=5)
            worker_env = {
                "STOCKBELL_DELIVERY_LEASE_SECONDS": "5",
                "STOCKBELL_RETRY_SCHEDULE": ",".join(["0"] + ["0.3"] * 5 + ["0.5"] * 30),
                "STOCKBELL_DELIVERY_POLL_SECONDS": "0.2",
                "STOCKBELL_CONNECT_TIMEOUT_SECONDS": "1",
                "STOCKBELL_READ_TIMEOUT_SECONDS": "1",
                "STOCKBELL_TOTAL_TIMEOUT_SECONDS": "1.5",
            }
            receiver.mode = "500"
            for _ in range(2):
                procs.start_worker(worker_env)
            produced = sum(produce(api, pairs, b) for b in range(4))  # 200 events

            def answered(answer: str, at_least: int) -> Callable[[], bool]:
                return lambda: len({r.webhook_id for r in receiver.snapshot()
                                    if r.answer == answer}) >= at_least

            wait_until(answered("500", produced), 30, "every delivery to see a 500")
            receiver.mode = "hang"
            wait_until(answered("hang", 20), 30, "hung requests")
            procs.sigkill(procs.workers[0])  # a worker dies while its requests hang
            procs.start_worker(worker_env)
            time.sleep(2)
            receiver.mode = "reset"
            wait_until(answered("reset", 50), 30, "reset connections")
            receiver.mode = "ok"

            events = api.walk("/v1/events", type="inventory.count.updated")
            event_ids = {e["id"] for e in events}
            assert len(event_ids) == produced

            def done() -> bool:
                return event_ids <= receiver.acked_ids() and not api.ok(
                    "GET", f"/v1/webhook-endpoints/{ep['id']}/deliveries",
                    params={"status": "pending", "limit": 1})["data"]

            wait_until(done, 90, "every event to arrive after recovery",
                       lambda: f"{len(event_ids - receiver.acked_ids())} missing\n"
                               f"{procs.log_tail()}")
            codes = procs.stop_workers_gracefully()
            assert codes == [0, 0], f"workers did not stop cleanly: {codes}"

            received = receiver.snapshot()
            check_received(received, events, ep["secret"])
            deliveries = api.walk(f"/v1/webhook-endpoints/{ep['id']}/deliveries")
            assert len(deliveries) == produced
            assert {d["status"] for d in deliveries} == {"succeeded"}, Counter(
                d["status"] for d in deliveries)
            attempts = [a for d in deliveries for a in d["attempt_log"]]
            assert all(d["attempt_log"][-1]["status_code"] == 200 for d in deliveries)
            assert all(d["attempts"] >= 2 for d in deliveries)
            codes_seen = Counter(a["status_code"] for a in attempts)
            errors = [a["error"] or "" for a in attempts if a["status_code"] is None]
            assert codes_seen[500] >= produced
            assert any(e == "timeout" for e in errors), Counter(errors)
            assert any(e and e != "timeout" for e in errors), Counter(errors)  # resets

            ep_now = api.ok("GET", f"/v1/webhook-endpoints/{ep['id']}")
            assert ep_now["enabled"]
            assert ep_now["failing_since"] is None
            kinds = Counter(e["type"] for e in api.walk("/v1/events"))
            assert kinds["endpoint.recovered"] >= 1
            assert kinds["endpoint.disabled"] == 0
            print(f"\nrecovery: {produced} events, {len(received)} requests "
                  f"({dict(Counter(r.answer for r in received))}), attempts recorded "
                  f"{dict(codes_seen)}, errors {dict(Counter(errors))}, "
                  f"{time.monotonic() - started:.1f}s")
    finally:
        receiver.stop()
