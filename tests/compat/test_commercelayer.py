"""Seed 003, Commerce Layer in_stock_subscriptions: the document's example request and answer as a
golden test, the JSON:API surface (filters, sort, pages, sparse fieldsets, include, errors,
market-scoped tokens), and the `commercelayer` webhooks end to end through a real server to a
real loopback receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from stockbell.delivery.formats import render
from stockbell.domain.accounts import Mode
from stockbell.domain.accounts import Tenant as CoreTenant
from stockbell.domain.catalog import Item
from stockbell.domain.events import Event
from stockbell.domain.subscription import Customer
from stockbell.domain.webhooks import Endpoint
from stockbell.service import catalog as catalog_service
from stockbell.service.clock import utcnow
from stockbell.service.ports import UnitOfWork
from tests.integration.test_delivery import Receiver, deliveries, own_server, verify, wait_until
from tests.support import Server, Tenant, run_db

JSONAPI = "application/vnd.api+json"
H = {"Accept": JSONAPI, "Content-Type": JSONAPI}
PATH = "/api/in_stock_subscriptions"
SKU = "TSHIRTMM000000FFFFFFXLXX"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOPIC = "x-commercelayer-topic"
SIGNATURE = "x-commercelayer-signature"

# shared/seeds/003, transcribed: the request ...
SEED_REQUEST: dict[str, Any] = {
    "data": {
        "type": "in_stock_subscriptions",
        "relationships": {
            "market": {"data": {"type": "markets", "id": "ABCRtyUpBa"}},
            "customer": {"data": {"type": "customers", "id": "BCDRtyUpBa"}},
            "sku": {"data": {"type": "skus", "id": "CDERtyUpBa"}},
        },
    }
}
SEED_HOST = "https://yourdomain.commercelayer.io"
SEED_ID = "xYZkjABcde"
SEED_EMAIL = "john@example.com"  # the seed's own address is redacted ("[email protected]")
SEED_TIME = "2018-01-01T12:00:00.000Z"


def _rel(name: str) -> dict[str, Any]:
    own = f"{SEED_HOST}/api/in_stock_subscriptions/{SEED_ID}"
    return {"links": {"self": f"{own}/relationships/{name}", "related": f"{own}/{name}"}}


# ... and the answer, in the seed's key order.
SEED_RESPONSE: dict[str, Any] = {
    "data": {
        "id": SEED_ID,
        "type": "in_stock_subscriptions",
        "links": {"self": f"{SEED_HOST}/api/in_stock_subscriptions/{SEED_ID}"},
        "attributes": {
            "status": "active",
            "customer_email": SEED_EMAIL,
            "sku_code": "TSHIRTMM000000FFFFFFXLXX",
            "stock_threshold": 3,
            "created_at": SEED_TIME,
            "updated_at": SEED_TIME,
            "reference": "ANY-EXTERNAL-REFEFERNCE",
            "reference_origin": "ANY-EXTERNAL-REFEFERNCE-ORIGIN",
            "metadata": {"foo": "bar"},
        },
        "relationships": {name: _rel(name)
                          for name in ("market", "customer", "sku", "events", "versions")},
        "meta": {"mode": "test"},
    }
}


# --- helpers -------------------------------------------------------------------------------

def send(t: Tenant | httpx.Client, method: str, url: str, body: Any = None,
         headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    client = t.client if isinstance(t, Tenant) else t
    content = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    return client.request(method, url, content=content, headers=headers or H,
                          params=params or None)


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == JSONAPI
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str,
                 pointer: str | None = None) -> dict[str, Any]:
    """A JSON:API error document as Commerce Layer answers: one error, status as a string."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == JSONAPI
    body = r.json()
    assert list(body) == ["errors"]
    [err] = body["errors"]
    assert err["status"] == str(status)
    assert err["code"] == code
    for key in ("title", "detail"):
        assert isinstance(err[key], str)
        assert err[key]
    if pointer is None:
        assert "source" not in err
    else:
        assert err["source"] == {"pointer": pointer}
    return dict(err)


def subscription(market: str | None = "EU", **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "in_stock_subscriptions",
                            "attributes": {"sku_code": SKU, **attributes}}
    if market is not None:
        data["relationships"] = {"market": {"data": {"type": "markets", "id": market}}}
    return {"data": data}


def create(t: Tenant, market: str | None = "EU", email: str = "ann@example.com",
           **attributes: Any) -> dict[str, Any]:
    doc = ok(send(t, "POST", PATH, subscription(market, customer_email=email, **attributes)),
             201)
    data: dict[str, Any] = doc["data"]
    return data


def patch(t: Tenant, sub_id: str, **attributes: Any) -> httpx.Response:
    return send(t, "PATCH", f"{PATH}/{sub_id}", {"data": {
        "type": "in_stock_subscriptions", "id": sub_id, "attributes": attributes}})


def listed(t: Tenant, **params: Any) -> list[str]:
    doc = ok(send(t, "GET", PATH, **params))
    return [d["id"] for d in doc["data"]]


def count(t: Tenant, qty: int, location: str = "L1") -> None:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": SKU, "location": location, "quantity": str(qty)}]})
    assert r.status_code == 200, r.text


def core_tenant(server: Server, t: Tenant) -> CoreTenant:
    async def find(uow: UnitOfWork) -> int | None:
        return await uow.accounts.account_id(t.account)

    account_id = run_db(server.db_url, find)
    assert account_id is not None
    return CoreTenant(account_id, Mode(t.mode))


def setup_shop(t: Tenant) -> Tenant:
    """Item SKU, locations L1 (market EU) and L2 (market US)."""
    assert t.put(f"/v1/items/{SKU}", json={"title": "Black T-shirt XL"}).status_code == 200
    for code in ("L1", "L2"):
        assert t.put(f"/v1/locations/{code}", json={}).status_code == 200
    assert t.put("/v1/markets/EU", json={"name": "Europe", "locations": ["L1"]}) \
        .status_code == 200
    assert t.put("/v1/markets/US", json={"locations": ["L2"]}).status_code == 200
    return t


@pytest.fixture
def shop(tenant: Tenant) -> Tenant:
    return setup_shop(tenant)


def token(server: Server, t: Tenant, **extra: str) -> httpx.Response:
    return server.client().post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": t.client_id,
        "client_secret": t.client_secret, **extra})


# --- golden: the seed's example ------------------------------------------------------------

def normalised(doc: dict[str, Any], base: str, sub_id: str) -> dict[str, Any]:
    """The answer with this server's host, id and clock swapped for the seed's."""
    attrs = doc["data"]["attributes"]
    assert TIME.match(attrs["created_at"])
    assert TIME.match(attrs["updated_at"])
    text = json.dumps(doc).replace(base, SEED_HOST).replace(sub_id, SEED_ID)
    out: dict[str, Any] = json.loads(text)
    out["data"]["attributes"]["created_at"] = SEED_TIME
    out["data"]["attributes"]["updated_at"] = SEED_TIME
    return out


def test_golden_seed_request_answers_the_seed_document(server: Server, tenant: Tenant) -> None:
    # The seed's market, customer and sku ids, made to exist in this account.
    assert tenant.put("/v1/locations/L1", json={}).status_code == 200
    assert tenant.put("/v1/markets/ABCRtyUpBa", json={"locations": ["L1"]}).status_code == 200
    core = core_tenant(server, tenant)

    async def seed_rows(uow: UnitOfWork) -> None:
        await catalog_service.upsert_item(uow, core, Item(sku_code=SKU, public_id="CDERtyUpBa"))
        await uow.customers.ensure(core, Customer(email=SEED_EMAIL), "BCDRtyUpBa", utcnow())

    run_db(server.db_url, seed_rows)

    # The request exactly as the seed sends it: relationships only.
    r = tenant.post(PATH, content=json.dumps(SEED_REQUEST), headers=H)
    doc = ok(r, 201)
    sub_id = doc["data"]["id"]
    expected = copy.deepcopy(SEED_RESPONSE)
    expected["data"]["attributes"].update(stock_threshold=1, reference=None,
                                          reference_origin=None, metadata={})
    assert normalised(doc, server.base_url, sub_id) == expected
    assert list(doc["data"]) == list(SEED_RESPONSE["data"])
    assert list(doc["data"]["attributes"]) == list(SEED_RESPONSE["data"]["attributes"])
    assert doc["data"]["links"]["self"] == f"{server.base_url}{PATH}/{sub_id}"

    # With the attributes the seed's answer shows, the answer is the seed's, value for value.
    body = copy.deepcopy(SEED_REQUEST)
    body["data"]["attributes"] = {k: SEED_RESPONSE["data"]["attributes"][k] for k in (
        "stock_threshold", "reference", "reference_origin", "metadata")}
    doc = ok(tenant.post(PATH, content=json.dumps(body), headers=H), 201)
    assert normalised(doc, server.base_url, doc["data"]["id"]) == SEED_RESPONSE

    # ... and GET answers the same resource.
    again = ok(send(tenant, "GET", f"{PATH}/{doc['data']['id']}"))
    assert again == doc


def test_attributes_stand_in_for_the_relationships(shop: Tenant) -> None:
    data = create(shop, email="Ann@Example.com", stock_threshold=2)
    assert data["attributes"]["customer_email"] == "ann@example.com"
    assert data["attributes"]["sku_code"] == SKU
    assert data["attributes"]["stock_threshold"] == 2
    # the customer now exists and resolves through the relationship
    doc = ok(send(shop, "GET", f"{PATH}/{data['id']}", include="customer,sku,market"))
    customer_id = doc["data"]["relationships"]["customer"]["data"]["id"]
    again = create(shop, email="ann@example.com")
    body = {"data": {"type": "in_stock_subscriptions", "relationships": {
        "customer": {"data": {"type": "customers", "id": customer_id}},
        "sku": {"data": {"type": "skus",
                         "id": doc["data"]["relationships"]["sku"]["data"]["id"]}},
        "market": {"data": {"type": "markets", "id": "EU"}}}}}
    third = ok(send(shop, "POST", PATH, body), 201)["data"]
    assert third["attributes"]["customer_email"] == again["attributes"]["customer_email"]
    assert third["attributes"]["sku_code"] == SKU


# --- the format alone ------------------------------------------------------------------------

CL_ENDPOINT = Endpoint(id="we_1", url="https://shop.example/hooks/cl",
                       secret="whsec_c2VjcmV0LXNoYXJlZA==", format="commercelayer",
                       extra={"account_id": 7, "mode": "live"})


def cl_signature(secret: str, body: bytes) -> str:
    """Commerce Layer's recipe (callbacks-security), written out independently."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def sub_event(type_: str, change: str | None = None, **sub: Any) -> Event:
    view = {"id": "bis_1", "status": "active", "sku_code": SKU,
            "scope": {"type": "market", "code": "EU"}, "threshold": "3",
            "customer": {"email": "ann@example.com", "external_id": None, "first_name": None,
                         "last_name": None, "attributes": {}},
            "auto_resubscribe": False, "expires_at": None, "reference": "R",
            "reference_origin": None, "metadata": {"é": "ü"}, "notify_count": 0,
            "notified_at": None, "created_at": "2018-01-01T12:00:00.123456Z",
            "updated_at": "2018-01-01T12:00:00Z", **sub}
    data: dict[str, Any] = {"subscription_id": "bis_1", "subscription": view}
    if change:
        data["change"] = change
    return Event(type_, datetime(2018, 1, 1, 12, tzinfo=UTC), data, item_id=1, sequence=1,
                 id="evt_1", created_at=datetime(2018, 1, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize(("type_", "change", "topic"), [
    ("subscription.created", None, "create"),
    ("subscription.updated", "activated", "activate"),
    ("subscription.updated", "deactivated", "deactivate"),
    ("back_in_stock", None, "notify"),
    ("subscription.cancelled", None, "destroy"),
])
def test_format_topics_body_and_signature(type_: str, change: str | None, topic: str) -> None:
    headers, body = render(sub_event(type_, change), CL_ENDPOINT)
    assert headers["X-CommerceLayer-Topic"] == f"in_stock_subscriptions.{topic}"
    assert headers["X-CommerceLayer-Signature"] == cl_signature(CL_ENDPOINT.secret,
                                                                body.encode())
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert list(doc) == ["data"]
    data = doc["data"]
    assert (data["type"], data["id"]) == ("in_stock_subscriptions", "bis_1")
    assert data["links"] == {"self": "/api/in_stock_subscriptions/bis_1"}
    assert data["meta"] == {"mode": "live"}
    assert data["attributes"]["created_at"] == "2018-01-01T12:00:00.123Z"
    assert data["attributes"]["updated_at"] == "2018-01-01T12:00:00.000Z"
    assert data["attributes"]["stock_threshold"] == 3
    # compact, not ASCII-escaped: JSON.stringify of the parsed body gives the same bytes
    assert body == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert "é" in body


def test_format_statuses_and_notification_time() -> None:
    notified = sub_event("back_in_stock", status="notified",
                         notified_at="2018-01-02T08:00:00.5Z")
    attrs = json.loads(render(notified, CL_ENDPOINT)[1])["data"]["attributes"]
    assert attrs["status"] == "notified"
    assert attrs["updated_at"] == "2018-01-02T08:00:00.500Z"
    for core, shown in (("expired", "inactive"), ("cancelled", "inactive"),
                        ("inactive", "inactive"), ("active", "active")):
        event = sub_event("subscription.cancelled", status=core)
        assert json.loads(render(event, CL_ENDPOINT)[1])["data"]["attributes"]["status"] == shown
    fractional = sub_event("subscription.created", threshold="2.5")
    assert json.loads(render(fractional, CL_ENDPOINT)[1])["data"]["attributes"][
        "stock_threshold"] == 2.5


def test_format_carries_only_its_topics() -> None:
    ep = CL_ENDPOINT
    assert ep.wants("subscription.created")
    assert ep.wants("back_in_stock")
    assert ep.wants("subscription.updated", {"change": "activated"})
    assert ep.wants("subscription.updated", {"change": "deactivated"})
    assert not ep.wants("subscription.updated", {"change": "updated"})
    assert not ep.wants("subscription.expired")
    assert not ep.wants("back_in_stock.requested")
    assert not ep.wants("inventory.count.updated")
    # the explicit test send still renders: the native envelope under its own topic, signed
    test_event = Event("webhook.test", datetime(2020, 1, 1, tzinfo=UTC), {"message": "hi"},
                       id="evt_t", created_at=datetime(2020, 1, 1, tzinfo=UTC))
    headers, body = render(test_event, ep)
    assert headers["X-CommerceLayer-Topic"] == "webhook.test"
    assert headers["X-CommerceLayer-Signature"] == cl_signature(ep.secret, body.encode())
    assert json.loads(body)["type"] == "webhook.test"


# --- list: filters, sort, pages, sparse fieldsets, include -------------------------------------

@pytest.fixture
def three(shop: Tenant) -> tuple[Tenant, dict[str, str]]:
    """a (active, 1, A-1/erp), b (active, 5, B-2/crm), c (inactive, 10, no reference), and a
    cancelled d that this surface no longer shows."""
    a = create(shop, stock_threshold=1, reference="A-1", reference_origin="erp")
    b = create(shop, email="bob@shop.test", stock_threshold=5, reference="B-2",
               reference_origin="crm")
    c = create(shop, email="cid@example.com", stock_threshold=10)
    ok(patch(shop, c["id"], _deactivate=True))
    d = create(shop, stock_threshold=3)
    assert send(shop, "DELETE", f"{PATH}/{d['id']}").status_code == 204
    return shop, {"a": a["id"], "b": b["id"], "c": c["id"], "d": d["id"]}


def test_filters(three: tuple[Tenant, dict[str, str]]) -> None:
    t, ids = three
    a, b, c = ids["a"], ids["b"], ids["c"]

    def q(**filters: str) -> set[str]:
        return set(listed(t, **{f"filter[q][{k}]": v for k, v in filters.items()}))

    assert set(listed(t)) == {a, b, c}
    assert q(status_eq="inactive") == {c}
    assert q(status_not_eq="inactive") == {a, b}
    assert q(status_in="active,notified") == {a, b}
    assert q(status_eq="cancelled") == set()
    assert q(stock_threshold_gt="1") == {b, c}
    assert q(stock_threshold_lteq="5") == {a, b}
    assert q(stock_threshold_eq="10") == {c}
    assert q(stock_threshold_in="1,10") == {a, c}
    assert q(customer_email_matches="%@example.com") == {a, c}
    assert q(customer_email_cont="EXAMPLE") == {a, c}
    assert q(customer_email_end=".test") == {b}
    assert q(reference_null="true") == {c}
    assert q(reference_not_null="true") == {a, b}
    assert q(reference_present="true") == {a, b}
    assert q(reference_blank="true") == {c}
    assert q(reference_start="b") == {b}
    assert q(reference_start_any="A,B") == {a, b}
    assert q(reference_does_not_match="A%") == {b}
    assert q(reference_or_reference_origin_eq="erp") == {a}
    assert q(reference_origin_in="erp,crm") == {a, b}
    assert q(reference_origin_not_in="erp") == {b}
    assert q(sku_code_eq=SKU) == {a, b, c}
    assert q(id_eq=a) == {a}
    assert q(created_at_gt="2000-01-01", created_at_lt="2100-01-01T00:00:00.000Z") == {a, b, c}
    assert q(created_at_gt="2100-01-01") == set()
    assert q(updated_at_lteq="2000-01-01T00:00:00.000Z") == set()
    # combined filters are ANDed
    assert q(status_eq="active", stock_threshold_gteq="2") == {b}


def test_filter_errors(three: tuple[Tenant, dict[str, str]]) -> None:
    t, _ = three
    for params in ({"filter[q][color_eq]": "red"}, {"filter[q][status]": "x"},
                   {"filter[status]": "active"}, {"filter[q][status_matches]": "a%"},
                   {"filter[q][created_at_cont]": "2018"}):
        assert_error(send(t, "GET", PATH, **params), 400, "FILTER_NOT_ALLOWED")
    for params in ({"filter[q][created_at_gt]": "yesterday"},
                   {"filter[q][stock_threshold_gt]": "many"},
                   {"filter[q][reference_null]": "maybe"}):
        assert_error(send(t, "GET", PATH, **params), 400, "INVALID_FILTER_VALUE")


def test_sort(three: tuple[Tenant, dict[str, str]]) -> None:
    t, ids = three
    a, b, c = ids["a"], ids["b"], ids["c"]
    assert listed(t, sort="-stock_threshold") == [c, b, a]
    assert listed(t, sort="stock_threshold") == [a, b, c]
    assert listed(t, sort="status,-stock_threshold") == [b, a, c]
    assert listed(t, sort="-created_at") == [c, b, a]
    assert listed(t, sort="customer_email,stock_threshold") == [a, b, c]
    assert_error(send(t, "GET", PATH, sort="color"), 400, "INVALID_SORT_CRITERIA")


def test_pages_and_links(server: Server, shop: Tenant) -> None:
    made = [create(shop, stock_threshold=n)["id"] for n in range(1, 13)]
    doc = ok(send(shop, "GET", PATH))
    assert [d["id"] for d in doc["data"]] == made[:10]  # default page size 10
    assert doc["meta"] == {"record_count": 12, "page_count": 2}
    base = f"{server.base_url}{PATH}"
    assert doc["links"] == {"first": f"{base}?page[number]=1&page[size]=10",
                            "next": f"{base}?page[number]=2&page[size]=10",
                            "last": f"{base}?page[number]=2&page[size]=10"}

    doc = ok(send(shop, "GET", PATH, **{"page[size]": "5", "page[number]": "2",
                                        "filter[q][stock_threshold_gt]": "0"}))
    assert [d["id"] for d in doc["data"]] == made[5:10]
    assert doc["meta"] == {"record_count": 12, "page_count": 3}
    assert set(doc["links"]) == {"first", "prev", "next", "last"}
    assert doc["links"]["prev"].endswith("filter[q][stock_threshold_gt]=0"
                                         "&page[number]=1&page[size]=5")
    # links are followable as they are
    last = ok(shop.client.get(doc["links"]["last"], headers=H))
    assert [d["id"] for d in last["data"]] == made[10:]
    assert set(last["links"]) == {"first", "prev", "last"}

    full = ok(send(shop, "GET", PATH, **{"page[size]": "25"}))
    assert len(full["data"]) == 12
    for bad in ({"page[size]": "26"}, {"page[size]": "0"}, {"page[number]": "0"},
                {"page[number]": "x"}):
        assert_error(send(shop, "GET", PATH, **bad), 400, "INVALID_PAGE_VALUE")
    empty = ok(send(shop, "GET", PATH, **{"filter[q][reference_eq]": "none"}))
    assert empty["data"] == []
    assert empty["meta"] == {"record_count": 0, "page_count": 0}


def test_sparse_fieldsets_and_include(three: tuple[Tenant, dict[str, str]]) -> None:
    t, _ = three
    doc = ok(send(t, "GET", PATH, **{"fields[in_stock_subscriptions]": "status,sku_code,sku"}))
    for res in doc["data"]:
        assert set(res["attributes"]) == {"status", "sku_code"}
        assert set(res["relationships"]) == {"sku"}

    doc = ok(send(t, "GET", PATH, include="market,customer,sku", sort="stock_threshold",
                  **{"fields[skus]": "code"}))
    included = {(r["type"], r["id"]): r for r in doc["included"]}
    assert sorted(k[0] for k in included) == ["customers", "customers", "customers",
                                              "markets", "skus"]
    for res in doc["data"]:
        for name in ("market", "customer", "sku"):
            linkage = res["relationships"][name]["data"]
            assert (linkage["type"], linkage["id"]) in included
        assert "data" not in res["relationships"]["events"]
    market = included[("markets", "EU")]
    assert market["attributes"]["name"] == "Europe"
    assert market["links"]["self"].endswith("/api/markets/EU")
    [sku] = [r for r in doc["included"] if r["type"] == "skus"]
    assert sku["attributes"] == {"code": SKU}
    emails = {r["attributes"]["email"] for r in doc["included"] if r["type"] == "customers"}
    assert emails == {"ann@example.com", "bob@shop.test", "cid@example.com"}

    assert_error(send(t, "GET", PATH, include="events"), 400, "INVALID_INCLUDE")
    assert_error(send(t, "GET", PATH, **{"fields[in_stock_subscriptions]": "color"}), 400,
                 "INVALID_FIELD")
    assert_error(send(t, "GET", PATH, **{"fields[orders]": "status"}), 400, "INVALID_RESOURCE")


# --- retrieve, update, delete, related resources ----------------------------------------------

def test_retrieve_update_triggers_and_delete(shop: Tenant) -> None:
    sub = create(shop, stock_threshold=2, reference="R1", metadata={"a": 1})
    url = f"{PATH}/{sub['id']}"
    assert ok(send(shop, "GET", url)) == {"data": sub}

    doc = ok(patch(shop, sub["id"], stock_threshold=4, reference="R2", reference_origin="crm",
                   metadata={"b": 2}))
    attrs = doc["data"]["attributes"]
    assert (attrs["stock_threshold"], attrs["reference"], attrs["reference_origin"],
            attrs["metadata"]) == (4, "R2", "crm", {"b": 2})
    assert attrs["updated_at"] >= attrs["created_at"] == sub["attributes"]["created_at"]

    assert ok(patch(shop, sub["id"], _deactivate=True))["data"]["attributes"]["status"] \
        == "inactive"
    assert ok(patch(shop, sub["id"], _activate="true"))["data"]["attributes"]["status"] \
        == "active"
    assert_error(patch(shop, sub["id"], _activate=True, _deactivate=True), 422,
                 "VALIDATION_ERROR", "/data/attributes/_activate")
    assert ok(patch(shop, sub["id"], sku_code=SKU))["data"]["attributes"]["sku_code"] == SKU
    assert_error(patch(shop, sub["id"], sku_code="OTHER"), 422, "VALIDATION_ERROR",
                 "/data/attributes/sku_code")
    assert_error(patch(shop, sub["id"], status="notified"), 400, "PARAM_NOT_ALLOWED",
                 "/data/attributes/status")
    assert_error(patch(shop, sub["id"], stock_threshold=None), 422, "VALIDATION_ERROR",
                 "/data/attributes/stock_threshold")
    other_market = {"data": {"type": "in_stock_subscriptions", "id": sub["id"],
                             "relationships": {"market": {"data": {"type": "markets",
                                                                   "id": "US"}}}}}
    assert_error(send(shop, "PATCH", url, other_market), 422, "VALIDATION_ERROR",
                 "/data/relationships/market")
    wrong_id = {"data": {"type": "in_stock_subscriptions", "id": "bis_other",
                         "attributes": {"reference": "x"}}}
    assert_error(send(shop, "PATCH", url, wrong_id), 400, "KEY_NOT_INCLUDED_IN_URL",
                 "/data/id")

    r = send(shop, "DELETE", url)
    assert (r.status_code, r.content) == (204, b"")
    assert_error(send(shop, "GET", url), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "DELETE", url), 404, "RECORD_NOT_FOUND")
    assert_error(patch(shop, sub["id"], reference="x"), 404, "RECORD_NOT_FOUND")
    assert sub["id"] not in listed(shop)
    # the core keeps it, cancelled
    assert shop.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "cancelled"


def test_related_resources_and_relationship_links(shop: Tenant) -> None:
    sub = create(shop)
    own = f"{PATH}/{sub['id']}"
    market = ok(send(shop, "GET", f"{own}/market"))["data"]
    assert (market["type"], market["id"]) == ("markets", "EU")
    customer = ok(send(shop, "GET", f"{own}/customer"))["data"]
    assert customer["type"] == "customers"
    assert customer["attributes"]["email"] == "ann@example.com"
    sku = ok(send(shop, "GET", f"{own}/sku"))["data"]
    assert (sku["type"], sku["attributes"]["code"]) == ("skus", SKU)
    for name in ("events", "versions"):
        assert ok(send(shop, "GET", f"{own}/{name}"))["data"] == []
        assert ok(send(shop, "GET", f"{own}/relationships/{name}"))["data"] == []
    rel = ok(send(shop, "GET", f"{own}/relationships/customer"))
    assert rel["data"] == {"type": "customers", "id": customer["id"]}
    assert rel["links"] == sub["relationships"]["customer"]["links"]
    # every relationship link of the resource resolves
    for name, links in sub["relationships"].items():
        for link in links["links"].values():
            assert shop.client.get(link, headers=H).status_code == 200, (name, link)

    # the resources themselves
    for res in (market, customer, sku):
        assert ok(shop.client.get(res["links"]["self"], headers=H))["data"] == res
    assert_error(send(shop, "GET", "/api/markets/NOPE"), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "GET", "/api/customers/nope"), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "GET", "/api/skus/nope"), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "GET", f"{own}/orders"), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "GET", f"{own}/relationships/orders"), 404, "RECORD_NOT_FOUND")


def test_statuses_notified_and_expired(shop: Tenant) -> None:
    notified = create(shop, stock_threshold=2)
    count(shop, 5)
    got = ok(send(shop, "GET", f"{PATH}/{notified['id']}"))["data"]["attributes"]
    assert got["status"] == "notified"
    assert got["updated_at"] > notified["attributes"]["updated_at"]
    count(shop, 0)

    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    r = shop.post("/v1/subscriptions", json={"sku_code": SKU, "market": "EU",
                                             "expires_at": soon})
    assert r.status_code == 201, r.text
    expired_id = r.json()["id"]
    time.sleep(1.2)
    count(shop, 5)  # the crossing finds it expired
    assert shop.get(f"/v1/subscriptions/{expired_id}").json()["status"] == "expired"
    shown = ok(send(shop, "GET", f"{PATH}/{expired_id}"))["data"]["attributes"]
    assert shown["status"] == "inactive"
    assert expired_id in listed(shop, **{"filter[q][status_eq]": "inactive"})
    assert set(listed(shop, **{"filter[q][status_eq]": "notified"})) == {notified["id"]}
    # an expired subscription cannot be activated: a validation error, as Commerce Layer says
    assert_error(patch(shop, expired_id, _activate=True), 422, "VALIDATION_ERROR")


# --- errors ----------------------------------------------------------------------------------

def test_content_negotiation(shop: Tenant) -> None:
    body = subscription(customer_email="ann@example.com")
    for ctype in ("application/json", f"{JSONAPI}; charset=utf-8", ""):
        r = send(shop, "POST", PATH, body, {"Accept": JSONAPI, "Content-Type": ctype})
        assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    for accept in ("application/json", f"{JSONAPI}; ext=bulk", "text/html"):
        assert_error(send(shop, "GET", PATH, headers={"Accept": accept}), 406,
                     "NOT_ACCEPTABLE")
    # Accept may be absent, */* or list the JSON:API type among others
    for accept in ("", "*/*", f"application/json, {JSONAPI}", "*/*;q=0.8"):
        ok(send(shop, "GET", PATH, headers={"Accept": accept}))
    ok(send(shop, "POST", PATH, body, {"Content-Type": JSONAPI}), 201)


def test_validation_errors(shop: Tenant) -> None:
    def post(body: Any) -> httpx.Response:
        return send(shop, "POST", PATH, body)

    err = assert_error(post(subscription(None, customer_email="a@b.co")), 422,
                       "VALIDATION_ERROR", "/data/relationships/market")
    assert (err["title"], err["detail"]) == ("can't be blank", "market - can't be blank")
    assert_error(post(subscription()), 422, "VALIDATION_ERROR", "/data/relationships/customer")
    no_sku = subscription(customer_email="a@b.co")
    del no_sku["data"]["attributes"]["sku_code"]
    assert_error(post(no_sku), 422, "VALIDATION_ERROR", "/data/relationships/sku")
    for bad in (0, -1, "abc", 2.5, True, None):
        assert_error(post(subscription(customer_email="a@b.co", stock_threshold=bad)), 422,
                     "VALIDATION_ERROR", "/data/attributes/stock_threshold")
    err = assert_error(post(subscription(customer_email="not-an-email")), 422,
                       "VALIDATION_ERROR", "/data/attributes/customer_email")
    assert err["detail"] == "customer_email - is invalid"
    assert_error(post(subscription(customer_email="a@b.co", sku_code="NOPE")), 422,
                 "VALIDATION_ERROR", "/data/attributes/sku_code")
    assert_error(post(subscription(customer_email="a@b.co", metadata=[1])), 422,
                 "VALIDATION_ERROR", "/data/attributes/metadata")
    assert_error(post(subscription(customer_email="a@b.co", color="red")), 400,
                 "PARAM_NOT_ALLOWED", "/data/attributes/color")
    with_customer = subscription()
    with_customer["data"]["relationships"]["customer"] = {
        "data": {"type": "customers", "id": "cus_missing"}}
    assert_error(post(with_customer), 404, "RECORD_NOT_FOUND", "/data/relationships/customer")
    with_sku = subscription(customer_email="a@b.co")
    with_sku["data"]["relationships"]["sku"] = {"data": {"type": "skus", "id": "item_missing"}}
    assert_error(post(with_sku), 404, "RECORD_NOT_FOUND", "/data/relationships/sku")
    assert_error(post(subscription("NOWHERE", customer_email="a@b.co")), 404,
                 "RECORD_NOT_FOUND", "/data/relationships/market")
    mismatch = subscription(customer_email="a@b.co")
    mismatch["data"]["relationships"]["market"]["data"]["type"] = "skus"
    assert_error(post(mismatch), 400, "TYPE_MISMATCH", "/data/relationships/market")
    assert_error(post("{not json"), 400, "INVALID_DATA_FORMAT")
    assert_error(post('{"data": {"type": "in_stock_subscriptions", "attributes": NaN}}'), 400,
                 "INVALID_DATA_FORMAT")
    assert_error(post({"data": {"type": "in_stock_subscriptions",
                                "attributes": {"reference": "a\u0000b"}}}), 400,
                 "INVALID_DATA_FORMAT")
    assert_error(post({"nodata": 1}), 400, "PARAM_MISSING", "/data")
    assert_error(post({"data": {"type": "orders"}}), 400, "INVALID_RESOURCE", "/data/type")
    assert_error(post({"data": {"type": "in_stock_subscriptions", "id": "mine"}}), 400,
                 "PARAM_NOT_ALLOWED", "/data/id")


def test_not_found_and_unauthorized(server: Server, shop: Tenant) -> None:
    assert_error(send(shop, "GET", f"{PATH}/bis_nope"), 404, "RECORD_NOT_FOUND")
    assert_error(send(shop, "GET", f"{PATH}/{'x' * 300}"), 404, "RECORD_NOT_FOUND")
    anon = server.client()
    r = send(anon, "GET", PATH)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"] == "Bearer"
    bad = server.client("a.b.c")
    assert_error(send(bad, "POST", PATH, subscription(customer_email="a@b.co")), 401,
                 "UNAUTHORIZED")
    assert_error(send(bad, "GET", "/api/markets/EU"), 401, "UNAUTHORIZED")
    # another account's subscription does not exist here
    sub = create(shop)
    stranger = setup_shop(server.tenant())
    assert_error(send(stranger, "GET", f"{PATH}/{sub['id']}"), 404, "RECORD_NOT_FOUND")


def test_publishable_keys_may_only_create(server: Server, shop: Tenant) -> None:
    pub = server.tenant(publishable=True, account=shop.account)
    created = ok(send(pub, "POST", PATH, subscription(customer_email="p@shop.test")), 201)
    assert created["data"]["attributes"]["customer_email"] == "p@shop.test"
    assert_error(send(pub, "GET", PATH), 403, "FORBIDDEN")
    assert_error(send(pub, "GET", f"{PATH}/{created['data']['id']}"), 403, "FORBIDDEN")
    assert_error(send(pub, "POST", PATH, subscription(customer_email="p@shop.test"),
                      include="customer"), 403, "FORBIDDEN")


# --- tokens scoped to a market ---------------------------------------------------------------

def test_token_scope_market(server: Server, shop: Tenant) -> None:
    plain = token(server, shop)
    assert plain.status_code == 200, plain.text
    assert plain.json()["scope"] == "read write"

    r = token(server, shop, scope="market:EU")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "created_at"}
    assert (body["scope"], body["token_type"]) == ("market:EU", "bearer")
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    assert abs(body["created_at"] - time.time()) < 60
    alt = token(server, shop, scope="market:code:EU")
    assert (alt.status_code, alt.json()["scope"]) == (200, "market:code:EU")
    for bad in ("market:NOPE", "orders:1", "market:"):
        r = token(server, shop, scope=bad)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["pointer"] == "/scope"

    eu = server.client(body["access_token"])
    us_sub = create(shop, market="US")
    eu_sub = create(shop, market="EU")
    # no market relationship: the token's market
    implicit = ok(send(eu, "POST", PATH, subscription(None, customer_email="z@shop.test"),
                       include="market"), 201)["data"]
    assert implicit["relationships"]["market"]["data"] == {"type": "markets", "id": "EU"}
    assert_error(send(eu, "POST", PATH, subscription("US", customer_email="z@shop.test")),
                 422, "VALIDATION_ERROR", "/data/relationships/market")
    seen = [d["id"] for d in ok(send(eu, "GET", PATH))["data"]]
    assert set(seen) == {eu_sub["id"], implicit["id"]}
    assert_error(send(eu, "GET", f"{PATH}/{us_sub['id']}"), 404, "RECORD_NOT_FOUND")
    assert_error(send(eu, "GET", "/api/markets/US"), 404, "RECORD_NOT_FOUND")
    ok(send(eu, "GET", "/api/markets/EU"))
    # the unscoped key sees both markets
    assert {us_sub["id"], eu_sub["id"], implicit["id"]} <= set(listed(shop))


# --- webhooks, end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def hooks_server(db_url: str) -> Iterator[Server]:
    """Its own database (no other test server's dispatcher claims these deliveries), with
    loopback receivers allowed."""
    with own_server(db_url) as srv:
        yield srv


def test_webhooks_end_to_end(hooks_server: Server) -> None:
    t = setup_shop(hooks_server.tenant())
    with Receiver() as rx:
        r = t.post("/v1/webhook-endpoints", json={"url": rx.url("/cl"),
                                                  "format": "commercelayer"})
        assert r.status_code == 201, r.text
        ep = r.json()
        started = datetime.now(UTC) - timedelta(seconds=1)

        sub = create(t, stock_threshold=2)
        url = f"{PATH}/{sub['id']}"
        rx.wait_for(1)
        ok(patch(t, sub["id"], _deactivate=True))
        rx.wait_for(2)
        ok(patch(t, sub["id"], reference="edited"))  # no Commerce Layer topic for an edit
        ok(patch(t, sub["id"], _activate=True))
        rx.wait_for(3)
        count(t, 3)  # availability in EU 0 -> 3 crosses 2
        rx.wait_for(4)
        shown = ok(send(t, "GET", url))["data"]
        assert send(t, "DELETE", url).status_code == 204
        got = rx.wait_for(5)

        topics = [g.headers[TOPIC] for g in got]
        assert topics == [f"in_stock_subscriptions.{n}"
                          for n in ("create", "deactivate", "activate", "notify", "destroy")]
        statuses = []
        for g in got:
            assert hmac.compare_digest(g.headers[SIGNATURE], cl_signature(ep["secret"], g.body))
            verify(ep["secret"], g)  # the Standard Webhooks headers ride along
            assert g.headers["content-type"] == "application/json"
            doc = g.json()
            assert list(doc) == ["data"]
            data = doc["data"]
            assert (data["id"], data["type"]) == (sub["id"], "in_stock_subscriptions")
            assert data["meta"] == {"mode": "test"}
            assert data["links"] == {"self": url}
            assert set(data["relationships"]) == set(sub["relationships"])
            statuses.append(data["attributes"]["status"])
        assert statuses == ["active", "inactive", "active", "notified", "inactive"]
        assert got[2].json()["data"]["attributes"]["reference"] == "edited"
        # the notify payload is the resource a GET answered at that moment
        assert got[3].json()["data"]["attributes"] == shown["attributes"]

        # one delivery per topic, none for the edit or the back_in_stock.requested event
        sent = deliveries(t, ep["id"])
        assert len(sent) == 5
        assert {d["event_type"] for d in sent} == {
            "subscription.created", "subscription.updated", "back_in_stock",
            "subscription.cancelled"}
        wait_until(lambda: all(d["status"] == "succeeded" for d in deliveries(t, ep["id"])),
                   what="deliveries to succeed")

        # a replay queues the same five again, nothing else
        r = t.post(f"/v1/webhook-endpoints/{ep['id']}/replay",
                   json={"since": started.isoformat()})
        assert r.status_code == 200, r.text
        assert r.json() == {"queued": 5}
        again = rx.wait_for(10)[5:]
        assert sorted(g.headers[TOPIC] for g in again) == sorted(topics)

        # the explicit test send reaches the endpoint too, signed the same way
        r = t.post(f"/v1/webhook-endpoints/{ep['id']}/test")
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True
        [probe] = rx.wait_for(1, where=lambda g: g.headers[TOPIC] == "webhook.test")
        assert probe.headers[SIGNATURE] == cl_signature(ep["secret"], probe.body)
