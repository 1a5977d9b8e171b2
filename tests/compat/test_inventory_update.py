"""Seed 004, the inventory update API: the document's requests as golden tests, its error
form exactly, and a restock flowing from POST /api/product/inventory to real receivers (the
native format and a TI push), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat.test_ti import TESTOPN_ITEM, example, ti_client
from tests.integration.test_delivery import Receiver, own_server, verify
from tests.support import Server, Tenant

PATH = "/api/product/inventory"
# The document's two request bodies, verbatim.
BY_UPC = {"upc": "849632048260", "store": "3", "quantity": 12}
BY_SKU = {"sku": "ZOOT-SUIT", "size": "34", "width": "D", "store": "3", "quantity": 44}


@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    with own_server(db_url) as s:
        yield s


@pytest.fixture
def shop(srv: Server) -> Tenant:
    return make_shop(srv)


@pytest.fixture(scope="module")
def refusing(srv: Server) -> Tenant:
    """A shop that only ever receives refused requests; the many error cases share it."""
    return make_shop(srv)


def make_shop(srv: Server) -> Tenant:
    """The document's products: a UPC-coded item and the ZOOT-SUIT variants; stores 3, 4."""
    t = srv.tenant()
    put(t, "UPC-ITEM", {"title": "Sneaker", "upc": "849632048260"})
    for size, width in (("34", "D"), ("34", "EE"), ("36", "D")):
        put(t, f"ZOOT-{size}-{width}", {"title": "Zoot suit", "product_id": "ZOOT-SUIT",
                                        "size": size, "width": width})
    for store in ("3", "4"):
        assert t.put(f"/v1/locations/{store}", json={}).status_code == 200
    return t


def put(t: Tenant, sku: str, item: dict[str, Any]) -> None:
    r = t.put(f"/v1/items/{sku}", json=item)
    assert r.status_code == 200, r.text


def stock(t: Tenant, sku: str) -> dict[str, dict[str, str]]:
    r = t.get(f"/v1/inventory/{sku}")
    assert r.status_code == 200, r.text
    return {loc["location"]: loc["quantities"] for loc in r.json()["locations"]}


def error(r: httpx.Response, status: int, message: str | None = None) -> str:
    """The document's error form: exactly {"error": "<message>"}."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert body["error"]
    if message is not None:
        assert body["error"] == message
    got: str = body["error"]
    return got


# --- the document's requests -----------------------------------------------------------------

def test_update_by_upc(shop: Tenant) -> None:
    r = shop.post(PATH, json=BY_UPC)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "item": "UPC-ITEM", "store": "3", "quantity": 12,
                        "applied": True, "notifications": 0}
    assert stock(shop, "UPC-ITEM") == {"3": {"IN_STOCK": "12"}}


def test_update_by_sku_size_and_width_picks_the_variant(shop: Tenant) -> None:
    r = shop.post(PATH, json=BY_SKU)
    assert r.status_code == 200, r.text
    assert r.json()["item"] == "ZOOT-34-D"
    assert r.json()["quantity"] == 44
    assert stock(shop, "ZOOT-34-D") == {"3": {"IN_STOCK": "44"}}
    assert stock(shop, "ZOOT-34-EE") == {}
    assert stock(shop, "ZOOT-36-D") == {}


def test_the_quantity_is_set_not_added_per_store(shop: Tenant) -> None:
    for qty in (12, 5, 0, 7):
        assert shop.post(PATH, json={**BY_UPC, "quantity": qty}).status_code == 200
    assert shop.post(PATH, json={**BY_UPC, "store": "4", "quantity": 2}).status_code == 200
    assert stock(shop, "UPC-ITEM") == {"3": {"IN_STOCK": "7"}, "4": {"IN_STOCK": "2"}}
    r = shop.get("/v1/inventory/UPC-ITEM").json()["availability"]
    assert [a["availability"] for a in r if a["type"] == "all"] == ["9"]


def test_lenient_spellings_of_the_same_request(shop: Tenant) -> None:
    # integers for codes, a numeric string or a whole float for the quantity
    for body in ({**BY_UPC, "store": 3}, {**BY_UPC, "quantity": "12"},
                 {**BY_UPC, "quantity": 12.0}, {**BY_SKU, "size": 34}):
        r = shop.post(PATH, json=body)
        assert r.status_code == 200, (body, r.text)
    assert stock(shop, "ZOOT-34-D") == {"3": {"IN_STOCK": "44"}}


def test_an_access_token_works_as_the_bearer_token(srv: Server, shop: Tenant) -> None:
    r = srv.client().post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": shop.client_id,
        "client_secret": shop.client_secret})
    assert r.status_code == 200, r.text
    token_client = srv.client(r.json()["access_token"])
    assert token_client.post(PATH, json=BY_UPC).status_code == 200
    assert stock(shop, "UPC-ITEM") == {"3": {"IN_STOCK": "12"}}


# --- errors, in the document's form ----------------------------------------------------------

@pytest.mark.parametrize(("body", "missing"), [
    ({}, "sku"),
    ({"store": "3", "quantity": 1}, "sku"),
    ({"size": "34", "width": "D", "store": "3", "quantity": 1}, "sku"),
    ({"sku": "ZOOT-SUIT"}, "size"),
    ({"sku": "ZOOT-SUIT", "size": "34"}, "width"),
    ({"sku": "ZOOT-SUIT", "size": "34", "width": "D"}, "store"),
    ({"sku": "ZOOT-SUIT", "size": "34", "width": "D", "store": "3"}, "quantity"),
    ({"sku": "ZOOT-SUIT", "width": "D", "store": "3", "quantity": 1}, "size"),
    ({"sku": "ZOOT-SUIT", "size": "34", "store": "3", "quantity": 1}, "width"),
    ({"sku": "", "size": "34", "width": "D", "store": "3", "quantity": 1}, "sku"),
    ({"sku": "ZOOT-SUIT", "size": " ", "width": "D", "store": "3", "quantity": 1}, "size"),
    ({"upc": "849632048260"}, "store"),
    ({"upc": "849632048260", "quantity": 3}, "store"),
    ({"upc": "849632048260", "store": "3"}, "quantity"),
    ({"upc": "849632048260", "store": "3", "quantity": None}, "quantity"),
    ({"upc": None, "store": "3", "quantity": 1}, "sku"),
])
def test_missing_fields_name_the_first_one(refusing: Tenant, body: dict[str, Any],
                                           missing: str) -> None:
    error(refusing.post(PATH, json=body), 400, f"Missing required field: {missing}")


@pytest.mark.parametrize("quantity", [-1, 1.5, "abc", "-3", "1e3", True, [], {}, "9" * 5000,
                                      10**13, 1e300])
def test_quantity_must_be_a_non_negative_integer(refusing: Tenant, quantity: Any) -> None:
    message = error(refusing.post(PATH, json={**BY_UPC, "quantity": quantity}), 400)
    assert "quantity" in message
    assert stock(refusing, "UPC-ITEM") == {}


@pytest.mark.parametrize("raw", [b"{\"upc\": ", b"not json", b"", b"[1, 2]", b"\"upc\"",
                                 b"[" * 100_000])
def test_malformed_bodies_are_400(refusing: Tenant, raw: bytes) -> None:
    r = refusing.post(PATH, content=raw, headers={"Content-Type": "application/json"})
    error(r, 400)


@pytest.mark.parametrize("value", [{"a": 1}, [1], True, "x" * 201, "nul\x00", "\ud800"])
def test_bad_identifier_values_are_400(refusing: Tenant, value: Any) -> None:
    raw = json.dumps({**BY_UPC, "store": value}).encode()  # surrogates as \ud800 escapes
    message = error(refusing.post(PATH, content=raw), 400)
    assert "store" in message


def test_missing_or_invalid_token_is_401(srv: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer YOUR_API_TOKEN"},
                    {"Authorization": "Bearer a.b.c"}, {"Authorization": "Token x"}):
        r = srv.client().post(PATH, json=BY_UPC, headers=headers)
        error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"


def test_auth_is_checked_before_the_body(srv: Server) -> None:
    error(srv.client().post(PATH, content=b"{oops"), 401)


def test_publishable_key_is_403(srv: Server, shop: Tenant) -> None:
    pub = srv.tenant(publishable=True, account=shop.account)
    error(pub.post(PATH, json=BY_UPC), 403)


def test_unknown_product_or_store_is_404(shop: Tenant) -> None:
    assert "849632048261" in error(shop.post(PATH, json={**BY_UPC, "upc": "849632048261"}),
                                   404)
    error(shop.post(PATH, json={**BY_SKU, "width": "B"}), 404)
    error(shop.post(PATH, json={**BY_SKU, "sku": "OTHER"}), 404)
    error(shop.post(PATH, json={**BY_UPC, "store": "99"}), 404, "Store not found: 99")
    assert stock(shop, "UPC-ITEM") == {}
    assert stock(shop, "ZOOT-34-D") == {}


def test_test_and_live_keys_see_their_own_catalog(srv: Server, shop: Tenant) -> None:
    live = srv.tenant("live", account=shop.account)
    error(live.post(PATH, json=BY_UPC), 404)
    put(live, "UPC-LIVE", {"upc": "849632048260"})
    assert live.put("/v1/locations/3", json={}).status_code == 200
    assert live.post(PATH, json={**BY_UPC, "quantity": 1}).status_code == 200
    assert stock(live, "UPC-LIVE") == {"3": {"IN_STOCK": "1"}}
    assert stock(shop, "UPC-ITEM") == {}


def test_other_paths_under_the_prefix_answer_in_its_form(shop: Tenant) -> None:
    error(shop.get(PATH), 405)
    error(shop.post("/api/product/nothing-here", json=BY_UPC), 404)


# --- end to end: a restock through this API reaches real receivers --------------------------

def test_restock_fires_subscriptions_and_events_flow(srv: Server, shop: Tenant) -> None:
    put(shop, "UPC-ITEM", {"title": "Sneaker", "upc": "849632048260", **{
        k: v for k, v in TESTOPN_ITEM.items() if k != "title"}})
    ti = ti_client(srv, shop)
    with Receiver() as rx:
        native = shop.post("/v1/webhook-endpoints", json={
            "url": rx.url("/native"), "event_types": ["back_in_stock"]}).json()
        ti_ep = shop.post("/v1/webhook-endpoints",
                          json={"url": rx.url("/ti"), "format": "ti"}).json()
        r = shop.post("/v1/subscriptions", json={"sku_code": "UPC-ITEM", "location": "3",
                                                 "threshold": "10"})
        assert r.status_code == 201, r.text
        assert ti.post("/v2/store/subscriptions/inventory",
                       json={"tiPartNumber": "TESTOPN", "quantity": 20}).status_code == 200
        steps = [(0, 0), (5, 0), (12, 1), (3, 0), (25, 1)]  # quantity -> notices fired
        for qty, fired in steps:
            r = shop.post(PATH, json={**BY_UPC, "quantity": qty})
            assert r.status_code == 200, r.text
            assert r.json()["notifications"] == fired, (qty, r.json())
        got = rx.wait_for(3)
        time.sleep(0.5)
        assert len(rx.requests) == 3
    native_bodies = [verify(native["secret"], g) for g in got if g.path == "/native"]
    ti_bodies = [verify(ti_ep["secret"], g) for g in got if g.path == "/ti"]
    # Every back_in_stock of the account reaches every endpoint that takes the type: the
    # native one sees both subscriptions fire (store 3 at 12, all stores at 25) ...
    seen = sorted((b["data"]["availability"], b["data"]["scope"]["type"]) for b in native_bodies)
    assert seen == [("12", "location"), ("25", "all")]
    assert {b["type"] for b in native_bodies} == {"back_in_stock"}
    assert {b["data"]["item"]["upc"] for b in native_bodies} == {"849632048260"}
    # ... and the TI endpoint gets TI's payload only for the TI subscription (all stores,
    # fired at 25), with the quantity then available.
    assert ti_bodies == [example(25)]
    # one-shot: both are spent now
    assert ti.get("/v2/store/subscriptions/inventory").json() == []
    subs = shop.get("/v1/subscriptions", params={"sku_code": "UPC-ITEM"}).json()["data"]
    assert sorted(s["status"] for s in subs) == ["notified", "notified"]
    counts = shop.get("/v1/events", params={"type": "inventory.count.updated"}).json()["data"]
    assert len(counts) == len(steps)


def test_a_body_over_the_limit_is_the_documents_error_form(shop: Tenant) -> None:
    """Refused before any route runs (api/limits.py), still as {"error": ...}."""
    assert "exceeds" in error(shop.post(PATH, json={**BY_UPC, "pad": "x" * (1024 * 1024)}), 413)
