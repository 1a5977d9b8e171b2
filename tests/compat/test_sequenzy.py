"""Seed 002, Sequenzy back-in-stock: the document's request example as a golden test, the
product upsert (catalog and stock), the `sequenzy` payload format, and the request-then-restock
flow end to end through a real server to a real loopback receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from stockbell.delivery.formats import render
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint
from tests.integration.test_delivery import Receiver, own_server, verify, wait_until
from tests.support import Server, Tenant

# The seed's curl example body (shared/seeds/002), verbatim.
SEED_REQUEST = {
    "productId": "SKU-PROTEIN-1KG",
    "variantId": "SKU-PROTEIN-1KG-VANILLA",
    "customer": {"email": "buyer@example.com"},
}
# The product the example refers to, as Sequenzy's product upsert documents it.
PROTEIN = {"productId": "SKU-PROTEIN-1KG", "title": "Protein Powder", "priceCents": 8850,
           "currency": "USD", "variants": [{"variantId": "SKU-PROTEIN-1KG-VANILLA",
                                            "title": "Vanilla", "priceCents": 8850,
                                            "inStock": True, "inventoryQuantity": 12}]}
VANILLA_SKU = "SKU-PROTEIN-1KG:SKU-PROTEIN-1KG-VANILLA"


def with_stock(product: dict[str, Any], **stock: Any) -> dict[str, Any]:
    variants = [{k: v for k, v in variant.items() if k not in ("inStock", "inventoryQuantity")}
                | stock for variant in product["variants"]]
    return {**product, "variants": variants}


# --- the format alone (golden) ---------------------------------------------------------------

ENDPOINT = Endpoint(id="we_1", url="https://shop.example/hooks", secret="whsec_c2lnbg==",
                    format="sequenzy")
WHEN = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
SUBSCRIPTION = {
    "id": "bis_1", "status": "notified", "sku_code": VANILLA_SKU,
    "customer": {"email": "buyer@example.com", "external_id": "cus_9", "first_name": "Ada",
                 "last_name": "Lovelace", "attributes": {}},
    "metadata": {"sequenzy": {"subscriberId": "sub_abc123", "productId": "SKU-PROTEIN-1KG",
                              "variantId": "SKU-PROTEIN-1KG-VANILLA",
                              "productTitle": "Protein Powder", "variantTitle": "Vanilla"}},
    "created_at": "2026-05-01T09:00:00Z",
}
EXPECTED_DATA = {
    "subscriber_id": "sub_abc123", "email": "buyer@example.com", "external_id": "cus_9",
    "first_name": "Ada", "last_name": "Lovelace", "product_id": "SKU-PROTEIN-1KG",
    "variant_id": "SKU-PROTEIN-1KG-VANILLA", "product_title": "Protein Powder",
    "variant_title": "Vanilla", "sku": VANILLA_SKU, "request_id": "bis_1",
    "requested_at": "2026-05-01T09:00:00Z",
}


def event(kind: str, **data: Any) -> Event:
    return Event(kind, WHEN, {"subscription_id": "bis_1", "subscription": SUBSCRIPTION, **data},
                 item_id=1, sequence=3, id="evt_123", created_at=WHEN)


def test_golden_back_in_stock() -> None:
    headers, body = render(event("back_in_stock", availability="12", item={
        "product_id": "SKU-PROTEIN-1KG", "variant_id": "SKU-PROTEIN-1KG-VANILLA",
        "title": "Protein Powder (synced)", "variant_title": "Vanilla"}), ENDPOINT)
    assert headers == {"content-type": "application/json"}
    assert json.loads(body) == {
        "id": "evt_123", "object": "event", "type": "ecommerce.back_in_stock",
        "event": "ecommerce.back_in_stock", "created_at": "2026-05-05T12:00:00.000Z",
        "email": "buyer@example.com",
        "data": {**EXPECTED_DATA, "in_stock": True, "inventory_quantity": "12"},
        "occurred_at": "2026-05-05T12:00:00.000Z", "sequence": 3,
    }


def test_golden_back_in_stock_requested() -> None:
    payload = json.loads(render(event("back_in_stock.requested"), ENDPOINT)[1])
    assert payload["event"] == payload["type"] == "ecommerce.back_in_stock_requested"
    assert payload["data"] == EXPECTED_DATA


def test_golden_subscription_from_another_api_falls_back_to_the_item() -> None:
    native = {**SUBSCRIPTION, "metadata": {}}
    e = Event("back_in_stock", WHEN, {"subscription_id": "bis_1", "subscription": native,
                                      "availability": "1", "item": {
                                          "product_id": None, "variant_id": None,
                                          "title": "Boot", "variant_title": None}},
              id="evt_1", created_at=WHEN)
    data = json.loads(render(e, ENDPOINT)[1])["data"]
    assert (data["product_id"], data["variant_id"], data["product_title"]) == (
        VANILLA_SKU, VANILLA_SKU, "Boot")
    assert data["subscriber_id"] is None


# --- through a real server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(db_url: str) -> Iterator[Server]:
    with own_server(db_url) as server:
        yield server


@pytest.fixture
def shop(srv: Server) -> Tenant:
    return srv.tenant()


def upsert(t: Tenant, *products: dict[str, Any]) -> dict[str, Any]:
    r = t.post("/api/v1/products", json={"products": list(products)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["success"] is True
    return body


def request(t: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    r = t.post("/api/v1/back-in-stock", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def failure(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


def subscriptions(t: Tenant, sku: str) -> list[dict[str, Any]]:
    r = t.get("/v1/subscriptions", params={"sku_code": sku})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def stock(t: Tenant, sku: str) -> dict[str, str]:
    locations = t.get(f"/v1/inventory/{sku}").json()["locations"]
    return {loc["location"]: loc["quantities"].get("IN_STOCK") for loc in locations}


def test_seed_example_answers_success_and_a_stable_subscriber_id(shop: Tenant) -> None:
    upsert(shop, PROTEIN)
    answer = request(shop, SEED_REQUEST)
    assert set(answer) == {"success", "subscriberId"}
    assert answer["success"] is True
    assert re.fullmatch(r"sub_[0-9a-f]+", answer["subscriberId"])
    # the same email is the same subscriber; another email another one
    again = request(shop, {**SEED_REQUEST, "customer": {"email": "Buyer@Example.com"}})
    assert again["subscriberId"] == answer["subscriberId"]
    other = request(shop, {**SEED_REQUEST, "customer": {"email": "other@example.com"}})
    assert other["subscriberId"] != answer["subscriberId"]
    # recorded as subscriptions with the synced titles as snapshots; the repeated request of
    # the same subscriber for the same variant keeps one waiting request (told once)
    subs = subscriptions(shop, VANILLA_SKU)
    assert len(subs) == 2
    first = subs[0]
    assert first["customer"]["email"] == "buyer@example.com"
    assert first["reference_origin"] == "sequenzy"
    assert first["metadata"] == {"sequenzy": {
        "subscriberId": answer["subscriberId"], "productId": "SKU-PROTEIN-1KG",
        "variantId": "SKU-PROTEIN-1KG-VANILLA", "productTitle": "Protein Powder",
        "variantTitle": "Vanilla"}}
    types = [e["type"] for e in shop.get("/v1/events", params={"limit": 200}).json()["data"]]
    assert types.count("back_in_stock.requested") == 2


def test_request_then_restock_end_to_end(shop: Tenant) -> None:
    upsert(shop, with_stock(PROTEIN, inStock=False))
    with Receiver() as rx:
        r = shop.post("/v1/webhook-endpoints", json={"url": rx.url(), "format": "sequenzy"})
        assert r.status_code == 201, r.text
        ep = r.json()
        answer = request(shop, {**SEED_REQUEST, "productTitle": "Protein Powder 1 kg",
                                "customer": {"email": "buyer@example.com",
                                             "externalId": "cus_9", "firstName": "Ada",
                                             "lastName": "Lovelace",
                                             "attributes": {"tier": "gold"}}})
        [requested] = rx.wait_for(1)
        restocked = upsert(shop, with_stock(PROTEIN, inventoryQuantity=12))
        [_, fired] = rx.wait_for(2)
        # already notified: restocking again fires nothing
        upsert(shop, with_stock(PROTEIN, inventoryQuantity=0))
        assert upsert(shop, with_stock(PROTEIN, inventoryQuantity=5))[
            "backInStockEventsTriggered"] == 0
        wait_until(lambda: all(d["status"] == "succeeded" for d in shop.get(
            f"/v1/webhook-endpoints/{ep['id']}/deliveries").json()["data"]), what="deliveries")
        delivered = shop.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries").json()["data"]
    assert restocked["backInStockEventsTriggered"] == 1
    assert restocked["products"][0]["variants"][0] == {
        "variantId": "SKU-PROTEIN-1KG-VANILLA", "title": "Vanilla", "sku": VANILLA_SKU,
        "inStock": True, "inventoryQuantity": 12}
    # only the two Sequenzy events reach a sequenzy endpoint
    assert [d["event_type"] for d in delivered] == ["back_in_stock.requested", "back_in_stock"]

    asked = verify(ep["secret"], requested)
    assert asked["event"] == asked["type"] == "ecommerce.back_in_stock_requested"
    assert asked["object"] == "event"
    assert asked["id"] == requested.id
    assert asked["email"] == "buyer@example.com"
    assert asked["data"] | {"request_id": None, "requested_at": None} == {
        "subscriber_id": answer["subscriberId"], "email": "buyer@example.com",
        "external_id": "cus_9", "first_name": "Ada", "last_name": "Lovelace",
        "product_id": "SKU-PROTEIN-1KG", "variant_id": "SKU-PROTEIN-1KG-VANILLA",
        "product_title": "Protein Powder 1 kg", "variant_title": "Vanilla", "sku": VANILLA_SKU,
        "request_id": None, "requested_at": None}

    back = verify(ep["secret"], fired)
    assert back["event"] == back["type"] == "ecommerce.back_in_stock"
    assert back["data"]["request_id"] == asked["data"]["request_id"]
    assert back["data"]["in_stock"] is True
    assert back["data"]["inventory_quantity"] == "12"
    assert back["data"]["subscriber_id"] == answer["subscriberId"]
    assert back["sequence"] > asked["sequence"]


def test_variant_defaults_to_the_product(shop: Tenant) -> None:
    body = upsert(shop, {"productId": "TEE", "title": "Tee", "inStock": False})
    assert body["products"][0] == {"productId": "TEE", "provider": "api", "title": "Tee",
                                   "inStock": False, "variants": []}
    item = shop.get("/v1/items/TEE").json()
    assert (item["product_id"], item["variant_id"], item["title"]) == ("TEE", None, "Tee")
    a = request(shop, {"productId": "TEE", "customer": {"email": "a@example.com"}})
    b = request(shop, {"productId": "TEE", "variantId": "TEE",
                       "customer": {"email": "a@example.com"}})
    assert a["subscriberId"] == b["subscriberId"]
    err = failure(shop.post("/api/v1/back-in-stock", json={
        "productId": "TEE", "variantId": "TEE-XL", "customer": {"email": "a@example.com"}}),
        404)
    assert "TEE-XL" in err
    failure(shop.post("/api/v1/back-in-stock", json={
        "productId": "NOPE", "customer": {"email": "a@example.com"}}), 404)
    # both requests name the same variant and subscriber: one waiting request, told once
    assert upsert(shop, {"productId": "TEE", "title": "Tee", "inStock": True})[
        "backInStockEventsTriggered"] == 1


def test_upsert_keeps_an_existing_items_sku(shop: Tenant) -> None:
    r = shop.put("/v1/items/MY-SKU", json={"product_id": "P", "variant_id": "V",
                                           "upc": "0123", "title": "Old"})
    assert r.status_code == 200, r.text
    body = upsert(shop, {"productId": "P", "title": "New", "variants": [
        {"variantId": "V", "title": "Red", "inventoryQuantity": 3},
        {"variantId": "W", "inStock": True}]})
    assert [v["sku"] for v in body["products"][0]["variants"]] == ["MY-SKU", "P:W"]
    items = shop.get("/v1/items", params={"product_id": "P"}).json()["data"]
    assert sorted(i["sku_code"] for i in items) == ["MY-SKU", "P:W"]
    mine = shop.get("/v1/items/MY-SKU").json()
    assert (mine["title"], mine["variant_title"], mine["upc"]) == ("New", "Red", "0123")
    assert stock(shop, "MY-SKU") == {"sequenzy": "3"}
    assert stock(shop, "P:W") == {"sequenzy": "1"}
    assert shop.get("/v1/locations/sequenzy").status_code == 200


def test_upsert_translates_stock_and_updates_partially(shop: Tenant) -> None:
    upsert(shop, {"productId": "S", "title": "Sock", "description": "Warm", "priceCents": 500,
                  "inStock": True, "variants": [
                      {"variantId": "S-1", "title": "One"},
                      {"variantId": "S-2", "inStock": False},
                      {"variantId": "S-3", "inventoryQuantity": -4}]})
    assert stock(shop, "S:S-1") == {"sequenzy": "1"}  # the product's inStock
    assert stock(shop, "S:S-2") == {"sequenzy": "0"}
    assert stock(shop, "S:S-3") == {"sequenzy": "0"}  # oversold is none left
    # no stock information: stock untouched, reported as unknown
    body = upsert(shop, {"productId": "S", "title": "Socks", "priceCents": None,
                         "variants": [{"variantId": "S-1"}]})
    assert body["products"][0]["variants"][0]["inStock"] is None
    assert body["backInStockEventsTriggered"] == 0
    assert stock(shop, "S:S-1") == {"sequenzy": "1"}
    item = shop.get("/v1/items/S:S-1").json()
    # omitted fields keep their value, an explicit null clears one
    assert (item["title"], item["variant_title"]) == ("Socks", "One")
    assert item["attributes"] == {"description": "Warm"}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"customer": {"email": "a@example.com"}}, 400, "productId: Field required"),
    ({"productId": "TEE"}, 400, "customer: Field required"),
    ({"productId": "TEE", "customer": {}}, 400, "customer.email: Field required"),
    ({"productId": "TEE", "customer": {"email": "not-an-email"}}, 400, "customer.email"),
    ({"productId": "", "customer": {"email": "a@example.com"}}, 400, "productId"),
])
def test_request_errors(shop: Tenant, body: dict[str, Any], status: int, message: str) -> None:
    upsert(shop, {"productId": "TEE", "title": "Tee"})
    assert message in failure(shop.post("/api/v1/back-in-stock", json=body), status)
    assert subscriptions(shop, "TEE") == []


def test_upsert_errors_and_auth(srv: Server, shop: Tenant) -> None:
    assert "products" in failure(shop.post("/api/v1/products", json={"products": []}), 400)
    assert "title" in failure(shop.post("/api/v1/products", json={"productId": "X"}), 400)
    assert "inventoryQuantity" in failure(shop.post("/api/v1/products", json={
        "productId": "X", "title": "X", "variants": [
            {"variantId": "A", "inventoryQuantity": "many"}]}), 400)
    failure(shop.post("/api/v1/products", content=b"{",
                      headers={"content-type": "application/json"}), 400)
    # the derived SKU of a new variant belongs to another product already
    assert shop.put("/v1/items/Q:R", json={"product_id": "other"}).status_code == 200
    assert "Q:R" in failure(shop.post("/api/v1/products", json={
        "productId": "Q", "title": "Q", "variants": [{"variantId": "R"}]}), 409)
    for client in (srv.client(), srv.client("sk_wrong")):
        failure(client.post("/api/v1/back-in-stock", json=SEED_REQUEST), 401)
        failure(client.post("/api/v1/products", json={"products": [PROTEIN]}), 401)
    # a publishable key may ask to be notified, and nothing else
    upsert(shop, PROTEIN)
    storefront = srv.tenant(publishable=True, account=shop.account)
    assert storefront.post("/api/v1/back-in-stock", json=SEED_REQUEST).status_code == 200
    failure(storefront.post("/api/v1/products", json={"products": [PROTEIN]}), 403)
