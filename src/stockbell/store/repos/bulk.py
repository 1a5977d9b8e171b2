"""Bulk inserts straight through the driver, inside the caller's transaction.

A restock can write 100,000 events and as many deliveries in one transaction. Through
SQLAlchemy each row costs its bind processing; here rows arrive as plain tuples already in
storage form (integer micro-seconds, JSON text) and go to PostgreSQL as one COPY and to SQLite
as one `executemany`, both on the very connection (and so the transaction) of the unit of work.
"""

from __future__ import annotations

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
