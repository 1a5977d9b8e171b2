"""Seed 001, Square inventory.count.updated: the document's example as a golden test, the
`square` payload format (counts, adjustments, the 100-count limit, the signature) and the
BatchChangeInventory ingest, end to end through a real server to a real loopback receiver,
on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from stockbell.delivery.formats import render
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint
from tests.integration.test_delivery import Received, Receiver, own_server, wait_until
from tests.support import Server, Tenant, run_db

BATCH = "/v2/inventory/changes/batch-create"
SIGNATURE = "x-square-hmacsha256-signature"

# The seed's notification example (shared/seeds/001), transcribed: the count it shows.
SEED_COUNT = {
    "location_id": "locationToken",
    "catalog_object_id": "XYZ456",
    "catalog_object_type": "ITEM_VARIATION",
    "state": "IN_STOCK",
    "quantity": "12.375",
    "calculated_at": "2019-05-14T17:51:27Z",
}


def square_signature(key: str, url: str, body: bytes) -> str:
    """Square's recipe, written out independently of the code under test."""
    mac = hmac.new(key.encode(), url.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def verify(secret: str, url: str, got: Received) -> dict[str, Any]:
    expected = square_signature(secret, url, got.body)
    assert hmac.compare_digest(got.headers[SIGNATURE], expected), "bad Square signature"
    payload: dict[str, Any] = got.json()
    return payload


def ms(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the format alone (golden) ---------------------------------------------------------------

ENDPOINT = Endpoint(id="we_1", url="https://shop.example/hooks/square", secret="whsec_c2lnbg==",
                    format="square", extra={"account_id": 42, "mode": "live"})


def count_event(**data: Any) -> Event:
    base = {"sku_code": "XYZ456", "item_id": "item_1", "location": "locationToken",
            "change": "count",
            "counts": [{"state": "IN_STOCK", "quantity": "12.375",
                        "calculated_at": "2019-05-14T17:51:27Z"}]}
    return Event("inventory.count.updated", datetime(2019, 5, 14, 17, 51, 27, tzinfo=UTC),
                 {**base, **data}, item_id=1, sequence=7, id="evt_123456",
                 created_at=datetime(2019, 5, 14, 17, 51, 44, tzinfo=UTC))


def test_golden_seed_notification() -> None:
    headers, body = render(count_event(), ENDPOINT)
    payload = json.loads(body)
    counts = [{**SEED_COUNT, "calculated_at": "2019-05-14T17:51:27.000Z"}]
    assert payload == {
        "type": "inventory.count.updated",
        "event_id": "evt_123456",
        "created_at": "2019-05-14T17:51:44.000Z",
        "merchant_id": "SB00000042L",
        "data": {"type": "inventory", "id": "evt_123456",
                 "object": {"inventory_counts": counts}, "inventory_counts": counts},
        "occurred_at": "2019-05-14T17:51:27.000Z",
        "sequence": 7,
    }
    # the seed's key order, so the body reads like the document
    assert list(payload)[:4] == ["type", "event_id", "created_at", "merchant_id"]
    assert list(payload["data"]["inventory_counts"][0]) == list(SEED_COUNT)
    assert headers["content-type"] == "application/json"
    assert headers[SIGNATURE] == square_signature(ENDPOINT.secret, ENDPOINT.url, body.encode())


def test_golden_adjustment_is_one_notification_with_before_and_after_counts() -> None:
    event = count_event(change="adjustment", counts=[
        {"state": "IN_STOCK", "quantity": "10.375", "calculated_at": "2019-05-14T17:51:27Z"},
        {"state": "SOLD", "quantity": "2", "calculated_at": "2019-05-14T17:51:27Z"},
    ])
    counts = json.loads(render(event, ENDPOINT)[1])["data"]["inventory_counts"]
    assert [(c["state"], c["quantity"]) for c in counts] == [("IN_STOCK", "10.375"),
                                                             ("SOLD", "2")]
    assert {c["catalog_object_id"] for c in counts} == {"XYZ456"}


def test_golden_merchant_id_is_per_account_and_mode() -> None:
    test_mode = Endpoint(id="we_2", url=ENDPOINT.url, secret=ENDPOINT.secret,
                         format="square", extra={"account_id": 42, "mode": "test"})
    assert json.loads(render(count_event(), test_mode)[1])["merchant_id"] == "SB00000042T"


def test_golden_more_than_100_counts_is_refused() -> None:
    many = [{"state": "IN_STOCK", "quantity": "1", "calculated_at": "2019-05-14T17:51:27Z"}]
    with pytest.raises(ValueError, match="at most 100"):
        render(count_event(counts=many * 101), ENDPOINT)


def test_golden_webhook_test_has_no_counts() -> None:
    event = Event("webhook.test", datetime(2020, 1, 1, tzinfo=UTC), {"message": "hi"},
                  id="evt_t", created_at=datetime(2020, 1, 1, tzinfo=UTC))
    payload = json.loads(render(event, ENDPOINT)[1])
    assert payload["type"] == "webhook.test"
    assert payload["data"]["inventory_counts"] == []
    assert payload["data"]["object"] == {"message": "hi", "inventory_counts": []}


# --- through a real server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    """API + dispatcher on a database of its own, allowed to reach loopback receivers."""
    with own_server(db_url) as server:
        yield server


@pytest.fixture
def shop(srv: Server) -> Tenant:
    """Item XYZ456 at location locationToken, as in the seed's example."""
    t = srv.tenant()
    assert t.put("/v1/items/XYZ456", json={"title": "Widget"}).status_code == 200
    assert t.put("/v1/locations/locationToken", json={}).status_code == 200
    return t


def physical(sku: str = "XYZ456", qty: str = "12.375", loc: str = "locationToken",
             **extra: Any) -> dict[str, Any]:
    return {"type": "PHYSICAL_COUNT", "physical_count": {
        "catalog_object_id": sku, "location_id": loc, "state": "IN_STOCK", "quantity": qty,
        **extra}}


def adjustment(qty: str, src: str = "IN_STOCK", dst: str = "SOLD") -> dict[str, Any]:
    return {"type": "ADJUSTMENT", "adjustment": {
        "catalog_object_id": "XYZ456", "location_id": "locationToken", "from_state": src,
        "to_state": dst, "quantity": qty}}


def batch(t: Tenant, *changes: dict[str, Any], key: str | None = None) -> httpx.Response:
    return t.post(BATCH, json={"idempotency_key": key or uuid.uuid4().hex,
                               "changes": list(changes)})


def square_endpoint(t: Tenant, url: str, **extra: Any) -> dict[str, Any]:
    r = t.post("/v1/webhook-endpoints", json={"url": url, "format": "square", **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def merchant(srv: Server, t: Tenant) -> str:
    account_id = run_db(srv.db_url, lambda uow: uow.accounts.account_id(t.account))
    return f"SB{account_id:08d}T"


def test_seed_example_count_arrives_as_the_seed_shows(srv: Server, shop: Tenant) -> None:
    with Receiver() as rx:
        ep = square_endpoint(shop, rx.url("/square"))
        r = batch(shop, physical(occurred_at="2019-05-14T17:51:27Z"), key="seed-example")
        [got] = rx.wait_for(1)
    assert r.status_code == 200, r.text
    answer = r.json()
    [event] = shop.get("/v1/events", params={"type": "inventory.count.updated"}).json()["data"]
    payload = verify(ep["secret"], rx.url("/square"), got)

    assert payload["type"] == "inventory.count.updated"
    assert payload["event_id"] == event["id"] == got.headers["webhook-id"]
    assert payload["merchant_id"] == merchant(srv, shop)
    assert ms(payload["created_at"]) == ms(event["created_at"]).replace(
        microsecond=ms(event["created_at"]).microsecond // 1000 * 1000)
    [count] = [dict(c) for c in payload["data"]["inventory_counts"]]
    calculated = count.pop("calculated_at")
    assert count == {k: v for k, v in SEED_COUNT.items() if k != "calculated_at"}
    assert abs(ms(calculated) - ms(event["data"]["counts"][0]["calculated_at"])).total_seconds() \
        < 0.001
    # Square's live-API envelope carries the same counts
    assert payload["data"]["type"] == "inventory"
    assert payload["data"]["object"]["inventory_counts"] == payload["data"]["inventory_counts"]
    # the answer: the resulting count, and the change echoed
    assert [{k: v for k, v in c.items() if k != "calculated_at"} for c in answer["counts"]] == \
        [{"catalog_object_id": "XYZ456", "catalog_object_type": "ITEM_VARIATION",
          "state": "IN_STOCK", "location_id": "locationToken", "quantity": "12.375"}]
    [change] = answer["changes"]
    assert change["type"] == "PHYSICAL_COUNT"
    assert change["physical_count"]["quantity"] == "12.375"
    assert ms(change["physical_count"]["occurred_at"]) == ms("2019-05-14T17:51:27Z")
    # and the stock really is there
    stock = shop.get("/v1/inventory/XYZ456").json()
    assert stock["locations"] == [{"location": "locationToken",
                                   "quantities": {"IN_STOCK": "12.375"}}]


def test_adjustment_sends_before_and_after_counts_in_one_notification(shop: Tenant) -> None:
    assert batch(shop, physical(qty="10")).status_code == 200
    with Receiver() as rx:
        ep = square_endpoint(shop, rx.url())
        r = batch(shop, adjustment("3"))
        [got] = rx.wait_for(1)
    assert r.status_code == 200, r.text
    counts = verify(ep["secret"], rx.url(), got)["data"]["inventory_counts"]
    assert [(c["state"], c["quantity"]) for c in counts] == [("IN_STOCK", "7"), ("SOLD", "3")]
    assert {(c["location_id"], c["catalog_object_id"]) for c in counts} == {
        ("locationToken", "XYZ456")}
    assert [(c["state"], c["quantity"]) for c in r.json()["counts"]] == [("IN_STOCK", "7"),
                                                                         ("SOLD", "3")]
    assert r.json()["changes"][0]["adjustment"]["from_state"] == "IN_STOCK"


def test_bulk_update_of_150_counts_spans_notifications_of_at_most_100(shop: Tenant) -> None:
    for sku in ("B-1", "B-2", "B-3"):
        assert shop.put(f"/v1/items/{sku}", json={}).status_code == 200
    assert shop.put("/v1/locations/annex", json={}).status_code == 200
    expected = {(f"B-{1 + i % 3}", ("locationToken", "annex")[i % 2], str(i + 1))
                for i in range(150)}
    changes = [physical(sku, qty, loc) for sku, loc, qty in sorted(expected)]
    with Receiver() as rx:
        ep = square_endpoint(shop, rx.url())
        r = batch(shop, *changes)
        got = rx.wait_for(150, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["changes"]) == 150
    arrived = set()
    for received in got:
        counts = verify(ep["secret"], rx.url(), received)["data"]["inventory_counts"]
        assert 1 <= len(counts) <= 100
        arrived |= {(c["catalog_object_id"], c["location_id"], c["quantity"]) for c in counts}
    assert arrived == expected
    assert len({received.id for received in got}) == 150  # one notification per change


def test_only_inventory_count_updates_reach_a_square_endpoint(shop: Tenant) -> None:
    with Receiver() as rx:
        square = square_endpoint(shop, rx.url("/square"))
        native = shop.post("/v1/webhook-endpoints", json={"url": rx.url("/native")}).json()
        assert shop.post("/v1/subscriptions", json={
            "sku_code": "XYZ456", "customer": {"email": "a@example.com"}}).status_code == 201
        assert batch(shop, physical(qty="5")).status_code == 200
        natives = rx.wait_for(4, where=lambda g: g.path == "/native")
        squares = rx.wait_for(1, where=lambda g: g.path == "/square")
        wait_until(lambda: all(
            d["status"] == "succeeded" for d in shop.get(
                f"/v1/webhook-endpoints/{native['id']}/deliveries").json()["data"]),
            what="native deliveries")
    assert sorted(g.json()["type"] for g in natives) == [
        "back_in_stock", "back_in_stock.requested", "inventory.count.updated",
        "subscription.created"]
    assert [g.json()["type"] for g in squares] == ["inventory.count.updated"]
    listed = shop.get(f"/v1/webhook-endpoints/{square['id']}/deliveries").json()["data"]
    assert [d["event_type"] for d in listed] == ["inventory.count.updated"]


def test_test_send_to_a_square_endpoint_is_signed_and_has_no_counts(shop: Tenant) -> None:
    with Receiver() as rx:
        ep = square_endpoint(shop, rx.url())
        r = shop.post(f"/v1/webhook-endpoints/{ep['id']}/test")
        [got] = rx.wait_for(1)
    assert r.status_code == 200, r.text
    payload = verify(ep["secret"], rx.url(), got)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["inventory_counts"] == []


def test_signature_covers_url_and_body(shop: Tenant) -> None:
    with Receiver() as rx:
        ep = square_endpoint(shop, rx.url("/a"))
        batch(shop, physical(qty="1"))
        [got] = rx.wait_for(1)
    verify(ep["secret"], rx.url("/a"), got)
    header = got.headers[SIGNATURE]
    assert header != square_signature(ep["secret"], rx.url("/b"), got.body)
    assert header != square_signature(ep["secret"], rx.url("/a"),
                                      got.body.replace(b'"1"', b'"2"'))
    assert header != square_signature("whsec_other", rx.url("/a"), got.body)


# --- the ingest's answers and errors ---------------------------------------------------------

def errors(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    [error] = r.json()["errors"]
    assert set(error) <= {"category", "code", "detail", "field"}
    assert error["detail"]
    return dict(error)


def test_retried_idempotency_key_applies_once(shop: Tenant) -> None:
    first = batch(shop, adjustment("1", "NONE", "IN_STOCK"), key="once")
    again = batch(shop, adjustment("1", "NONE", "IN_STOCK"), key="once")
    assert first.status_code == again.status_code == 200
    assert [c["quantity"] for c in first.json()["counts"]] == ["1"]
    assert [c["quantity"] for c in again.json()["counts"]] == ["1"]
    assert shop.get("/v1/inventory/XYZ456").json()["locations"][0]["quantities"] == {
        "IN_STOCK": "1"}
    err = errors(batch(shop, adjustment("2", "NONE", "IN_STOCK"), key="once"), 400)
    assert (err["category"], err["code"]) == ("INVALID_REQUEST_ERROR", "IDEMPOTENCY_KEY_REUSED")
    # the native API's keys are another namespace
    native = shop.post("/v1/inventory/changes", json={"idempotency_key": "once", "changes": [
        {"type": "count", "sku_code": "XYZ456", "location": "locationToken", "quantity": "4"}]})
    assert native.status_code == 200, native.text


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"changes": [physical()]}, 400, "MISSING_REQUIRED_PARAMETER", "idempotency_key"),
    ({"idempotency_key": "e1", "changes": []}, 400, "INVALID_VALUE", "changes"),
    ({"idempotency_key": "e2", "changes": [{"type": "PHYSICAL_COUNT"}]}, 400,
     "MISSING_REQUIRED_PARAMETER", "changes[0].physical_count"),
    ({"idempotency_key": "e3", "changes": [{"type": "TRANSFER", "transfer": {}}]}, 400,
     "INVALID_VALUE", "changes[0].type"),
    ({"idempotency_key": "e4", "changes": [physical(qty="abc")]}, 400, "INVALID_VALUE",
     "changes[0].physical_count.quantity"),
    ({"idempotency_key": "e5", "changes": [physical(qty="-1")]}, 400, "INVALID_VALUE",
     "changes[0].physical_count.quantity"),
    ({"idempotency_key": "e6", "changes": [physical(sku="NOPE")]}, 404, "NOT_FOUND",
     "changes[0].physical_count.catalog_object_id"),
    ({"idempotency_key": "e7", "changes": [physical(loc="nowhere")]}, 404, "NOT_FOUND",
     "changes[0].physical_count.location_id"),
    ({"idempotency_key": "e8", "changes": [physical(), {"type": "ADJUSTMENT", "adjustment": {
        "catalog_object_id": "XYZ456", "location_id": "locationToken", "from_state": "SOLD",
        "to_state": "SOLD", "quantity": "1"}}]}, 400, "INVALID_VALUE",
     "changes[1].adjustment.to_state"),
])
def test_errors_are_square_errors(shop: Tenant, body: dict[str, Any], status: int, code: str,
                                  field: str) -> None:
    err = errors(shop.post(BATCH, json=body), status)
    assert (err["category"], err["code"], err.get("field")) == (
        "INVALID_REQUEST_ERROR", code, field)
    # nothing was applied
    assert shop.get("/v1/inventory/XYZ456").json()["locations"] == []


def test_auth_malformed_json_and_unknown_route(srv: Server, shop: Tenant) -> None:
    for client in (srv.client(), srv.client("not-a-key")):
        r = client.post(BATCH, json={"idempotency_key": "a", "changes": [physical()]})
        err = errors(r, 401)
        assert (err["category"], err["code"]) == ("AUTHENTICATION_ERROR", "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"
    err = errors(shop.post(BATCH, content=b"{", headers={"content-type": "application/json"}),
                 400)
    assert (err["category"], err["code"]) == ("INVALID_REQUEST_ERROR", "BAD_REQUEST")
    err = errors(shop.get("/v2/inventory/nothing-here"), 404)
    assert (err["category"], err["code"]) == ("INVALID_REQUEST_ERROR", "NOT_FOUND")
    publishable = srv.tenant(publishable=True, account=shop.account)
    err = errors(publishable.post(BATCH, json={"idempotency_key": "p", "changes": [physical()]}),
                 403)
    assert (err["category"], err["code"]) == ("AUTHENTICATION_ERROR", "FORBIDDEN")


def test_a_body_over_the_limit_and_a_nul_in_the_url_are_square_errors(shop: Tenant) -> None:
    """These are refused before any route runs (api/limits.py); they used to come back as
    the native API's problem details, which no Square client parses. Found by the OpenAPI
    fuzzing: its Square schema declares 413 as Square errors."""
    big = {"idempotency_key": "big", "changes": [physical()], "pad": "x" * (1024 * 1024)}
    err = errors(shop.post(BATCH, json=big), 413)
    assert (err["category"], err["code"]) == ("INVALID_REQUEST_ERROR", "REQUEST_ENTITY_TOO_LARGE")

    def streamed() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        yield b'{"idempotency_key": "big2", "pad": "'
        for _ in range(17):
            yield b"z" * 65536
        yield b'"}'

    r = shop.post(BATCH, content=streamed(), headers={"Content-Type": "application/json"})
    assert errors(r, 413)["code"] == "REQUEST_ENTITY_TOO_LARGE"
    err = errors(shop.get("/v2/inventory/XYZ%00"), 400)
    assert err["category"] == "INVALID_REQUEST_ERROR"
    assert shop.get("/v1/inventory/XYZ456").json()["locations"] == []  # nothing applied
