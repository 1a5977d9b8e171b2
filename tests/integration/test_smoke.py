"""The basic restock path over real HTTP, on both databases."""

from __future__ import annotations

from tests.support import Tenant


def count(t: Tenant, qty: str, location: str = "L1", sku: str = "SKU-1") -> dict:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": sku, "location": location, "quantity": qty}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_subscription_fires_on_upward_crossing_only(seeded: Tenant) -> None:
    r = seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1", "threshold": "2"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["status"] == "active"
    assert count(seeded, "1")["notifications"] == 0
    assert count(seeded, "2.5")["notifications"] == 1
    got = seeded.get(f"/v1/subscriptions/{sub['id']}").json()
    assert got["status"] == "notified"
    fired = seeded.get("/v1/events", params={"type": "back_in_stock"}).json()["data"]
    assert [e["data"]["subscription_id"] for e in fired] == [sub["id"]]
    assert fired[0]["data"]["availability"] == "2.5"
    # notified subscriptions never fire again
    count(seeded, "0")
    assert count(seeded, "5")["notifications"] == 0
