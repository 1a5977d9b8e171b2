"""The delivery queue: one row per (event, endpoint), claimed with a lease.

On PostgreSQL the claim takes `FOR UPDATE SKIP LOCKED`, so any number of workers share the
queue without handing one delivery to two of them while its lease holds; a worker that dies
simply lets its lease run out and another picks the rows up (at-least-once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Attempt, Delivery, DeliveryStatus, Endpoint
from stockbell.service.ids import new_id
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import Claimed, Settlement
from stockbell.store.repos.webhooks import endpoint_of
from stockbell.store.tables import deliveries as d
from stockbell.store.tables import delivery_attempts as da
from stockbell.store.tables import events as ev
from stockbell.store.tables import webhook_endpoints as we
from stockbell.store.types import UtcMicros, from_micros

NOTIFY_CHANNEL = "stockbell_deliveries"
EXCERPT_BYTES = 4096


def _delivery(m: Any) -> Delivery:
    return Delivery(
        id=m["id"], endpoint_id=m["endpoint_id"], event_id=m["event_id"],
        event_type=m["event_type"], status=DeliveryStatus(m["status"]),
        attempts=m["attempts"], next_attempt_at=m["next_attempt_at"],
        last_status_code=m["last_status_code"], last_error=m["last_error"],
        created_at=m["created_at"], updated_at=m["updated_at"], pk=m["pk"],
    )


_VIEW = (
    sa.select(d, we.c.id.label("endpoint_id"), ev.c.type.label("event_type"))
    .join(we, we.c.pk == d.c.endpoint_pk)
    .join(ev, ev.c.id == d.c.event_id)
)


_ENABLED = sa.select(we.c.pk).where(we.c.enabled.is_(True))


class SqlDeliveries:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.created = False  # read by the unit of work to wake in-process dispatchers

    async def _notify(self) -> None:
        self.created = True
        if self.conn.dialect.name == "postgresql":
            # Delivered at commit, to every LISTENing worker on any machine.
            await self.conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))

    async def add_many(self, tenant: Tenant, pairs: Sequence[tuple[str, int]], now: datetime,
                       status: DeliveryStatus = DeliveryStatus.PENDING
                       ) -> list[tuple[int, str]]:
        if not pairs:
            return []
        rows = [
            {"id": new_id("dlv"), "account_id": tenant.account_id, "mode": tenant.mode.value,
             "event_id": event_id, "endpoint_pk": endpoint_pk, "status": status.value,
             "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
            for event_id, endpoint_pk in pairs
        ]
        res = await self.conn.execute(
            sa.insert(d).returning(d.c.pk, d.c.id, sort_by_parameter_order=True), rows)
        pks = [(int(r[0]), str(r[1])) for r in res]
        if status is DeliveryStatus.PENDING:
            await self._notify()
        return pks

    async def replay(self, tenant: Tenant, endpoint: Endpoint, since: datetime,
                     now: datetime) -> int:
        stmt = sa.select(ev.c.id, ev.c.type, ev.c.data).where(
            ev.c.account_id == tenant.account_id, ev.c.mode == tenant.mode.value,
            ev.c.created_at >= since,
        ).order_by(ev.c.pk)
        if endpoint.event_types is not None:
            stmt = stmt.where(ev.c.type.in_(endpoint.event_types))
        assert endpoint.pk is not None
        pairs = [(eid, endpoint.pk) for eid, etype, data in await self.conn.execute(stmt)
                 if endpoint.wants(etype, data)]
        await self.add_many(tenant, pairs, now)
        return len(pairs)

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        due = (
            sa.select(d.c.pk)
            .where(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= now,
                   sa.or_(d.c.lease_until.is_(None), d.c.lease_until <= now),
                   # a disabled endpoint is sent nothing; its deliveries wait, not lost
                   d.c.endpoint_pk.in_(_ENABLED))
            .order_by(d.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        res = await self.conn.execute(
            sa.update(d).where(d.c.pk.in_(due.scalar_subquery()))
            .values(lease_until=lease_until).returning(d.c.pk)
        )
        pks = [int(r[0]) for r in res]
        if not pks:
            return []
        rows = await self.conn.execute(
            sa.select(d.c.pk, d.c.id, d.c.attempts,
                      ev.c.id.label("event_id"), ev.c.type, ev.c.occurred_at,
                      ev.c.created_at.label("event_created_at"), ev.c.data, ev.c.sequence,
                      ev.c.item_id, ev.c.pk.label("event_pk"),
                      *[c.label(f"ep_{c.name}") for c in we.c])
            .join(ev, ev.c.id == d.c.event_id)
            .join(we, we.c.pk == d.c.endpoint_pk)
            .where(d.c.pk.in_(pks))
            .order_by(d.c.pk)
        )
        out = []
        for r in rows:
            m = r._mapping
            endpoint = endpoint_of({c.name: m[f"ep_{c.name}"] for c in we.c})
            event = Event(m["type"], m["occurred_at"], m["data"], item_id=m["item_id"],
                          sequence=m["sequence"], id=m["event_id"],
                          created_at=m["event_created_at"], pk=m["event_pk"])
            out.append(Claimed(m["pk"], m["id"], m["attempts"], endpoint, event, lease_until))
        return out

    async def add_attempts(self, rows: Sequence[tuple[int, Attempt]]) -> None:
        if not rows:
            return
        await self.conn.execute(sa.insert(da), [
            {"delivery_pk": pk, "attempted_at": a.attempted_at, "duration_ms": a.duration_ms,
             "status_code": a.status_code, "error": a.error,
             "response_excerpt": (a.response_excerpt or "")[:EXCERPT_BYTES] or None}
            for pk, a in rows
        ])

    async def settle(self, updates: Sequence[Settlement], now: datetime) -> None:
        """Record each delivery's outcome. A result sent under a lease only lands while that
        lease is still the delivery's: if it ran out and another worker re-claimed the row,
        the newer claim owns it and this stale result changes nothing."""
        if not updates:
            return
        values = {
            "status": sa.bindparam("b_status"), "attempts": sa.bindparam("b_attempts"),
            "next_attempt_at": sa.bindparam("b_next", type_=UtcMicros()),
            "last_status_code": sa.bindparam("b_code"), "last_error": sa.bindparam("b_error"),
            "lease_until": None, "updated_at": now,
        }
        rows = [{"b_pk": pk, "b_status": st.value, "b_attempts": n, "b_next": nxt,
                 "b_code": code, "b_error": err, "b_lease": lease}
                for pk, st, n, nxt, code, err, lease in updates]
        leased = [r for r in rows if r["b_lease"] is not None]
        free = [{k: v for k, v in r.items() if k != "b_lease"} for r in rows
                if r["b_lease"] is None]
        if leased:
            await self.conn.execute(
                sa.update(d).where(
                    d.c.pk == sa.bindparam("b_pk"),
                    d.c.lease_until == sa.bindparam("b_lease", type_=UtcMicros()),
                ).values(**values),
                leased,
            )
        if free:
            await self.conn.execute(
                sa.update(d).where(d.c.pk == sa.bindparam("b_pk")).values(**values), free)
        if any(u[1] is DeliveryStatus.PENDING for u in updates):
            await self._notify()

    async def get(self, tenant: Tenant, delivery_id: str) -> Delivery | None:
        res = await self.conn.execute(
            _VIEW.where(d.c.id == delivery_id, d.c.account_id == tenant.account_id,
                        d.c.mode == tenant.mode.value)
        )
        row = res.first()
        if row is None:
            return None
        delivery = _delivery(row._mapping)
        attempts = await self.conn.execute(
            sa.select(da).where(da.c.delivery_pk == delivery.pk).order_by(da.c.pk)
        )
        delivery.attempt_log = [
            Attempt(a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_excerpt)
            for a in attempts
        ]
        return delivery

    async def page(self, tenant: Tenant, endpoint: Endpoint, status: DeliveryStatus | None,
                   page: PageRequest) -> list[tuple[int, Delivery]]:
        stmt = _VIEW.where(d.c.endpoint_pk == endpoint.pk, d.c.account_id == tenant.account_id,
                           d.c.mode == tenant.mode.value)
        if status is not None:
            stmt = stmt.where(d.c.status == status.value)
        if page.after is not None:
            stmt = stmt.where(d.c.pk > page.after)
        res = await self.conn.execute(stmt.order_by(d.c.pk).limit(page.limit))
        out = [(r.pk, _delivery(r._mapping)) for r in res]
        # The listing promises "with their attempts": load them for the whole page at once.
        by_pk = {dl.pk: dl for _, dl in out}
        if by_pk:
            attempts = await self.conn.execute(
                sa.select(da).where(da.c.delivery_pk.in_(list(by_pk))).order_by(da.c.pk))
            for a in attempts:
                by_pk[a.delivery_pk].attempt_log.append(
                    Attempt(a.attempted_at, a.duration_ms, a.status_code, a.error,
                            a.response_excerpt))
        return out

    async def retry(self, tenant: Tenant, delivery_id: str, now: datetime) -> bool:
        res = await self.conn.execute(
            sa.update(d).where(d.c.id == delivery_id, d.c.account_id == tenant.account_id,
                               d.c.mode == tenant.mode.value)
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now,
                    lease_until=None, updated_at=now)
            .returning(d.c.pk)
        )
        found = res.first() is not None
        if found:
            await self._notify()
        return found

    async def queue_stats(self, now: datetime) -> tuple[int, float | None]:
        res = await self.conn.execute(
            sa.select(sa.func.count(), sa.func.min(d.c.created_at))
            .where(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= now,
                   d.c.endpoint_pk.in_(_ENABLED))
        )
        count, oldest = res.one()
        if oldest is None:
            return int(count), None
        if not isinstance(oldest, datetime):
            oldest = from_micros(int(oldest))
        return int(count), (now - oldest).total_seconds()

    async def purge_before(self, cutoff: datetime) -> int:
        old = sa.select(d.c.pk).where(
            d.c.status != DeliveryStatus.PENDING.value, d.c.updated_at < cutoff
        )
        await self.conn.execute(sa.delete(da).where(da.c.delivery_pk.in_(old)))
        res = await self.conn.execute(
            sa.delete(d).where(d.c.pk.in_(old.scalar_subquery())).returning(d.c.pk)
        )
        return len(res.all())
