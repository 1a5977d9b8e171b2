"""Back-in-stock subscriptions: CRUD, scopes, the restock rule, life cycle, expiry, events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import Server, Tenant, assert_problem


def subscribe(t: Tenant, **body: Any) -> dict[str, Any]:
    r = t.post("/v1/subscriptions", json={"sku_code": "SKU-1", **body})
    assert r.status_code == 201, r.text
    return r.json()


def count(t: Tenant, qty: str | int, location: str = "L1", sku: str = "SKU-1") -> int:
    """Set IN_STOCK at a location; returns how many back_in_stock notifications fired."""
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": sku, "location": location, "quantity": qty}]})
    assert r.status_code == 200, r.text
    return int(r.json()["notifications"])


def fetch(t: Tenant, sub_id: str) -> dict[str, Any]:
    r = t.get(f"/v1/subscriptions/{sub_id}")
    assert r.status_code == 200, r.text
    return r.json()


def events(t: Tenant, type_: str) -> list[dict[str, Any]]:
    r = t.get("/v1/events", params={"type": type_, "limit": 200})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def fired_for(t: Tenant, sub_id: str) -> list[dict[str, Any]]:
    return [e for e in events(t, "back_in_stock") if e["data"]["subscription_id"] == sub_id]


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


# --- create / read ------------------------------------------------------------------------

def test_create_returns_201_with_defaults(seeded: Tenant) -> None:
    sub = subscribe(seeded)
    assert sub["id"]
    assert sub["status"] == "active"
    assert sub["sku_code"] == "SKU-1"
    assert sub["threshold"] == "1"
    assert sub["scope"] == {"type": "all", "code": None}
    assert sub["auto_resubscribe"] is False
    assert sub["expires_at"] is None
    assert sub["notify_count"] == 0
    assert sub["notified_at"] is None
    assert sub["customer"] == {"email": None, "external_id": None, "first_name": None,
                               "last_name": None, "attributes": {}}
    assert fetch(seeded, sub["id"]) == sub


def test_create_with_every_field(seeded: Tenant) -> None:
    expires = datetime.now(UTC) + timedelta(days=3)
    sub = subscribe(
        seeded, market="EU", threshold="2.5", auto_resubscribe=True, expires_at=iso(expires),
        customer={"email": "ann@example.com", "external_id": "cust-1", "first_name": "Ann",
                  "last_name": "Lee", "attributes": {"vip": True}},
        reference="ref-1", reference_origin="storefront", metadata={"campaign": "spring"},
    )
    assert sub["scope"] == {"type": "market", "code": "EU"}
    assert sub["threshold"] == "2.5"
    assert sub["auto_resubscribe"] is True
    assert datetime.fromisoformat(sub["expires_at"]) == expires
    assert sub["customer"] == {"email": "ann@example.com", "external_id": "cust-1",
                               "first_name": "Ann", "last_name": "Lee",
                               "attributes": {"vip": True}}
    assert sub["reference"] == "ref-1"
    assert sub["reference_origin"] == "storefront"
    assert sub["metadata"] == {"campaign": "spring"}
    assert fetch(seeded, sub["id"]) == sub
    loc = subscribe(seeded, location="L2")
    assert loc["scope"] == {"type": "location", "code": "L2"}


def test_create_rejects_both_location_and_market_and_past_expiry(seeded: Tenant) -> None:
    assert_problem(seeded.post("/v1/subscriptions", json={
        "sku_code": "SKU-1", "location": "L1", "market": "EU"}), 422)
    past = iso(datetime.now(UTC) - timedelta(minutes=1))
    assert_problem(seeded.post("/v1/subscriptions", json={
        "sku_code": "SKU-1", "expires_at": past}), 422)
    assert seeded.get("/v1/subscriptions").json()["data"] == []


def test_get_unknown_subscription_is_404(seeded: Tenant) -> None:
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""),
                           ("POST", "/activate"), ("POST", "/deactivate")):
        r = seeded.client.request(method, f"/v1/subscriptions/sub_nope{suffix}",
                                  json={} if method == "PATCH" else None)
        assert_problem(r, 404)


# --- listing ------------------------------------------------------------------------------

def test_list_filters_by_status_and_sku(seeded: Tenant) -> None:
    assert seeded.put("/v1/items/SKU-2", json={}).status_code == 200
    one = [subscribe(seeded)["id"] for _ in range(3)]
    two = [subscribe(seeded, sku_code="SKU-2")["id"] for _ in range(2)]
    for sub_id in (one[0], two[1]):
        assert seeded.post(f"/v1/subscriptions/{sub_id}/deactivate").status_code == 200

    def ids(**params: str) -> list[str]:
        r = seeded.get("/v1/subscriptions", params=params)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["data"]]

    assert ids() == one + two
    assert ids(sku_code="SKU-2") == two
    assert ids(status="inactive") == [one[0], two[1]]
    assert ids(status="active", sku_code="SKU-1") == one[1:]
    assert ids(status="notified") == []
    assert ids(sku_code="NOPE") == []
    assert_problem(seeded.get("/v1/subscriptions", params={"status": "bogus"}), 422)


def test_list_cursor_pagination_walks_every_subscription_once(seeded: Tenant) -> None:
    created = [subscribe(seeded, reference=str(i))["id"] for i in range(11)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = seeded.get("/v1/subscriptions", params=params).json()
        assert 0 < len(body["data"]) <= 4
        seen += [s["id"] for s in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # rows added while paging show up later, never as duplicates
        if pages == 1:
            created.append(subscribe(seeded)["id"])
    assert seen == created
    assert len(set(seen)) == len(seen)
    assert pages == 3
    # an exact multiple of the page size ends with next_cursor null, not an empty page
    exact = seeded.get("/v1/subscriptions", params={"limit": 12}).json()
    assert len(exact["data"]) == 12
    assert exact["next_cursor"] is None
    assert_problem(seeded.get("/v1/subscriptions", params={"cursor": "garbage!"}), 422)


# --- update / cancel / activate / deactivate -----------------------------------------------

def test_patch_changes_only_what_is_sent(seeded: Tenant) -> None:
    sub = subscribe(seeded, threshold=3, reference="r", metadata={"a": 1},
                    customer={"email": "x@example.com"})
    r = seeded.patch(f"/v1/subscriptions/{sub['id']}", json={"threshold": "5"})
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["threshold"] == "5"
    assert patched["reference"] == "r"
    assert patched["metadata"] == {"a": 1}
    assert patched["customer"]["email"] == "x@example.com"
    assert patched["updated_at"] >= sub["updated_at"]

    r = seeded.patch(f"/v1/subscriptions/{sub['id']}", json={
        "customer": {"email": "y@example.com", "first_name": "Y"}, "metadata": {"b": 2},
        "reference": None, "auto_resubscribe": True})
    patched = r.json()
    assert patched["customer"]["email"] == "y@example.com"
    assert patched["customer"]["first_name"] == "Y"
    assert patched["metadata"] == {"b": 2}
    assert patched["reference"] is None
    assert patched["auto_resubscribe"] is True
    assert patched["threshold"] == "5"
    assert fetch(seeded, sub["id"]) == patched
    # the new threshold is the one the restock rule uses
    assert count(seeded, 4) == 0
    assert count(seeded, 5) == 1


def test_delete_cancels_and_stays_listable(seeded: Tenant) -> None:
    sub = subscribe(seeded)
    r = seeded.delete(f"/v1/subscriptions/{sub['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert fetch(seeded, sub["id"])["status"] == "cancelled"
    assert [s["id"] for s in seeded.get("/v1/subscriptions",
                                        params={"status": "cancelled"}).json()["data"]] == [
        sub["id"]]
    assert count(seeded, 5) == 0
    # a cancelled subscription cannot come back or be changed
    assert seeded.post(f"/v1/subscriptions/{sub['id']}/activate").status_code == 409
    r = seeded.patch(f"/v1/subscriptions/{sub['id']}", json={"threshold": 2})
    assert r.status_code in (409, 422)
    assert fetch(seeded, sub["id"])["threshold"] == "1"


def test_deactivated_never_fires_and_activate_resumes(seeded: Tenant) -> None:
    sub = subscribe(seeded)
    r = seeded.post(f"/v1/subscriptions/{sub['id']}/deactivate")
    assert r.status_code == 200
    assert r.json()["status"] == "inactive"
    assert count(seeded, 3) == 0
    assert count(seeded, 0) == 0
    assert count(seeded, 3) == 0
    assert fetch(seeded, sub["id"])["status"] == "inactive"
    assert fired_for(seeded, sub["id"]) == []

    r = seeded.post(f"/v1/subscriptions/{sub['id']}/activate")
    assert r.json()["status"] == "active"
    assert count(seeded, 0) == 0
    assert count(seeded, 1) == 1
    got = fetch(seeded, sub["id"])
    assert got["status"] == "notified"
    assert got["notify_count"] == 1
    assert got["notified_at"] is not None


def test_activate_a_notified_subscription_rearms_it(seeded: Tenant) -> None:
    sub = subscribe(seeded)
    assert count(seeded, 1) == 1
    assert fetch(seeded, sub["id"])["status"] == "notified"
    assert seeded.post(f"/v1/subscriptions/{sub['id']}/activate").json()["status"] == "active"
    count(seeded, 0)
    assert count(seeded, 2) == 1
    assert fetch(seeded, sub["id"])["notify_count"] == 2


# --- the restock rule ---------------------------------------------------------------------

def test_created_while_in_stock_waits_for_fall_and_rise(seeded: Tenant) -> None:
    count(seeded, 5)
    sub = subscribe(seeded, threshold=3)
    assert count(seeded, 8) == 0  # still above: no crossing
    assert count(seeded, 3) == 0  # down to T: not below
    assert count(seeded, 4) == 0
    assert fetch(seeded, sub["id"])["status"] == "active"
    assert count(seeded, "2.999999") == 0
    assert count(seeded, 3) == 1
    assert fetch(seeded, sub["id"])["status"] == "notified"


def test_threshold_crossing_is_strictly_upward_and_one_shot(seeded: Tenant) -> None:
    low = subscribe(seeded, threshold=2)
    high = subscribe(seeded, threshold=10)
    assert count(seeded, "1.5") == 0
    assert count(seeded, 2) == 1
    assert fetch(seeded, low["id"])["status"] == "notified"
    assert fetch(seeded, high["id"])["status"] == "active"
    assert count(seeded, 0) == 0
    assert count(seeded, 50) == 1  # only `high` is still active
    assert [e["data"]["subscription_id"] for e in events(seeded, "back_in_stock")] == [
        low["id"], high["id"]]


def test_auto_resubscribe_fires_on_every_upward_crossing(seeded: Tenant) -> None:
    sub = subscribe(seeded, threshold=2, auto_resubscribe=True)
    for _ in range(3):
        assert count(seeded, 1) == 0
        assert count(seeded, 4) == 1
        assert count(seeded, 6) == 0  # rising further while above is no new crossing
    got = fetch(seeded, sub["id"])
    assert got["status"] == "active"
    assert got["notify_count"] == 3
    assert len(fired_for(seeded, sub["id"])) == 3


def test_several_crossings_in_one_batch(seeded: Tenant) -> None:
    one_shot = subscribe(seeded, threshold=1)
    again = subscribe(seeded, threshold=1, auto_resubscribe=True)
    changes = [{"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": q}
               for q in (5, 0, 5, 0, 5)]
    r = seeded.post("/v1/inventory/changes", json={"changes": changes})
    assert r.json()["notifications"] == 4  # one-shot once, auto-resubscribe three times
    assert len(fired_for(seeded, one_shot["id"])) == 1
    assert len(fired_for(seeded, again["id"])) == 3
    assert fetch(seeded, one_shot["id"])["status"] == "notified"
    assert fetch(seeded, again["id"])["notify_count"] == 3


def test_market_membership_change_fires_nothing(seeded: Tenant) -> None:
    sub = subscribe(seeded, market="EU", threshold=5)
    assert count(seeded, 10, location="L3") == 0
    r = seeded.put("/v1/markets/EU", json={"locations": ["L1", "L2", "L3"]})
    assert r.status_code == 200
    assert fetch(seeded, sub["id"])["status"] == "active"
    assert fired_for(seeded, sub["id"]) == []
    # already at/above T: it waits for a fall and a rise, now through L3
    assert count(seeded, 4, location="L3") == 0
    assert count(seeded, 6, location="L3") == 1


def test_location_scope_counts_only_that_location(seeded: Tenant) -> None:
    sub = subscribe(seeded, location="L2", threshold=2)
    assert count(seeded, 10, location="L1") == 0
    assert count(seeded, 10, location="L3") == 0
    assert count(seeded, 1, location="L2") == 0
    assert count(seeded, 2, location="L2") == 1
    fired = fired_for(seeded, sub["id"])
    assert fired[0]["data"]["scope"] == {"type": "location", "code": "L2"}
    assert fired[0]["data"]["availability"] == "2"


def test_market_scope_sums_member_locations(seeded: Tenant) -> None:
    sub = subscribe(seeded, market="EU", threshold=5)
    assert count(seeded, 100, location="L3") == 0  # not in EU
    assert count(seeded, 3, location="L1") == 0
    assert count(seeded, 2, location="L2") == 1  # 3 + 2 crosses 5
    fired = fired_for(seeded, sub["id"])
    assert fired[0]["data"]["scope"] == {"type": "market", "code": "EU"}
    assert fired[0]["data"]["availability"] == "5"


def test_all_scope_sums_every_location(seeded: Tenant) -> None:
    sub = subscribe(seeded, threshold=6)
    assert count(seeded, 2, location="L1") == 0
    assert count(seeded, 2, location="L2") == 0
    assert count(seeded, 2, location="L3") == 1
    assert fired_for(seeded, sub["id"])[0]["data"]["availability"] == "6"


def test_subscriptions_of_other_items_do_not_fire(seeded: Tenant) -> None:
    assert seeded.put("/v1/items/SKU-2", json={}).status_code == 200
    other = subscribe(seeded, sku_code="SKU-2")
    assert count(seeded, 5) == 0
    assert fetch(seeded, other["id"])["status"] == "active"
    assert count(seeded, 5, sku="SKU-2") == 1


# --- expiry -------------------------------------------------------------------------------

def test_expired_by_patch_then_crossing_marks_expired_and_never_fires(seeded: Tenant) -> None:
    sub = subscribe(seeded, auto_resubscribe=True)
    past = iso(datetime.now(UTC) - timedelta(seconds=1))
    r = seeded.patch(f"/v1/subscriptions/{sub['id']}", json={"expires_at": past})
    assert r.status_code == 200, r.text
    assert count(seeded, 5) == 0
    got = fetch(seeded, sub["id"])
    assert got["status"] == "expired"
    assert got["notify_count"] == 0
    expired = [e for e in events(seeded, "subscription.expired")
               if e["data"]["subscription_id"] == sub["id"]]
    assert len(expired) == 1
    assert expired[0]["data"]["subscription"]["status"] == "expired"
    count(seeded, 0)
    assert count(seeded, 5) == 0
    assert fired_for(seeded, sub["id"]) == []
    assert fetch(seeded, sub["id"])["status"] == "expired"
    # an expired subscription cannot be re-activated without a new expiry ...
    assert seeded.post(f"/v1/subscriptions/{sub['id']}/activate").status_code == 409
    # ... and with one it can, and fires again
    future = iso(datetime.now(UTC) + timedelta(days=1))
    assert seeded.patch(f"/v1/subscriptions/{sub['id']}",
                        json={"expires_at": future}).status_code == 200
    assert seeded.post(f"/v1/subscriptions/{sub['id']}/activate").json()["status"] == "active"
    count(seeded, 0)
    assert count(seeded, 5) == 1


def test_patch_expires_at_null_clears_the_expiry(seeded: Tenant) -> None:
    sub = subscribe(seeded, expires_at=iso(datetime.now(UTC) + timedelta(hours=1)))
    assert sub["expires_at"] is not None
    r = seeded.patch(f"/v1/subscriptions/{sub['id']}", json={"expires_at": None})
    assert r.json()["expires_at"] is None
    assert fetch(seeded, sub["id"])["expires_at"] is None


def test_sweeper_expires_without_any_stock_change(db_url: str) -> None:
    srv = Server(db_url, expiry_sweep_seconds=0.2).start()
    try:
        t = srv.tenant()
        assert t.put("/v1/items/SKU-1", json={}).status_code == 200
        keep = subscribe(t, expires_at=iso(datetime.now(UTC) + timedelta(days=1)))
        sub = subscribe(t, expires_at=iso(datetime.now(UTC) + timedelta(days=1)))
        past = iso(datetime.now(UTC) - timedelta(seconds=1))
        r = t.patch(f"/v1/subscriptions/{sub['id']}", json={"expires_at": past})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while fetch(t, sub["id"])["status"] != "expired":
            assert time.monotonic() < deadline, "the sweeper did not expire the subscription"
            time.sleep(0.1)
        expired = events(t, "subscription.expired")
        assert [e["data"]["subscription_id"] for e in expired] == [sub["id"]]
        assert fetch(t, keep["id"])["status"] == "active"
        assert events(t, "inventory.count.updated") == []
        time.sleep(0.5)  # later sweeps do not emit it again
        assert len(events(t, "subscription.expired")) == 1
    finally:
        srv.stop()


# --- life-cycle events --------------------------------------------------------------------

def test_life_cycle_events(seeded: Tenant) -> None:
    anon = subscribe(seeded)
    named = subscribe(seeded, customer={"email": "b@example.com"})
    by_id = subscribe(seeded, customer={"external_id": "c-9"})
    created = [e["data"]["subscription_id"] for e in events(seeded, "subscription.created")]
    assert created == [anon["id"], named["id"], by_id["id"]]
    requested = events(seeded, "back_in_stock.requested")
    assert [e["data"]["subscription_id"] for e in requested] == [named["id"], by_id["id"]]
    assert requested[0]["data"]["subscription"]["customer"]["email"] == "b@example.com"

    seeded.patch(f"/v1/subscriptions/{anon['id']}", json={"threshold": 4})
    seeded.post(f"/v1/subscriptions/{anon['id']}/deactivate")
    seeded.post(f"/v1/subscriptions/{anon['id']}/activate")
    updated = events(seeded, "subscription.updated")
    assert [e["data"]["subscription"]["status"] for e in updated] == [
        "active", "inactive", "active"]
    assert updated[0]["data"]["subscription"]["threshold"] == "4"

    seeded.delete(f"/v1/subscriptions/{named['id']}")
    cancelled = events(seeded, "subscription.cancelled")
    assert [e["data"]["subscription_id"] for e in cancelled] == [named["id"]]
    assert cancelled[0]["data"]["subscription"]["status"] == "cancelled"
    # repeating a transition to the same status is a no-op: no second event
    seeded.delete(f"/v1/subscriptions/{named['id']}")
    seeded.post(f"/v1/subscriptions/{anon['id']}/activate")
    assert len(events(seeded, "subscription.cancelled")) == 1
    assert len(events(seeded, "subscription.updated")) == 3
