"""POST /v1/inventory/changes is answered by a hand-written handler (`api.routing.answered_by`,
`api.bodies`) instead of FastAPI's solving of the declared signature. A client must not be
able to tell: the same requests go to Stockbell and to a reference server where FastAPI
answers from `post_changes`' signature, and the answers must be the same, byte for byte where
they are errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from stockbell.api.native import inventory
from stockbell.api.schemas import ChangesOut
from tests.support import Server, Tenant

PATH = "/v1/inventory/changes"


def _reference(app: FastAPI) -> None:
    """FastAPI's own handling of the declared endpoint, matched before Stockbell's route."""
    app.router.routes.insert(0, APIRoute(PATH, inventory.post_changes, methods=["POST"],
                                         response_model=ChangesOut))


@pytest.fixture(scope="module")
def reference(db_url: str) -> Iterator[Server]:
    srv = Server(db_url, adjust=_reference).start()
    yield srv
    srv.stop()


def _count(**over: Any) -> dict[str, Any]:
    return {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "3", **over}


def _body(*changes: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"changes": list(changes), **extra}).encode()


JSON = {"content-type": "application/json"}
LONG_KEY = "k" * 256

# (name, body bytes, headers): every way a body or header can be refused, and some accepted.
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", _body(_count()), JSON),
    ("empty body", b"", JSON),
    ("no content-type", _body(_count()), {}),
    ("text/plain", _body(_count()), {"content-type": "text/plain"}),
    ("+json media type", _body(_count()), {"content-type": "application/vnd.api+json"}),
    ("upper case, charset", _body(_count()), {"content-type": "APPLICATION/JSON; charset=utf-8"}),
    ("two slashes", _body(_count()), {"content-type": "application/json/x"}),
    ("malformed", b'{"changes": [', JSON),
    ("trailing garbage", _body(_count()) + b"x", JSON),
    ("not UTF-8", b'{"changes": "\xff"}', JSON),
    ("UTF-16", '{"changes": []}'.encode("utf-16"), JSON),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + _body(_count()), JSON),
    ("NaN", b'{"changes": [{"type": "count", "sku_code": "SKU-1", "location": "L1", '
            b'"quantity": NaN}]}', JSON),
    ("integer beyond 64 bits", _body(_count(quantity=10**30)), JSON),
    ("lone surrogate", b'{"changes": [{"type": "count", "sku_code": "\\ud800", '
                       b'"location": "L1", "quantity": "1"}]}', JSON),
    ("array", b"[]", JSON),
    ("no changes", b"{}", JSON),
    ("zero changes", _body(), JSON),
    ("1001 changes", _body(*[_count()] * 1001), JSON),
    ("unknown type", _body(_count(type="recount")), JSON),
    ("no type", _body({"sku_code": "SKU-1", "location": "L1", "quantity": "1"}), JSON),
    ("extra field", _body(_count(colour="red")), JSON),
    ("boolean quantity", _body(_count(quantity=True)), JSON),
    ("float quantity", _body(_count(quantity=1.5)), JSON),
    ("negative count", _body(_count(quantity="-1")), JSON),
    ("unknown item", _body(_count(sku_code="NOPE")), JSON),
    ("bad state", _body(_count(state="SOLD")), JSON),
    ("bad occurred_at", _body(_count(occurred_at="yesterday")), JSON),
    ("several errors", _body(_count(quantity=True), _count(location="")), JSON),
    ("empty body key", _body(_count(), idempotency_key=""), JSON),
    ("long header key", _body(_count()), {**JSON, "idempotency-key": LONG_KEY}),
    ("long header key and bad body", _body(_count(quantity=True)),
     {**JSON, "idempotency-key": LONG_KEY}),
    ("long header key, no body", b"", {**JSON, "idempotency-key": LONG_KEY}),
]


def _answer(srv: Server, token: str | None, body: bytes, headers: dict[str, str]
            ) -> tuple[int, str, Any]:
    client = srv.client(token)
    r = client.post(PATH, content=body, headers=headers)
    return r.status_code, r.headers.get("content-type", ""), r.json()


@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_answers_as_fastapi_would(server: Server, reference: Server, seeded: Tenant,
                                  name: str, body: bytes, headers: dict[str, str]) -> None:
    ours = _answer(server, seeded.client_secret, body, headers)
    theirs = _answer(reference, seeded.client_secret, body, headers)
    assert ours[:2] == theirs[:2], (name, ours, theirs)
    if ours[0] == 200:  # applied twice: same shape, the second may be ignored as no news
        assert ours[2].keys() == theirs[2].keys() == {"changes", "applied", "ignored",
                                                      "notifications"}
    else:
        assert ours[2] == theirs[2], name


def test_a_replayed_key_answers_the_same_on_both(server: Server, reference: Server,
                                                 seeded: Tenant) -> None:
    headers = {**JSON, "idempotency-key": uuid.uuid4().hex}
    first = _answer(server, seeded.client_secret, _body(_count(quantity="7")), headers)
    again = _answer(reference, seeded.client_secret, _body(_count(quantity="7")), headers)
    assert first[0] == 200
    assert first == again


@pytest.mark.parametrize(("token", "body"), [
    (None, _body(_count())), ("not-a-key", _body(_count())), (None, b'{"changes": ['),
    ("not-a-key", b""),
], ids=["no key", "bad key", "no key, malformed body", "bad key, no body"])
def test_authentication_comes_after_reading_the_body(
        server: Server, reference: Server, seeded: Tenant, token: str | None,
        body: bytes) -> None:
    ours = _answer(server, token, body, JSON)
    assert ours[0] in (400, 401)
    assert ours == _answer(reference, token, body, JSON)


def test_a_publishable_key_is_refused_alike(server: Server, reference: Server,
                                            seeded: Tenant) -> None:
    pk = server.tenant(publishable=True, account=seeded.account)
    ours = _answer(server, pk.client_secret, _body(_count()), JSON)
    assert ours[0] == 403
    assert ours == _answer(reference, pk.client_secret, _body(_count()), JSON)


def test_the_route_is_answered_by_the_hand_written_handler() -> None:
    routes = [r for r in inventory.router.routes
              if isinstance(r, APIRoute) and r.endpoint is inventory.post_changes]
    assert len(routes) == 1
    assert routes[0].get_route_handler() is inventory._answer_changes
