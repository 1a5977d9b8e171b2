"""Seed 000, TI store inventory subscriptions: the document's examples as golden tests, the
restock rules as TI states them, and the push end to end through a real server to a real
loopback receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from stockbell.delivery.formats import render
from stockbell.delivery.formats.ti import TEST_PAYLOAD
from stockbell.domain.catalog import Item
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint
from stockbell.service.views import item_view
from tests.integration.test_delivery import Receiver, Reply, own_server, verify, wait_until
from tests.support import Server, Tenant

# The seed's push notification example (shared/seeds/000), transcribed.
SEED_EXAMPLE: dict[str, Any] = {
    "type": "inventory",
    "data": {
        "tiPartNumber": "TESTOPN",
        "genericPartNumber": "TESTGPN",
        "buyNowUrl": "",
        "quantity": 0,
        "pricing": [{"currency": "USD",
                     "priceBreaks": [{"priceBreakQuantity": 1, "price": 1.003}]}],
        "description": "Test product for test nofication",
        "minimumOrderQuantity": 1,
        "standardPackQuantity": 75,
        "exportControlClassificationNumber": "EAR99",
        "htsCode": "0123456789",
        "pinCount": 8,
        "packageType": "TESTOPN_8_SOIC_D",
        "packageCarrier": "TUBE",
        "customReel": False,
        "lifeCycle": "ACTIVE",
    },
}
# The item that carries the example's data, as a merchant stores it (PUT /v1/items/...).
TESTOPN_ITEM: dict[str, Any] = {
    "title": "Test product",
    "part_number": "TESTOPN",
    "generic_part_number": "TESTGPN",
    "pricing": [{"currency": "USD", "price_breaks": [{"quantity": 1, "price": "1.003"}]}],
    "attributes": {
        "buyNowUrl": "", "description": "Test product for test nofication",
        "minimumOrderQuantity": 1, "standardPackQuantity": 75,
        "exportControlClassificationNumber": "EAR99", "htsCode": "0123456789",
        "pinCount": 8, "packageType": "TESTOPN_8_SOIC_D", "packageCarrier": "TUBE",
        "customReel": False, "lifeCycle": "ACTIVE",
    },
}
PATH = "/v2/store/subscriptions/inventory"
# tests.support signs tokens with a short test key; PyJWT warns about it in the server thread.


def example(quantity: int | float) -> dict[str, Any]:
    body = copy.deepcopy(SEED_EXAMPLE)
    body["data"]["quantity"] = quantity
    return body


# --- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    """A server alone on its database (of the parametrized backend), allowed to reach
    loopback receivers; a fresh account per test keeps tests apart."""
    with own_server(db_url) as s:
        yield s


def access_token(srv: Server, t: Tenant) -> httpx.Response:
    return srv.client().post(
        "/v1/oauth/accesstoken",
        content=f"grant_type=client_credentials&client_id={t.client_id}"
                f"&client_secret={t.client_secret}",
        headers={"Content-Type": "application/x-www-form-urlencoded"})


def ti_client(srv: Server, t: Tenant) -> httpx.Client:
    """Authenticated the TI way: client credentials -> access token -> Bearer."""
    r = access_token(srv, t)
    assert r.status_code == 200, r.text
    return srv.client(r.json()["access_token"])


@pytest.fixture
def shop(srv: Server) -> Tenant:
    return make_shop(srv)


@pytest.fixture
def ti(srv: Server, shop: Tenant) -> httpx.Client:
    return ti_client(srv, shop)


@pytest.fixture(scope="module")
def refusing(srv: Server) -> tuple[Tenant, httpx.Client]:
    """A shop that only ever receives refused requests; the many error cases share it."""
    t = make_shop(srv)
    return t, ti_client(srv, t)


def make_shop(srv: Server) -> Tenant:
    """A tenant with part TESTOPN (the document's data) and part AFE7799IABJ, location L1."""
    t = srv.tenant()
    put(t, "TESTOPN-SKU", TESTOPN_ITEM)
    put(t, "AFE-SKU", {"part_number": "AFE7799IABJ", "generic_part_number": "AFE7799"})
    assert t.put("/v1/locations/L1", json={}).status_code == 200
    return t


def put(t: Tenant, sku: str, item: dict[str, Any]) -> None:
    r = t.put(f"/v1/items/{sku}", json=item)
    assert r.status_code == 200, r.text


def count(t: Tenant, qty: int, sku: str = "TESTOPN-SKU") -> int:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": sku, "location": "L1", "quantity": qty}]})
    assert r.status_code == 200, r.text
    return int(r.json()["notifications"])


def subscribe(ti: httpx.Client, **body: Any) -> dict[str, Any]:
    r = ti.post(PATH, json={"tiPartNumber": "TESTOPN", **body})
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


def listed(ti: httpx.Client) -> list[dict[str, Any]]:
    r = ti.get(PATH)
    assert r.status_code == 200, r.text
    got: list[dict[str, Any]] = r.json()
    return got


def native_subs(t: Tenant, sku: str = "TESTOPN-SKU") -> list[dict[str, Any]]:
    r = t.get("/v1/subscriptions", params={"sku_code": sku, "limit": 200})
    assert r.status_code == 200, r.text
    got: list[dict[str, Any]] = r.json()["data"]
    return got


def ti_error(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """TI's documented error shape: {"errors": [{errorCode, type, section, field, reason,
    message}]}."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"errors"}
    [err] = body["errors"]
    assert set(err) == {"errorCode", "type", "section", "field", "reason", "message"}
    assert err["section"] == "inventorySubscription"
    assert err["field"] == field
    assert isinstance(err["message"], str)
    assert err["message"]
    if status in (400, 422):
        assert err["errorCode"] == "ERR-TICOM-INV-API-1001"
        assert err["type"] == "ValidationError"
    got: dict[str, Any] = err
    return got


def ti_endpoint(t: Tenant, url: str) -> dict[str, Any]:
    r = t.post("/v1/webhook-endpoints", json={"url": url, "format": "ti"})
    assert r.status_code == 201, r.text
    got: dict[str, Any] = r.json()
    return got


# --- the payload format, pure ----------------------------------------------------------------

def _event(availability: str, currency: str | None = "USD", **item: Any) -> Event:
    fields = {k: v for k, v in TESTOPN_ITEM.items() if k != "title"} | item
    it = Item(sku_code="TESTOPN-SKU", public_id="item_1", **fields)
    sub = {"metadata": {"currency": currency} if currency else {}}
    return Event("back_in_stock", datetime.now(UTC),
                 {"item": item_view(it), "availability": availability,
                  "subscription": sub}, item_id=1, sequence=1, id="evt_1",
                 created_at=datetime.now(UTC))


def _render(event: Event) -> tuple[dict[str, str], Any]:
    headers, body = render(event, Endpoint("we_1", "https://x.example", "whsec_x",
                                           format="ti"))
    return headers, json.loads(body)


def test_back_in_stock_renders_the_documents_example() -> None:
    headers, body = _render(_event("0"))
    assert headers == {"content-type": "application/json"}
    assert body == SEED_EXAMPLE


@pytest.mark.parametrize(("availability", "quantity"),
                         [("75", 75), ("1200", 1200), ("12.5", 12.5), ("0.000001", 1e-06)])
def test_quantity_is_a_json_number_int_when_whole(availability: str,
                                                  quantity: int | float) -> None:
    _, body = _render(_event(availability))
    assert body == example(quantity)
    assert type(body["data"]["quantity"]) is type(quantity)


def test_webhook_test_renders_the_documents_example_verbatim() -> None:
    event = Event("webhook.test", datetime.now(UTC), {"endpoint_id": "we_1"}, id="evt_t",
                  created_at=datetime.now(UTC))
    assert _render(event)[1] == SEED_EXAMPLE == TEST_PAYLOAD


def test_pricing_follows_the_subscription_currency_and_attribute_spellings() -> None:
    pricing = [
        {"currency": "USD", "price_breaks": [{"quantity": 1, "price": "1.003"},
                                             {"quantity": 1000, "price": "0.5"}]},
        {"currency": "EUR", "price_breaks": [{"quantity": 1, "price": "0.95"}]},
    ]
    attributes = {"ECCN": "3A991", "pin_count": "14", "customReel": "true",
                  "buyNowUrl": "https://shop.example/TESTOPN"}
    _, eur = _render(_event("3", "EUR", pricing=pricing, attributes=attributes))
    assert eur["data"]["pricing"] == [
        {"currency": "EUR", "priceBreaks": [{"priceBreakQuantity": 1, "price": 0.95}]}]
    assert eur["data"]["exportControlClassificationNumber"] == "3A991"
    assert eur["data"]["pinCount"] == 14
    assert eur["data"]["customReel"] is True
    assert eur["data"]["buyNowUrl"] == "https://shop.example/TESTOPN"
    assert eur["data"]["description"] is None  # absent attributes are null
    # a currency the item is not priced in: every price list
    _, jpy = _render(_event("3", "JPY", pricing=pricing))
    assert [p["currency"] for p in jpy["data"]["pricing"]] == ["USD", "EUR"]
    assert jpy["data"]["pricing"][0]["priceBreaks"][1] == {"priceBreakQuantity": 1000,
                                                           "price": 0.5}


# --- authentication --------------------------------------------------------------------------

def test_access_token_is_issued_for_client_credentials(srv: Server, shop: Tenant) -> None:
    r = access_token(srv, shop)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3599
    assert body["client_id"] == shop.client_id
    assert body["access_token"].count(".") == 2
    assert r.headers["cache-control"] == "no-store"
    assert srv.client(body["access_token"]).get(PATH).json() == []


def test_token_errors_in_the_gateways_form(srv: Server, shop: Tenant) -> None:
    anon = srv.client()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = anon.post("/v1/oauth/accesstoken", headers=form,
                  content=f"grant_type=client_credentials&client_id={shop.client_id}"
                          "&client_secret=wrong")
    assert r.status_code == 401
    assert r.json() == {"ErrorCode": "invalid_client", "Error": "invalid client credentials"}
    r = anon.post("/v1/oauth/accesstoken", headers=form,
                  content=f"grant_type=password&client_id={shop.client_id}")
    assert r.status_code == 400
    assert r.json()["ErrorCode"] == "unsupported_grant_type"
    for content in ("grant_type=client_credentials",
                    "grant_type=client_credentials&client_id=a%00b&client_secret=x"):
        r = anon.post("/v1/oauth/accesstoken", headers=form, content=content)
        assert r.status_code == 401
        assert r.json()["ErrorCode"] == "invalid_client"
    r = anon.post("/v1/oauth/accesstoken", headers=form, content=b"grant_type=\xff")
    assert r.status_code == 400
    assert r.json()["ErrorCode"] == "invalid_request"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_bad_tokens_are_401_in_tis_error_shape(srv: Server, method: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Bearer a.b.c"}, {"Authorization": "Basic eDp5"}):
        r = srv.client().request(method, PATH, headers=headers,
                                 json={"tiPartNumber": "TESTOPN"})
        err = ti_error(r, 401)
        assert err["type"] == "AuthenticationError"
        assert r.headers["www-authenticate"] == "Bearer"
    r = srv.client().post(PATH + "/test")
    ti_error(r, 401)


def test_publishable_keys_are_refused(srv: Server, shop: Tenant) -> None:
    pub = srv.tenant(publishable=True, account=shop.account)
    r = pub.post(PATH, json={"tiPartNumber": "TESTOPN"})
    assert ti_error(r, 403)["type"] == "AuthorizationError"


# --- subscribe, list, update, delete ---------------------------------------------------------

def test_subscribe_and_list_the_documents_example(ti: httpx.Client, shop: Tenant) -> None:
    # The document's listing example, sent as a subscription and listed back.
    sent = {"tiPartNumber": "AFE7799IABJ", "quantity": 1000, "currency": "USD",
            "autoSubscribe": True, "expiration": 30}
    listing = {"tiPartNumber": "AFE7799IABJ", "requestedQty": 1000, "currency": "USD",
               "autoSubscribe": True, "expiration": 30}
    r = ti.post(PATH, json=sent)
    assert r.status_code == 200, r.text
    assert r.json() == listing
    assert listed(ti) == [listing]
    [sub] = native_subs(shop, "AFE-SKU")
    assert sub["status"] == "active"
    assert sub["threshold"] == "1000"
    assert sub["scope"] == {"type": "all", "code": None}
    assert sub["auto_resubscribe"] is True
    assert sub["reference"] == "AFE7799IABJ"
    assert sub["reference_origin"] == "ti"
    assert sub["metadata"] == {"currency": "USD", "expiration": 30}
    expires = datetime.fromisoformat(sub["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)


def test_defaults_and_requested_qty_alias(ti: httpx.Client) -> None:
    assert subscribe(ti) == {"tiPartNumber": "TESTOPN", "requestedQty": 1, "currency": "USD",
                             "autoSubscribe": False, "expiration": 30}
    assert subscribe(ti, requestedQty=7, currency="eur", expiration=3) == {
        "tiPartNumber": "TESTOPN", "requestedQty": 7, "currency": "EUR",
        "autoSubscribe": False, "expiration": 3}


def test_one_subscription_per_part_a_second_post_updates_it(ti: httpx.Client,
                                                            shop: Tenant) -> None:
    subscribe(ti, quantity=10, expiration=5)
    [first] = native_subs(shop)
    subscribe(ti, requestedQty=20, autoSubscribe=True, currency="EUR", expiration=20)
    [second] = native_subs(shop)
    assert second["id"] == first["id"]
    assert second["threshold"] == "20"
    assert second["auto_resubscribe"] is True
    assert second["expires_at"] > first["expires_at"]
    assert listed(ti) == [{"tiPartNumber": "TESTOPN", "requestedQty": 20, "currency": "EUR",
                           "autoSubscribe": True, "expiration": 20}]


def test_delete_by_body_or_query(ti: httpx.Client, shop: Tenant) -> None:
    subscribe(ti, quantity=5)
    subscribe(ti, tiPartNumber="AFE7799IABJ")
    r = ti.request("DELETE", PATH, json={"tiPartNumber": "TESTOPN"})
    assert r.status_code == 200, r.text
    assert r.json()["tiPartNumber"] == "TESTOPN"
    assert [s["tiPartNumber"] for s in listed(ti)] == ["AFE7799IABJ"]
    assert [s["status"] for s in native_subs(shop)] == ["cancelled"]
    r = ti.delete(PATH, params={"tiPartNumber": "AFE7799IABJ"})
    assert r.status_code == 200, r.text
    assert listed(ti) == []
    # nothing left to remove; unknown parts alike
    err = ti_error(ti.delete(PATH, params={"tiPartNumber": "TESTOPN"}), 404)
    assert err["type"] == "NotFoundError"
    ti_error(ti.delete(PATH, params={"tiPartNumber": "NOPE"}), 404)
    ti_error(ti.delete(PATH), 422, "tiPartNumber")
    ti_error(ti.request("DELETE", PATH, content=b"{oops"), 400)


@pytest.mark.parametrize(("body", "field"), [
    ({"tiPartNumber": "UNKNOWN-PART"}, "tiPartNumber"),
    ({}, "tiPartNumber"),
    ({"tiPartNumber": 12}, "tiPartNumber"),
    ({"tiPartNumber": "TESTOPN", "quantity": 0}, "quantity"),
    ({"tiPartNumber": "TESTOPN", "requestedQty": -3}, "requestedQty"),
    ({"tiPartNumber": "TESTOPN", "requestedQty": 1.5}, "requestedQty"),
    ({"tiPartNumber": "TESTOPN", "quantity": True}, "quantity"),
    ({"tiPartNumber": "TESTOPN", "currency": "DOLLARS"}, "currency"),
    ({"tiPartNumber": "TESTOPN", "currency": "USD\n"}, "currency"),
    ({"tiPartNumber": "TESTOPN", "currency": "\ud800"}, "currency"),
    ({"tiPartNumber": "\ud800"}, "tiPartNumber"),
    ({"tiPartNumber": "TESTOPN", "quantity": "9" * 5000}, "quantity"),
    ({"tiPartNumber": "TESTOPN", "autoSubscribe": "yes"}, "autoSubscribe"),
    ({"tiPartNumber": "TESTOPN", "expiration": 31}, "expiration"),
    ({"tiPartNumber": "TESTOPN", "expiration": 0}, "expiration"),
])
def test_invalid_fields_are_validation_errors(refusing: tuple[Tenant, httpx.Client],
                                              body: dict[str, Any], field: str) -> None:
    shop, ti = refusing
    raw = json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes
    r = ti.post(PATH, content=raw, headers={"Content-Type": "application/json"})
    err = ti_error(r, 422, field)
    assert err["reason"] == f"Invalid {field}"
    assert listed(ti) == []
    assert native_subs(shop) == []


def test_unknown_part_message_names_it(ti: httpx.Client) -> None:
    err = ti_error(ti.post(PATH, json={"tiPartNumber": "LM555X"}), 422, "tiPartNumber")
    assert err["message"].startswith("tiPartNumber ('LM555X') does not exist")


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"", b"\"TESTOPN\""])
def test_malformed_bodies_are_400(refusing: tuple[Tenant, httpx.Client], raw: bytes) -> None:
    ti = refusing[1]
    r = ti.post(PATH, content=raw, headers={"Content-Type": "application/json"})
    ti_error(r, 400)


# --- the rules TI states, held by the core ---------------------------------------------------

def test_no_notice_while_stock_is_already_at_or_above_the_amount(ti: httpx.Client,
                                                                 shop: Tenant) -> None:
    assert count(shop, 100) == 0
    subscribe(ti, quantity=50)
    assert count(shop, 120) == 0
    assert count(shop, 60) == 0  # fell, but never below 50
    assert listed(ti) != []
    # falls below, rises back up to the amount: one notice, then removed
    assert count(shop, 10) == 0
    assert count(shop, 50) == 1
    assert listed(ti) == []
    [sub] = native_subs(shop)
    assert sub["status"] == "notified"
    assert count(shop, 0) == 0
    assert count(shop, 500) == 0


def test_auto_subscribe_stays_and_fires_again(ti: httpx.Client, shop: Tenant) -> None:
    subscribe(ti, quantity=5, autoSubscribe=True)
    assert count(shop, 5) == 1
    assert count(shop, 9) == 0
    assert count(shop, 2) == 0
    assert count(shop, 6) == 1
    assert [s["tiPartNumber"] for s in listed(ti)] == ["TESTOPN"]
    [sub] = native_subs(shop)
    assert (sub["status"], sub["notify_count"]) == ("active", 2)


def test_notices_reserve_nothing(ti: httpx.Client, shop: Tenant) -> None:
    subscribe(ti, quantity=3)
    assert count(shop, 8) == 1
    r = shop.get("/v1/inventory/TESTOPN-SKU")
    assert r.status_code == 200, r.text
    assert r.json()["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "8"}}]
    assert r.json()["availability"][0]["availability"] == "8"


def test_expired_subscriptions_stop_are_not_listed_and_must_be_resubmitted(
        ti: httpx.Client, shop: Tenant) -> None:
    subscribe(ti, quantity=5)
    [sub] = native_subs(shop)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    r = shop.patch(f"/v1/subscriptions/{sub['id']}", json={"expires_at": soon.isoformat()})
    assert r.status_code == 200, r.text
    time.sleep(1.2)
    assert listed(ti) == []  # expired, whether or not the sweep has run yet
    assert count(shop, 10) == 0
    ti_error(ti.delete(PATH, params={"tiPartNumber": "TESTOPN"}), 404)
    # resubmitting creates a new subscription, which then works
    assert count(shop, 0) == 0
    subscribe(ti, quantity=5)
    assert len(listed(ti)) == 1
    assert count(shop, 5) == 1
    assert sorted(s["status"] for s in native_subs(shop)) == ["expired", "notified"]


def test_test_and_live_keys_are_separate(srv: Server, ti: httpx.Client, shop: Tenant) -> None:
    subscribe(ti, quantity=5)
    live = srv.tenant("live", account=shop.account)
    live_ti = ti_client(srv, live)
    assert listed(live_ti) == []
    # the live mode has no such part until the merchant loads it there
    ti_error(live_ti.post(PATH, json={"tiPartNumber": "TESTOPN"}), 422, "tiPartNumber")
    put(live, "LIVE-SKU", TESTOPN_ITEM)
    assert live.put("/v1/locations/L1", json={}).status_code == 200
    subscribe(live_ti, quantity=2)
    assert [s["requestedQty"] for s in listed(live_ti)] == [2]
    assert [s["requestedQty"] for s in listed(ti)] == [5]
    ti_error(live_ti.delete(PATH, params={"tiPartNumber": "AFE7799IABJ"}), 404)


# --- end to end: the push and the test notification over loopback ----------------------------

def test_restock_pushes_the_documents_payload_signed(ti: httpx.Client, shop: Tenant) -> None:
    assert count(shop, 0) == 0
    with Receiver() as rx:
        ep = ti_endpoint(shop, rx.url("/ti"))
        subscribe(ti, quantity=75)
        assert count(shop, 30) == 0
        assert count(shop, 80) == 1
        [got] = rx.wait_for(1)
        time.sleep(0.5)  # nothing else arrives: a ti endpoint hears back_in_stock only
        assert len(rx.requests) == 1
    assert got.path == "/ti"
    assert got.json() == example(80)
    assert verify(ep["secret"], got) == example(80)
    assert got.headers["content-type"] == "application/json"
    [notice] = [e for e in shop.get("/v1/events", params={"type": "back_in_stock"}).json()["data"]]
    assert got.headers["webhook-id"] == notice["id"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    r = shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries")
    assert [d["event_type"] for d in r.json()["data"]] == ["back_in_stock"]


def test_test_endpoint_sends_the_example_and_answers_accepted(ti: httpx.Client,
                                                              shop: Tenant) -> None:
    with Receiver() as rx:
        ep = ti_endpoint(shop, rx.url("/ti"))
        r = ti.post(PATH + "/test")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "accepted", "responseCode": 200}
        [got] = rx.wait_for(1)
    assert got.json() == SEED_EXAMPLE
    verify(ep["secret"], got)
    d = shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries").json()["data"]
    assert [(x["event_type"], x["status"], x["last_status_code"]) for x in d] == [
        ("webhook.test", "succeeded", 200)]


def test_test_endpoint_reports_the_receivers_failure(ti: httpx.Client, shop: Tenant) -> None:
    # The document's "failed" example: the receiver's status and body come back.
    body = b'{"Error": "Something went wrong"}'
    with Receiver(default=Reply(401, body)) as rx:
        ti_endpoint(shop, rx.url())
        r = ti.post(PATH + "/test")
        assert len(rx.wait_for(1)) == 1
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "failed", "responseCode": 401,
                        "message": "{\"Error\": \"Something went wrong\"}"}


def test_test_endpoint_unreachable_and_unconfigured(ti: httpx.Client, shop: Tenant) -> None:
    err = ti_error(ti.post(PATH + "/test"), 404)
    assert "format" in err["message"]
    with Receiver() as rx:
        url = rx.url()
    # a native endpoint is not the TI configured API
    assert shop.post("/v1/webhook-endpoints", json={"url": url}).status_code == 201
    ti_error(ti.post(PATH + "/test"), 404)
    ti_endpoint(shop, url)  # the receiver is gone now: nothing listens there
    r = ti.post(PATH + "/test")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["status"], got["responseCode"]) == ("failed", None)
    assert got["message"]


def test_first_enabled_ti_endpoint_is_the_configured_api(ti: httpx.Client,
                                                         shop: Tenant) -> None:
    with Receiver() as first, Receiver() as second:
        a = ti_endpoint(shop, first.url())
        ti_endpoint(shop, second.url())
        assert ti.post(PATH + "/test").json()["status"] == "accepted"
        first.wait_for(1)
        assert shop.patch(f"/v1/webhook-endpoints/{a['id']}",
                          json={"enabled": False}).status_code == 200
        assert ti.post(PATH + "/test").json()["status"] == "accepted"
        second.wait_for(1)
        wait_until(lambda: len(first.requests) == 1 and len(second.requests) == 1)
