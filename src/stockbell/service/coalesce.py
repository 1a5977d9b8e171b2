"""Group commit for inventory changes: concurrent requests share one transaction.

A single-change request costs a dozen statements and a durable commit; thirty-two clients
each sending one change would queue thirty-two commits behind each other (SQLite has one
writer, and every PostgreSQL commit waits for its WAL flush). Instead, requests that arrive
while a transaction is running wait for the next one, and that one applies all of them in
arrival order with `apply_grouped`: one set of statements, one commit. Each request still
gets exactly its own answer, only after the commit that made it durable, and a request with
bad input fails alone.

A tenant has at most one transaction in flight; `parallel` of them run at once only for
different tenants. A tenant's requests that arrive meanwhile wait for its next group, which
is then larger. On PostgreSQL, four groups of the same tenant in flight (as before) made each
group a quarter of the size for the same fixed cost per transaction (a dozen round trips):
serve spent 869-989 us of CPU per change under 32 concurrent one-change clients, against
553-591 us with one group at a time (docs/performance.md, ninth session).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import structlog

from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import StockbellError
from stockbell.service.inventory import MAX_BATCH, ChangeInput, apply_grouped
from stockbell.service.ports import Database

log = structlog.get_logger(__name__)

_Entry = tuple[Tenant, list[ChangeInput], "asyncio.Future[dict[str, Any]]"]


class ChangeCoalescer:
    def __init__(self, db: Database, max_changes: int = MAX_BATCH, parallel: int = 1) -> None:
        """`parallel` transactions may run at once: 1 where the database has one writer
        (SQLite), more on PostgreSQL, where one group's commit overlaps the next's work."""
        self.db = db
        self.max_changes = max_changes
        self.parallel = max(1, parallel)
        self._queue: deque[_Entry] = deque()
        self._drainers: set[asyncio.Task[None]] = set()
        self._busy: set[Tenant] = set()  # tenants with a transaction in flight

    async def submit(self, tenant: Tenant, inputs: list[ChangeInput]) -> dict[str, Any]:
        """Apply `inputs` atomically, possibly together with other requests; returns this
        request's response body once committed, or raises its own error."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((tenant, inputs, future))
        # A busy tenant's drainer takes this request when its transaction ends.
        if len(self._drainers) < self.parallel and tenant not in self._busy:
            self._drainers.add(asyncio.create_task(self._drain()))
        return await future

    def _take(self) -> list[_Entry]:
        """The oldest request of a tenant with no transaction in flight and every later one
        of the same tenant, up to max_changes; empty if every waiting tenant is busy."""
        tenant = next((t for t, _, _ in self._queue if t not in self._busy), None)
        if tenant is None:
            return []
        group: list[_Entry] = []
        rest: deque[_Entry] = deque()
        size = 0
        while self._queue:
            entry = self._queue.popleft()
            if entry[0] == tenant and (not group or size + len(entry[1]) <= self.max_changes):
                group.append(entry)
                size += len(entry[1])
            else:
                rest.append(entry)
        self._queue = rest
        return group

    async def _drain(self) -> None:
        try:
            while group := self._take():
                tenant = group[0][0]
                self._busy.add(tenant)
                try:
                    await self._run(group)
                except Exception as exc:  # a bug, not bad input: fail this group, go on
                    log.exception("coalesce.group_failed", requests=len(group))
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                finally:
                    self._busy.discard(tenant)
        finally:
            # Deregister in the same step that found nothing to take, not in a done
            # callback: a request answered by this drainer may submit again before such a
            # callback runs, see this drainer still counted, and wait for nobody. A drainer
            # that leaves requests of a busy tenant behind leaves them to that tenant's
            # drainer, which takes again as soon as its transaction ends.
            task = asyncio.current_task()
            if task is not None:
                self._drainers.discard(task)

    async def _run(self, group: list[_Entry]) -> None:
        tenant = group[0][0]
        try:
            results = await self.db.run(
                lambda uow: apply_grouped(uow, tenant, [inputs for _, inputs, _ in group]))
        except Exception:
            if len(group) == 1:
                raise
            # One request broke the shared transaction: apply each alone, so only it fails.
            log.warning("coalesce.isolating", requests=len(group))
            for entry in group:
                try:
                    await self._run([entry])
                except Exception as exc:
                    if not entry[2].done():
                        entry[2].set_exception(exc)
            return
        for (_, _, future), result in zip(group, results, strict=True):
            if future.done():  # the client went away; its changes are committed all the same
                continue
            if isinstance(result, StockbellError):
                future.set_exception(result)
            else:
                future.set_result(result)
