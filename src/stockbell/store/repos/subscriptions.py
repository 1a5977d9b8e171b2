"""Subscriptions, including the restock rule's range query."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Mode, Tenant
from stockbell.domain.scope import Scope
from stockbell.domain.subscription import Candidate, Customer, Status, Subscription
from stockbell.service.pagination import PageRequest
from stockbell.store.repos.bulk import (
    driver,
    fetch_rows,
    pg_array,
    select_by_pks,
    sqlite_rows,
    update_by_pks,
)
from stockbell.store.tables import ACTIVE, WITH_EXPIRY, items, locations, markets, subscriptions
from stockbell.store.types import from_micros, json_text, json_value, to_micros

s = subscriptions
_ROW = tuple(c.name for c in s.c)
# (item_id, scope_key, low, high): thresholds in (low, high] of that item and scope.
Window = tuple[int, str, int, int]
_PKS_PER_QUERY = 5000

_SCOPE_CODE = sa.case(
    (s.c.scope_key.like("L:%"),
     sa.select(locations.c.code)
     .where(sa.cast(locations.c.id, sa.String) == sa.func.substr(s.c.scope_key, 3))
     .scalar_subquery()),
    (s.c.scope_key.like("M:%"),
     sa.select(markets.c.code)
     .where(sa.cast(markets.c.id, sa.String) == sa.func.substr(s.c.scope_key, 3))
     .scalar_subquery()),
    else_=sa.null(),
)

_SELECT = (
    sa.select(s, items.c.sku_code, _SCOPE_CODE.label("scope_code"))
    .join(items, items.c.id == s.c.item_id)
)


# Subscriptions as `_SELECT` reads them, through the driver: SQLAlchemy's execution cost
# ~0.3 ms of `serve`'s CPU per statement (docs/performance.md, twenty-second session).
_FULL = (f"SELECT {', '.join('s.' + c for c in _ROW)}, i.sku_code, "
         "CASE WHEN s.scope_key LIKE 'L:%' THEN (SELECT code FROM locations "
         "WHERE id = {ref}) WHEN s.scope_key LIKE 'M:%' THEN (SELECT code FROM markets "
         "WHERE id = {ref}) END "
         "FROM subscriptions AS s JOIN items AS i ON i.id = s.item_id "
         "WHERE s.account_id = {p1} AND s.mode = {p2} AND ")
_GET = _FULL + "s.id = {p3}"
# At most 50, as the search this replaced read (its callers want the first unexpired one).
_BY_REFERENCE = (_FULL + f"s.item_id = {{p3}} AND s.reference_origin = {{p4}} "
                 f"AND s.reference = {{p5}} AND s.{ACTIVE} ORDER BY s.pk LIMIT 50")
_PG_ARGS = {"ref": "CAST(substr(s.scope_key, 3) AS bigint)",
            **{f"p{n}": f"${n}" for n in range(1, 6)}}
_SQLITE_ARGS = {"ref": "CAST(substr(s.scope_key, 3) AS INTEGER)",
                **{f"p{n}": f"?{n}" for n in range(1, 6)}}
_GET_PG, _GET_SQLITE = _GET.format(**_PG_ARGS), _GET.format(**_SQLITE_ARGS)
_BY_REFERENCE_PG = _BY_REFERENCE.format(**_PG_ARGS)
_BY_REFERENCE_SQLITE = _BY_REFERENCE.format(**_SQLITE_ARGS)


def _full(row: Sequence[Any]) -> Subscription:
    """A subscription from a row of `_FULL`: `_ROW`'s columns, the SKU and the scope's code."""
    sub = _from_driver_row(row[:len(_ROW)])
    sub.sku_code, sub.scope_code = row[-2], row[-1]
    return sub


_SEARCH_FIELDS: dict[str, sa.ColumnElement[Any]] = {
    "id": s.c.id, "status": s.c.status, "sku_code": items.c.sku_code,
    "customer_email": s.c.customer_email, "reference": s.c.reference,
    "reference_origin": s.c.reference_origin, "threshold": s.c.threshold,
    "scope_key": s.c.scope_key, "created_at": s.c.created_at, "updated_at": s.c.updated_at,
    "expires_at": s.c.expires_at, "notified_at": s.c.notified_at,
}
_SEARCH_OPS: dict[str, Callable[[sa.ColumnElement[Any], Any], sa.ColumnElement[bool]]] = {
    "eq": lambda c, v: c == v, "not_eq": lambda c, v: c != v,
    "lt": lambda c, v: c < v, "lteq": lambda c, v: c <= v,
    "gt": lambda c, v: c > v, "gteq": lambda c, v: c >= v,
    "in": lambda c, v: c.in_(v), "not_in": lambda c, v: c.not_in(v),
    "like": lambda c, v: c.ilike(v), "not_like": lambda c, v: c.not_ilike(v),
    "contains": lambda c, v: c.icontains(v, autoescape=True),
    "not_contains": lambda c, v: sa.not_(c.icontains(v, autoescape=True)),
    "startswith": lambda c, v: c.istartswith(v, autoescape=True),
    "not_startswith": lambda c, v: sa.not_(c.istartswith(v, autoescape=True)),
    "endswith": lambda c, v: c.iendswith(v, autoescape=True),
    "not_endswith": lambda c, v: sa.not_(c.iendswith(v, autoescape=True)),
    "null": lambda c, v: c.is_(None), "not_null": lambda c, v: c.is_not(None),
}


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return {} if value == "{}" else json_value(value)  # most customers carry no attributes


def _sub(m: Any) -> Subscription:
    """A subscription from a SQLAlchemy row mapping that carries sku_code and scope_code.
    (Rows straight from the driver: `_from_driver_row`.)"""
    return Subscription(
        id=m["id"], item_id=m["item_id"], scope=Scope.from_key(m["scope_key"]),
        threshold=m["threshold"], status=Status(m["status"]),
        customer=Customer(m["customer_email"], m["customer_external_id"],
                          m["customer_first_name"], m["customer_last_name"],
                          m["customer_attributes"] or {}),
        auto_resubscribe=m["auto_resubscribe"], expires_at=m["expires_at"],
        reference=m["reference"], reference_origin=m["reference_origin"],
        metadata=m["metadata"] or {}, created_at=m["created_at"], updated_at=m["updated_at"],
        notified_at=m["notified_at"], notify_count=m["notify_count"], pk=m["pk"],
        sku_code=m["sku_code"], scope_code=m["scope_code"],
    )


# The order `_from_driver_row` unpacks; a column added to the table must be added there.
_UNPACKED = ("pk", "id", "account_id", "mode", "item_id", "scope_key", "threshold", "status",
             "customer_email", "customer_external_id", "customer_first_name",
             "customer_last_name", "customer_attributes", "auto_resubscribe", "expires_at",
             "reference", "reference_origin", "metadata", "notify_count", "notified_at",
             "created_at", "updated_at")
assert _ROW == _UNPACKED, f"subscriptions columns changed: update _from_driver_row ({_ROW})"
_STATUSES = {st.value: st for st in Status}


def _when(micros: Any) -> datetime | None:
    return None if micros is None else from_micros(int(micros))


def _from_driver_row(row: Sequence[Any]) -> Subscription:
    """A subscription from a raw driver row in `_ROW` order (JSON as text, times as integer
    micro-seconds), read by position: a restock loads up to 100,000 of them, and a dict per
    row and the enum call per row cost a third of it."""
    (pk, sub_id, _account, _mode, item_id, scope_key, threshold, status, email, external_id,
     first_name, last_name, attributes, auto_resubscribe, expires_at, reference,
     reference_origin, metadata, notify_count, notified_at, created_at, updated_at) = row
    return Subscription(
        id=sub_id, item_id=item_id, scope=Scope.from_key(scope_key), threshold=threshold,
        status=_STATUSES[status],
        customer=Customer(email, external_id, first_name, last_name, _json(attributes) or {}),
        auto_resubscribe=bool(auto_resubscribe), expires_at=_when(expires_at),
        reference=reference, reference_origin=reference_origin, metadata=_json(metadata) or {},
        created_at=_when(created_at), updated_at=_when(updated_at),
        notified_at=_when(notified_at), notify_count=notify_count, pk=pk,
    )


# What a change of a subscription may write, in storage form (`_stored`).
_MUTABLE = ("threshold", "status", "customer_email", "customer_external_id",
            "customer_first_name", "customer_last_name", "customer_attributes",
            "auto_resubscribe", "expires_at", "reference", "reference_origin", "metadata",
            "notify_count", "notified_at", "updated_at")


def _stored(sub: Subscription) -> list[Any]:
    """`_MUTABLE`'s values of `sub` as the driver writes them: JSON as its text, times as
    micro-seconds."""
    c = sub.customer
    return [sub.threshold, sub.status.value, c.email, c.external_id, c.first_name,
            c.last_name, json_text(c.attributes), sub.auto_resubscribe,
            to_micros(sub.expires_at), sub.reference, sub.reference_origin,
            json_text(sub.metadata), sub.notify_count, to_micros(sub.notified_at),
            to_micros(sub.updated_at)]


# A subscription written through the driver (SQLAlchemy's execution of one statement cost
# `serve` 0.3-0.7 ms: docs/performance.md, twenty-second session).
_ADD_COLUMNS = ("id", "account_id", "mode", "item_id", "scope_key", "created_at")
_ADD_PG = (f"INSERT INTO subscriptions ({', '.join(_ADD_COLUMNS + _MUTABLE)}) VALUES "
           f"({', '.join(f'${n}' for n in range(1, len(_ADD_COLUMNS + _MUTABLE) + 1))}) "
           "RETURNING pk")
_ADD_SQLITE = _ADD_PG.replace("$", "?")
_UPDATE_PG = (f"UPDATE subscriptions SET "
              f"{', '.join(f'{c} = ${n}' for n, c in enumerate(_MUTABLE, 1))} "
              f"WHERE pk = ${len(_MUTABLE) + 1}")
_UPDATE_SQLITE = _UPDATE_PG.replace("$", "?")


_CANDIDATE_COLUMNS = ("s.pk, s.item_id, s.scope_key, s.threshold, s.expires_at, "
                      "s.auto_resubscribe, s.notify_count, s.reference_origin")
_CANDIDATES_PG = (
    f"SELECT {_CANDIDATE_COLUMNS} FROM unnest($1::text::bigint[], $2::text::text[], "
    "$3::text::bigint[], $4::text::bigint[]) AS w(item_id, scope_key, low, high) "
    "JOIN subscriptions AS s "
    f"ON s.item_id = w.item_id AND s.scope_key = w.scope_key AND s.{ACTIVE} "
    "AND s.threshold > w.low AND s.threshold <= w.high ORDER BY s.pk"
)
# CROSS JOIN keeps the windows as the outer loop: one index range scan per window.
_CANDIDATES_SQLITE = (
    f"SELECT {_CANDIDATE_COLUMNS} FROM json_each(?) AS w CROSS JOIN subscriptions AS s "
    "WHERE s.item_id = json_extract(w.value, '$[0]') "
    f"AND s.scope_key = json_extract(w.value, '$[1]') AND s.{ACTIVE} "
    "AND s.threshold > json_extract(w.value, '$[2]') "
    "AND s.threshold <= json_extract(w.value, '$[3]') ORDER BY s.pk"
)


class SqlSubscriptions:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, tenant: Tenant, sub: Subscription) -> Subscription:
        """Through the driver: a storefront's "notify me" is this insert, and SQLAlchemy's
        execution of it cost `serve` ~0.4 ms of CPU on PostgreSQL and ~0.7 ms on SQLite,
        where it also made three trips to aiosqlite's thread (`bench reads`,
        docs/performance.md, twenty-second session)."""
        rows = await fetch_rows(self.conn, _ADD_PG, _ADD_SQLITE, [
            sub.id, tenant.account_id, tenant.mode.value, sub.item_id, sub.scope.key,
            to_micros(sub.created_at), *_stored(sub)])
        sub.pk = int(rows[0][0])
        return sub

    async def get(self, tenant: Tenant, sub_id: str) -> Subscription | None:
        rows = await fetch_rows(self.conn, _GET_PG, _GET_SQLITE,
                                [tenant.account_id, tenant.mode.value, sub_id])
        return _full(rows[0]) if rows else None

    async def active_by_reference(self, tenant: Tenant, item_id: int, origin: str,
                                  reference: str) -> list[Subscription]:
        """The item's active subscriptions with this (reference_origin, reference), oldest
        first: what TI and Sequenzy keep one of (`service.subscriptions.subscribe_once`)."""
        rows = await fetch_rows(self.conn, _BY_REFERENCE_PG, _BY_REFERENCE_SQLITE,
                                [tenant.account_id, tenant.mode.value, item_id, origin,
                                 reference])
        return [_full(r) for r in rows]

    async def page(self, tenant: Tenant, filters: dict[str, Any],
                   page: PageRequest) -> list[tuple[int, Subscription]]:
        stmt = _SELECT.where(s.c.account_id == tenant.account_id,
                             s.c.mode == tenant.mode.value)
        if "status" in filters:
            stmt = stmt.where(s.c.status == filters["status"].value)
        if "sku_code" in filters:
            stmt = stmt.where(items.c.sku_code == filters["sku_code"])
        if page.after is not None:
            stmt = stmt.where(s.c.pk > page.after)
        res = await self.conn.execute(stmt.order_by(s.c.pk).limit(page.limit))
        return [(r.pk, _sub(r._mapping)) for r in res]

    async def search(self, tenant: Tenant, where: Sequence[Sequence[tuple[str, str, Any]]],
                     order: Sequence[tuple[str, bool]], offset: int,
                     limit: int) -> tuple[int, list[Subscription]]:
        """(total matches, one page): every clause of `where` holds, a clause being any of
        its (field, op, value) conditions; sorted by `order` (field, descending), then by
        creation. Fields and ops: `_SEARCH_FIELDS`, `_SEARCH_OPS` (LIKE ops ignore case)."""
        cond = sa.and_(s.c.account_id == tenant.account_id, s.c.mode == tenant.mode.value,
                       *(sa.or_(*(_SEARCH_OPS[op](_SEARCH_FIELDS[f], v) for f, op, v in clause))
                         for clause in where))
        total = (await self.conn.execute(
            sa.select(sa.func.count()).select_from(s).join(items, items.c.id == s.c.item_id)
            .where(cond))).scalar_one()
        keys = [_SEARCH_FIELDS[f].desc() if desc else _SEARCH_FIELDS[f].asc() for f, desc in order]
        res = await self.conn.execute(
            _SELECT.where(cond).order_by(*keys, s.c.pk).offset(offset).limit(limit))
        return int(total), [_sub(r._mapping) for r in res]

    async def update(self, sub: Subscription) -> None:
        await fetch_rows(self.conn, _UPDATE_PG, _UPDATE_SQLITE, [*_stored(sub), sub.pk])

    async def candidates(self, windows: Sequence[Window]) -> list[Candidate]:
        """Active subscriptions whose threshold lies in (low, high] of their (item, scope)'s
        window, oldest first: the windows travel as one parameter and are joined to
        ix_subscriptions_crossing, one index range scan per window, however many there are."""
        if not windows:
            return []
        raw: Any = await driver(self.conn)
        if self.conn.dialect.name == "postgresql":
            rows = await raw.fetch(_CANDIDATES_PG, *(pg_array(col) for col in zip(*windows,
                                                                             strict=True)))
        else:
            # In aiosqlite's thread: a restock's windows may match 100,000 subscriptions.
            rows = await sqlite_rows(raw, _CANDIDATES_SQLITE, (json_text(windows),),
                                     inline=False)
        return [Candidate(pk, item_id, key, threshold,
                          None if expires is None else from_micros(int(expires)),
                          bool(auto), notify_count, origin)
                for pk, item_id, key, threshold, expires, auto, notify_count, origin in rows]

    async def by_pks(self, pks: Sequence[int]) -> dict[int, Subscription]:
        """Full rows for the given subscriptions (sku_code and scope_code left unset), read
        through the driver: a restock may load 100,000 of them."""
        out: dict[int, Subscription] = {}
        for i in range(0, len(pks), _PKS_PER_QUERY):
            for row in await select_by_pks(self.conn, "subscriptions", _ROW,
                                           pks[i:i + _PKS_PER_QUERY]):
                sub = _from_driver_row(row)
                out[int(row[0])] = sub
        return out

    async def set_statuses(self, changes: Sequence[tuple[int, Status, bool]],
                           now: datetime) -> None:
        """Apply the restock rule's decisions: each (pk, new status, fired) in order. Grouped
        into one UPDATE per (final status, times fired) over chunks of pks, since a restock
        can decide 100,000 the same way."""
        final: dict[int, Status] = {}
        fires: dict[int, int] = {}
        for pk, status, fired in changes:
            final[pk] = status
            fires[pk] = fires.get(pk, 0) + fired
        groups: dict[tuple[Status, int], list[int]] = {}
        for pk, status in final.items():
            groups.setdefault((status, fires[pk]), []).append(pk)
        at = to_micros(now)
        for (status, n), pks in groups.items():
            values: dict[str, Any] = {"status": status.value, "updated_at": at}
            if n:
                values["notified_at"] = at
            for i in range(0, len(pks), _PKS_PER_QUERY):
                await update_by_pks(self.conn, "subscriptions", values,
                                    {"notify_count": n} if n else {},
                                    pks[i:i + _PKS_PER_QUERY])

    async def due_to_expire(self, now: datetime,
                            limit: int) -> list[tuple[Tenant, Subscription]]:
        res = await self.conn.execute(
            _SELECT.where(
                s.c.status.in_([Status.ACTIVE.value, Status.INACTIVE.value,
                                Status.NOTIFIED.value]),
                sa.text(WITH_EXPIRY), s.c.expires_at <= now,
            ).order_by(s.c.pk).limit(limit)
        )
        return [(Tenant(r.account_id, Mode(r.mode)), _sub(r._mapping)) for r in res]
