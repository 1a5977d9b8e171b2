"""Retention: old settled deliveries and events go; events still owed to a receiver stay."""

from __future__ import annotations

from datetime import timedelta

from stockbell.service.clock import utcnow
from tests.support import Server, Tenant, run_db


def test_purge_keeps_events_with_pending_deliveries(server: Server, seeded: Tenant) -> None:
    # An endpoint on a closed port: its deliveries stay pending (retried), never settled.
    endpoint = seeded.post("/v1/webhook-endpoints", json={
        "url": "https://example.invalid/hook", "event_types": ["back_in_stock"]})
    assert endpoint.status_code == 201, endpoint.text
    assert seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).status_code == 201
    r = seeded.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "2"}]})
    assert r.json()["notifications"] == 1
    before = seeded.get("/v1/events", params={"limit": 200}).json()["data"]
    assert {e["type"] for e in before} >= {"inventory.count.updated", "back_in_stock"}

    future = utcnow() + timedelta(hours=1)
    run_db(server.db_url, lambda uow: uow.deliveries.purge_before(future))
    run_db(server.db_url, lambda uow: uow.events.purge_before(future))

    after = seeded.get("/v1/events", params={"limit": 200}).json()["data"]
    # back_in_stock still has a pending delivery (its receiver is unreachable) -> kept;
    # the events nobody is owed went.
    kept = {e["type"] for e in after}
    assert "back_in_stock" in kept
    assert "inventory.count.updated" not in kept
    assert {e["id"] for e in after} <= {e["id"] for e in before}
