"""A restock's back_in_stock events rendered by the database (store/repos/fired_events.py)
are the events Python renders (service/inventory.py, `_fired_event`): the same restock in two
tenants with the same subscriptions, one rendered each way, gives the same events, the same
deliveries per endpoint, and text the dispatcher can send as stored."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from stockbell.delivery.formats.native import embeds_as_is
from stockbell.domain.accounts import Mode
from stockbell.domain.accounts import Tenant as DomainTenant
from stockbell.domain.subscription import Customer
from stockbell.service import inventory, subscriptions
from stockbell.service.ports import UnitOfWork
from stockbell.service.subscriptions import SubscriptionInput
from tests.integration.test_delivery import Receiver, deliveries, own_server
from tests.integration.test_events import walk
from tests.support import Server, Tenant, run_db

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def _seed(server: Server, url: str) -> tuple[Tenant, dict[str, str], list[str]]:
    """A tenant with SKU-1 at L1..L3, market EU = {L1, L2}, a native and a TI endpoint, and
    subscriptions in three scopes with every field a subscription view shows, set in many
    ways (returned in creation order)."""
    t = server.tenant()
    assert t.put("/v1/items/SKU-1", json={"title": "Boot \"7\" \\ 1",
        "attributes": {"colour": "red", "n": 12.5}}).status_code == 200
    for code in ("L1", "L2", "L3"):
        assert t.put(f"/v1/locations/{code}", json={}).status_code == 200
    assert t.put("/v1/markets/EU", json={"locations": ["L1", "L2"]}).status_code == 200
    endpoints = {}
    for fmt in ("native", "ti"):
        r = t.post("/v1/webhook-endpoints", json={"url": f"{url}/{fmt}",
                                                  "format": fmt,
                                                  "event_types": ["back_in_stock"]})
        assert r.status_code == 201, r.text
        endpoints[fmt] = r.json()["id"]
    account = run_db(server.db_url, lambda uow: uow.accounts.account_id(t.account))
    assert account is not None
    tenant = DomainTenant(account, Mode(t.mode))
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    whole = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)

    async def many(uow: UnitOfWork) -> list[str]:
        ids = []
        for i in range(150):
            scope = [{}, {"location": "L1"}, {"market": "EU"}][i % 3]
            inp = SubscriptionInput(
                "SKU-1", threshold=["1", "1.5", "0.000001"][i % 3],
                expires_at=[None, whole, whole + timedelta(microseconds=10 * i + 1),
                            soon if i == 7 else None][i % 4],
                auto_resubscribe=i % 5 == 0,
                reference=[None, f"ref-{i}", "tab\there \"q\" \\ \u0001 ünï"][i % 3],
                reference_origin=[None, "ti", "sequenzy"][i % 3 if i % 4 else 1],
                metadata=[{}, {"i": i, "f": 1.25, "deep": {"a": [1, None, True]}},
                          {"big": 2**70}][i % 3],
                customer=Customer(f"c{i}@example.com" if i % 6 else None,
                                  f"ext-{i}" if i % 2 else None,
                                  ["Zoë", None, "Ann"][i % 3], None if i % 4 else "Lee",
                                  [{}, {"tier": "gold"}, {"n": [i, -i]}][i % 3]),
                **scope)
            ids.append((await subscriptions.subscribe(uow, tenant, inp)).id)
        return ids

    return t, endpoints, run_db(server.db_url, many)


def _restock(t: Tenant) -> None:
    r = t.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "2"}]})
    assert r.status_code == 200, r.text
    assert r.json()["notifications"] == 149  # all but the one expired by then


def _shape(value: Any, names: dict[str, str]) -> Any:
    """The value with what differs between two tenants by construction (ids, instants)
    replaced by what it stands for."""
    if isinstance(value, dict):
        return {k: _shape(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, names) for v in value]
    if isinstance(value, str):
        if value in names:
            return names[value]
        if _ISO.match(value):
            return "<instant>"
    return value


def _events(t: Tenant, ids: list[str]) -> list[Any]:
    names = {sub_id: f"sub-{n}" for n, sub_id in enumerate(ids)}
    item = t.get("/v1/items/SKU-1").json()
    names[item["id"]] = "item"
    events, _ = walk(t, limit=200)
    return [(e["type"], e["sequence"], _shape(e["data"], names)) for e in events]


def test_database_rendered_events_equal_the_python_ones(db_url: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # A server of its own, its deliveries to a receiver of its own: 600 of them would
    # otherwise keep the shared server's dispatcher busy under other tests.
    with Receiver() as rx, own_server(db_url) as server:
        _compare(server, rx.url(""), monkeypatch)


def _compare(server: Server, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    python, py_endpoints, py_ids = _seed(server, url)
    database, db_endpoints, db_ids = _seed(server, url)
    time.sleep(1.6)  # subscription 7 expires: its event breaks the run of one move
    monkeypatch.setattr(inventory, "_IN_DATABASE", 10**9)
    _restock(python)
    monkeypatch.setattr(inventory, "_IN_DATABASE", 2)
    _restock(database)

    rendered = _events(database, db_ids)
    assert rendered == _events(python, py_ids)
    kinds = [kind for kind, _, _ in rendered]
    assert kinds.count("back_in_stock") == 149
    assert kinds.count("subscription.expired") == 1
    for fmt in ("native", "ti"):
        assert len(deliveries(database, db_endpoints[fmt], limit=200)) == \
            len(deliveries(python, py_endpoints[fmt], limit=200)) > 0

    # The instants and ids themselves: each event shows its subscription as the API does
    # after the restock.
    events, _ = walk(database, type="back_in_stock", limit=200)
    for e in events:
        sent = e["data"]["subscription"]
        assert sent == database.get(f"/v1/subscriptions/{sent['id']}").json()
        assert sent["notified_at"] == sent["updated_at"] != sent["created_at"]
        assert e["data"]["item"] == {k: v for k, v in database.get("/v1/items/SKU-1").json()
                                     .items() if k in e["data"]["item"]}

    # As stored: orjson's compact text, sent by the dispatcher without re-encoding, wherever
    # orjson can write the value (not 2**70, not non-ASCII text).
    async def texts(uow: UnitOfWork) -> list[str]:
        res = await uow.conn.execute(  # type: ignore[attr-defined]
            sa.text("SELECT CAST(data AS TEXT) FROM events WHERE type = 'back_in_stock' "
                    "AND id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": [e["id"] for e in events]})
        return [str(r[0]) for r in res]

    stored = run_db(server.db_url, texts)
    assert len(stored) == 149
    plain = [s for s in stored if s.isascii() and "1180591620717411303424" not in s]
    assert plain
    for text in plain:
        assert text == orjson.dumps(orjson.loads(text)).decode()
        assert embeds_as_is(text)
