"""Retention: settled deliveries, the events nobody is owed any more, the stored answers
of idempotency keys and the change ledger go after a while (STOCKBELL_RETENTION_DAYS).

The purge deletes a bounded chunk per transaction. In one transaction a month of a busy
log would hold SQLite's one write lock (every change and every claim waiting behind it)
for as long as the delete takes, and on PostgreSQL keep a long transaction's locks and
snapshot; in chunks the dispatcher's and the API's own transactions run in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase

PURGE_CHUNK = 5_000

# (unit of work, last pk looked at) -> (rows deleted, where the next chunk starts; None: done)
Step = Callable[[UnitOfWork, int], Awaitable[tuple[int, int | None]]]


def _from(step: Step, after: int) -> Callable[[UnitOfWork], Awaitable[tuple[int, int | None]]]:
    """One chunk of `step`, starting past `after`, as a unit of work for `db.run`."""
    return lambda uow: step(uow, after)


async def _sweep(db: SqlDatabase, step: Step, stop: asyncio.Event | None) -> int:
    total, after = 0, 0
    while stop is None or not stop.is_set():
        n, last = await db.run(_from(step, after))
        total += n
        if last is None:
            return total
        after = last
        await asyncio.sleep(0)
    return total


@dataclass(frozen=True)
class Purged:
    deliveries: int
    events: int
    keys: int  # idempotency keys
    changes: int  # rows of the change ledger (inventory_changes)


async def purge(db: SqlDatabase, cutoff: datetime, chunk: int = PURGE_CHUNK,
                stop: asyncio.Event | None = None) -> Purged:
    """Delete deliveries settled before `cutoff` with their attempts, then the events
    created before it that no delivery names (so an event still owed is kept), then the
    idempotency keys stored before it, then the change ledger's rows recorded before it
    (every change, applied or ignored, is a row: without this the ledger grew without
    end). Once `stop` is set it ends after the chunk in hand."""
    async def keys(uow: UnitOfWork, _: int) -> tuple[int, int | None]:
        # Deleted keys leave the oldest first, so each chunk starts from the top again.
        n = await uow.idempotency.purge_before(cutoff, chunk)
        return n, (0 if n == chunk else None)

    deliveries = await _sweep(db, lambda uow, after: uow.deliveries.purge_before(
        cutoff, after, chunk), stop)
    events = await _sweep(db, lambda uow, after: uow.events.purge_before(cutoff, after, chunk),
                          stop)
    done_keys = await _sweep(db, keys, stop)
    changes = await _sweep(db, lambda uow, after: uow.stock.purge_before(cutoff, after, chunk),
                           stop)
    return Purged(deliveries, events, done_keys, changes)
