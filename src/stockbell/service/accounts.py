"""Accounts and API keys. Secrets are random 256-bit tokens stored only as SHA-256 hashes.

A slow password hash buys nothing for high-entropy machine secrets and would cost a hash per
request for keys used directly as bearer tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from stockbell.domain.accounts import ApiKey, Mode, Principal, Tenant
from stockbell.domain.errors import Conflict, InvalidInput, NotFound, Unauthorized
from stockbell.domain.text import storable
from stockbell.service.clock import utcnow
from stockbell.service.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class IssuedKey:
    account: str
    mode: Mode
    client_id: str
    client_secret: str
    publishable: bool


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def principal_of(key: ApiKey) -> Principal:
    return Principal(Tenant(key.account_id, key.mode), key.id, key.publishable)


async def create_account(uow: UnitOfWork, name: str) -> int:
    name = name.strip()
    if not name:
        raise InvalidInput("account name must not be empty", field="name")
    if await uow.accounts.account_id(name) is not None:
        raise Conflict(f"account {name!r} already exists")
    return await uow.accounts.create_account(name, utcnow())


async def create_key(uow: UnitOfWork, account: str, mode: Mode, publishable: bool) -> IssuedKey:
    account_id = await uow.accounts.account_id(account)
    if account_id is None:
        raise NotFound(f"account {account!r} does not exist; create it with `accounts create`")
    kind = "pk" if publishable else "sk"
    client_id = f"ci_{mode.value}_{secrets.token_hex(10)}"
    client_secret = f"{kind}_{mode.value}_{secrets.token_urlsafe(32)}"
    await uow.accounts.create_key(
        account_id, mode, client_id, hash_secret(client_secret), publishable, utcnow()
    )
    return IssuedKey(account, mode, client_id, client_secret, publishable)


async def verify_client(uow: UnitOfWork, client_id: str, client_secret: str) -> Principal:
    if not (storable(client_id) and storable(client_secret)):
        # No key was issued such a credential; looking it up would fail in the driver.
        raise Unauthorized("invalid client credentials")
    key = await uow.accounts.key_by_client_id(client_id)
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(client_secret)):
        raise Unauthorized("invalid client credentials")
    return principal_of(key)


async def principal_for_secret(uow: UnitOfWork, secret: str) -> Principal | None:
    key = await uow.accounts.key_by_secret_hash(hash_secret(secret))
    return principal_of(key) if key else None
