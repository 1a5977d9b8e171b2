"""Accounts, API keys and the server's token-signing secret."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import ApiKey, Mode
from stockbell.store.repos.util import insert_for
from stockbell.store.tables import accounts, api_keys, server_secrets


def _key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(m["id"], m["account_id"], Mode(m["mode"]), m["client_id"], m["publishable"],
                  m["secret_hash"])


class SqlAccounts:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create_account(self, name: str, now: datetime) -> int:
        res = await self.conn.execute(
            sa.insert(accounts).values(name=name, created_at=now).returning(accounts.c.id)
        )
        return int(res.scalar_one())

    async def account_id(self, name: str) -> int | None:
        res = await self.conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name))
        value = res.scalar_one_or_none()
        return int(value) if value is not None else None

    async def create_key(self, account_id: int, mode: Mode, client_id: str, secret_hash: str,
                         publishable: bool, now: datetime) -> ApiKey:
        res = await self.conn.execute(
            sa.insert(api_keys).values(
                account_id=account_id, mode=mode.value, client_id=client_id,
                secret_hash=secret_hash, publishable=publishable, created_at=now,
            ).returning(api_keys.c.id)
        )
        return ApiKey(int(res.scalar_one()), account_id, mode, client_id, publishable,
                      secret_hash)

    async def key_by_client_id(self, client_id: str) -> ApiKey | None:
        res = await self.conn.execute(sa.select(api_keys).where(api_keys.c.client_id == client_id))
        row = res.first()
        return _key(row) if row else None

    async def key_by_secret_hash(self, secret_hash: str) -> ApiKey | None:
        res = await self.conn.execute(
            sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash)
        )
        row = res.first()
        return _key(row) if row else None

    async def signing_secret(self, candidate: str) -> str:
        """The first process to ask stores its candidate; everyone then reads the same one."""
        stmt = insert_for(self.conn, server_secrets).values(name="token_signing", value=candidate)
        await self.conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        res = await self.conn.execute(
            sa.select(server_secrets.c.value).where(server_secrets.c.name == "token_signing")
        )
        return str(res.scalar_one())
