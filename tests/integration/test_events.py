"""GET /v1/events: filters, cursor pagination, back_in_stock payloads, per-item sequence."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.support import Tenant, assert_problem


def count(t: Tenant, qty: str | int, location: str = "L1", sku: str = "SKU-1") -> None:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": sku, "location": location, "quantity": qty}]})
    assert r.status_code == 200, r.text


def page(t: Tenant, **params: Any) -> dict[str, Any]:
    r = t.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "next_cursor"}
    return dict(body)


def walk(t: Tenant, **params: Any) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        body = page(t, **params, **({"cursor": cursor} if cursor else {}))
        out += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return out, pages


def test_event_shape_and_last_page_has_null_cursor(seeded: Tenant) -> None:
    count(seeded, 3)
    body = page(seeded)
    assert body["next_cursor"] is None
    [event] = body["data"]
    assert set(event) == {"id", "type", "occurred_at", "created_at", "sequence", "data"}
    assert event["type"] == "inventory.count.updated"
    assert event["id"]
    assert event["data"]["sku_code"] == "SKU-1"
    assert event["data"]["location"] == "L1"
    assert event["data"]["counts"][0]["quantity"] == "3"
    assert datetime.fromisoformat(event["created_at"]).tzinfo is not None


def test_cursor_pagination_walks_every_event_once_in_order(seeded: Tenant) -> None:
    for q in range(1, 11):
        count(seeded, q)
    every = page(seeded, limit=200)["data"]
    assert len(every) == 10
    got, pages = walk(seeded, limit=3)
    assert pages == 4
    assert [e["id"] for e in got] == [e["id"] for e in every]
    assert len({e["id"] for e in got}) == 10
    assert [e["data"]["counts"][0]["quantity"] for e in got] == [str(q) for q in range(1, 11)]
    # exactly one full page: the cursor is already null
    exact = page(seeded, limit=10)
    assert len(exact["data"]) == 10
    assert exact["next_cursor"] is None


def test_type_filter(seeded: Tenant) -> None:
    r = seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1",
                                               "customer": {"email": "a@example.com"}})
    assert r.status_code == 201
    count(seeded, 1)
    types = {e["type"] for e in page(seeded)["data"]}
    assert types == {"subscription.created", "back_in_stock.requested",
                     "inventory.count.updated", "back_in_stock"}
    for t in types:
        only = page(seeded, type=t)["data"]
        assert len(only) == 1
        assert only[0]["type"] == t
    assert page(seeded, type="subscription.cancelled")["data"] == []
    assert_problem(seeded.get("/v1/events", params={"type": "no.such.type"}), 422)


def test_created_after_filter(seeded: Tenant) -> None:
    count(seeded, 1)
    count(seeded, 2)
    first = page(seeded)["data"]
    mark = first[-1]["created_at"]
    time.sleep(0.01)
    count(seeded, 3)
    count(seeded, 4)
    later = page(seeded, created_after=mark)["data"]
    assert [e["data"]["counts"][0]["quantity"] for e in later] == ["3", "4"]
    assert all(e["created_at"] > mark for e in later)
    # the same instant in another zone means the same thing
    shifted = datetime.fromisoformat(mark).astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert shifted.isoformat().endswith("+05:30")
    assert page(seeded, created_after=shifted.isoformat())["data"] == later
    assert page(seeded, created_after=later[-1]["created_at"])["data"] == []
    # combined with paging
    got, _ = walk(seeded, created_after=mark, limit=1)
    assert [e["id"] for e in got] == [e["id"] for e in later]
    assert_problem(seeded.get("/v1/events", params={"created_after": "yesterday"}), 422)


def test_back_in_stock_payload(seeded: Tenant) -> None:
    r = seeded.post("/v1/subscriptions", json={
        "sku_code": "SKU-1", "market": "EU", "threshold": "2.5",
        "customer": {"email": "c@example.com"}, "reference": "r-1"})
    sub = r.json()
    count(seeded, "1.5", location="L1")
    count(seeded, "1.25", location="L2")
    [event] = page(seeded, type="back_in_stock")["data"]
    data = event["data"]
    assert data["subscription_id"] == sub["id"]
    assert data["item"]["sku_code"] == "SKU-1"
    assert data["item"]["title"] == "Boot"
    assert data["item"]["id"] == seeded.get("/v1/items/SKU-1").json()["id"]
    assert data["scope"] == {"type": "market", "code": "EU"}
    assert data["availability"] == "2.75"
    assert data["previous_availability"] == "1.5"
    assert data["threshold"] == "2.5"
    assert data["subscription"]["status"] == "notified"
    assert data["subscription"]["customer"]["email"] == "c@example.com"
    assert data["subscription"]["reference"] == "r-1"
    assert isinstance(event["sequence"], int)


def test_sequence_increases_per_item(seeded: Tenant) -> None:
    assert seeded.put("/v1/items/SKU-2", json={}).status_code == 200
    assert seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).status_code == 201
    for q in (1, 0, 2):
        count(seeded, q)
        count(seeded, q, sku="SKU-2")
    r = seeded.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": s, "location": loc, "quantity": 5}
        for s in ("SKU-2", "SKU-1") for loc in ("L2", "L3")]})
    assert r.status_code == 200
    every = page(seeded, limit=200)["data"]
    by_item: dict[str, list[int]] = {}
    for e in every:
        sku = e["data"].get("sku_code") or e["data"]["subscription"]["sku_code"]
        by_item.setdefault(sku, []).append(e["sequence"])
    # SKU-1: created, 4 counts (+1 back_in_stock); SKU-2: 5 counts
    assert by_item["SKU-1"] == list(range(1, 8))
    assert by_item["SKU-2"] == list(range(1, 6))


def test_events_of_a_fresh_tenant_are_empty(tenant: Tenant) -> None:
    assert page(tenant) == {"data": [], "next_cursor": None}


def test_nul_characters_in_a_clients_json_reach_every_event(seeded: Tenant) -> None:
    """JSON may hold U+0000 in any string, keys too; PostgreSQL's JSON functions refuse to
    unescape it. A subscription carrying it is created, updated and fired, and each of its
    events is stored and listed with the data as sent (a PATCH once answered 500)."""
    meta = {"k\u0000": "v\u0000", "list": ["\u0000", {"\u0000": None}]}
    attributes = {"x\u0000": "\u0000y"}
    r = seeded.post("/v1/subscriptions", json={
        "sku_code": "SKU-1", "threshold": "1", "metadata": meta,
        "customer": {"email": "a@example.com", "attributes": attributes}})
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    r = seeded.put("/v1/items/SKU-1", json={"title": "Boot", "attributes": attributes})
    assert r.status_code == 200, r.text
    r = seeded.patch(f"/v1/subscriptions/{sub_id}", json={"metadata": {**meta, "n": 2}})
    assert r.status_code == 200, r.text
    count(seeded, 3)
    got, _ = walk(seeded, limit=200)
    subs = {e["type"]: e["data"]["subscription"] for e in got if "subscription" in e["data"]}
    assert set(subs) == {"subscription.created", "back_in_stock.requested",
                         "subscription.updated", "back_in_stock"}
    assert subs["subscription.created"]["metadata"] == meta
    assert subs["subscription.updated"]["metadata"] == {**meta, "n": 2}
    assert subs["back_in_stock"]["metadata"] == {**meta, "n": 2}
    assert subs["back_in_stock"]["id"] == sub_id
    assert all(s["customer"]["attributes"] == attributes for s in subs.values())
    fired = next(e for e in got if e["type"] == "back_in_stock")
    assert fired["data"]["item"]["attributes"] == attributes
