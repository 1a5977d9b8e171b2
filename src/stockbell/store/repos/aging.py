"""The retention purge's walk over an append-only table, by primary key.

The purge deletes in chunks keyed on pk (`delivery/retention.py`). Asking only for rows
older than the cutoff past the last chunk made its final chunk read the whole retained part
of the table, every hour (~150-200 ms per million events and deliveries, on SQLite while
holding the one writer). Rows of these tables are written in time order, so their pks
follow their time: the walk takes the next chunk by pk alone and ends at the first chunk
that reaches a row written on or after the cutoff.

Order by pk is not exactly order by time: a transaction that commits late gives its rows
larger pks than rows written after them. Such an old row past the first recent one is left
for the next purge, an hour later, whose cutoff has moved past the rows around it.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


class Chunk(NamedTuple):
    last: int  # the largest pk of the chunk: delete among (after, last]
    final: bool  # the walk ends with this chunk


async def next_chunk(conn: AsyncConnection, pk: sa.Column[int], written: sa.Column[datetime],
                     cutoff: datetime, after: int, limit: int) -> Chunk | None:
    """The next `limit` rows of `pk`'s table past `after`; None when there are none.
    `written` is when a row was written (never changed afterwards)."""
    rows = (sa.select(pk.label("pk"), written.label("written")).where(pk > after)
            .order_by(pk).limit(limit).subquery())
    recent = sa.func.sum(sa.case((rows.c.written >= cutoff, 1), else_=0))
    last, size, reached = (await conn.execute(
        sa.select(sa.func.max(rows.c.pk), sa.func.count(), recent))).one()
    if not size:
        return None
    return Chunk(int(last), bool(reached) or size < limit)
