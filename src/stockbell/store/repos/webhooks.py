"""Webhook endpoints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.webhooks import Endpoint
from stockbell.service.pagination import PageRequest
from stockbell.store.repos.bulk import fetch_rows
from stockbell.store.tables import deliveries, delivery_attempts
from stockbell.store.tables import webhook_endpoints as we
from stockbell.store.types import from_micros, json_value

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


# The endpoint columns in storage form, for the two reads that every restock and every claim
# make (`SqlWebhooks.enabled`, `endpoints_by_pks`): sent through the driver, they skip
# SQLAlchemy's statement and row work (on SQLite, four trips to aiosqlite's thread instead
# of none).
_COLUMNS = tuple(c.name for c in we.columns)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM webhook_endpoints"
_TIMES = ("previous_secret_expires_at", "failing_since", "created_at", "updated_at")


def _stored_endpoint(row: Sequence[Any]) -> Endpoint:
    m = dict(zip(_COLUMNS, row, strict=True))
    for name in _TIMES:
        if m[name] is not None:
            m[name] = from_micros(int(m[name]))
    if isinstance(m["event_types"], str):  # JSON text from both drivers
        m["event_types"] = json_value(m["event_types"])
    m["enabled"] = bool(m["enabled"])
    return endpoint_of(m)


_BY_PKS = f"{_SELECT} WHERE pk = ANY($1::text::bigint[])"
_BY_PKS_SQLITE = f"{_SELECT} WHERE pk IN (SELECT value FROM json_each(?1))"


async def endpoints_by_pks(conn: AsyncConnection, pks: Iterable[int], *,
                           lock: bool = False) -> dict[int, Endpoint]:
    """Endpoints by primary key (any tenant: a claim names deliveries of every merchant).
    `lock`: locked `FOR UPDATE` in key order on PostgreSQL (SQLite has one writer)."""
    keys = sorted(set(pks))
    if not keys:
        return {}
    pg = f"{_BY_PKS} ORDER BY pk FOR UPDATE" if lock else _BY_PKS
    rows = await fetch_rows(conn, pg, _BY_PKS_SQLITE, [keys])
    return {int(r[0]): _stored_endpoint(r) for r in rows}


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

    async def get(self, tenant: Tenant, endpoint_id: str, for_update: bool = False,
                  for_deliveries: bool = False) -> Endpoint | None:
        """`for_update`: locked for a read-modify-write or a deletion (PostgreSQL).
        `for_deliveries`: locked `FOR KEY SHARE` until commit, as `enabled` locks them, by a
        transaction that queues deliveries to it (a deletion waits for it, and it for a
        deletion)."""
        stmt = sa.select(we).where(_scoped(tenant), we.c.id == endpoint_id)
        if for_update:
            stmt = stmt.with_for_update()
        elif for_deliveries:
            stmt = stmt.with_for_update(read=True, key_share=True)
        res = await self.conn.execute(stmt)
        row = res.first()
        return endpoint_of(row._mapping) if row else None

    async def by_pks(self, pks: Iterable[int]) -> dict[int, tuple[Tenant, Endpoint]]:
        # Locked (PostgreSQL) and read fresh: the health bookkeeping that follows rewrites these
        # rows, and must not write back a stale copy over a concurrent PATCH or secret rotation.
        # FOR UPDATE, not FOR NO KEY UPDATE: this waits for the transactions that hold these
        # endpoints `FOR KEY SHARE` (`enabled`) rather than sharing the rows with them; shared,
        # PostgreSQL turns each row's lockers into a multixact, and the webhook latency at 200
        # changes/s grew by a third (p99 13.3-14.6 ms against 9.7-10.0,
        # docs/performance-history.md, twenty-fourth session).
        # Through the driver: the dispatcher reads them once per flush of results.
        found = await endpoints_by_pks(self.conn, pks, lock=True)
        return {pk: (Tenant(ep.extra["account_id"], Mode(ep.extra["mode"])), ep)
                for pk, ep in found.items()}

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
        """The tenant's enabled endpoints, read by the transaction that is about to queue
        deliveries to them. On PostgreSQL they are locked `FOR KEY SHARE` (in pk order)
        until it commits: an endpoint being deleted meanwhile is waited for and then not
        returned, so no delivery is queued for it. Without the lock, the deliveries'
        foreign key check waited for the deletion and then failed the whole transaction
        (a stock change, or a group commit of many, answered 500)."""
        where = "WHERE account_id = {} AND mode = {} AND enabled ORDER BY pk"
        # Carries the writes a group commit deferred (bulk.combined_writes): no table of
        # theirs is read here.
        rows = await fetch_rows(self.conn,
                                f"{_SELECT} {where.format('$1', '$2')} FOR KEY SHARE",
                                f"{_SELECT} {where.format('?1', '?2')}",
                                [tenant.account_id, tenant.mode.value], carried=True)
        return [_stored_endpoint(r) for r in rows]
