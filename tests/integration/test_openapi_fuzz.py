"""Schemathesis over /openapi.json, on both databases: no 5xx, and every response conforms to
the document the server publishes (status code, media type, body schema).

Bounded: a short fuzzing phase of positive and negative cases per operation (MAX_EXAMPLES;
set STOCKBELL_FUZZ_EXAMPLES to dig deeper locally). About half of the generated path
parameters are pinned to seeded rows (SKU-1, L1, EU, a subscription) so successful responses
are checked against their models too, not only 404s. `test_edge_cases` sends, through the
same checks, inputs random generation rarely produces: each once answered 500, or was stored
and broke a later read or delivery.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis import Case, HookContext

from stockbell.api.app import create_app
from stockbell.config import Settings
from tests.support import SIGNING_KEY, Server, Tenant

MAX_EXAMPLES = int(os.environ.get("STOCKBELL_FUZZ_EXAMPLES", "15"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
SEEDED_SUB = "seeded-subscription"  # replaced by the fixture's real id at call time

# The same document the server serves at /openapi.json (`fuzz_tenant` asserts they agree),
# built at import time so pytest collects one test per operation and backend (building the
# app opens no database: the file is never created).
OPENAPI = create_app(Settings(database_url="sqlite:///never-opened.db",
                              secret_key=SIGNING_KEY)).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    # The coverage phase (boundary values per parameter) sends ~2,500 requests per backend,
    # over the time budget; `test_edge_cases` pins the boundaries that broke the server.
    "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False},
               "stateful": {"enabled": False}},
}))

def known_path_parameters(path: str) -> dict[str, str] | None:
    if "{sku_code}" in path:
        return {"sku_code": "SKU-1"}
    if "{sub_id}" in path:
        return {"sub_id": SEEDED_SUB}
    if path.startswith("/v1/locations/"):
        return {"code": "L1"}
    if path.startswith("/v1/markets/"):
        return {"code": "EU"}
    return None


@schema.hook
def before_generate_path_parameters(context: HookContext, strategy: Any) -> Any:
    assert context.operation is not None
    known = known_path_parameters(context.operation.path)
    return strategy if known is None else st.one_of(strategy, st.just(known))


@pytest.fixture(scope="module")
def fuzz_tenant(server: Server) -> tuple[Tenant, str]:
    """Item SKU-1, locations L1/L2, market EU = {L1, L2}, some stock and one subscription."""
    tenant = server.tenant()
    served = tenant.client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == OPENAPI, "the fuzzed document is not the one the server publishes"
    for method, path, body in (
        ("PUT", "/v1/items/SKU-1", {"title": "Boot"}),
        ("PUT", "/v1/locations/L1", {"name": "One"}),
        ("PUT", "/v1/locations/L2", {}),
        ("PUT", "/v1/markets/EU", {"locations": ["L1", "L2"]}),
        ("POST", "/v1/inventory/changes", {"changes": [
            {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "2.5"}]}),
    ):
        r = tenant.client.request(method, path, json=body)
        assert r.status_code == 200, r.text
    r = tenant.post("/v1/subscriptions", json={"sku_code": "SKU-1", "market": "EU",
                                               "threshold": "5"})
    assert r.status_code == 201, r.text
    return tenant, r.json()["id"]


def call(case: Case, server: Server, fuzz_tenant: tuple[Tenant, str]) -> Any:
    tenant, sub_id = fuzz_tenant
    if case.path_parameters and case.path_parameters.get("sub_id") == SEEDED_SUB:
        case.path_parameters["sub_id"] = sub_id
    return case.call_and_validate(base_url=server.base_url, checks=CHECKS,
                                  headers={"Authorization": f"Bearer {tenant.client_secret}"})


@schema.parametrize()
def test_openapi_fuzz(case: Case, server: Server, fuzz_tenant: tuple[Tenant, str]) -> None:
    call(case, server, fuzz_tenant)


def change(**extra: Any) -> dict[str, Any]:
    return {"changes": [{"type": "count", "sku_code": "SKU-1", "location": "L1",
                         "quantity": "1", **extra}]}


FAR_PAST = "0001-01-01T00:00:00+01:00"  # before datetime.min once in UTC
FAR_FUTURE = "9999-12-31T23:59:59-01:00"  # after datetime.max once in UTC
TOO_BIG_CURSOR = "YzE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"  # "c1:" + a key past 64 bits


def nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


EDGE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/events", {"query": {"created_after": FAR_PAST}}),
    ("GET", "/v1/events", {"query": {"created_after": FAR_FUTURE}}),
    ("GET", "/v1/events", {"query": {"cursor": TOO_BIG_CURSOR}}),
    ("GET", "/v1/items", {"query": {"cursor": TOO_BIG_CURSOR}}),
    ("GET", "/v1/subscriptions", {"query": {"cursor": TOO_BIG_CURSOR}}),
    ("POST", "/v1/inventory/changes", {"body": change(occurred_at=FAR_PAST)}),
    ("POST", "/v1/subscriptions", {"body": {"sku_code": "SKU-1", "expires_at": FAR_FUTURE}}),
    ("PATCH", "/v1/subscriptions/{sub_id}", {"body": {"expires_at": FAR_PAST}}),
    ("PUT", "/v1/items/{sku_code}", {"body": {"attributes": {"x": "\ud800"}}}),
    # Python's JSON parser accepts these; clients' encoders refuse to write them.
    ("PUT", "/v1/items/{sku_code}", {"raw": b'{"attributes": {"x": NaN}}'}),
    ("PUT", "/v1/items/{sku_code}", {"raw": b'{"attributes": {"x": -Infinity}}'}),
    ("PUT", "/v1/items/{sku_code}", {"body": {"attributes": nested(33)}}),
    ("POST", "/v1/subscriptions", {"body": {"sku_code": "SKU-1", "metadata": {"\ud800": 1}}}),
    ("POST", "/v1/subscriptions",
     {"body": {"sku_code": "SKU-1", "customer": {"attributes": {"x": "\udfff"}}}}),
    ("POST", "/v1/webhook-endpoints", {"body": {"url": "http://" + "a" * 64 + ".example/"}}),
    ("POST", "/v1/webhook-endpoints", {"body": {"url": "http://a..example/"}}),
    ("POST", "/v1/webhook-endpoints", {"body": {"url": "http://[abc/"}}),
    ("POST", "/v1/webhook-endpoints", {"body": {"url": "http://example.com:99999/"}}),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/replay",
     {"path_parameters": {"endpoint_id": "x"}, "body": {"since": FAR_PAST}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), EDGE_CASES,
                         ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(EDGE_CASES)])
def test_edge_cases(method: str, path: str, kwargs: dict[str, Any], server: Server,
                    fuzz_tenant: tuple[Tenant, str]) -> None:
    """Each is refused with a 4xx problem that conforms to the document."""
    kwargs = dict(kwargs)
    raw = kwargs.pop("raw", None)
    if "{" in path and "path_parameters" not in kwargs:
        kwargs["path_parameters"] = known_path_parameters(path)
    case = schema[path][method].Case(**kwargs)
    if raw is None:
        status = call(case, server, fuzz_tenant).status_code
    else:
        response = fuzz_tenant[0].client.request(method, case.formatted_path, content=raw,
                                                 headers={"content-type": "application/json"})
        case.validate_response(response, checks=CHECKS)
        status = response.status_code
    # The checks hold a 4xx to its documented problem+json schema.
    assert 400 <= status < 500
