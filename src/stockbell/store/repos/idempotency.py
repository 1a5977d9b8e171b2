"""Stored first responses for idempotency keys, unique per (account, mode, key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.store.tables import idempotency_keys as ik


class SqlIdempotency:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, tenant: Tenant, key: str) -> tuple[str, int, dict[str, Any]] | None:
        res = await self.conn.execute(
            sa.select(ik.c.request_hash, ik.c.status, ik.c.body).where(
                ik.c.account_id == tenant.account_id, ik.c.mode == tenant.mode.value,
                ik.c.key == key,
            )
        )
        row = res.first()
        return (row[0], row[1], row[2]) if row else None

    async def put(self, tenant: Tenant, key: str, request_hash: str, status: int,
                  body: dict[str, Any], now: datetime) -> None:
        # A concurrent first use of the same key fails here on the primary key; the
        # database layer retries the whole transaction, which then replays the stored answer.
        await self.conn.execute(
            sa.insert(ik).values(
                account_id=tenant.account_id, mode=tenant.mode.value, key=key,
                request_hash=request_hash, status=status, body=body, created_at=now,
            )
        )

    async def purge_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` keys stored before `cutoff`, the oldest first: past the
        retention period a retried request is a new request. Returns how many went."""
        oldest = (sa.select(ik.c.account_id, ik.c.mode, ik.c.key)
                  .where(ik.c.created_at < cutoff).order_by(ik.c.created_at).limit(limit))
        res = await self.conn.execute(
            sa.delete(ik).where(sa.tuple_(ik.c.account_id, ik.c.mode, ik.c.key).in_(oldest))
            .returning(ik.c.key))
        return len(res.all())
