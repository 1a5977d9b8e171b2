"""Bulk reads and writes straight through the driver, inside the caller's transaction.

A restock can write 100,000 events and as many deliveries in one transaction. Through
SQLAlchemy each row costs its bind processing; here rows arrive as plain tuples already in
storage form (integer micro-seconds, JSON text) and go to PostgreSQL as one COPY and to SQLite
as one `executemany`, both on the very connection (and so the transaction) of the unit of work.
Sets of primary keys travel as one parameter (an array; JSON text for SQLite's json_each).

On SQLite, a small statement runs on the event loop's own thread (`sqlite_rows`,
`sqlite_many`) instead of being sent to aiosqlite's thread and waited for: that trip costs
about 50 us of CPU (a queue, two thread switches, a wake-up of the loop) against 1-20 us for
the statement itself, and a one-change transaction made 18 of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.store.inline_sqlite import sqlite3_of
from stockbell.store.types import json_text

# Where a SQLite statement runs: here for up to INLINE_ROWS rows (an executemany) or
# INLINE_KEYS keys or records (one statement over a JSON set), else in aiosqlite's thread.
# Measured on the dispatcher, claims and settlements of a few hundred rows cost less CPU here
# than sent to the thread (which takes the GIL back for every row it binds or returns, and
# every hand-over costs both threads): 157-188 us of the main thread per delivery against
# 198-217, in alternated runs. 2,000 rows (a restock's chunk) stop the event loop for
# 10-20 ms; the larger statements (a restock's candidates, its 5,000-key status updates) go
# to the thread.
INLINE_ROWS = 2000
INLINE_KEYS = 2000


async def sqlite_rows(raw: Any, sql: str, params: Sequence[Any], *,
                      inline: bool = True) -> list[Any]:
    """The rows of one SQLite statement; run here when `inline`, else in aiosqlite's thread
    (for a statement that may read or write many rows). A write transaction holds SQLite's
    write lock from its BEGIN IMMEDIATE, so a statement run here never waits for a lock, and
    in WAL mode a read never does either."""
    if inline:
        return sqlite3_of(raw).execute(sql, params).fetchall()  # type: ignore[no-any-return]
    return list(await raw.execute_fetchall(sql, params))


async def sqlite_many(raw: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`executemany`, run here for up to INLINE_ROWS rows."""
    if len(rows) <= INLINE_ROWS:
        sqlite3_of(raw).executemany(sql, rows)
    else:
        await raw.executemany(sql, rows)


async def _raw(conn: AsyncConnection) -> Any:
    """The driver connection under `conn`. While `conn` holds its connection (always, inside
    a unit of work) it is read directly: `get_raw_connection` spends a greenlet switch on the
    same attribute, several times per transaction."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection.driver_connection
    return (await conn.get_raw_connection()).driver_connection


async def driver(conn: AsyncConnection) -> Any:
    """The driver's own connection under `conn` (asyncpg's or aiosqlite's), inside the unit
    of work's transaction: statements sent on it skip SQLAlchemy's per-statement and per-row
    work. SQLAlchemy's asyncpg adapter sends BEGIN only with its own first statement, so a
    driver statement that came first would run (and commit, and drop its locks) on its own:
    here the transaction is begun first. (SQLite's begins with the unit of work.) Writes
    deferred by `combined_writes` are sent first, so the caller's statement sees them."""
    raw = await _begun(conn)
    pending = _PENDING.get(conn)
    if pending:
        await raw.execute(*_carrying(pending, "SELECT 1", ()))
        pending.clear()
    return raw


async def _begun(conn: AsyncConnection) -> Any:
    raw = await _raw(conn)
    if conn.dialect.name == "postgresql" and not raw.is_in_transaction():
        await _begin_postgres(conn)
    return raw


async def _begin_postgres(conn: AsyncConnection) -> None:
    """Begin the unit of work's transaction as SQLAlchemy's asyncpg adapter does before its
    own first statement (its `_start_transaction`, under its `_execute_mutex`), so that the
    unit of work's commit or rollback ends it. Sending a statement through SQLAlchemy for
    this (a greenlet switch, an execution context, a cursor) cost serve 3.4 % more
    instructions per change in a group commit of 16 (valgrind). These are the adapter's
    private methods: SQLAlchemy is pinned, and tests/integration/test_store_driver.py fails
    if they change."""
    sync = conn.sync_connection
    adapter = sync.connection.dbapi_connection if sync is not None else None
    start = getattr(adapter, "_start_transaction", None)
    if start is None:  # not the adapter this was written against: let SQLAlchemy begin
        await conn.exec_driver_sql("SELECT 1")
        return
    async with adapter._execute_mutex:  # type: ignore[union-attr]
        if adapter._transaction is None:  # type: ignore[union-attr]
            await start()


async def insert_rows(conn: AsyncConnection, table: str, columns: Sequence[str],
                      rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    raw: Any = await driver(conn)
    if conn.dialect.name == "postgresql":
        await raw.copy_records_to_table(table, records=rows, columns=list(columns))
        return
    marks = ", ".join("?" * len(columns))
    await sqlite_many(raw, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


@dataclass(frozen=True, slots=True)
class RowWrite:
    """Rows for one table, in storage form: inserted, or with `key` upserted (on a conflict
    over `key` the other columns are overwritten; the keys of `rows` must be distinct), or
    with `update` the existing rows matched on `key` updated (rows that match none are
    dropped). `pg_types` names the columns' PostgreSQL types; `json` names a text column
    holding JSON, whose values are their JSON text."""

    table: str
    columns: tuple[str, ...]
    pg_types: tuple[str, ...]
    rows: Sequence[tuple[Any, ...]]
    key: tuple[str, ...] = ()
    update: bool = False

    def conflict(self) -> str:
        if not self.key:
            return ""
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in self.key)
        return f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {sets}"

    def pg_insert(self, n: int) -> str:
        """The INSERT (or with `update` the UPDATE) reading parameter n: the rows as one
        JSON array of objects, read by `json_to_recordset` in row order."""
        names = ", ".join(self.columns)
        shape = ", ".join(f"{c} {'text' if t == 'json' else t}"
                          for c, t in zip(self.columns, self.pg_types, strict=True))
        rows = f"json_to_recordset(${n}::json) AS r({shape})"
        if self.update:
            sets = ", ".join(f"{c} = r.{c}" for c in self.columns if c not in self.key)
            match = " AND ".join(f"t.{c} = r.{c}" for c in self.key)
            return f"UPDATE {self.table} AS t SET {sets} FROM {rows} WHERE {match}"
        return f"INSERT INTO {self.table} ({names}) SELECT {names} FROM {rows}{self.conflict()}"

    def pg_param(self) -> str:
        columns = self.columns
        raw = [n for n, t in enumerate(self.pg_types) if t == "json"]
        rows: Iterable[Sequence[Any]] = self.rows
        if raw:  # JSON text goes in as JSON (read back as its text), not as a string
            # holding it: no second escaping. Except where it holds the escape of U+0000,
            # which PostgreSQL's JSON functions refuse to unescape anywhere in a document
            # (json_to_recordset reads every string); as a string, it arrives as written.
            rows = [[orjson.Fragment(v) if n in raw and v is not None and "\\u0000" not in v
                     else v for n, v in enumerate(row)] for row in self.rows]
        return orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows]).decode()

    def sqlite_statement(self) -> tuple[str, list[tuple[Any, ...]]]:
        """One statement for `executemany`, and its rows in parameter order."""
        if not self.update:
            marks = ", ".join("?" * len(self.columns))
            return (f"INSERT INTO {self.table} ({', '.join(self.columns)}) "
                    f"VALUES ({marks}){self.conflict()}", list(self.rows))
        cols = [n for n, c in enumerate(self.columns) if c not in self.key]
        keys = [self.columns.index(c) for c in self.key]
        sets = ", ".join(f"{self.columns[n]} = ?" for n in cols)
        match = " AND ".join(f"{c} = ?" for c in self.key)
        return (f"UPDATE {self.table} SET {sets} WHERE {match}",
                [tuple(row[n] for n in [*cols, *keys]) for row in self.rows])


# Writes deferred per connection while its `combined_writes` scope is open.
_PENDING: dict[AsyncConnection, list[RowWrite]] = {}


@asynccontextmanager
async def combined_writes(conn: AsyncConnection) -> AsyncIterator[None]:
    """Within this scope, on PostgreSQL, `defer_rows` keeps writes back and sends them with
    the next statement that goes through the driver (`driver`; `fetch_rows(...,
    carried=True)` as the same statement), or at the scope's end. A group commit of
    one-change requests wrote stock, availability and the changes (one statement), bumped
    the items' sequences (one) and copied the events (a COPY, two round trips): each round
    trip waits for PostgreSQL and then for serve's event loop to come back to it, between
    HTTP requests (docs/performance.md, thirteenth session). SQLAlchemy's own statements
    do not send deferred writes: in the scope they may only read tables those writes do not
    touch. On SQLite (one writer, statements on the loop's thread) nothing is deferred."""
    if conn.dialect.name != "postgresql" or conn in _PENDING:
        yield
        return
    pending = _PENDING[conn] = []
    try:
        yield
        if pending:
            raw = await _begun(conn)
            await raw.execute(*_carrying(pending, "SELECT 1", ()))
    finally:
        del _PENDING[conn]


async def defer_rows(conn: AsyncConnection, writes: Sequence[RowWrite]) -> None:
    """`write_rows`, kept back inside a `combined_writes` scope."""
    pending = _PENDING.get(conn)
    if pending is None:
        await write_rows(conn, writes)
    else:
        pending.extend(w for w in writes if w.rows)


def _carrying(writes: Sequence[RowWrite], query: str,
              params: Sequence[Any]) -> tuple[Any, ...]:
    """`query` (parameters $1..$len(params)) as the primary query of a WITH statement whose
    data-modifying clauses are `writes`, and all parameters. PostgreSQL runs each clause
    exactly once, whether or not the query reads it; the query sees the tables as they were
    before the clauses."""
    first = len(params) + 1
    clauses = ", ".join(f"w{n} AS ({w.pg_insert(n)})"
                        for n, w in enumerate(writes, start=first))
    return f"WITH {clauses} {query}", *params, *(w.pg_param() for w in writes)


async def write_rows(conn: AsyncConnection, writes: Sequence[RowWrite]) -> None:
    """Several tables' inserts and upserts. PostgreSQL gets them all as one statement (each
    write a data-modifying WITH clause over one JSON parameter): one round trip, where a
    COPY costs two and each statement one, and no per-element work in the driver (asyncpg
    checks every element of an array parameter against abstract base classes). SQLite gets
    one executemany per table, which runs the prepared statement per row inside the
    driver."""
    todo = [w for w in writes if w.rows]
    if not todo:
        return
    raw: Any = await driver(conn)
    if conn.dialect.name == "postgresql":
        await raw.execute(*_carrying(todo, "SELECT 1", ()))
        return
    for w in todo:
        await sqlite_many(raw, *w.sqlite_statement())


def pg_array(values: Iterable[int] | Iterable[str]) -> str:
    """PostgreSQL's text form of a one-dimensional array of integers or of strings, for a
    parameter written `$n::text::bigint[]` (or `::text::text[]`). Given a list, asyncpg
    encodes an array element by element and asks each whether it is itself an array
    (isinstance checks against abstract base classes); the server parses this text instead:
    a PostgreSQL group commit of 16 one-change requests costs serve 4 % fewer instructions
    (valgrind). Strings are always quoted, so commas, braces, spaces, quotes and the word
    NULL stay data."""
    vals: list[Any] = list(values)
    if vals and isinstance(vals[0], int):
        return "{" + ",".join(map(str, vals)) + "}"
    return "{" + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for v in vals]) + "}"


async def fetch_rows(conn: AsyncConnection, postgres_sql: str, sqlite_sql: str,
                     params: Sequence[Any], sqlite_params: Sequence[Any] | None = None, *,
                     carried: bool = False) -> Sequence[Sequence[Any]]:
    """The rows of one query, sent through the driver in the caller's transaction. Array
    parameters are lists: PostgreSQL gets them as array literals (`pg_array`; the statement
    casts them, `$n::text::bigint[]`), SQLite as JSON text for `json_each(?n)`
    (`sqlite_params`, when given, are SQLite's instead of `params`). `carried`: the query
    reads no table that writes deferred by `combined_writes` touch, so on PostgreSQL it
    carries them, as one statement (it must not begin with WITH)."""
    if conn.dialect.name == "postgresql":
        params = [pg_array(p) if isinstance(p, list) else p for p in params]
        pending = _PENDING.get(conn) if carried else None
        if pending:
            raw = await _begun(conn)
            rows = await raw.fetch(*_carrying(pending, postgres_sql, params))
            pending.clear()
            return list(rows)
        raw = await driver(conn)
        return list(await raw.fetch(postgres_sql, *params))
    raw = await driver(conn)
    inline = all(len(p) <= INLINE_KEYS for p in params if isinstance(p, list))
    return await sqlite_rows(raw, sqlite_sql, [
        json_text(p) if isinstance(p, list) else p
        for p in (params if sqlite_params is None else sqlite_params)], inline=inline)


def _pk_filter(dialect: str, n: int) -> str:
    """`pk` is one of the given values, passed as one parameter (number n, 1-based)."""
    if dialect == "postgresql":
        return f"pk = ANY(${n}::text::bigint[])"
    return "pk IN (SELECT value FROM json_each(?))"


def _pk_param(dialect: str, pks: Sequence[int]) -> Any:
    return pg_array(pks) if dialect == "postgresql" else json.dumps(list(pks))


async def select_by_pks(conn: AsyncConnection, table: str, columns: Sequence[str],
                        pks: Sequence[int]) -> list[tuple[Any, ...]]:
    """Rows of `table` by primary key, as plain tuples in storage form."""
    if not pks:
        return []
    raw: Any = await driver(conn)
    dialect = conn.dialect.name
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {_pk_filter(dialect, 1)}"
    if dialect == "postgresql":
        return [tuple(r) for r in await raw.fetch(sql, _pk_param(dialect, pks))]
    return await sqlite_rows(raw, sql, (_pk_param(dialect, pks),),
                             inline=len(pks) <= INLINE_KEYS)


async def update_by_pks(conn: AsyncConnection, table: str, values: dict[str, Any],
                        increments: dict[str, int], pks: Sequence[int]) -> None:
    """`UPDATE table SET column = value, ..., column = column + n, ... WHERE pk IN pks`,
    values in storage form."""
    if not pks:
        return
    raw: Any = await driver(conn)
    dialect = conn.dialect.name
    params = [*values.values(), *increments.values()]
    if dialect == "postgresql":
        marks = [f"${i}" for i in range(1, len(params) + 1)]
    else:
        marks = ["?"] * len(params)
    sets = [f"{c} = {m}" for c, m in zip(values, marks, strict=False)]
    sets += [f"{c} = {c} + {m}" for c, m in zip(increments, marks[len(values):], strict=True)]
    sql = (f"UPDATE {table} SET {', '.join(sets)} "
           f"WHERE {_pk_filter(dialect, len(params) + 1)}")
    if dialect == "postgresql":
        await raw.execute(sql, *params, _pk_param(dialect, pks))
        return
    await sqlite_rows(raw, sql, (*params, _pk_param(dialect, pks)),
                      inline=len(pks) <= INLINE_KEYS)
