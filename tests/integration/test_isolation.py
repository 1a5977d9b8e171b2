"""Tenant isolation: on every /v1 route, another account's (or mode's) ids and codes answer
404 (lists: empty), never its data, and nothing of theirs changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import Server, Tenant, assert_problem

# Every /v1 operation, as OpenAPI names it; the route table test below keeps this honest.
COVERED = {
    ("GET", "/v1/items"), ("GET", "/v1/items/{sku_code}"), ("PUT", "/v1/items/{sku_code}"),
    ("GET", "/v1/locations"), ("GET", "/v1/locations/{code}"), ("PUT", "/v1/locations/{code}"),
    ("GET", "/v1/markets"), ("GET", "/v1/markets/{code}"), ("PUT", "/v1/markets/{code}"),
    ("POST", "/v1/inventory/changes"), ("GET", "/v1/inventory/{sku_code}"),
    ("POST", "/v1/subscriptions"), ("GET", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/{sub_id}"), ("PATCH", "/v1/subscriptions/{sub_id}"),
    ("DELETE", "/v1/subscriptions/{sub_id}"), ("POST", "/v1/subscriptions/{sub_id}/activate"),
    ("POST", "/v1/subscriptions/{sub_id}/deactivate"),
    ("GET", "/v1/events"),
}


@pytest.fixture(params=["other-account", "same-account-live-mode"])
def owner_and_intruder(request: pytest.FixtureRequest, server: Server,
                       seeded: Tenant) -> tuple[Tenant, Tenant, dict[str, Any]]:
    """`seeded` with stock, a market, subscriptions and events; and a key that must not see
    any of it: another account's, or the same account's live-mode key."""
    a = seeded
    assert a.put("/v1/items/SKU-1", json={"title": "Boot", "upc": "A-UPC",
                                          "part_number": "A-PN"}).status_code == 200
    r = a.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": 4}],
        "idempotency_key": "shared-key"})
    assert r.status_code == 200
    sub = a.post("/v1/subscriptions", json={"sku_code": "SKU-1", "threshold": 9,
                                            "customer": {"email": "a@example.com"}}).json()
    cursor = a.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    b = server.tenant() if request.param == "other-account" else \
        server.tenant("live", account=a.account)
    return a, b, {"sub": sub, "cursor": cursor}


def snapshot(a: Tenant) -> dict[str, Any]:
    return {
        "items": a.get("/v1/items").json(),
        "locations": a.get("/v1/locations").json(),
        "markets": a.get("/v1/markets").json(),
        "inventory": a.get("/v1/inventory/SKU-1").json(),
        "subscriptions": a.get("/v1/subscriptions").json(),
        "events": a.get("/v1/events", params={"limit": 200}).json(),
    }


def test_every_route_hides_the_other_tenants_rows(
    owner_and_intruder: tuple[Tenant, Tenant, dict[str, Any]],
) -> None:
    a, b, ctx = owner_and_intruder
    sub_id = ctx["sub"]["id"]
    before = snapshot(a)
    exercised: set[tuple[str, str]] = set()

    def call(method: str, template: str, path: str, **kw: Any) -> httpx.Response:
        exercised.add((method, template))
        r = b.client.request(method, path, **kw)
        assert r.status_code < 500, r.text
        assert "a@example.com" not in r.text
        return r

    # reads by id/code: 404
    assert_problem(call("GET", "/v1/items/{sku_code}", "/v1/items/SKU-1"), 404)
    assert_problem(call("GET", "/v1/locations/{code}", "/v1/locations/L1"), 404)
    assert_problem(call("GET", "/v1/markets/{code}", "/v1/markets/EU"), 404)
    assert_problem(call("GET", "/v1/inventory/{sku_code}", "/v1/inventory/SKU-1"), 404)
    sub_path = f"/v1/subscriptions/{sub_id}"
    assert_problem(call("GET", "/v1/subscriptions/{sub_id}", sub_path), 404)
    assert_problem(call("PATCH", "/v1/subscriptions/{sub_id}", sub_path,
                        json={"threshold": 1, "customer": {"email": "evil@example.com"}}), 404)
    assert_problem(call("POST", "/v1/subscriptions/{sub_id}/deactivate",
                        sub_path + "/deactivate"), 404)
    assert_problem(call("POST", "/v1/subscriptions/{sub_id}/activate",
                        sub_path + "/activate"), 404)
    assert_problem(call("DELETE", "/v1/subscriptions/{sub_id}", sub_path), 404)

    # lists: empty, whatever the filter or cursor
    def empty(template: str, path: str, **params: Any) -> None:
        r = call("GET", template, path, params=params)
        assert r.status_code == 200, r.text
        assert r.json() == {"data": [], "next_cursor": None}

    empty("/v1/items", "/v1/items")
    for f, v in (("sku_code", "SKU-1"), ("upc", "A-UPC"), ("part_number", "A-PN")):
        empty("/v1/items", "/v1/items", **{f: v})
    empty("/v1/locations", "/v1/locations")
    empty("/v1/markets", "/v1/markets")
    empty("/v1/subscriptions", "/v1/subscriptions")
    empty("/v1/subscriptions", "/v1/subscriptions", sku_code="SKU-1", status="active")
    empty("/v1/events", "/v1/events")
    empty("/v1/events", "/v1/events", cursor=ctx["cursor"])
    empty("/v1/events", "/v1/events", type="back_in_stock.requested")

    # writes naming their codes: unknown to the intruder
    change = {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": 100}
    assert_problem(call("POST", "/v1/inventory/changes", "/v1/inventory/changes",
                        json={"changes": [change]}), 422)
    assert_problem(call("POST", "/v1/subscriptions", "/v1/subscriptions",
                        json={"sku_code": "SKU-1"}), 422)
    assert_problem(call("PUT", "/v1/markets/{code}", "/v1/markets/EU",
                        json={"locations": ["L1"]}), 422)

    # upserts on the same codes create the intruder's own rows, leaving the owner's alone
    r = call("PUT", "/v1/items/{sku_code}", "/v1/items/SKU-1", json={"title": "Theirs"})
    assert r.status_code == 200
    assert r.json()["id"] != before["items"]["data"][0]["id"]
    r = call("PUT", "/v1/locations/{code}", "/v1/locations/L1", json={"name": "Theirs"})
    assert r.status_code == 200
    # now that the intruder has its own SKU-1 and L1, it still cannot reach the owner's
    # market or subscription, and its stock and idempotency keys are its own
    assert_problem(call("POST", "/v1/subscriptions", "/v1/subscriptions",
                        json={"sku_code": "SKU-1", "market": "EU"}), 422)
    r = call("POST", "/v1/inventory/changes", "/v1/inventory/changes",
             json={"changes": [{**change, "quantity": 1}], "idempotency_key": "shared-key"})
    assert r.status_code == 200, r.text
    assert r.json()["changes"][0]["counts"] == [{"state": "IN_STOCK", "quantity": "1"}]
    inv = call("GET", "/v1/inventory/{sku_code}", "/v1/inventory/SKU-1").json()
    assert inv["locations"] == [{"location": "L1", "quantities": {"IN_STOCK": "1"}}]
    assert_problem(call("GET", "/v1/subscriptions/{sub_id}", sub_path), 404)

    assert exercised == COVERED
    after = snapshot(a)
    assert after == before


def test_same_codes_in_two_tenants_fire_only_their_own_subscriptions(
    server: Server, seeded: Tenant,
) -> None:
    a = seeded
    b = server.tenant()
    assert b.put("/v1/items/SKU-1", json={}).status_code == 200
    assert b.put("/v1/locations/L1", json={}).status_code == 200
    sa = a.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).json()
    sb = b.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).json()
    r = a.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": 5}]})
    assert r.json()["notifications"] == 1
    assert a.get(f"/v1/subscriptions/{sa['id']}").json()["status"] == "notified"
    assert b.get(f"/v1/subscriptions/{sb['id']}").json()["status"] == "active"
    assert b.get("/v1/events", params={"type": "back_in_stock"}).json()["data"] == []
    assert b.get("/v1/inventory/SKU-1").json()["locations"] == []
    r = b.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": 5}]})
    assert r.json()["notifications"] == 1
    fired = b.get("/v1/events", params={"type": "back_in_stock"}).json()["data"]
    assert [e["data"]["subscription_id"] for e in fired] == [sb["id"]]


# Resources this file owns; webhook endpoints and deliveries get their own isolation tests.
OWNED = ("/v1/items", "/v1/locations", "/v1/markets", "/v1/inventory", "/v1/subscriptions",
         "/v1/events")


def test_route_table_is_fully_covered(server: Server) -> None:
    """A new route on these resources must be added to the isolation test above."""
    spec = server.client().get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items()
              if p.startswith(OWNED) for m in ops}
    assert routes - COVERED == set(), "add these routes to test_isolation.py"
    assert COVERED - routes == set()
