"""Bad input is a 4xx RFC 9457 problem (type, title, status, detail), never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Server, Tenant, assert_problem

ROUTES_WITH_BODY = [
    ("PUT", "/v1/items/SKU-1"),
    ("PUT", "/v1/locations/L1"),
    ("PUT", "/v1/markets/EU"),
    ("POST", "/v1/inventory/changes"),
    ("POST", "/v1/subscriptions"),
    ("PATCH", "/v1/subscriptions/{sub}"),
]


def change(**over: Any) -> dict[str, Any]:
    return {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": 1, **over}


@pytest.fixture(scope="module")
def shop(server: Server) -> tuple[Tenant, str]:
    """One tenant for the whole module (every test here must leave it unchanged): item SKU-1,
    locations L1..L3, market EU = {L1, L2} and one subscription."""
    t = server.tenant()
    assert t.put("/v1/items/SKU-1", json={"title": "Boot"}).status_code == 200
    for code in ("L1", "L2", "L3"):
        assert t.put(f"/v1/locations/{code}", json={}).status_code == 200
    assert t.put("/v1/markets/EU", json={"locations": ["L1", "L2"]}).status_code == 200
    r = t.post("/v1/subscriptions", json={"sku_code": "SKU-1"})
    assert r.status_code == 201
    return t, str(r.json()["id"])


@pytest.fixture
def seeded(shop: tuple[Tenant, str]) -> Tenant:
    return shop[0]


@pytest.fixture
def sub_id(shop: tuple[Tenant, str]) -> str:
    return shop[1]


@pytest.mark.parametrize("raw", [b"{", b'{"title": }', b"\xff\xfe", b"{'a': 1}", b"nul\x00"])
def test_malformed_json_is_400_on_every_route(seeded: Tenant, sub_id: str, raw: bytes) -> None:
    for method, path in ROUTES_WITH_BODY:
        r = seeded.client.request(method, path.format(sub=sub_id), content=raw,
                                  headers={"Content-Type": "application/json"})
        body = assert_problem(r, 400)
        assert "JSON" in body["detail"] or "json" in body["detail"], (method, path, body)


def test_non_object_and_empty_bodies_are_4xx(seeded: Tenant, sub_id: str) -> None:
    for method, path in ROUTES_WITH_BODY:
        for payload in ([], "text", 3, None):
            r = seeded.client.request(method, path.format(sub=sub_id), json=payload)
            assert 400 <= r.status_code < 500, (method, path, payload, r.text)
            assert_problem(r, r.status_code)
        r = seeded.client.request(method, path.format(sub=sub_id), content=b"",
                                  headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (method, path, r.text)
        assert_problem(r, r.status_code)
    assert seeded.get("/v1/items/SKU-1").json()["title"] == "Boot"
    assert sorted(seeded.get("/v1/markets/EU").json()["locations"]) == ["L1", "L2"]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/items/SKU-X", {"title": 5}),
    ("/v1/items/SKU-X", {"attributes": []}),
    ("/v1/items/SKU-X", {"pricing": {"currency": "USD"}}),
    ("/v1/items/SKU-X", {"pricing": [{"currency": "usd"}]}),
    ("/v1/items/SKU-X", {"pricing": [{"currency": "USD",
                                      "price_breaks": [{"quantity": "2", "price": "1"}]}]}),
    ("/v1/items/SKU-X", {"pricing": [{"currency": "USD",
                                      "price_breaks": [{"quantity": 1, "price": "-1"}]}]}),
    ("/v1/items/SKU-X", {"pricing": [{"currency": "USD",
                                      "price_breaks": [{"quantity": 0, "price": "1"}]}]}),
    ("/v1/items/SKU-X", {"pricing": [{"currency": "USD",
                                      "price_breaks": [{"quantity": 1, "price": "abc"}]}]}),
    ("/v1/items/SKU-X", {"unknown_field": 1}),
    ("/v1/items/SKU-X", {"title": "nul\u0000byte"}),
    ("/v1/locations/L9", {"name": ["x"]}),
    ("/v1/markets/M", {"locations": "L1"}),
    ("/v1/markets/M", {"locations": [1, 2]}),
])
def test_catalog_wrong_types_are_422(seeded: Tenant, path: str, body: Any) -> None:
    r = seeded.put(path, json=body)
    assert_problem(r, 422)
    assert r.json().get("errors"), r.json()


@pytest.mark.parametrize("body", [
    {"changes": "nope"},
    {"changes": []},
    {},
    {"changes": [change(type="recount")]},
    {"changes": [change(quantity="abc")]},
    {"changes": [change(quantity="NaN")]},
    {"changes": [change(quantity="Infinity")]},
    {"changes": [change(quantity=1.5)]},
    {"changes": [change(quantity=True)]},
    {"changes": [change(quantity=None)]},
    {"changes": [change(quantity="1e13")]},
    {"changes": [change(quantity="0.0000001")]},
    {"changes": [change(quantity=-1)]},
    {"changes": [change(state="BROKEN")]},
    {"changes": [change(state="NONE")]},
    {"changes": [change(sku_code=7)]},
    {"changes": [change(sku_code="")]},
    {"changes": [change(occurred_at="last tuesday")]},
    {"changes": [change(occurred_at="2999-01-01T00:00:00Z")]},
    {"changes": [change(extra=1)]},
    {"changes": [{"type": "adjustment", "sku_code": "SKU-1", "location": "L1",
                  "from_state": "IN_STOCK", "to_state": "SOLD", "quantity": 0}]},
    {"changes": [{"type": "adjustment", "sku_code": "SKU-1", "location": "L1",
                  "from_state": "SOLD", "to_state": "SOLD", "quantity": 1}]},
    {"changes": [{"type": "adjustment", "sku_code": "SKU-1", "location": "L1",
                  "to_state": "SOLD", "quantity": 1}]},
    {"changes": [change()], "idempotency_key": ""},
    {"changes": [change()], "idempotency_key": 5},
])
def test_inventory_wrong_input_is_422_and_applies_nothing(seeded: Tenant, body: Any) -> None:
    assert_problem(seeded.post("/v1/inventory/changes", json=body), 422)
    assert seeded.get("/v1/inventory/SKU-1").json()["locations"] == []


@pytest.mark.parametrize(("field", "value"), [("sku_code", "NOPE"), ("location", "NOPE")])
def test_inventory_unknown_item_or_location_is_422_naming_it(seeded: Tenant, field: str,
                                                             value: str) -> None:
    body = assert_problem(seeded.post("/v1/inventory/changes", json={
        "changes": [change(), change(**{field: value})]}), 422)
    assert value in body["detail"]
    assert body["errors"][0]["pointer"] == f"/changes/1/{field}"
    assert seeded.get("/v1/inventory/SKU-1").json()["locations"] == []


def test_batch_over_1000_changes_is_422(seeded: Tenant) -> None:
    r = seeded.post("/v1/inventory/changes", json={"changes": [change()] * 1001})
    assert_problem(r, 422)
    assert seeded.get("/v1/inventory/SKU-1").json()["locations"] == []


@pytest.mark.parametrize("body", [
    {"sku_code": "SKU-1", "threshold": 0},
    {"sku_code": "SKU-1", "threshold": "0"},
    {"sku_code": "SKU-1", "threshold": -1},
    {"sku_code": "SKU-1", "threshold": "-0.5"},
    {"sku_code": "SKU-1", "threshold": "lots"},
    {"sku_code": "SKU-1", "threshold": [1]},
    {"sku_code": "SKU-1", "threshold": True},
    {"sku_code": "SKU-1", "threshold": "1.0000001"},
    {"sku_code": "SKU-1", "auto_resubscribe": "yes"},
    {"sku_code": "SKU-1", "customer": {"email": "not-an-email"}},
    {"sku_code": "SKU-1", "customer": "a@example.com"},
    {"sku_code": "SKU-1", "metadata": ["x"]},
    {"sku_code": "SKU-1", "expires_at": "soon"},
    {"sku_code": "SKU-1", "bogus": 1},
    {"sku_code": 1},
    {"threshold": 1},
    {"sku_code": "NOPE"},
    {"sku_code": "SKU-1", "location": "NOPE"},
    {"sku_code": "SKU-1", "market": "NOPE"},
    {"sku_code": "SKU-1", "location": "L1", "market": "EU"},
])
def test_subscription_wrong_input_is_422_and_creates_nothing(seeded: Tenant, sub_id: str,
                                                            body: Any) -> None:
    assert_problem(seeded.post("/v1/subscriptions", json=body), 422)
    assert [s["id"] for s in seeded.get("/v1/subscriptions").json()["data"]] == [sub_id]
    created = seeded.get("/v1/events", params={"type": "subscription.created"}).json()["data"]
    assert len(created) == 1


@pytest.mark.parametrize("body", [
    {"threshold": 0}, {"threshold": "-3"}, {"threshold": "x"}, {"threshold": True},
    {"auto_resubscribe": 1}, {"metadata": "x"}, {"customer": {"email": "nope"}},
    {"expires_at": "never"}, {"status": "active"}, {"sku_code": "SKU-2"},
])
def test_subscription_patch_wrong_input_is_422_and_changes_nothing(
    seeded: Tenant, sub_id: str, body: Any,
) -> None:
    before = seeded.get(f"/v1/subscriptions/{sub_id}").json()
    assert_problem(seeded.patch(f"/v1/subscriptions/{sub_id}", json=body), 422)
    assert seeded.get(f"/v1/subscriptions/{sub_id}").json() == before


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/items", {"limit": 0}),
    ("/v1/items", {"limit": 201}),
    ("/v1/items", {"limit": "ten"}),
    ("/v1/items", {"cursor": "not-a-cursor"}),
    ("/v1/items", {"cursor": "YzE6eA"}),  # "c1:x"
    ("/v1/locations", {"cursor": "%%%"}),
    ("/v1/markets", {"limit": -1}),
    ("/v1/subscriptions", {"status": "sleeping"}),
    ("/v1/subscriptions", {"limit": 10**6}),
    ("/v1/events", {"type": "nope"}),
    ("/v1/events", {"created_after": "2024-13-45"}),
    ("/v1/events", {"cursor": "Zm9vOjE"}),  # "foo:1"
])
def test_bad_query_parameters_are_422(seeded: Tenant, path: str, params: dict[str, Any]) -> None:
    assert_problem(seeded.get(path, params=params), 422)


def test_body_over_one_mebibyte_is_413(seeded: Tenant) -> None:
    big = {"title": "x", "attributes": {"blob": "y" * (1024 * 1024)}}
    assert_problem(seeded.put("/v1/items/BIG", json=big), 413)
    assert_problem(seeded.get("/v1/items/BIG"), 404)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        yield b'{"title": "x", "attributes": {"blob": "'
        for _ in range(17):
            yield b"z" * 65536
        yield b'"}}'

    r = seeded.put("/v1/items/BIG", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert_problem(r, 413)
    assert_problem(seeded.get("/v1/items/BIG"), 404)
    # just under the limit is fine
    ok = {"attributes": {"blob": "y" * (1024 * 1024 - 100)}}
    assert seeded.put("/v1/items/BIG", json=ok).status_code == 200


def test_unknown_route_method_and_nul_in_url(seeded: Tenant) -> None:
    assert_problem(seeded.get("/v1/nope"), 404)
    assert_problem(seeded.delete("/v1/items/SKU-1"), 405)
    assert_problem(seeded.get("/v1/items/SKU%001"), 400)
    assert_problem(seeded.get("/v1/items", params={"sku_code": "a\x00b"}), 400)


def test_overlong_codes_are_4xx(seeded: Tenant) -> None:
    long = "x" * 201
    for r in (seeded.get(f"/v1/items/{long}"), seeded.put(f"/v1/items/{long}", json={}),
              seeded.put(f"/v1/locations/{long}", json={}),
              seeded.get("/v1/items", params={"sku_code": long}),
              seeded.post("/v1/subscriptions", json={"sku_code": long})):
        assert r.status_code == 422, r.text
        assert_problem(r, 422)


def test_json_with_wrong_content_type_is_refused(seeded: Tenant) -> None:
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        r = seeded.put("/v1/items/PLAIN", content=b'{"title": "x"}',
                       headers={"Content-Type": ctype})
        assert r.status_code in (415, 422), r.text
        assert_problem(r, r.status_code)
    assert_problem(seeded.get("/v1/items/PLAIN"), 404)
