"""The event log (transactional outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import Event
from stockbell.service.clock import utcnow
from stockbell.service.ids import new_ids
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import FiredRow, FiredScene
from stockbell.store.repos import fired_events
from stockbell.store.repos.aging import next_chunk
from stockbell.store.repos.bulk import RowWrite, defer_rows, insert_rows
from stockbell.store.tables import deliveries, events
from stockbell.store.types import json_text, to_micros

_COLUMNS = ("id", "account_id", "mode", "type", "item_id", "sequence", "occurred_at",
            "created_at", "data")
_TYPES = ("text", "bigint", "text", "text", "bigint", "bigint", "bigint", "bigint", "json")
# Up to this many events go as one deferrable statement (see bulk.combined_writes: a group
# commit's events ride with its other writes); more as COPY, cheaper per row.
_IN_STATEMENT = 200


class SqlEvents:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add_many(self, tenant: Tenant, batch: Sequence[Event]) -> None:
        now = utcnow()
        at = to_micros(now)
        rows = []
        # Named here only where the caller did not (persist_events names every event).
        unnamed = sum(e.id is None for e in batch)
        fresh = iter(new_ids("evt", unnamed) if unnamed else ())
        for e in batch:
            e.id = e.id or next(fresh)
            e.created_at = now
            rows.append((e.id, tenant.account_id, tenant.mode.value, e.type, e.item_id,
                         e.sequence, to_micros(e.occurred_at), at, json_text(e.data)))
        if len(rows) <= _IN_STATEMENT:
            await defer_rows(self.conn, [RowWrite("events", _COLUMNS, _TYPES, rows)])
        else:
            await insert_rows(self.conn, "events", _COLUMNS, rows)

    async def add_back_in_stock(self, tenant: Tenant, scene: FiredScene,
                                rows: Sequence[FiredRow], now: datetime) -> None:
        await fired_events.add_back_in_stock(self.conn, tenant, scene, rows, now)

    async def page(self, tenant: Tenant, filters: dict[str, Any],
                   page: PageRequest) -> list[tuple[int, Event]]:
        stmt = sa.select(events).where(
            events.c.account_id == tenant.account_id, events.c.mode == tenant.mode.value
        )
        if "type" in filters:
            stmt = stmt.where(events.c.type == filters["type"])
        if "created_after" in filters:
            since = filters["created_after"]
            stmt = stmt.where(events.c.created_at > since)
            if page.after is None:
                # The first page starts at the first event (of any tenant) created after
                # `since`: none of this tenant's is before it, and the log's older part is
                # not walked (migration 0010). `pk + 0`: min(pk) itself would be planned as
                # a walk of the pk index from the start, filtered by time, the walk this
                # avoids. Later pages start at their cursor.
                first = sa.select(sa.func.min(events.c.pk + 0)).where(
                    events.c.created_at > since)
                stmt = stmt.where(events.c.pk >= first.scalar_subquery())
        if page.after is not None:
            stmt = stmt.where(events.c.pk > page.after)
        res = await self.conn.execute(stmt.order_by(events.c.pk).limit(page.limit))
        return [
            (r.pk, Event(r.type, r.occurred_at, r.data, item_id=r.item_id, sequence=r.sequence,
                         id=r.id, created_at=r.created_at, pk=r.pk))
            for r in res
        ]

    async def purge_before(self, cutoff: datetime, after: int,
                           limit: int) -> tuple[int, int | None]:
        """Delete, of the next `limit` events by pk past `after`, those created before
        `cutoff` that no delivery names any more: retention never drops an event still owed
        to a receiver. Returns how many went and where the next chunk starts (None: done;
        the walk ends where the retained events start, `aging`).

        On PostgreSQL the events are locked first (`SKIP LOCKED`: one being replayed is left
        for the next purge) and the deliveries checked after, by a statement of its own whose
        snapshot sees a replay that committed meanwhile: with no foreign key to do it
        (migration 0008), that is what keeps a delivery from naming a deleted event."""
        chunk = await next_chunk(self.conn, events.c.pk, events.c.created_at, cutoff, after,
                                 limit)
        if chunk is None:
            return 0, None
        old = (sa.select(events.c.pk)
               .where(events.c.pk > after, events.c.pk <= chunk.last,
                      events.c.created_at < cutoff)
               .order_by(events.c.pk))
        if self.conn.dialect.name == "postgresql":
            old = old.with_for_update(skip_locked=True)
        pks = list((await self.conn.execute(old)).scalars())
        deleted = 0
        if pks:
            named = sa.select(deliveries.c.pk).where(deliveries.c.event_id == events.c.id)
            res = await self.conn.execute(sa.delete(events).where(
                events.c.pk.in_(pks), ~named.exists()).returning(events.c.pk))
            deleted = len(res.all())
        return deleted, (None if chunk.final else chunk.last)
