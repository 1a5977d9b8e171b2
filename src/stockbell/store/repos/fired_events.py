"""Back-in-stock events whose data the database renders from the subscriptions' rows.

A restock that fires 100,000 subscriptions used to read every fired row into Python, build a
`Subscription`, render its view and write the text back: on SQLite that round trip of data
the database already holds kept the event loop busy for most of the restock (5.1-5.5 s of
6.2-6.5 s; 0.9 of 4.0 s now, docs/performance.md, eighteenth session). Here the service sends
only what it decided per subscription (the event's id and sequence, the status and count
after firing, the threshold as text) and what the move's events share (a `FiredScene`), and
one `INSERT ... SELECT` per chunk of up to 2,000 writes the events, each row's data built
next to the row it comes from.

The text must equal what `service.inventory` renders in Python for the same event
(`_fired_event`: `{"subscription_id", "subscription": subscription_view, "item", "scope",
"availability", "previous_availability", "threshold"}`), key for key and in orjson's compact
form, so that the dispatcher sends it as stored (`delivery.formats.native.embeds_as_is`).
tests/integration/test_fired_events.py renders the same restock both ways and compares.
SQLite writes it with `json_object`, which is already compact; PostgreSQL's
`json_build_object` writes `" : "`, so there the text is concatenated from `to_json` pieces.
Stored times are integer micro-seconds; both render them as `service.views.iso` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.events import BACK_IN_STOCK
from stockbell.service.ports import FiredRow, FiredScene
from stockbell.store.repos.bulk import driver, sqlite_rows
from stockbell.store.types import json_text, to_micros

_COLUMNS = "id, account_id, mode, type, item_id, sequence, occurred_at, created_at, data"


def _iso_sqlite(col: str) -> str:
    """`iso(from_micros(col))`: seconds, then six digits of fraction unless they are zero."""
    return (f"CASE WHEN {col} IS NULL THEN NULL ELSE "
            f"strftime('%Y-%m-%dT%H:%M:%S', {col} / 1000000, 'unixepoch') || "
            f"CASE WHEN {col} % 1000000 = 0 THEN '' ELSE printf('.%06d', {col} % 1000000) END"
            " || 'Z' END")


def _object_sqlite(*pairs: str) -> str:
    return f"json_object({', '.join(pairs)})"


def _json_sqlite(col: str) -> str:
    """A stored JSON object column, `{}` where it holds nothing (as `_json(...) or {}`)."""
    return f"json(coalesce(nullif({col}, 'null'), '{{}}'))"


_SQLITE = f"""
INSERT INTO events ({_COLUMNS})
SELECT f.value ->> 0, ?2, ?3, '{BACK_IN_STOCK}', ?6, f.value ->> 1, ?12, ?4, {_object_sqlite(
    "'subscription_id', s.id",
    "'subscription', " + _object_sqlite(
        "'id', s.id", "'status', f.value ->> 3", "'sku_code', ?7", "'scope', json(?8)",
        "'threshold', f.value ->> 5",
        "'customer', " + _object_sqlite(
            "'email', s.customer_email", "'external_id', s.customer_external_id",
            "'first_name', s.customer_first_name", "'last_name', s.customer_last_name",
            f"'attributes', {_json_sqlite('s.customer_attributes')}"),
        "'auto_resubscribe', json(CASE WHEN s.auto_resubscribe THEN 'true' ELSE 'false' END)",
        f"'expires_at', {_iso_sqlite('s.expires_at')}", "'reference', s.reference",
        "'reference_origin', s.reference_origin",
        f"'metadata', {_json_sqlite('s.metadata')}", "'notify_count', f.value ->> 4",
        "'notified_at', ?5", f"'created_at', {_iso_sqlite('s.created_at')}",
        f"'updated_at', {_iso_sqlite('s.updated_at')}"),
    "'item', json(?9)", "'scope', json(?8)", "'availability', ?10",
    "'previous_availability', ?11", "'threshold', f.value ->> 5")}
FROM json_each(?1) AS f CROSS JOIN subscriptions AS s
WHERE s.pk = f.value ->> 2
"""


def _text_pg(col: str) -> str:
    return f"coalesce(to_json({col})::text, 'null')"


def _iso_pg(col: str) -> str:
    return (f"CASE WHEN {col} IS NULL THEN 'null' ELSE '\"' || "
            f"to_char(to_timestamp({col} / 1000000) AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN {col} % 1000000 = 0 THEN '' "
            f"ELSE '.' || lpad(({col} % 1000000)::text, 6, '0') END || 'Z\"' END")


def _json_pg(col: str) -> str:
    return f"coalesce(nullif({col}::text, 'null'), '{{}}')"


def _object_pg(*pairs: tuple[str, str]) -> str:
    """A JSON object's text, keys in order, no spaces: `{"k":` || value || `,...}`."""
    parts = [f"'{'{' if n == 0 else ','}\"{key}\":' || {value}"
             for n, (key, value) in enumerate(pairs)]
    return "(" + " || ".join(parts) + " || '}')"


_PG = f"""
INSERT INTO events ({_COLUMNS})
SELECT o.i, $2, $3, '{BACK_IN_STOCK}', $6, o.q, $12, $4, {_object_pg(
    ("subscription_id", "to_json(o.id)::text"),
    ("subscription", _object_pg(
        ("id", "to_json(o.id)::text"), ("status", "to_json(o.st)::text"), ("sku_code", "$7"),
        ("scope", "$8"), ("threshold", "to_json(o.t)::text"),
        ("customer", _object_pg(
            ("email", _text_pg("o.customer_email")),
            ("external_id", _text_pg("o.customer_external_id")),
            ("first_name", _text_pg("o.customer_first_name")),
            ("last_name", _text_pg("o.customer_last_name")),
            ("attributes", _json_pg("o.customer_attributes")))),
        ("auto_resubscribe", "CASE WHEN o.auto_resubscribe THEN 'true' ELSE 'false' END"),
        ("expires_at", _iso_pg("o.expires_at")), ("reference", _text_pg("o.reference")),
        ("reference_origin", _text_pg("o.reference_origin")),
        ("metadata", _json_pg("o.metadata")), ("notify_count", "o.n::text"),
        ("notified_at", "$5"), ("created_at", _iso_pg("o.created_at")),
        ("updated_at", _iso_pg("o.updated_at")))),
    ("item", "$9"), ("scope", "$8"), ("availability", "$10"),
    ("previous_availability", "$11"), ("threshold", "to_json(o.t)::text"))}
FROM (
    SELECT f.i, f.q, f.st, f.n, f.t, s.id, s.customer_email, s.customer_external_id,
           s.customer_first_name, s.customer_last_name, s.customer_attributes,
           s.auto_resubscribe, s.expires_at, s.reference, s.reference_origin, s.metadata,
           s.created_at, s.updated_at
    FROM json_to_recordset($1::json) AS f(i text, q bigint, p bigint, st text, n int, t text)
    JOIN subscriptions AS s ON s.pk = f.p
    ORDER BY f.i
) AS o
"""


def pg_statement(tenant: Tenant, scene: FiredScene, rows: Sequence[FiredRow],
                 now: datetime) -> tuple[str, list[Any]]:
    """PostgreSQL's statement and parameters for `rows` (also run by bench/floor.py, with
    nothing of Stockbell around it)."""
    return _PG, [
        orjson.dumps([{"i": r[0], "q": r[1], "p": r[2], "st": r[3], "n": r[4], "t": r[5]}
                      for r in rows]).decode(),
        tenant.account_id, tenant.mode.value, to_micros(now), json_text(scene.notified_at),
        scene.item_id,
        *(json_text(v) for v in (scene.sku_code, scene.scope, scene.item, scene.availability,
                                 scene.previous_availability)),
        to_micros(scene.occurred_at)]


def sqlite_statement(tenant: Tenant, scene: FiredScene, rows: Sequence[FiredRow],
                     now: datetime) -> tuple[str, tuple[Any, ...]]:
    """SQLite's statement and parameters for `rows` (also run by bench/floor.py). CROSS JOIN
    keeps the rows' array the outer loop, so the events are inserted in its order (json_each
    reads an array in order) without sorting their data."""
    return _SQLITE, (
        orjson.dumps(rows).decode(), tenant.account_id, tenant.mode.value, to_micros(now),
        scene.notified_at, scene.item_id, scene.sku_code, json_text(scene.scope),
        json_text(scene.item), scene.availability, scene.previous_availability,
        to_micros(scene.occurred_at))


async def add_back_in_stock(conn: AsyncConnection, tenant: Tenant, scene: FiredScene,
                            rows: Sequence[FiredRow], now: datetime) -> None:
    """Insert the events (occurred when the scene says, created `now`) in the order of
    `rows`, whose ids ascend as `new_ids` makes them: the API lists events by primary key,
    and receivers order them by sequence."""
    if not rows:
        return
    raw: Any = await driver(conn)
    if conn.dialect.name == "postgresql":
        sql, params = pg_statement(tenant, scene, rows, now)
        await raw.execute(sql, *params)
        return
    # In aiosqlite's thread: one statement that may write thousands of rows, the GIL
    # released while it runs.
    await sqlite_rows(raw, *sqlite_statement(tenant, scene, rows, now), inline=False)
