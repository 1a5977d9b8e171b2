"""SQLite read connections whose statements run on the event loop's own thread.

aiosqlite runs every statement in a thread of its own, and SQLAlchemy's adapter makes four
trips there per statement (cursor, execute, fetch, close), each ~50 us of CPU: most of what
an indexed `GET` cost on SQLite. A read-only connection (`SqlDatabase.read`) never waits for
a lock in WAL mode (its deferred `BEGIN` takes none, and a reader never waits for the
writer), and the API's reads are bounded (by key, or by a page), so its statements run here,
on the same `sqlite3` connection (opened with check_same_thread off), with no trip at all.
Writers keep aiosqlite's thread for what may wait: `BEGIN IMMEDIATE` and `COMMIT`.

This adapts SQLAlchemy's own aiosqlite classes (SQLAlchemy and aiosqlite are pinned in
pyproject.toml); only the cursor's execution and the connection's commit and rollback
change.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT, await_


def sqlite3_of(raw: Any) -> Any:
    """The sqlite3 connection under an aiosqlite one (`Connection._conn`), for statements run
    on the event loop's own thread. Safe because a connection never has two statements in
    flight (a unit of work awaits each before the next) and Stockbell opens its SQLite
    connections with check_same_thread off."""
    return raw._conn


async def _done() -> None:
    """Awaited once per statement: SQLAlchemy's async engine refuses a statement that awaited
    nothing (AwaitRequired). It returns at once: two greenlet switches, no trip to the loop."""


class _InlineCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # a plain sqlite3 cursor: close() is synchronous

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = sqlite3_of(self._connection).cursor()
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        cursor: Any = self._cursor  # a sqlite3 cursor, not the awaitable one SQLAlchemy types
        await_(_done())
        try:
            cursor.execute(operation, () if parameters is None else parameters)
            if cursor.description:
                self._rows = collections.deque(cursor.fetchall())
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        cursor: Any = self._cursor
        await_(_done())
        try:
            cursor.executemany(operation, seq_of_parameters)
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class _InlineConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _InlineCursor

    def commit(self) -> None:
        try:
            sqlite3_of(self._connection).commit()
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        try:
            sqlite3_of(self._connection).rollback()
        except Exception as error:
            self._handle_exception(error)


class _InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _InlineConnection:
        adapted = super().connect(*arg, **kw)  # opened in aiosqlite's thread, as usual
        return _InlineConnection(self, adapted._connection)


def inline_dbapi() -> Any:
    """The DB-API module to give `create_async_engine(module=...)` for such connections."""
    return _InlineDBAPI(aiosqlite, sqlite3)
