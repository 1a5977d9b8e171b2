"""Engines for both databases, with SQLite set up for one writer and durable commits."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from stockbell.store.inline_sqlite import inline_dbapi, sqlite3_of
from stockbell.store.types import json_text, json_value


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# JSON columns (event payloads above all) are written and read with orjson where it gives
# exactly what the standard library gives (json_text, json_value).
_JSON = {"json_serializer": json_text, "json_deserializer": json_value}

# No overflow connections. SQLAlchemy closes an overflow connection when it is checked in to a
# full pool, and an async connection is checked in by a task of its own after the unit of work
# returns: under a steady load of more concurrent units than the pool holds, a new connection
# was opened every two or three transactions. Measured with 16-32 concurrent reads, CPU per
# read: PostgreSQL 1.1-1.3 ms against 0.34-0.35 ms without overflow; SQLite 0.9-1.3 ms
# against 0.18-0.21 ms. Beyond the pool, a unit of work now waits for a connection instead.
_POOL = {"max_overflow": 0}
BUSY_TIMEOUT_MS = 30_000


def create_engine(url: str, *, synchronous: str = "FULL", pool_size: int = 10,
                  read_only: bool = False, autocheckpoint: int | None = None) -> AsyncEngine:
    """`read_only` (SQLite): connections that refuse writes (`query_only`), begin deferred
    transactions, so a reader takes no lock and never waits for the writer, and run their
    statements on the event loop's thread (store/inline_sqlite.py). `autocheckpoint`
    (SQLite): the log size in pages past which a commit checkpoints (SQLite's default
    1,000), raised where a `store.checkpoint.WalCheckpointer` does it instead."""
    if not is_sqlite(url):
        # No pre-ping (a round trip per transaction): SqlDatabase.run replaces a connection
        # found dead before its commit.
        # twice pool_size: the most it could open before, when pool_size more could overflow
        return create_async_engine(url, pool_size=2 * pool_size, **_POOL, **_JSON)
    # check_same_thread off: small statements run on the event loop's thread, between the
    # trips to aiosqlite's (see store/repos/bulk.py). No reset on return to the pool: every
    # unit of work ends its transaction, and the ROLLBACK that SQLAlchemy would send anyway
    # is one more trip per transaction; `_on_reset` still rolls back one left open.
    engine = create_async_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                 pool_reset_on_return=None, **_POOL,
                                 **({"module": inline_dbapi()} if read_only else {}), **_JSON)

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: Any, _record: Any, state: Any) -> None:
        if state.asyncio_safe and dbapi_conn.driver_connection.in_transaction:
            dbapi_conn.rollback()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        if autocheckpoint is not None:
            cur.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Sent straight to the driver: through SQLAlchemy a statement is three trips to
        # aiosqlite's thread (cursor, execute, close).
        raw = conn.connection.driver_connection
        if read_only:  # a deferred BEGIN takes no lock, so it never waits: run it here
            sqlite3_of(raw).execute("BEGIN")
        else:
            # Take the write lock up front: a deferred transaction that later writes can
            # fail with SQLITE_BUSY instead of waiting. Tried here first without waiting
            # (another process rarely holds it: this one queues its own writers); only if it
            # is held does BEGIN wait, in aiosqlite's thread, not here.
            # That saves a trip per transaction: 0.1-0.3 ms of CPU, most of it the two
            # threads waking each other (docs/performance-history.md, eighth session).
            inline = sqlite3_of(raw)
            inline.execute("PRAGMA busy_timeout=0")
            try:
                inline.execute("BEGIN IMMEDIATE")
                held = False
            except sqlite3.OperationalError:  # SQLITE_BUSY: another connection writes
                held = True
            finally:
                inline.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if held:
                await_(raw.execute_fetchall("BEGIN IMMEDIATE"))

    return engine
