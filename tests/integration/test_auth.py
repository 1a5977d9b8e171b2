"""POST /oauth/token, bearer authentication, publishable keys and test/live separation."""

from __future__ import annotations

import base64
import time

import httpx
import jwt
import pytest

from tests.support import (
    SIGNING_KEY,  # what tests.support.Server configures
    Server,
    Tenant,
    assert_problem,
)

# tests.support signs with a 16-byte key; PyJWT warns (in the server thread too) that HS256
# wants 32 bytes, and pytest turns warnings into errors. Production keys are 64 characters.


def assert_token(r: httpx.Response, scope: str = "read write") -> str:
    assert r.status_code == 200, r.text
    assert r.headers.get("cache-control") == "no-store"
    body = r.json()
    assert body["token_type"] == "bearer"
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    assert body["scope"] == scope
    assert body["access_token"].count(".") == 2
    return str(body["access_token"])


def test_token_from_form_json_and_basic_each_authenticate(server: Server, seeded: Tenant
                                                          ) -> None:
    anon = server.client()
    creds = {"grant_type": "client_credentials", "client_id": seeded.client_id,
             "client_secret": seeded.client_secret}
    basic = base64.b64encode(f"{seeded.client_id}:{seeded.client_secret}".encode()).decode()
    tokens = [
        assert_token(anon.post("/oauth/token", data=creds)),
        assert_token(anon.post("/oauth/token", json=creds)),
        assert_token(anon.post("/oauth/token", data={"grant_type": "client_credentials"},
                               headers={"Authorization": f"Basic {basic}"})),
        # Basic alone implies the client-credentials grant
        assert_token(anon.post("/oauth/token", headers={"Authorization": f"Basic {basic}"})),
    ]
    for token in tokens:
        r = server.client(token).get("/v1/items/SKU-1")
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "Boot"


def test_token_claims_expiry_matches_expires_in(server: Server, tenant: Tenant) -> None:
    r = server.client().post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": tenant.client_id,
        "client_secret": tenant.client_secret})
    body = r.json()
    claims = jwt.decode(assert_token(r), SIGNING_KEY, algorithms=["HS256"], issuer="stockbell")
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["mode"] == "test"


def test_client_secret_itself_is_a_bearer_token(seeded: Tenant) -> None:
    # the tenant's client is authenticated with the raw client_secret
    r = seeded.get("/v1/items")
    assert r.status_code == 200
    assert [i["sku_code"] for i in r.json()["data"]] == ["SKU-1"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer \t x"},
    {"Authorization": "Token abc"},
    {"Authorization": "Bearer sk_test_not-a-real-key"},
    {"Authorization": "Bearer a.b.c"},
    {"Authorization": "Basic Zm9vOmJhcg=="},
])
def test_missing_or_bad_bearer_is_401_problem(server: Server, headers: dict[str, str]) -> None:
    r = server.client().get("/v1/items", headers=headers)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")


def test_bad_client_credentials_are_401(server: Server, tenant: Tenant) -> None:
    anon = server.client()
    for creds in (
        {"client_id": tenant.client_id, "client_secret": "wrong"},
        {"client_id": "ci_test_nobody", "client_secret": tenant.client_secret},
        {"client_id": tenant.client_id},
        {},
    ):
        r = anon.post("/oauth/token", data={"grant_type": "client_credentials", **creds})
        assert_problem(r, 401)
    bad_basic = base64.b64encode(f"{tenant.client_id}:nope".encode()).decode()
    assert_problem(anon.post("/oauth/token", headers={"Authorization": f"Basic {bad_basic}"}),
                   401)
    assert_problem(anon.post("/oauth/token", headers={"Authorization": "Basic !!!"}), 401)


def test_unsupported_grant_type_is_rejected(server: Server, tenant: Tenant) -> None:
    r = server.client().post("/oauth/token", data={
        "grant_type": "password", "client_id": tenant.client_id,
        "client_secret": tenant.client_secret})
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code)
    r = server.client().post("/oauth/token", content=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code)


def _resigned(token: str, key: str = SIGNING_KEY, **changes: object) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="HS256")


def test_expired_forged_and_tampered_tokens_are_401(server: Server, tenant: Tenant) -> None:
    token = assert_token(server.client().post("/oauth/token", json={
        "grant_type": "client_credentials", "client_id": tenant.client_id,
        "client_secret": tenant.client_secret}))
    assert server.client(token).get("/v1/items").status_code == 200

    past = int(time.time()) - 60
    expired = _resigned(token, iat=past - 3600, exp=past)
    body = assert_problem(server.client(expired).get("/v1/items"), 401)
    assert "expired" in body["detail"]

    forged = _resigned(token, key="somebody-elses-key-that-is-32-bytes-long")
    assert_problem(server.client(forged).get("/v1/items"), 401)
    no_exp = jwt.decode(token, options={"verify_signature": False})
    del no_exp["exp"]
    assert_problem(server.client(jwt.encode(no_exp, SIGNING_KEY, algorithm="HS256"))
                   .get("/v1/items"), 401)


def test_token_ttl_setting_is_honoured_and_tokens_expire(db_url: str) -> None:
    srv = Server(db_url, token_ttl_seconds=1).start()
    try:
        t = srv.tenant()
        r = srv.client().post("/oauth/token", data={
            "grant_type": "client_credentials", "client_id": t.client_id,
            "client_secret": t.client_secret})
        token = assert_token(r)
        assert r.json()["expires_in"] == 1
        deadline = time.monotonic() + 5
        while True:
            r = srv.client(token).get("/v1/items")
            if r.status_code == 401 or time.monotonic() > deadline:
                break
            assert r.status_code == 200
            time.sleep(0.25)
        assert "expired" in assert_problem(r, 401)["detail"]
        # the raw secret does not expire
        assert t.get("/v1/items").status_code == 200
    finally:
        srv.stop()


def test_publishable_key_may_only_create_subscriptions(server: Server, seeded: Tenant) -> None:
    pk = server.tenant(publishable=True, account=seeded.account)
    assert pk.client_secret.startswith("pk_")
    r = pk.post("/v1/subscriptions", json={"sku_code": "SKU-1",
                                           "customer": {"email": "a@example.com"}})
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    # the secret key of the same account sees it: same tenant
    assert seeded.get(f"/v1/subscriptions/{sub_id}").json()["customer"]["email"] == \
        "a@example.com"

    change = {"changes": [{"type": "count", "sku_code": "SKU-1", "location": "L1",
                           "quantity": "5"}]}
    forbidden = [
        ("GET", "/v1/items", None), ("GET", "/v1/items/SKU-1", None),
        ("PUT", "/v1/items/SKU-1", {"title": "hijacked"}),
        ("GET", "/v1/locations", None), ("GET", "/v1/locations/L1", None),
        ("PUT", "/v1/locations/L9", {}),
        ("GET", "/v1/markets", None), ("GET", "/v1/markets/EU", None),
        ("PUT", "/v1/markets/EU", {"locations": []}),
        ("POST", "/v1/inventory/changes", change), ("GET", "/v1/inventory/SKU-1", None),
        ("GET", "/v1/subscriptions", None), ("GET", f"/v1/subscriptions/{sub_id}", None),
        ("PATCH", f"/v1/subscriptions/{sub_id}", {"threshold": "9"}),
        ("DELETE", f"/v1/subscriptions/{sub_id}", None),
        ("POST", f"/v1/subscriptions/{sub_id}/activate", None),
        ("POST", f"/v1/subscriptions/{sub_id}/deactivate", None),
        ("GET", "/v1/events", None),
    ]
    for method, path, body in forbidden:
        r = pk.client.request(method, path, json=body)
        assert_problem(r, 403)
    # and nothing was changed by those attempts
    assert seeded.get("/v1/items/SKU-1").json()["title"] == "Boot"
    assert seeded.get(f"/v1/subscriptions/{sub_id}").json()["status"] == "active"
    assert seeded.get("/v1/inventory/SKU-1").json()["locations"] == []
    assert seeded.get("/v1/locations/L9").status_code == 404


def test_publishable_key_token_carries_restricted_scope(server: Server, seeded: Tenant) -> None:
    pk = server.tenant(publishable=True, account=seeded.account)
    token = assert_token(server.client().post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": pk.client_id,
        "client_secret": pk.client_secret}), scope="subscriptions:create")
    c = server.client(token)
    assert c.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).status_code == 201
    assert_problem(c.get("/v1/subscriptions"), 403)


def test_test_mode_never_sees_live_mode_data(server: Server, seeded: Tenant) -> None:
    live = server.tenant("live", account=seeded.account)
    assert live.client_secret.startswith("sk_live_")
    sub = seeded.post("/v1/subscriptions", json={"sku_code": "SKU-1"}).json()

    assert_problem(live.get("/v1/items/SKU-1"), 404)
    assert live.get("/v1/items").json()["data"] == []
    assert live.get("/v1/locations").json()["data"] == []
    assert_problem(live.get(f"/v1/subscriptions/{sub['id']}"), 404)
    assert live.get("/v1/events").json()["data"] == []

    # live creates the same codes independently; test mode is not touched
    assert live.put("/v1/items/SKU-1", json={"title": "Live boot"}).status_code == 200
    assert live.put("/v1/locations/L1", json={}).status_code == 200
    r = live.post("/v1/inventory/changes", json={"changes": [
        {"type": "count", "sku_code": "SKU-1", "location": "L1", "quantity": "7"}]})
    assert r.status_code == 200, r.text
    assert seeded.get("/v1/items/SKU-1").json()["title"] == "Boot"
    assert seeded.get("/v1/inventory/SKU-1").json()["locations"] == []
    assert [i["title"] for i in live.get("/v1/items").json()["data"]] == ["Live boot"]
    assert seeded.get("/v1/subscriptions").json()["data"][0]["id"] == sub["id"]
    assert live.get("/v1/subscriptions").json()["data"] == []


def test_whoami_answers_from_the_credentials_alone(server: Server) -> None:
    live = server.tenant("live")
    r = live.get("/v1/whoami")
    assert r.status_code == 200, r.text
    assert r.json() == {"mode": "live", "publishable": False, "scope": "read write",
                        "market": None}
    pub = server.tenant("test", publishable=True)
    assert pub.get("/v1/whoami").json() == {
        "mode": "test", "publishable": True, "scope": "subscriptions:create", "market": None}
    assert_problem(server.client("not-a-key").get("/v1/whoami"), 401)
    assert_problem(server.client().get("/v1/whoami"), 401)
