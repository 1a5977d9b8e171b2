"""The webhook API: endpoints (CRUD, secrets, rotation), deliveries and their attempts,
retry, replay, the test send, account isolation and the SSRF policy at creation time."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.test_delivery import (
    Received,
    Receiver,
    Reply,
    count,
    deliveries,
    delivery,
    endpoint,
    events,
    own_server,
    seed,
    settled,
    verify,
)
from tests.support import Server, Tenant, assert_problem, free_port


@pytest.fixture(scope="module")
def api(db_url: str) -> Iterator[Server]:
    with own_server(db_url, retry_schedule="0,0.1,0.1,0.1", total_timeout_seconds=2,
                    read_timeout_seconds=1) as srv:
        yield srv


@pytest.fixture
def shop(api: Server) -> Tenant:
    return seed(api.tenant())


def subscribe(t: Tenant, threshold: int = 1) -> dict[str, Any]:
    r = t.post("/v1/subscriptions", json={"sku_code": "SKU-1", "threshold": str(threshold)})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# --- endpoints -------------------------------------------------------------------------------

def test_endpoint_crud_and_the_secret_is_shown_only_on_create(shop: Tenant) -> None:
    created = endpoint(shop, "http://127.0.0.1:9/hook", description="ERP",
                       event_types=["back_in_stock"])
    assert created["id"].startswith("we")
    assert created["url"] == "http://127.0.0.1:9/hook"
    assert created["description"] == "ERP"
    assert created["event_types"] == ["back_in_stock"]
    assert created["enabled"] is True
    assert created["format"] == "native"
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) >= 24
    Webhook(created["secret"])  # a secret the Standard Webhooks library accepts

    path = f"/v1/webhook-endpoints/{created['id']}"
    got = shop.get(path)
    assert got.status_code == 200, got.text
    assert "secret" not in got.json()
    assert created["secret"] not in got.text
    assert {k: v for k, v in created.items() if k != "secret"} == got.json()
    listed = shop.get("/v1/webhook-endpoints").json()
    assert [e["id"] for e in listed["data"]] == [created["id"]]
    assert created["secret"] not in shop.get("/v1/webhook-endpoints").text

    r = shop.patch(path, json={"description": "ERP v2", "event_types": None})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "ERP v2"
    assert r.json()["event_types"] is None  # every event type
    assert "secret" not in r.json()
    r = shop.patch(path, json={"enabled": False})
    assert r.json()["enabled"] is False
    assert r.json()["disabled_reason"]
    r = shop.patch(path, json={"enabled": True})
    assert (r.json()["enabled"], r.json()["disabled_reason"]) == (True, None)

    assert shop.delete(path).status_code == 204
    assert_problem(shop.get(path), 404)
    assert_problem(shop.delete(path), 404)
    assert shop.get("/v1/webhook-endpoints").json()["data"] == []


def test_endpoint_list_pages_with_a_cursor(shop: Tenant) -> None:
    made = [endpoint(shop, f"http://127.0.0.1:9/{n}")["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        r = shop.get("/v1/webhook-endpoints",
                     params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [e["id"] for e in r.json()["data"]]
        pages += 1
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    assert pages == 3


INVALID = [
    {"url": "http://127.0.0.1:9/", "event_types": ["no.such.event"]},
    {"url": "http://127.0.0.1:9/", "format": "xml"},
    {"url": "ftp://127.0.0.1/"},
    {"url": "not a url"},
    {"description": "no url"},
    {"url": "http://127.0.0.1:9/", "enabled": "yes"},
]


def test_invalid_endpoints_are_refused(shop: Tenant) -> None:
    for body in INVALID:
        problem = assert_problem(shop.post("/v1/webhook-endpoints", json=body), 422)
        assert problem["errors"], body
    assert shop.get("/v1/webhook-endpoints").json()["data"] == []


def test_other_accounts_ids_answer_404(api: Server, shop: Tenant) -> None:
    with Receiver(default=500) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        [d] = deliveries(shop, ep["id"])
        other = seed(api.tenant())
        live = api.tenant("live", account=shop.account)  # same account, other mode
        for intruder in (other, live):
            base = f"/v1/webhook-endpoints/{ep['id']}"
            assert_problem(intruder.get(base), 404)
            assert_problem(intruder.patch(base, json={"description": "mine"}), 404)
            assert_problem(intruder.post(f"{base}/rotate-secret"), 404)
            assert_problem(intruder.post(f"{base}/test"), 404)
            assert_problem(intruder.get(f"{base}/deliveries"), 404)
            assert_problem(intruder.post(f"{base}/replay",
                                         json={"since": "2000-01-01T00:00:00Z"}), 404)
            assert_problem(intruder.get(f"/v1/deliveries/{d['id']}"), 404)
            assert_problem(intruder.post(f"/v1/deliveries/{d['id']}/retry"), 404)
            assert_problem(intruder.delete(base), 404)
            assert intruder.get("/v1/webhook-endpoints").json()["data"] == []
        settled(shop, d["id"])
        sent = len(rx.requests)
    # untouched: still there, same description, not sent again by the intruders' retry/test
    got = shop.get(f"/v1/webhook-endpoints/{ep['id']}").json()
    assert got["description"] is None
    assert delivery(shop, d["id"])["attempts"] == sent == 4


def test_rotated_secret_signs_beside_the_old_one(shop: Tenant) -> None:
    with Receiver() as rx:
        ep = endpoint(shop, rx.url())
        old = ep["secret"]
        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new.startswith("whsec_")
        assert new != old
        assert "secret" not in shop.get(f"/v1/webhook-endpoints/{ep['id']}").json()
        count(shop, 1)
        [got] = rx.wait_for(1)
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)

    def alone(sig: str) -> Received:
        return Received(got.path, {**got.headers, "webhook-signature": sig}, got.body, got.at)

    # each signature verifies with exactly one of the two secrets
    verifies = {(sig, secret): _ok(secret, alone(sig)) for sig in signatures
                for secret in (old, new)}
    assert sorted(verifies.values()) == [False, False, True, True]
    assert {secret for (_, secret), ok in verifies.items() if ok} == {old, new}
    # the whole header verifies with either secret, and with no other
    verify(old, got)
    verify(new, got)
    stranger = "whsec_" + base64.b64encode(b"\x01" * 24).decode()
    with pytest.raises(WebhookVerificationError):
        verify(stranger, got)


def _ok(secret: str, got: Received) -> bool:
    try:
        verify(secret, got)
    except WebhookVerificationError:
        return False
    return True


# --- deliveries ------------------------------------------------------------------------------

def test_one_delivery_per_event_and_matching_enabled_endpoint(shop: Tenant) -> None:
    with Receiver() as rx:
        every = endpoint(shop, rx.url("/all"))
        restocks = endpoint(shop, rx.url("/bis"), event_types=["back_in_stock"])
        off = endpoint(shop, rx.url("/off"), enabled=False)
        subscribe(shop)
        count(shop, 0)
        count(shop, 5)  # fires the subscription: back_in_stock
        # the deliveries were written with the events: they exist as soon as the write answers
        all_events = events(shop)
        at_once = {d["event_id"] for d in deliveries(shop, every["id"])}
        assert at_once == {e["id"] for e in all_events}
        types = sorted(e["type"] for e in all_events)
        assert types == ["back_in_stock", "inventory.count.updated",
                         "inventory.count.updated", "subscription.created"]
        [bis] = deliveries(shop, restocks["id"])
        assert bis["event_type"] == "back_in_stock"
        assert deliveries(shop, off["id"]) == []
        rx.wait_for(5)
        time.sleep(0.3)
        paths = sorted(r.path for r in rx.requests)
    assert paths == ["/all"] * 4 + ["/bis"]
    by_id = {e["id"]: e for e in all_events}
    assert all(settled(shop, d["id"])["status"] == "succeeded"
               for d in deliveries(shop, every["id"]))
    assert by_id[bis["event_id"]]["type"] == "back_in_stock"


def test_delivery_listing_filters_by_status_and_pages(shop: Tenant) -> None:
    # counts are accepted, the subscription event is refused until it fails for good
    def answer(r: Received) -> int:
        return 500 if r.json()["type"] == "subscription.created" else 200

    with Receiver(default=answer) as rx:
        ep = endpoint(shop, rx.url(), event_types=["subscription.created",
                                                   "inventory.count.updated"])
        subscribe(shop)
        for q in range(4):
            count(shop, q)
        everything = deliveries(shop, ep["id"])
        assert len(everything) == 5
        for d in everything:
            settled(shop, d["id"])
        assert len(rx.requests) == 4 + 4
    failed = deliveries(shop, ep["id"], status="failed")
    succeeded = deliveries(shop, ep["id"], status="succeeded")
    assert [d["event_type"] for d in failed] == ["subscription.created"]
    assert [d["attempts"] for d in failed] == [4]
    assert len(failed[0]["attempt_log"]) == 4
    assert {d["event_type"] for d in succeeded} == {"inventory.count.updated"}
    assert len(succeeded) == 4
    assert deliveries(shop, ep["id"], status="pending") == []
    assert_problem(shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries",
                            params={"status": "lost"}), 422)

    walked: list[str] = []
    cursor = None
    while True:
        r = shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries",
                     params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        walked += [d["id"] for d in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert walked == [d["id"] for d in everything]
    assert_problem(shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries",
                            params={"cursor": "garbage!"}), 422)


def test_attempts_are_recorded_with_a_capped_response_excerpt(shop: Tenant) -> None:
    big = b"x" * 10_240
    with Receiver(Reply(500, body=b"boom"), default=Reply(200, body=big, delay=0.1)) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        [d] = deliveries(shop, ep["id"])
        done = settled(shop, d["id"])
        assert len(rx.of(d["event_id"])) == 2
    assert done["status"] == "succeeded"
    assert done["event_type"] == "inventory.count.updated"
    assert done["endpoint_id"] == ep["id"]
    first, second = done["attempt_log"]
    assert (first["status_code"], first["error"], first["response_excerpt"]) == \
        (500, None, "boom")
    assert (second["status_code"], second["error"]) == (200, None)
    assert second["response_excerpt"] == "x" * 4096
    assert second["duration_ms"] >= 90  # the receiver took 0.1 s to answer
    now = datetime.now().astimezone()
    for a in (first, second):
        at = datetime.fromisoformat(a["attempted_at"])
        assert abs(at - now) < timedelta(minutes=1)
        assert a["duration_ms"] > 0
    assert datetime.fromisoformat(first["attempted_at"]) < \
        datetime.fromisoformat(second["attempted_at"])
    assert_problem(shop.get("/v1/deliveries/dlv_nope"), 404)


def test_retry_resends_a_failed_delivery_with_the_same_webhook_id(shop: Tenant) -> None:
    with Receiver(500, 500, 500, 500, default=200) as rx:
        ep = endpoint(shop, rx.url())
        count(shop, 1)
        [d] = deliveries(shop, ep["id"])
        assert settled(shop, d["id"])["status"] == "failed"
        r = shop.post(f"/v1/deliveries/{d['id']}/retry")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == d["id"]
        assert r.json()["status"] in ("pending", "succeeded")
        done = settled(shop, d["id"])
        sent = rx.of(d["event_id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 5
    assert [a["status_code"] for a in done["attempt_log"]] == [500] * 4 + [200]
    assert len(sent) == 5
    assert {r.id for r in sent} == {d["event_id"]}
    assert sent[-1].body == sent[0].body
    verify(ep["secret"], sent[-1])
    assert_problem(shop.post("/v1/deliveries/dlv_nope/retry"), 404)


def test_replay_resends_every_event_since_a_time(shop: Tenant) -> None:
    with Receiver() as rx:
        ep = endpoint(shop, rx.url(), event_types=["inventory.count.updated"])
        subscribe(shop)  # an event this endpoint does not want
        count(shop, 1)
        count(shop, 2)
        first = rx.wait_for(2)
        counts = events(shop, "inventory.count.updated")
        since = counts[0]["created_at"]
        for d in deliveries(shop, ep["id"]):
            settled(shop, d["id"])

        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/replay", json={"since": since})
        assert r.status_code == 200, r.text
        assert r.json() == {"queued": 2}
        again = rx.wait_for(4)[2:]
        later = (datetime.fromisoformat(counts[-1]["created_at"]) + timedelta(hours=1))
        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/replay",
                      json={"since": later.isoformat()})
        assert r.json() == {"queued": 0}
        ds = deliveries(shop, ep["id"])
        for d in ds:
            settled(shop, d["id"])
        time.sleep(0.2)
        total = len(rx.requests)
    assert sorted(r.id for r in again) == sorted(r.id for r in first) == \
        sorted(e["id"] for e in counts)
    assert {r.id: r.body for r in again} == {r.id: r.body for r in first}
    for got in again:
        verify(ep["secret"], got)
    assert len(ds) == 4
    assert len({d["id"] for d in ds}) == 4
    assert total == 4
    assert_problem(shop.post(f"/v1/webhook-endpoints/{ep['id']}/replay", json={}), 422)


def test_replay_leaves_out_test_sends(shop: Tenant) -> None:
    """A test send is a one-off ping of one endpoint, not part of the event stream: replaying
    an endpoint that takes every type re-sends the business events since then, not the test
    events of this or any other endpoint."""
    with Receiver() as rx:
        everything = endpoint(shop, rx.url())
        other = endpoint(shop, rx.url() + "?other")
        since = datetime.now(UTC).isoformat()
        time.sleep(0.01)
        for ep in (everything, other):
            r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/test")
            assert r.status_code == 200, r.text
        count(shop, 3)
        rx.wait_for(4)  # two test sends, the count to each endpoint
        for ep in (everything, other):
            for d in deliveries(shop, ep["id"]):
                settled(shop, d["id"])
        tests = {e["id"] for e in events(shop, "webhook.test")}
        assert len(tests) == 2
        r = shop.post(f"/v1/webhook-endpoints/{everything['id']}/replay", json={"since": since})
        assert r.status_code == 200, r.text
        assert r.json() == {"queued": 1}
        [again] = rx.wait_for(5)[4:]
    [counted] = events(shop, "inventory.count.updated")
    assert again.id == counted["id"]
    assert again.id not in tests


# --- the test send ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [202, 500])
def test_test_send_answers_the_receivers_status(shop: Tenant, status: int) -> None:
    with Receiver(default=status) as rx:
        ep = endpoint(shop, rx.url())
        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/test")
        assert r.status_code == 200, r.text
        [got] = rx.wait_for(1)
    body = r.json()
    assert body["status_code"] == status
    assert body["ok"] is (status == 202)
    assert body["duration_ms"] >= 0
    payload = verify(ep["secret"], got)
    assert got.id == body["event_id"] == payload["id"]
    assert payload["type"] == "webhook.test"
    assert payload["data"]["endpoint_id"] == ep["id"]
    recorded = delivery(shop, body["delivery_id"])
    assert [a["status_code"] for a in recorded["attempt_log"]] == [status]
    assert recorded["status"] == ("succeeded" if status == 202 else "failed")
    time.sleep(0.2)
    assert len(rx.requests) == 1  # the test send is never retried


def test_test_send_to_an_unreachable_receiver_is_a_502_problem(shop: Tenant) -> None:
    ep = endpoint(shop, f"http://127.0.0.1:{free_port()}/closed")
    r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/test")
    body = assert_problem(r, 502)
    assert "127.0.0.1" in body["detail"]
    [d] = deliveries(shop, ep["id"])
    assert d["status"] == "failed"
    [attempt] = d["attempt_log"]
    assert attempt["status_code"] is None
    assert attempt["error"]
    assert_problem(shop.post("/v1/webhook-endpoints/we_nope/test"), 404)


# --- SSRF at creation ------------------------------------------------------------------------

BLOCKED = ["http://127.0.0.1/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data",
           "http://100.64.0.1/", "http://[::1]/", "http://[fe80::1]/", "http://localhost/",
           "http://192.168.1.10:8080/hook", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"]


def test_private_targets_are_refused_by_default(tenant: Tenant) -> None:
    # the shared server runs with the default policy: no STOCKBELL_WEBHOOK_ALLOW
    for url in BLOCKED:
        body = assert_problem(tenant.post("/v1/webhook-endpoints", json={"url": url}), 422)
        assert body["errors"][0]["pointer"] == "/url", url
        assert "STOCKBELL_WEBHOOK_ALLOW" in body["detail"] or "local" in body["detail"], body
    assert tenant.get("/v1/webhook-endpoints").json()["data"] == []
    # nor can an existing endpoint be pointed at one
    ep = endpoint(tenant, "http://93.184.215.14/hook")
    for url in BLOCKED[:3]:
        r = tenant.patch(f"/v1/webhook-endpoints/{ep['id']}", json={"url": url})
        assert_problem(r, 422)
    assert tenant.get(f"/v1/webhook-endpoints/{ep['id']}").json()["url"] == \
        "http://93.184.215.14/hook"


def test_the_allow_list_lets_only_its_ranges_through(shop: Tenant) -> None:
    # this server allows 127.0.0.0/8 and nothing else
    for url in ("http://127.0.0.1:9/", "http://127.8.9.10/hook"):
        assert endpoint(shop, url)["url"] == url
    for url in ("http://10.0.0.1/", "http://[::1]/", "http://169.254.169.254/"):
        assert_problem(shop.post("/v1/webhook-endpoints", json={"url": url}), 422)
