"""Migration 0006: the status indexes are partial, and the hot queries still use them.

A partial index is used only when the query's conditions imply its own; SQLite's planner
needs the very same words. These tests fail if a query stops naming the condition (or the
index loses it): the restock rule would then scan a product's every subscription, and the
dispatcher's claim sort the whole queue.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.inline_sqlite import sqlite3_of
from stockbell.store.repos.bulk import driver, pg_array
from stockbell.store.repos.deliveries import _SQLITE_CLAIM
from stockbell.store.repos.subscriptions import _CANDIDATES_PG, _CANDIDATES_SQLITE
from stockbell.store.types import json_text
from tests.integration.test_delivery_queue import run
from tests.support import own_database

WINDOWS = [(1, "*", 0, 5_000_000), (2, "loc:7", 1, 9)]


@pytest.fixture
def url(db_url: str) -> Iterator[str]:
    with own_database(db_url) as fresh:
        yield fresh


def _index_sql(rows: list[tuple[str, str]]) -> dict[str, str]:
    return {name: " ".join(sql.split()) for name, sql in rows}


def test_the_status_indexes_hold_only_the_rows_their_queries_read(url: str) -> None:
    async def go(db: SqlDatabase) -> dict[str, str]:
        async def read(uow: UnitOfWork) -> dict[str, str]:
            if url.startswith("postgresql"):
                sql = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY($1)"
                raw = await driver(uow.conn)
                rows = await raw.fetch(sql, ["ix_subscriptions_crossing",
                                             "ix_subscriptions_expiry", "ix_deliveries_due"])
                return _index_sql([(r[0], r[1]) for r in rows])
            res = await uow.conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE name IN "
                "('ix_subscriptions_crossing', 'ix_subscriptions_expiry', 'ix_deliveries_due')")
            return _index_sql([(r[0], r[1]) for r in res])

        return await db.run(read)

    got = run(url, go)
    assert set(got) == {"ix_subscriptions_crossing", "ix_subscriptions_expiry",
                        "ix_deliveries_due"}
    # PostgreSQL writes the predicate back with parentheses and casts; the words stay
    crossing, expiry, due = (got[n].replace("(", "").replace(")", "").replace("::text", "")
                             for n in ("ix_subscriptions_crossing", "ix_subscriptions_expiry",
                                       "ix_deliveries_due"))
    assert "item_id, scope_key, threshold WHERE status = 'active'" in crossing
    assert "status, expires_at WHERE expires_at IS NOT NULL" in expiry
    assert "next_attempt_at WHERE status = 'pending'" in due


def test_the_restock_rule_and_the_claim_walk_the_partial_indexes(url: str) -> None:
    """The candidates' range scan per window, and (SQLite) the claim in due order without
    sorting. The PostgreSQL claim's plan is tested in test_delivery_queue."""
    async def go(db: SqlDatabase) -> list[str]:
        async def plans(uow: UnitOfWork) -> list[str]:
            raw = await driver(uow.conn)
            if url.startswith("postgresql"):
                # Usable, not merely preferred on a small table: a scan of the table is only
                # chosen if the index cannot answer the query.
                await raw.execute("SET LOCAL enable_seqscan = off")
                await raw.execute("SET LOCAL enable_bitmapscan = off")
                rows = await raw.fetch("EXPLAIN " + _CANDIDATES_PG,
                                       *(pg_array(c) for c in zip(*WINDOWS, strict=True)))
                return ["\n".join(r[0] for r in rows)]
            conn = sqlite3_of(raw)
            candidates = conn.execute("EXPLAIN QUERY PLAN " + _CANDIDATES_SQLITE,
                                      (json_text(WINDOWS),)).fetchall()
            claim = conn.execute("EXPLAIN QUERY PLAN " + _SQLITE_CLAIM, (0, 10)).fetchall()
            return ["\n".join(r[3] for r in candidates), "\n".join(r[3] for r in claim)]

        return await db.run(plans)

    got = run(url, go)
    assert "ix_subscriptions_crossing" in got[0]
    assert "Seq Scan" not in got[0]
    if len(got) > 1:
        assert "USING INDEX ix_deliveries_due" in got[1]
        assert "ORDER BY" not in got[1]  # walked in due order, no sort
