"""The dispatcher against real receivers on loopback: signing, wake-up, concurrency limits,
retries, endpoint health, timeouts and connection resets, and the delivery metrics.

Every server here runs on its own database (of the parametrized backend), so no other test
server's dispatcher can claim these deliveries. The helpers (Receiver, own_server, ...) are
shared with test_webhooks_api.py and test_webhooks_doc.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import Server, Tenant, own_database

T = TypeVar("T")
LOOPBACK = "127.0.0.0/8"
FAST = "0,0.2,0.2,0.2"  # 4 attempts, 0.2 s apart (plus up to 10 % jitter)


# --- a real HTTP receiver on 127.0.0.1, in its own thread and event loop -------------------

@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


HANG = "hang"    # never answer (until the receiver stops): the sender must time out
RESET = "reset"  # abort the TCP connection with an RST, no response at all

Action = int | Reply | str


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Answers each request by `script` (in arrival order), then by `default` (an action or a
    function of the request). Records every request and the peak number in flight."""

    def __init__(self, *script: Action,
                 default: Action | Callable[[Received], Action] = 200) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[Received] = []
        self.inflight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total_inflight = 0
        self.total_peak = 0
        self.cond = threading.Condition()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to the test thread below
                errors.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "receiver did not start"
        if errors:
            raise errors[0]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "receiver did not stop"

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        got = Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body,
                       time.monotonic())
        with self.cond:
            index = len(self.requests)
            self.requests.append(got)
            self.inflight[got.path] = self.inflight.get(got.path, 0) + 1
            self.peak[got.path] = max(self.peak.get(got.path, 0), self.inflight[got.path])
            self.total_inflight += 1
            self.total_peak = max(self.total_peak, self.total_inflight)
            self.cond.notify_all()
        action: Any = self.script[index] if index < len(self.script) else self.default
        if callable(action):
            action = action(got)
        try:
            return await self._act(action, request)
        finally:
            with self.cond:
                self.inflight[got.path] -= 1
                self.total_inflight -= 1
                self.cond.notify_all()

    async def _act(self, action: Action, request: web.Request) -> web.StreamResponse:
        assert self._stop is not None
        if action == HANG:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 30)
            return web.Response(status=200)
        if action == RESET:
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response(status=200)  # never reaches the client
        reply = action if isinstance(action, Reply) else Reply(int(action))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    def wait_for(self, n: int, timeout: float = 10.0,
                 where: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        """Block until at least `n` requests matching `where` arrived; return those."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(1 for r in self.requests if where(r)) >= n, timeout)
            got = [r for r in self.requests if where(r)]
        assert ok, f"expected {n} requests, got {len(got)}: {[r.path for r in got]}"
        return got

    def of(self, event_id: str) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if r.headers.get("webhook-id") == event_id]


# --- servers on their own database -----------------------------------------------------------

@contextmanager
def own_server(db_url: str, **settings: Any) -> Iterator[Server]:
    """A real server (API + dispatcher) that may reach loopback receivers, alone on its
    database."""
    with own_database(db_url) as url:
        srv = Server(url, **{"webhook_allow": LOOPBACK, **settings}).start()
        try:
            yield srv
        finally:
            srv.stop()


def wait_until(probe: Callable[[], T | None], timeout: float = 10.0,
               what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- API helpers -----------------------------------------------------------------------------

def seed(t: Tenant, *skus: str) -> Tenant:
    for sku in skus or ("SKU-1",):
        assert t.put(f"/v1/items/{sku}", json={"title": sku}).status_code == 200
    assert t.put("/v1/locations/L1", json={}).status_code == 200
    return t


def count(t: Tenant, qty: int | str, sku: str = "SKU-1") -> None:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": sku, "location": "L1", "quantity": str(qty)}]})
    assert r.status_code == 200, r.text


def endpoint(t: Tenant, url: str, **fields: Any) -> dict[str, Any]:
    r = t.post("/v1/webhook-endpoints", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def events(t: Tenant, type_: str | None = None) -> list[dict[str, Any]]:
    r = t.get("/v1/events", params={"limit": 200, **({"type": type_} if type_ else {})})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def deliveries(t: Tenant, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    r = t.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
              params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def delivery(t: Tenant, delivery_id: str) -> dict[str, Any]:
    r = t.get(f"/v1/deliveries/{delivery_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def settled(t: Tenant, delivery_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The delivery once it left `pending` (succeeded or failed for good)."""
    def probe() -> dict[str, Any] | None:
        d = delivery(t, delivery_id)
        return d if d["status"] != "pending" else None
    return wait_until(probe, timeout, f"delivery {delivery_id} to settle")


def only_delivery(t: Tenant, endpoint_id: str, event_type: str) -> dict[str, Any]:
    found = [d for d in deliveries(t, endpoint_id) if d["event_type"] == event_type]
    assert len(found) == 1, found
    return found[0]


def verify(secret: str, got: Received) -> Any:
    """Standard Webhooks' own verifier: raises unless a signature matches."""
    return Webhook(secret).verify(got.body, got.headers)


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fast(db_url: str) -> Iterator[Server]:
    """Quick retries and short timeouts; loopback allow-listed."""
    with own_server(db_url, retry_schedule=FAST, total_timeout_seconds=1,
                    read_timeout_seconds=0.5, connect_timeout_seconds=1) as srv:
        yield srv


@pytest.fixture
def shop(fast: Server) -> Tenant:
    return seed(fast.tenant())


@pytest.fixture(scope="module")
def calm(db_url: str) -> Iterator[Server]:
    """A 30 s poll interval (only wake-ups make anything prompt), at most 3 requests in
    flight and 2 per endpoint, quick retries, endpoints disabled after failing for 0.3 s."""
    with own_server(db_url, delivery_poll_seconds=30, delivery_concurrency=3,
                    endpoint_concurrency=2, retry_schedule=FAST,
                    endpoint_disable_after_seconds=0.3) as srv:
        yield srv


# --- signing, payload, ids -------------------------------------------------------------------

def test_delivery_is_signed_and_carries_the_native_envelope(shop: Tenant) -> None:
    with Receiver() as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 3)
        [got] = rx.wait_for(1)
        [ev] = events(shop, "inventory.count.updated")
    payload = verify(ep["secret"], got)
    assert got.id == ev["id"] == payload["id"]
    assert set(payload) == {"id", "type", "timestamp", "occurred_at", "sequence", "data"}
    assert payload["type"] == "inventory.count.updated"
    assert payload["sequence"] == ev["sequence"] == 1
    assert payload["data"] == ev["data"]
    assert datetime.fromisoformat(payload["occurred_at"]) == \
        datetime.fromisoformat(ev["occurred_at"])
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("Stockbell-Webhooks/")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", got.headers["webhook-signature"])
    # any change to the body breaks the signature
    tampered = Received(got.path, got.headers, got.body.replace(b'"3"', b'"4"'), got.at)
    assert tampered.body != got.body
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(ep["secret"], tampered)


def test_the_answer_is_asked_for_and_recorded_uncompressed(shop: Tenant) -> None:
    # A receiver that compresses whenever the request allows it: the attempt's excerpt must
    # still be its text (the sender keeps an excerpt and never decompresses).
    def answer(got: Received) -> Reply:
        if "gzip" in got.headers.get("accept-encoding", ""):
            return Reply(200, gzip.compress(b"accepted"), {"Content-Encoding": "gzip"})
        return Reply(200, b"accepted")

    with Receiver(default=answer) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 2)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        [got] = rx.of(d["event_id"])
    assert got.headers["accept-encoding"] == "identity"
    assert [a["response_excerpt"] for a in done["attempt_log"]] == ["accepted"]


def test_dispatcher_wakes_at_once(calm: Server) -> None:
    # A 30 s poll interval: only the wake-up signal (in-process on SQLite, LISTEN/NOTIFY on
    # PostgreSQL) can bring a delivery in under half a second.
    with Receiver() as rx:
        t = seed(calm.tenant())
        endpoint(t, rx.url())
        time.sleep(0.1)  # let the dispatcher settle into its long wait
        for n in range(1, 4):
            count(t, n)
            acknowledged = time.monotonic()
            got = rx.wait_for(n, timeout=5)[-1]
            assert got.at - acknowledged < 0.5, f"delivery {n} took {got.at - acknowledged}s"


def test_per_endpoint_and_global_concurrency_limits_hold(calm: Server) -> None:
    with Receiver(default=Reply(200, delay=0.15)) as rx:
        t = seed(calm.tenant())
        a = endpoint(t, rx.url("/a"))
        for q in range(8):
            count(t, q)
        rx.wait_for(8, timeout=15)
        wait_until(lambda: all(d["status"] == "succeeded" for d in deliveries(t, a["id"])),
                   what="endpoint a's deliveries")
        assert rx.peak["/a"] == 2  # the per-endpoint cap was reached and never passed

        # three endpoints allowed 2 each: only the global cap of 3 keeps them to 3 at once
        endpoint(t, rx.url("/b"))
        endpoint(t, rx.url("/c"))
        for q in range(4):
            count(t, 10 + q)
        rx.wait_for(8 + 12, timeout=15)
    assert all(peak <= 2 for peak in rx.peak.values()), rx.peak
    assert rx.total_peak == 3, rx.total_peak


def test_an_endpoint_with_a_backlog_does_not_hold_every_lane(db_url: str) -> None:
    # Two requests in flight in all, two per endpoint: a slow endpoint's backlog takes both.
    # A delivery to another endpoint, queued later, is sent as soon as one of those requests
    # ends, not after the whole backlog.
    with own_server(db_url, delivery_concurrency=2, endpoint_concurrency=2,
                    retry_schedule=FAST) as srv, \
            Receiver(default=lambda r: Reply(200, delay=0.25) if r.path == "/a" else 200) as rx:
        a, b = seed(srv.tenant()), seed(srv.tenant())
        endpoint(a, rx.url("/a"))
        endpoint(b, rx.url("/b"))
        for q in range(10):
            count(a, q)
        rx.wait_for(2, where=lambda r: r.path == "/a")  # the backlog holds both lanes
        count(b, 1)
        queued_at = time.monotonic()
        [got] = rx.wait_for(1, where=lambda r: r.path == "/b")
        rx.wait_for(10, timeout=15, where=lambda r: r.path == "/a")
    assert got.at - queued_at < 1.0, got.at - queued_at
    after = [r for r in rx.requests if r.path == "/a" and r.at > got.at]
    assert len(after) >= 4, [round(r.at - queued_at, 2) for r in rx.requests]
    assert rx.total_peak <= 2, rx.total_peak


# --- retries and failure handling ------------------------------------------------------------

def test_two_failures_then_success_makes_three_attempts(shop: Tenant) -> None:
    with Receiver(500, 500) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        sent = rx.of(d["event_id"])
        recovered = wait_until(lambda: events(shop, "endpoint.recovered"),
                               what="endpoint.recovered")
    assert done["status"] == "succeeded"
    assert done["attempts"] == 3
    assert [a["status_code"] for a in done["attempt_log"]] == [500, 500, 200]
    assert len(sent) == 3
    # same webhook-id (the event id) on every attempt, each one signed
    assert {r.id for r in sent} == {d["event_id"]}
    for r in sent:
        verify(ep["secret"], r)
    # retries follow the schedule: about 0.2 s apart, never at once, and the dispatcher
    # wakes for them rather than waiting for its next 1 s poll
    gaps = [b.at - a.at for a, b in pairwise(sent)]
    assert all(0.15 <= g < 0.9 for g in gaps), gaps
    # the first success after failures emits endpoint.recovered
    assert [e["data"]["endpoint_id"] for e in recovered] == [ep["id"]]
    assert shop.get(f"/v1/webhook-endpoints/{ep['id']}").json()["failing_since"] is None


def test_always_failing_delivery_fails_after_the_last_attempt(shop: Tenant) -> None:
    with Receiver(default=500) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        time.sleep(0.3)  # nothing more is sent after the delivery failed for good
        sent = rx.of(d["event_id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 4
    assert done["next_attempt_at"] is None
    assert done["last_status_code"] == 500
    assert [a["status_code"] for a in done["attempt_log"]] == [500] * 4
    assert len(sent) == 4
    got = shop.get(f"/v1/webhook-endpoints/{ep['id']}").json()
    assert got["enabled"] is True  # far from the 5-day disable threshold
    assert got["failing_since"] is not None


def test_redirects_are_failures_and_never_followed(shop: Tenant) -> None:
    moved = Reply(302, headers={"Location": "/elsewhere"})
    with Receiver(moved, Reply(307, headers={"Location": "/elsewhere"}), default=200) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        paths = [r.path for r in rx.of(d["event_id"])]
    assert [a["status_code"] for a in done["attempt_log"]] == [302, 307, 200]
    assert done["status"] == "succeeded"
    assert paths == ["/hook", "/hook", "/hook"]  # /elsewhere was never requested


def test_410_gone_disables_the_endpoint_at_once(shop: Tenant) -> None:
    with Receiver(default=410) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        disabled = wait_until(lambda: events(shop, "endpoint.disabled"),
                              what="endpoint.disabled")
        count(shop, 2)  # a disabled endpoint gets no delivery for later events
        time.sleep(0.3)
        sent = list(rx.requests)
    assert done["status"] == "failed"
    assert done["attempts"] == 1  # no retry after 410
    assert [e["data"]["endpoint_id"] for e in disabled] == [ep["id"]]
    assert "410" in disabled[0]["data"]["reason"]
    got = shop.get(f"/v1/webhook-endpoints/{ep['id']}").json()
    assert got["enabled"] is False
    assert "410" in got["disabled_reason"]
    assert len(deliveries(shop, ep["id"])) == 1
    assert len(sent) == 1


def test_a_disabled_endpoint_is_sent_nothing_until_re_enabled(shop: Tenant) -> None:
    with Receiver(Reply(503, headers={"Retry-After": "1"}), default=200) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        [first] = rx.wait_for(1)
        r = shop.patch(f"/v1/webhook-endpoints/{ep['id']}", json={"enabled": False})
        assert r.status_code == 200, r.text
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        time.sleep(1.3)  # past the retry the receiver asked for
        assert len(rx.requests) == 1  # the queued retry was held back
        held = delivery(shop, d["id"])
        assert (held["status"], held["attempts"]) == ("pending", 1)  # held, not lost

        assert shop.patch(f"/v1/webhook-endpoints/{ep['id']}",
                          json={"enabled": True}).status_code == 200
        done = settled(shop, d["id"])
        second = rx.of(d["event_id"])[-1]
    assert done["status"] == "succeeded"
    assert [a["status_code"] for a in done["attempt_log"]] == [503, 200]
    assert second.id == first.id


def test_retry_after_is_honoured_and_bounded(shop: Tenant) -> None:
    with Receiver(Reply(429, headers={"Retry-After": "1"}), default=200) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")
        done = settled(shop, d["id"])
        first, second = rx.of(d["event_id"])
    assert [a["status_code"] for a in done["attempt_log"]] == [429, 200]
    # the schedule says 0.2 s; the receiver asked for 1 s
    assert second.at - first.at >= 0.95

    # 503 with an absurd Retry-After: bounded to an hour (plus jitter), not a week
    with Receiver(Reply(503, headers={"Retry-After": "604800"})) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 2)
        d = only_delivery(shop, ep["id"], "inventory.count.updated")

        def rescheduled() -> dict[str, Any] | None:
            got = delivery(shop, d["id"])
            return got if got["attempts"] == 1 else None
        got = wait_until(rescheduled, what="the 503 attempt to be recorded")
    assert got["status"] == "pending"
    wait = (datetime.fromisoformat(got["next_attempt_at"])
            - datetime.fromisoformat(got["attempt_log"][0]["attempted_at"])).total_seconds()
    assert 3600 * 0.99 <= wait <= 3600 * 1.1 + 5, wait


def test_continually_failing_endpoint_is_disabled_then_recovers(calm: Server) -> None:
    # failing for longer than 0.3 s: disabled at the attempt that finds it so
    with Receiver(default=500) as rx:
        t = seed(calm.tenant())
        ep = endpoint(t, rx.url())
        count(t, 1)
        d = only_delivery(t, ep["id"], "inventory.count.updated")
        [disabled] = wait_until(lambda: events(t, "endpoint.disabled"),
                                what="endpoint.disabled")
        got = t.get(f"/v1/webhook-endpoints/{ep['id']}").json()
        assert got["enabled"] is False
        assert "failed since" in got["disabled_reason"]
        assert disabled["data"] == {"endpoint_id": ep["id"], "url": ep["url"],
                                    "reason": got["disabled_reason"]}
        time.sleep(0.5)
        held = delivery(t, d["id"])
        assert held["status"] == "pending"  # its last retry waits for the endpoint
        assert 2 <= held["attempts"] <= 3
        assert len(rx.of(d["event_id"])) == held["attempts"]

        # the merchant fixes the receiver, re-enables the endpoint and sends it now
        rx.default = 200
        r = t.patch(f"/v1/webhook-endpoints/{ep['id']}", json={"enabled": True})
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is True
        assert r.json()["disabled_reason"] is None
        assert r.json()["failing_since"] is None
        assert t.post(f"/v1/deliveries/{d['id']}/retry").status_code == 200
        done = settled(t, d["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == held["attempts"] + 1
    assert [a["status_code"] for a in done["attempt_log"]][-1] == 200


def test_errors_timeouts_and_resets_lose_nothing(shop: Tenant) -> None:
    # 500, then a hang past the 0.5 s read timeout, then a connection reset, then recovery
    with Receiver(500, HANG, RESET, default=200) as rx:
        ep = endpoint(shop, rx.url())
        for q in (1, 2, 3):
            count(shop, q)
        ids = [e["id"] for e in events(shop, "inventory.count.updated")]
        ds = [d for d in deliveries(shop, ep["id"])
              if d["event_type"] == "inventory.count.updated"]
        done = [settled(shop, d["id"]) for d in ds]
        answered = {r.id for r in rx.requests}
    assert len(ids) == 3
    assert [d["status"] for d in done] == ["succeeded"] * 3
    assert sorted(d["event_id"] for d in done) == sorted(ids)
    assert set(ids) <= answered
    log = [a for d in done for a in d["attempt_log"]]
    assert sum(a["status_code"] == 500 for a in log) == 1
    errors = [a["error"] for a in log if a["status_code"] is None]
    assert len(errors) == 2, log
    assert "timeout" in errors
    assert any(e != "timeout" for e in errors)  # the reset, as a connection error
    hung = next(a for a in log if a["error"] == "timeout")
    assert 400 <= hung["duration_ms"] < 2000


# --- metrics ---------------------------------------------------------------------------------

def test_metrics_are_exposed_and_move(fast: Server, shop: Tenant) -> None:
    anonymous = httpx.Client(base_url=fast.base_url, timeout=10)
    try:
        before = anonymous.get("/metrics")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        text = before.text
        for name in ("stockbell_delivery_attempts_total",
                     "stockbell_delivery_attempt_seconds_bucket",
                     "stockbell_delivery_queue_depth",
                     "stockbell_delivery_oldest_pending_seconds"):
            assert f"\n{name}" in text, name
        ok0 = metric(text, "stockbell_delivery_attempts_total", '{outcome="success"}')
        retry0 = metric(text, "stockbell_delivery_attempts_total", '{outcome="retry"}')
        n0 = metric(text, "stockbell_delivery_attempt_seconds_count")
        handed0 = metric(text, "stockbell_deliveries_handed_off_total")
        with Receiver(500, default=200) as rx:
            ep = endpoint(shop, rx.url())
            count(shop, 1)
            d = only_delivery(shop, ep["id"], "inventory.count.updated")
            assert settled(shop, d["id"])["status"] == "succeeded"
        after = anonymous.get("/metrics").text
    finally:
        anonymous.close()
    assert metric(after, "stockbell_delivery_attempts_total", '{outcome="success"}') >= ok0 + 1
    assert metric(after, "stockbell_delivery_attempts_total", '{outcome="retry"}') >= retry0 + 1
    assert metric(after, "stockbell_delivery_attempt_seconds_count") >= n0 + 2
    if fast.db_url.startswith("sqlite"):
        # the change's own transaction leased its delivery to the in-process dispatcher
        assert metric(after, "stockbell_deliveries_handed_off_total") >= handed0 + 1
    assert metric(after, "stockbell_delivery_queue_depth") >= 0
    assert metric(after, "stockbell_delivery_oldest_pending_seconds") >= 0
