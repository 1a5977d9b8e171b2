"""A restock that fires more subscriptions than one chunk (service/inventory.py renders fired
subscriptions 2,000 at a time, loading their rows through the driver): every subscription
fires once, in order, with a payload equal to the subscription as the API shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stockbell.domain.accounts import Mode
from stockbell.domain.accounts import Tenant as DomainTenant
from stockbell.domain.subscription import Customer
from stockbell.service import subscriptions
from stockbell.service.ports import UnitOfWork
from stockbell.service.subscriptions import SubscriptionInput
from tests.integration.test_events import walk
from tests.support import Server, Tenant, run_db

N = 2_300  # more than one chunk of 2,000


def test_fan_out_across_chunks_fires_each_once_with_its_own_view(server: Server,
                                                                  seeded: Tenant) -> None:
    account = run_db(server.db_url, lambda uow: uow.accounts.account_id(seeded.account))
    assert account is not None
    tenant = DomainTenant(account, Mode(seeded.mode))
    expires = datetime.now(UTC) + timedelta(days=3)

    async def many(uow: UnitOfWork) -> list[str]:
        ids = []
        for i in range(N):
            inp = SubscriptionInput(
                "SKU-1", threshold="2" if i % 2 else "1.5", expires_at=expires,
                auto_resubscribe=i % 7 == 0, reference=f"ref-{i}", metadata={"i": i},
                customer=Customer(f"c{i}@example.com", f"ext-{i}", "Zoë", None,
                                  {"tier": "gold", "big": 2**70, "nested": {"n": [i]}}))
            ids.append((await subscriptions.subscribe(uow, tenant, inp)).id)
        return ids

    ids = run_db(server.db_url, many)
    r = seeded.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L3", "quantity": "2"}]})
    assert r.status_code == 200, r.text
    assert r.json()["notifications"] == N

    events, _ = walk(seeded, type="back_in_stock", limit=200)
    assert [e["data"]["subscription_id"] for e in events] == ids  # each once, oldest first
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + N))
    for e in events[:: N // 23] + events[-1:]:
        data: dict[str, Any] = e["data"]
        now = seeded.get(f"/v1/subscriptions/{data['subscription_id']}").json()
        sent = data["subscription"]
        # the event shows the subscription as the restock left it (updated_at aside)
        assert {k: v for k, v in sent.items() if k != "updated_at"} == \
            {k: v for k, v in now.items() if k != "updated_at"}
        assert sent["customer"]["attributes"]["big"] == 2**70
        assert sent["notify_count"] == 1
        assert sent["status"] == ("active" if sent["auto_resubscribe"] else "notified")
        assert data["availability"] == "2"
        assert data["previous_availability"] == "0"
        assert data["item"]["sku_code"] == "SKU-1"
        assert data["scope"] == {"type": "all", "code": None}
