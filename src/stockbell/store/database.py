"""The unit of work: one connection, one transaction, every repository bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockbell.service.clock import utcnow
from stockbell.service.ports import Claimed, UnitOfWork
from stockbell.store.checkpoint import FALLBACK_PAGES, WalCheckpointer
from stockbell.store.engine import create_engine, is_sqlite
from stockbell.store.repos.accounts import SqlAccounts
from stockbell.store.repos.bulk import combined_writes
from stockbell.store.repos.catalog import SqlCatalog
from stockbell.store.repos.customers import SqlCustomers
from stockbell.store.repos.deliveries import SqlDeliveries
from stockbell.store.repos.events import SqlEvents
from stockbell.store.repos.idempotency import SqlIdempotency
from stockbell.store.repos.stock import SqlStock
from stockbell.store.repos.subscriptions import SqlSubscriptions
from stockbell.store.repos.webhooks import SqlWebhooks

T = TypeVar("T")
log = structlog.get_logger(__name__)

# serialization_failure, deadlock_detected
_TRANSIENT = {"40001", "40P01"}


class SqlUnitOfWork:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.accounts = SqlAccounts(conn)
        self.stock = SqlStock(conn)
        self.catalog = SqlCatalog(conn, self.stock.prefetch)
        self.subscriptions = SqlSubscriptions(conn)
        self.events = SqlEvents(conn)
        self.idempotency = SqlIdempotency(conn)
        self.webhooks = SqlWebhooks(conn)
        self.deliveries = SqlDeliveries(conn)
        self.customers = SqlCustomers(conn)

    def combined_writes(self) -> AbstractAsyncContextManager[None]:
        return combined_writes(self.conn)


def _transient(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in _TRANSIENT or isinstance(exc, IntegrityError)


class _LostBeforeCommit(Exception):
    """The connection died while the unit of work ran, before its commit was sent: nothing
    of it can have been committed, so running it again on a fresh connection is safe."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


async def _before_commit(work: Awaitable[T]) -> T:
    """`work`, with a dead connection reported as _LostBeforeCommit. (The pool does not
    ping each connection before lending it: that cost a round trip per transaction. A dead
    one is noticed on its first statement instead, and SQLAlchemy then discards the pool's
    older connections.)"""
    try:
        return await work
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _LostBeforeCommit(exc) from exc
        raise


class Handoff(Protocol):
    """An in-process dispatcher that takes deliveries leased to it by the transaction that
    created them (see `SqlDatabase._once`)."""

    lease_seconds: float

    def handoff_room(self) -> int: ...
    def handoff_take(self, claimed: list[Claimed]) -> None: ...


class SqlDatabase:
    def __init__(self, url: str, *, synchronous: str = "FULL", pool_size: int = 10) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        # SQLite in a file: WAL checkpoints in a thread of their own, not in the commits.
        path = make_url(url).database if self.sqlite else None
        self.checkpointer = WalCheckpointer(Path(path)) if path else None
        self.engine: AsyncEngine = create_engine(
            url, synchronous=synchronous, pool_size=pool_size,
            autocheckpoint=FALLBACK_PAGES if self.checkpointer else None)
        # SQLite has one writer: queue transactions in-process rather than spin on SQLITE_BUSY.
        self._lock = asyncio.Lock() if self.sqlite else None
        # SQLite: readers on connections of their own, outside that queue (see `read`).
        self._readers: AsyncEngine | None = create_engine(
            url, synchronous=synchronous, read_only=True) if self.sqlite else None
        # PostgreSQL: reads share the pool, their connections lent in autocommit (see `read`).
        self._autocommit: AsyncEngine | None = None if self.sqlite else \
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Set after a commit that queued deliveries: wakes this process's dispatcher at once.
        self.new_deliveries = asyncio.Event()
        # SQLite only: this process's dispatcher, registered while it runs.
        self.handoff: Handoff | None = None

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run `work` in one transaction; retry once, transparently, on a transient conflict
        (serialization failure, deadlock, or a unique-key race such as a concurrent
        idempotent retry) and on a pooled connection found dead before the commit (say, the
        server restarted since it was last used)."""
        return await self._retrying(lambda: self._once(work))

    async def read(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run `work`, which only reads.

        SQLite: in one transaction that does not queue behind the writer: in WAL mode a
        reader sees the last commit and never waits for a write in progress, and a restock
        firing 100,000 subscriptions holds the writer for seconds. Its connections refuse
        writes (`query_only`), so a `work` that writes fails instead of slipping past the
        queue (and the tests, which run on both databases, catch it).

        PostgreSQL: without BEGIN and COMMIT (autocommit). At READ COMMITTED, the default,
        each statement takes its own snapshot whether or not a transaction surrounds it, so
        the transaction bought nothing but two round trips: one indexed read cost `serve`
        500 us of CPU and PostgreSQL 111 us with them, 430 and 66 us without (`bench reads`,
        docs/performance.md, twenty-second session). Retried as `run` is."""
        if self._readers is not None:
            async with self._readers.begin() as conn:
                return await work(SqlUnitOfWork(conn))
        return await self._retrying(lambda: self._autocommitted(work))

    async def _autocommitted(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        assert self._autocommit is not None  # PostgreSQL
        async with self._autocommit.begin() as conn:
            return await _before_commit(work(SqlUnitOfWork(conn)))

    async def _retrying(self, once: Callable[[], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            try:
                return await once()
            except _LostBeforeCommit as lost:
                if attempt == 2:
                    raise lost.error from None
                log.info("transaction.reconnect", reason=str(lost.error.orig)[:200])
            except DBAPIError as exc:
                if attempt == 2 or not _transient(exc):
                    raise
                log.info("transaction.retry", reason=str(exc.orig)[:200])
        raise AssertionError("unreachable")

    async def _once(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        handed: list[Claimed] = []
        if self._lock is None:
            async with self.engine.begin() as conn:
                uow = SqlUnitOfWork(conn)
                result = await _before_commit(work(uow))
        else:
            async with self._lock, self.engine.begin() as conn:
                uow = SqlUnitOfWork(conn)
                result = await _before_commit(work(uow))
                handed = await self._lease_for_handoff(uow)
        if handed and self.handoff is not None:
            self.handoff.handoff_take(handed)
        if uow.deliveries.created:
            self.new_deliveries.set()
        return result

    async def _lease_for_handoff(self, uow: SqlUnitOfWork) -> list[Claimed]:
        """On SQLite, a transaction that queued deliveries also leases the due ones to this
        process's dispatcher before it commits: the dispatcher's own claim would otherwise
        wait for the single writer behind the next request's transaction (tens of ms under
        load). The lease is an ordinary one: if this process dies, it runs out and the
        deliveries are claimed again."""
        handoff = self.handoff
        if handoff is None or not uow.deliveries.queued:
            return []
        room = handoff.handoff_room()
        if room <= 0:
            return []
        now = utcnow()
        return await uow.deliveries.claim(now, now + timedelta(seconds=handoff.lease_seconds),
                                          room)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._readers is not None:
            await self._readers.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
