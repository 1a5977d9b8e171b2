"""Bulk reads and writes straight through the driver, inside the caller's transaction.

A restock can write 100,000 events and as many deliveries in one transaction. Through
SQLAlchemy each row costs its bind processing; here rows arrive as plain tuples already in
storage form (integer micro-seconds, JSON text) and go to PostgreSQL as one COPY and to SQLite
as one `executemany`, both on the very connection (and so the transaction) of the unit of work.
Sets of primary keys travel as one parameter (an array; JSON text for SQLite's json_each).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_rows(conn: AsyncConnection, table: str, columns: Sequence[str],
                      rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if conn.dialect.name == "postgresql":
        await driver.copy_records_to_table(table, records=rows, columns=list(columns))
        return
    marks = ", ".join("?" * len(columns))
    await driver.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


async def upsert_rows(conn: AsyncConnection, table: str, columns: Sequence[str],
                      key: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows, or on a conflict over `key` overwrite the other columns (the same SQL on
    both databases, one executemany)."""
    if not rows:
        return
    driver: Any = (await conn.get_raw_connection()).driver_connection
    postgres = conn.dialect.name == "postgresql"
    marks = [f"${i}" if postgres else "?" for i in range(1, len(columns) + 1)]
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)}) "
           f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")
    await driver.executemany(sql, rows)


def _pk_filter(dialect: str, n: int) -> str:
    """`pk` is one of the given values, passed as one parameter (number n, 1-based)."""
    if dialect == "postgresql":
        return f"pk = ANY(${n}::bigint[])"
    return "pk IN (SELECT value FROM json_each(?))"


def _pk_param(dialect: str, pks: Sequence[int]) -> Any:
    return list(pks) if dialect == "postgresql" else json.dumps(list(pks))


async def select_by_pks(conn: AsyncConnection, table: str, columns: Sequence[str],
                        pks: Sequence[int]) -> list[tuple[Any, ...]]:
    """Rows of `table` by primary key, as plain tuples in storage form."""
    if not pks:
        return []
    driver: Any = (await conn.get_raw_connection()).driver_connection
    dialect = conn.dialect.name
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {_pk_filter(dialect, 1)}"
    if dialect == "postgresql":
        return [tuple(r) for r in await driver.fetch(sql, _pk_param(dialect, pks))]
    cursor = await driver.execute(sql, (_pk_param(dialect, pks),))
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()


async def update_by_pks(conn: AsyncConnection, table: str, values: dict[str, Any],
                        increments: dict[str, int], pks: Sequence[int]) -> None:
    """`UPDATE table SET column = value, ..., column = column + n, ... WHERE pk IN pks`,
    values in storage form."""
    if not pks:
        return
    driver: Any = (await conn.get_raw_connection()).driver_connection
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
        await driver.execute(sql, *params, _pk_param(dialect, pks))
        return
    cursor = await driver.execute(sql, (*params, _pk_param(dialect, pks)))
    await cursor.close()
