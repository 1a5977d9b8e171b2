"""Inventory changes: counts, adjustments, atomic batches, ordering, idempotency, views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support import Tenant, assert_problem

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def count(sku: str = "SKU-1", location: str = "L1", qty: str | int = "1",
          state: str | None = None, occurred_at: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"type": "count", "sku_code": sku, "location": location,
                         "quantity": qty}
    if state:
        c["state"] = state
    if occurred_at:
        c["occurred_at"] = occurred_at
    return c


def adjust(from_state: str, to_state: str, qty: str | int, sku: str = "SKU-1",
           location: str = "L1") -> dict[str, Any]:
    return {"type": "adjustment", "sku_code": sku, "location": location,
            "from_state": from_state, "to_state": to_state, "quantity": qty}


def post(t: Tenant, *changes: dict[str, Any], **extra: Any) -> httpx.Response:
    return t.post("/v1/inventory/changes", json={"changes": list(changes), **extra})


def ok(t: Tenant, *changes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = post(t, *changes, **extra)
    assert r.status_code == 200, r.text
    return r.json()


def stock(t: Tenant) -> dict[str, dict[str, str]]:
    r = t.get("/v1/inventory/SKU-1")
    assert r.status_code == 200, r.text
    return {x["location"]: x["quantities"] for x in r.json()["locations"]}


def availability(t: Tenant, sku: str = "SKU-1") -> dict[tuple[str, str | None], str]:
    r = t.get(f"/v1/inventory/{sku}")
    assert r.status_code == 200, r.text
    return {(a["type"], a["code"]): a["availability"] for a in r.json()["availability"]}


def test_count_then_adjustments_move_quantities_between_states(seeded: Tenant) -> None:
    body = ok(seeded, count(qty=10))
    assert body["applied"] == 1
    assert body["ignored"] == 0
    assert body["changes"][0]["counts"] == [{"state": "IN_STOCK", "quantity": "10"}]

    body = ok(seeded, adjust("IN_STOCK", "SOLD", 3))
    assert body["changes"][0]["type"] == "adjustment"
    assert sorted(body["changes"][0]["counts"], key=lambda c: c["state"]) == [
        {"state": "IN_STOCK", "quantity": "7"}, {"state": "SOLD", "quantity": "3"}]
    # receiving from outside (NONE) adds stock; WASTE takes it out of availability
    ok(seeded, adjust("NONE", "IN_STOCK", "2.5"), adjust("IN_STOCK", "WASTE", 1))
    assert stock(seeded) == {"L1": {"IN_STOCK": "8.5", "SOLD": "3", "WASTE": "1"}}
    assert availability(seeded)[("all", None)] == "8.5"
    # counting a non-available state leaves availability alone
    ok(seeded, count(qty=40, state="SOLD"))
    assert stock(seeded)["L1"]["SOLD"] == "40"
    assert availability(seeded)[("all", None)] == "8.5"


def test_batch_with_one_bad_change_applies_nothing(seeded: Tenant) -> None:
    ok(seeded, count(qty=4))
    before_events = seeded.get("/v1/events").json()["data"]
    bad_batches = [
        [count(qty=9), count(sku="NOPE", qty=1)],
        [count(qty=9), count(location="NOPE", qty=1)],
        [count(qty=9), count(location="L2", qty=-1)],
        [count(qty=9), adjust("IN_STOCK", "IN_STOCK", 1)],
        [count(qty=9), count(location="L2", qty="1.0000001")],
    ]
    for changes in bad_batches:
        r = post(seeded, *changes)
        assert_problem(r, 422)
        assert "changes/1" in r.json()["detail"]
    assert stock(seeded) == {"L1": {"IN_STOCK": "4"}}
    assert seeded.get("/v1/events").json()["data"] == before_events


def test_older_count_is_recorded_but_does_not_move_stock(seeded: Tenant) -> None:
    ok(seeded, count(qty=10, occurred_at=at(10)))
    body = ok(seeded, count(qty=3, occurred_at=at(5)))
    assert body["applied"] == 0
    assert body["ignored"] == 1
    change = body["changes"][0]
    assert change["applied"] is False
    assert change["counts"] == [{"state": "IN_STOCK", "quantity": "10"}]
    assert stock(seeded) == {"L1": {"IN_STOCK": "10"}}
    # equal timestamps: the later arrival wins
    body = ok(seeded, count(qty=7, occurred_at=at(10)))
    assert body["changes"][0]["applied"] is True
    assert stock(seeded) == {"L1": {"IN_STOCK": "7"}}
    # ordering is per (item, location, state): another state/location is independent
    assert ok(seeded, count(qty=2, state="SOLD", occurred_at=at(1)))["applied"] == 1
    assert ok(seeded, count(location="L2", qty=2, occurred_at=at(1)))["applied"] == 1


def test_out_of_order_within_one_batch(seeded: Tenant) -> None:
    body = ok(seeded, count(qty=5, occurred_at=at(2)), count(qty=9, occurred_at=at(1)),
              count(qty=6, occurred_at=at(2)))
    assert [c["applied"] for c in body["changes"]] == [True, False, True]
    assert stock(seeded) == {"L1": {"IN_STOCK": "6"}}


def test_occurred_at_timezones_are_compared_as_instants(seeded: Tenant) -> None:
    ok(seeded, count(qty=10, occurred_at="2024-05-01T14:00:00+02:00"))  # 12:00Z
    # 11:30Z written in another zone is older and ignored; 12:30Z is newer and applied
    assert ok(seeded, count(qty=1, occurred_at="2024-05-01T07:30:00-04:00"))["ignored"] == 1
    assert ok(seeded, count(qty=2, occurred_at="2024-05-01T12:30:00Z"))["applied"] == 1
    assert stock(seeded) == {"L1": {"IN_STOCK": "2"}}


def test_idempotency_key_in_body_replays_without_second_effect(seeded: Tenant) -> None:
    first = post(seeded, adjust("NONE", "IN_STOCK", 5), idempotency_key="k-1")
    assert first.status_code == 200
    again = post(seeded, adjust("NONE", "IN_STOCK", 5), idempotency_key="k-1")
    assert again.status_code == 200
    assert again.json() == first.json()
    assert stock(seeded) == {"L1": {"IN_STOCK": "5"}}
    events = seeded.get("/v1/events", params={"type": "inventory.count.updated"}).json()
    assert len(events["data"]) == 1


def test_idempotency_key_header_replays_without_second_effect(seeded: Tenant) -> None:
    body = {"changes": [adjust("NONE", "IN_STOCK", "1.5")]}
    headers = {"Idempotency-Key": "hdr-1"}
    first = seeded.post("/v1/inventory/changes", json=body, headers=headers)
    again = seeded.post("/v1/inventory/changes", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content or again.json() == first.json()
    assert stock(seeded) == {"L1": {"IN_STOCK": "1.5"}}
    # without a key the same body applies again
    assert seeded.post("/v1/inventory/changes", json=body).status_code == 200
    assert stock(seeded) == {"L1": {"IN_STOCK": "3"}}


def test_idempotency_key_with_a_different_body_is_409(seeded: Tenant) -> None:
    assert post(seeded, adjust("NONE", "IN_STOCK", 5), idempotency_key="k-2").status_code == 200
    r = post(seeded, adjust("NONE", "IN_STOCK", 6), idempotency_key="k-2")
    assert_problem(r, 409)
    r = seeded.post("/v1/inventory/changes", json={"changes": [adjust("NONE", "IN_STOCK", 7)]},
                    headers={"Idempotency-Key": "k-2"})
    assert_problem(r, 409)
    assert stock(seeded) == {"L1": {"IN_STOCK": "5"}}


def test_failed_request_does_not_burn_its_idempotency_key(seeded: Tenant) -> None:
    assert_problem(post(seeded, count(sku="NOPE"), idempotency_key="k-3"), 422)
    assert post(seeded, count(qty=2), idempotency_key="k-3").status_code == 200
    assert stock(seeded) == {"L1": {"IN_STOCK": "2"}}


def test_inventory_view_per_location_state_and_scope(seeded: Tenant) -> None:
    ok(seeded, count(location="L1", qty="1.5"), count(location="L2", qty="2.25"),
       count(location="L3", qty=10), count(location="L1", qty=4, state="SOLD"))
    r = seeded.get("/v1/inventory/SKU-1")
    body = r.json()
    assert body["sku_code"] == "SKU-1"
    assert body["locations"] == [
        {"location": "L1", "quantities": {"IN_STOCK": "1.5", "SOLD": "4"}},
        {"location": "L2", "quantities": {"IN_STOCK": "2.25"}},
        {"location": "L3", "quantities": {"IN_STOCK": "10"}},
    ]
    assert availability(seeded) == {
        ("all", None): "13.75",
        ("location", "L1"): "1.5",
        ("location", "L2"): "2.25",
        ("location", "L3"): "10",
        ("market", "EU"): "3.75",
    }


def test_decimal_quantities_stay_exact(seeded: Tenant) -> None:
    body = ok(seeded, count(qty="12.375"))
    assert body["changes"][0]["counts"] == [{"state": "IN_STOCK", "quantity": "12.375"}]
    ok(seeded, adjust("NONE", "IN_STOCK", "0.1"), adjust("NONE", "IN_STOCK", "0.2"))
    assert stock(seeded)["L1"]["IN_STOCK"] == "12.675"
    ok(seeded, adjust("IN_STOCK", "SOLD", "12.675"))
    assert stock(seeded)["L1"] == {"IN_STOCK": "0", "SOLD": "12.675"}
    ok(seeded, count(qty="0.000001"), count(location="L2", qty="999999999999.999999"))
    assert availability(seeded)[("all", None)] == "1000000000000"


def test_market_availability_sums_its_locations_and_follows_membership(seeded: Tenant) -> None:
    ok(seeded, count(location="L1", qty=3), count(location="L2", qty=4),
       count(location="L3", qty=5))
    assert availability(seeded)[("market", "EU")] == "7"
    # membership change rebuilds the market's availability from current stock
    assert seeded.put("/v1/markets/EU", json={"locations": ["L1", "L3"]}).status_code == 200
    assert availability(seeded)[("market", "EU")] == "8"
    ok(seeded, adjust("NONE", "IN_STOCK", 1, location="L2"))
    assert availability(seeded)[("market", "EU")] == "8"
    ok(seeded, adjust("NONE", "IN_STOCK", 1, location="L3"))
    assert availability(seeded)[("market", "EU")] == "9"
    # a new market over existing stock starts from that stock
    assert seeded.put("/v1/markets/ALL3", json={"locations": ["L1", "L2", "L3"]}
                      ).status_code == 200
    assert availability(seeded)[("market", "ALL3")] == availability(seeded)[("all", None)] \
        == "14"


def test_inventory_of_item_without_stock_and_unknown_item(seeded: Tenant) -> None:
    body = seeded.get("/v1/inventory/SKU-1").json()
    assert body["locations"] == []
    assert {"type": "all", "code": None, "availability": "0"} in body["availability"]
    assert_problem(seeded.get("/v1/inventory/NOPE"), 404)


def test_changes_report_every_outcome_in_order(seeded: Tenant) -> None:
    assert seeded.put("/v1/items/SKU-2", json={}).status_code == 200
    body = ok(seeded, count(qty=1), count(sku="SKU-2", location="L2", qty=2),
              adjust("IN_STOCK", "SOLD", 1))
    assert [(c["type"], c["sku_code"], c["location"]) for c in body["changes"]] == [
        ("count", "SKU-1", "L1"), ("count", "SKU-2", "L2"), ("adjustment", "SKU-1", "L1")]
    assert all(c["occurred_at"].endswith("Z") for c in body["changes"])
    assert body["applied"] == 3
    assert body["notifications"] == 0


def test_a_full_batch_of_1000_changes_is_accepted(seeded: Tenant) -> None:
    # the limit is inclusive (1001 is refused: see test_bad_input)
    changes = [count(qty=i, state="SOLD", occurred_at=at(i)) for i in range(1000)]
    body = ok(seeded, *changes)
    assert body["applied"] == 1000
    assert stock(seeded) == {"L1": {"SOLD": "999"}}
