"""Bearer authentication: OAuth client-credentials access tokens (JWT) or the client_secret
itself used as an API key, as seeds 002 and 004 send it."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

import jwt
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stockbell.api.problems import ERROR_RESPONSES
from stockbell.api.routing import Router
from stockbell.api.state import AppState, app_state
from stockbell.domain.accounts import Mode, Principal, Tenant
from stockbell.domain.errors import Forbidden, InvalidInput, Unauthorized
from stockbell.domain.text import storable
from stockbell.service import accounts as accounts_service

ALGORITHM = "HS256"
ISSUER = "stockbell"
KEY_CACHE_SECONDS = 30.0
MARKET_SCOPE = re.compile(r"market:(?:(?:id|code):)?([^\x00\s:]{1,200})")

router = Router(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    created_at: int


def issue_token(state: AppState, principal: Principal, client_id: str,
                ttl: int | None = None, scope: str | None = None) -> dict[str, Any]:
    """`scope`: the scope the client asked for (market:<code>), echoed as granted."""
    now = int(time.time())
    ttl = ttl or state.settings.token_ttl_seconds
    claims = {
        "iss": ISSUER, "sub": client_id, "kid": principal.key_id,
        "acc": principal.tenant.account_id, "mode": principal.tenant.mode.value,
        "pub": principal.publishable, "scope": principal.scope, "iat": now, "exp": now + ttl,
    }
    if principal.market is not None:
        claims["mkt"] = principal.market
    token = jwt.encode(claims, state.signing_key, algorithm=ALGORITHM)
    return {"access_token": token, "token_type": "bearer", "expires_in": ttl,
            "scope": scope or principal.scope, "created_at": now}


async def _credentials(request: Request) -> tuple[str, str, str]:
    """(grant_type, client_id, client_secret) from a form, a JSON body or HTTP Basic."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    if ctype == "application/json":
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            raise InvalidInput("the request body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise InvalidInput("the request body must be a JSON object")
        fields = parsed
    elif raw:
        try:
            fields = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidInput("the form body is not valid UTF-8") from None
    client_id = fields.get("client_id")
    client_secret = fields.get("client_secret")
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(basic[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        client_id, _, client_secret = decoded.partition(":")
    grant = fields.get("grant_type", "client_credentials" if basic else None)
    if grant != "client_credentials":
        raise InvalidInput("grant_type must be client_credentials", field="grant_type")
    if not isinstance(client_id, str) or not isinstance(client_secret, str) \
            or not client_id or not client_secret:
        raise Unauthorized("client_id and client_secret are required")
    if not (storable(client_id) and storable(client_secret)):
        # No key has such a credential, and looking one up would fail in the driver
        # (PostgreSQL text holds no NUL; no driver encodes a lone surrogate).
        raise Unauthorized("invalid client credentials")
    return grant, client_id, client_secret


@router.post("/oauth/token", response_model=TokenOut, responses=ERROR_RESPONSES,
             summary="Exchange client credentials for an access token")
async def token(request: Request) -> JSONResponse:
    state = app_state(request)
    _, client_id, client_secret = await _credentials(request)
    principal = await state.db.run(
        lambda uow: accounts_service.verify_client(uow, client_id, client_secret)
    )
    scope = await _market_scope(request)
    if scope is not None:
        tenant = principal.tenant
        if await state.db.run(lambda uow: uow.catalog.get_market(tenant, scope[1])) is None:
            raise InvalidInput(f"unknown market {scope[1]!r}", field="scope")
        principal = dataclasses.replace(principal, market=scope[1])
    return JSONResponse(issue_token(state, principal, client_id,
                                    scope=None if scope is None else scope[0]),
                        headers={"Cache-Control": "no-store"})


async def _market_scope(request: Request) -> tuple[str, str] | None:
    """(scope, market code) of an optional `scope=market:<code>` (Commerce Layer's form; also
    market:code:<code> and market:id:<code>, a market's code being its id everywhere)."""
    raw = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip().lower() \
            == "application/json":
        fields = json.loads(raw or b"{}")  # already parsed once by _credentials
    else:
        fields = dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
    scope = fields.get("scope")
    if scope is None or scope == "":
        return None
    found = MARKET_SCOPE.fullmatch(scope) if isinstance(scope, str) else None
    if found is None or not storable(scope):
        raise InvalidInput("scope must be market:<market code>", field="scope")
    return scope, found.group(1)


def _from_jwt(state: AppState, token: str) -> Principal:
    try:
        claims = jwt.decode(token, state.signing_key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "acc", "mode", "kid"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid") from None
    return Principal(Tenant(int(claims["acc"]), Mode(claims["mode"])), int(claims["kid"]),
                     bool(claims.get("pub")), claims.get("mkt"))


async def _from_secret(state: AppState, secret: str) -> Principal:
    digest = accounts_service.hash_secret(secret)
    cached = state.key_cache.get(digest)
    now = time.monotonic()
    if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
        principal = cached[0]
    else:
        principal = await state.db.run(
            lambda uow: accounts_service.principal_for_secret(uow, secret)
        )
        if len(state.key_cache) > 10_000:
            state.key_cache.clear()
        state.key_cache[digest] = (principal, now)
    if principal is None:
        raise Unauthorized("the API key is not valid")
    return principal


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer <token> header is required")
    return token.strip()


async def authenticate(request: Request, token: str) -> Principal:
    state = app_state(request)
    if token.count(".") == 2:
        return _from_jwt(state, token)
    return await _from_secret(state, token)


async def any_principal(request: Request) -> Principal:
    """Any valid key, publishable ones included (storefront back-in-stock sign-ups)."""
    return await authenticate(request, bearer_token(request))


async def secret_principal(request: Request) -> Principal:
    principal = await any_principal(request)
    if principal.publishable:
        raise Forbidden("a publishable key may only create back-in-stock subscriptions")
    return principal


# The tenant dependencies call the principal functions instead of depending on them: FastAPI
# solves each level of a dependency chain per request, and a level cost about 6 % of an
# authenticated one-change POST /v1/inventory/changes (73,000 of 1,245,000 instructions,
# docs/performance-history.md, ninth session).
async def secret_tenant(request: Request) -> Tenant:
    return (await secret_principal(request)).tenant


async def any_tenant(request: Request) -> Tenant:
    return (await any_principal(request)).tenant


SecretTenant = Annotated[Tenant, Depends(secret_tenant)]
AnyTenant = Annotated[Tenant, Depends(any_tenant)]


class WhoAmIOut(BaseModel):
    mode: Mode
    publishable: bool
    scope: str
    market: str | None


@router.get("/v1/whoami", response_model=WhoAmIOut, responses=ERROR_RESPONSES,
            summary="What the presented key or token may do")
async def whoami(principal: Annotated[Principal, Depends(any_principal)]) -> dict[str, Any]:
    """Lets an integration check its credentials without touching data. Answered from the
    token (or the cached key) alone, it is also the benchmark's bare authenticated route."""
    return {"mode": principal.tenant.mode, "publishable": principal.publishable,
            "scope": principal.scope, "market": principal.market}
