"""docs/webhooks.md stays true: its receiver snippet verifies real Stockbell deliveries, and it
documents every delivery setting, the default retry schedule and the headers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from stockbell.config import Settings
from tests.integration.test_delivery import (
    Receiver,
    count,
    deliveries,
    endpoint,
    events,
    own_server,
    seed,
    settled,
)
from tests.support import Server, Tenant

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
DELIVERY_SETTINGS = (
    "retry_schedule", "endpoint_disable_after_seconds", "webhook_allow", "delivery_concurrency",
    "endpoint_concurrency", "delivery_batch", "delivery_lease_seconds", "delivery_poll_seconds",
    "connect_timeout_seconds", "read_timeout_seconds", "total_timeout_seconds", "retention_days",
)


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def snippet() -> dict[str, Any]:
    """Execute the doc's one ```python block as a module (not as __main__) and return it."""
    blocks = re.findall(r"^```python\n(.*?)^```$", doc(), re.S | re.M)
    assert len(blocks) == 1, "docs/webhooks.md should hold exactly one python block"
    namespace: dict[str, Any] = {"__name__": "webhooks_doc_snippet"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def docs_server(db_url: str) -> Iterator[Server]:
    with own_server(db_url, retry_schedule="0,0.2,0.2") as srv:
        yield srv


@pytest.fixture
def shop(docs_server: Server) -> Tenant:
    return seed(docs_server.tenant())


def test_the_snippet_verifies_a_real_delivery_and_rejects_tampering(shop: Tenant) -> None:
    ns = snippet()
    verify = ns["verify"]
    with Receiver() as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 7)
        [got] = rx.wait_for(1)
    event = verify(ep["secret"], got.body, got.headers)
    [stored] = events(shop, "inventory.count.updated")
    assert event["id"] == stored["id"] == got.headers["webhook-id"]
    assert event["type"] == "inventory.count.updated"
    assert event["data"] == stored["data"]

    tampered = got.body.replace(b'"7"', b'"700"')
    assert tampered != got.body
    with pytest.raises(WebhookVerificationError):
        verify(ep["secret"], tampered, got.headers)
    with pytest.raises(WebhookVerificationError):
        verify(ep["secret"], got.body, {**got.headers, "webhook-id": "evt_other"})
    other = shop.post("/v1/webhook-endpoints", json={"url": rx.url("/other")}).json()["secret"]
    with pytest.raises(WebhookVerificationError):
        verify(other, got.body, got.headers)
    # header names arrive in any case
    assert verify(ep["secret"], got.body, {k.upper(): v for k, v in got.headers.items()})


def test_the_snippets_receiver_accepts_deliveries_once_and_refuses_forgeries(
        shop: Tenant) -> None:
    ns = snippet()
    handled: list[dict[str, Any]] = []
    ns["handle"] = handled.append  # the receiver calls the module's handle()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ns["Receiver"])
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        ep = endpoint(shop, url, event_types=["inventory.count.updated"])
        ns["SECRET"] = ep["secret"]
        count(shop, 3)
        [first] = deliveries(shop, ep["id"])
        done = settled(shop, first["id"])
        assert done["status"] == "succeeded"
        assert [a["status_code"] for a in done["attempt_log"]] == [204]

        # a replay resends the same webhook-id: acknowledged, handled only once
        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/replay",
                      json={"since": "2000-01-01T00:00:00Z"})
        assert r.json() == {"queued": 1}
        again = [d for d in deliveries(shop, ep["id"]) if d["id"] != first["id"]]
        assert [settled(shop, d["id"])["status"] for d in again] == ["succeeded"]
        assert [e["id"] for e in handled] == [first["event_id"]]

        # a forgery (signed with another secret) and a bare request are refused
        assert shop.patch(f"/v1/webhook-endpoints/{ep['id']}",
                          json={"enabled": False}).status_code == 200
        with Receiver() as rx:
            forger = endpoint(shop, rx.url())
            count(shop, 4)
            [signed] = rx.wait_for(1)
        assert forger["secret"] != ep["secret"]
        headers = {k: v for k, v in signed.headers.items() if k.startswith("webhook-")}
        forged = httpx.post(url, content=signed.body, headers=headers, timeout=5)
        bare = httpx.post(url, content=signed.body, timeout=5)
        assert (forged.status_code, bare.status_code) == (400, 400)
        assert len(handled) == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_every_delivery_setting_is_documented() -> None:
    text = doc()
    for name in DELIVERY_SETTINGS:
        assert name in Settings.model_fields, name  # a renamed setting fails here first
        assert f"`STOCKBELL_{name.upper()}`" in text, name
    default = Settings.model_fields["retry_schedule"].default
    assert default == "0,5,300,1800,7200,18000,36000,36000"
    assert f"`{default}`" in text
    assert "5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h" in text
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert f"`{header}`" in text
    for field in ("id", "type", "timestamp", "occurred_at", "sequence", "data"):
        assert f"| `{field}` |" in text
    for metric in ("stockbell_delivery_attempts_total", "stockbell_delivery_attempt_seconds",
                   "stockbell_delivery_queue_depth",
                   "stockbell_delivery_oldest_pending_seconds"):
        assert metric in text
