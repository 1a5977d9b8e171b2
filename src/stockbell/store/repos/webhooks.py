"""Webhook endpoints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.webhooks import Endpoint
from stockbell.service.pagination import PageRequest
from stockbell.store.tables import deliveries, delivery_attempts
from stockbell.store.tables import webhook_endpoints as we

_FIELDS = ("url", "description", "event_types", "enabled", "format", "secret",
           "previous_secret", "previous_secret_expires_at", "failing_since", "disabled_reason",
           "updated_at")


def endpoint_of(m: Any) -> Endpoint:
    return Endpoint(
        id=m["id"], url=m["url"], secret=m["secret"], format=m["format"],
        description=m["description"], event_types=m["event_types"], enabled=m["enabled"],
        previous_secret=m["previous_secret"],
        previous_secret_expires_at=m["previous_secret_expires_at"],
        failing_since=m["failing_since"], disabled_reason=m["disabled_reason"],
        created_at=m["created_at"], updated_at=m["updated_at"], pk=m["pk"],
        extra={"account_id": m["account_id"], "mode": m["mode"]},  # formats name the merchant
    )


def _scoped(tenant: Tenant) -> sa.ColumnElement[bool]:
    return sa.and_(we.c.account_id == tenant.account_id, we.c.mode == tenant.mode.value)


class SqlWebhooks:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, tenant: Tenant, endpoint: Endpoint) -> Endpoint:
        res = await self.conn.execute(
            sa.insert(we).values(
                id=endpoint.id, account_id=tenant.account_id, mode=tenant.mode.value,
                created_at=endpoint.created_at,
                **{f: getattr(endpoint, f) for f in _FIELDS},
            ).returning(we.c.pk)
        )
        endpoint.pk = int(res.scalar_one())
        return endpoint

    async def get(self, tenant: Tenant, endpoint_id: str,
                  for_update: bool = False) -> Endpoint | None:
        stmt = sa.select(we).where(_scoped(tenant), we.c.id == endpoint_id)
        res = await self.conn.execute(stmt.with_for_update() if for_update else stmt)
        row = res.first()
        return endpoint_of(row._mapping) if row else None

    async def by_pks(self, pks: Iterable[int]) -> dict[int, tuple[Tenant, Endpoint]]:
        wanted = sorted(set(pks))
        if not wanted:
            return {}
        # Locked (PostgreSQL) and read fresh: the health bookkeeping that follows rewrites these
        # rows, and must not write back a stale copy over a concurrent PATCH or secret rotation.
        res = await self.conn.execute(
            sa.select(we).where(we.c.pk.in_(wanted)).order_by(we.c.pk).with_for_update())
        return {r.pk: (Tenant(r.account_id, Mode(r.mode)), endpoint_of(r._mapping)) for r in res}

    async def page(self, tenant: Tenant, page: PageRequest) -> list[tuple[int, Endpoint]]:
        stmt = sa.select(we).where(_scoped(tenant))
        if page.after is not None:
            stmt = stmt.where(we.c.pk > page.after)
        res = await self.conn.execute(stmt.order_by(we.c.pk).limit(page.limit))
        return [(r.pk, endpoint_of(r._mapping)) for r in res]

    async def update(self, endpoint: Endpoint) -> None:
        await self.conn.execute(
            sa.update(we).where(we.c.pk == endpoint.pk)
            .values(**{f: getattr(endpoint, f) for f in _FIELDS})
        )

    async def delete(self, endpoint: Endpoint) -> None:
        owned = sa.select(deliveries.c.pk).where(deliveries.c.endpoint_pk == endpoint.pk)
        await self.conn.execute(
            sa.delete(delivery_attempts).where(delivery_attempts.c.delivery_pk.in_(owned))
        )
        await self.conn.execute(
            sa.delete(deliveries).where(deliveries.c.endpoint_pk == endpoint.pk)
        )
        await self.conn.execute(sa.delete(we).where(we.c.pk == endpoint.pk))

    async def enabled(self, tenant: Tenant) -> list[Endpoint]:
        res = await self.conn.execute(
            sa.select(we).where(_scoped(tenant), we.c.enabled.is_(True)).order_by(we.c.pk)
        )
        return [endpoint_of(r._mapping) for r in res]
