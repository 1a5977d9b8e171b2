"""Engines for both databases, with SQLite set up for one writer and durable commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from stockbell.store.types import json_text, json_value


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# JSON columns (event payloads above all) are written and read with orjson where it gives
# exactly what the standard library gives (json_text, json_value).
_JSON = {"json_serializer": json_text, "json_deserializer": json_value}


def create_engine(url: str, *, synchronous: str = "FULL", pool_size: int = 10,
                  read_only: bool = False) -> AsyncEngine:
    """`read_only` (SQLite): connections that refuse writes (`query_only`) and begin deferred
    transactions, so a reader takes no lock and never waits for the writer."""
    if not is_sqlite(url):
        # No pre-ping (a round trip per transaction): SqlDatabase.run replaces a connection
        # found dead before its commit.
        return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, **_JSON)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **_JSON)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail
        # with SQLITE_BUSY instead of waiting.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
