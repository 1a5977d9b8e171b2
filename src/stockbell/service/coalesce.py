"""Group commit for inventory changes: concurrent requests share one transaction.

A single-change request costs a dozen statements and a durable commit; thirty-two clients
each sending one change would queue thirty-two commits behind each other (SQLite has one
writer, and every PostgreSQL commit waits for its WAL flush). Instead, requests that arrive
while a transaction is running wait for the next one, and that one applies all of them in
arrival order with `apply_grouped`: one set of statements, one commit. Each request still
gets exactly its own answer, only after the commit that made it durable, and a request with
bad input fails alone.

A tenant has one transaction in flight; `parallel` of them run at once for different
tenants. A tenant's requests that arrive meanwhile wait for its next group, which is then
larger. On PostgreSQL, four groups of the same tenant in flight (as before) made each
group a quarter of the size for the same fixed cost per transaction (a dozen round trips):
serve spent 869-989 us of CPU per change under 32 concurrent one-change clients, against
553-591 us with one group at a time (docs/performance-history.md, ninth session).

The exception is a group that is already full: once a tenant's waiting requests hold
`max_changes`, waiting gains nothing, so that group starts alongside the tenant's running
one (up to `parallel` in all). Without it, four clients sending batches of 1,000 on
PostgreSQL took turns: 13,350 changes/s against 23,300 when their transactions overlapped
(docs/performance.md, eleventh session). Two groups in flight are ordered as any two
concurrent requests are: each is atomic, row locks order their writes to shared items.

And a second group as large as the running one: once at least as many changes wait as the
tenant's running group holds, and at least `pair_min`, they start too (one such second
group at a time). Clients that send again as soon as they are answered otherwise fall into
a convoy: a group of nearly all of them runs while nothing else arrives, so `serve` idles
through its round trips, then the first one or two to come back start a group alone while
the rest queue behind it. Two groups of half the clients, each starting while the other
commits, keep the event loop busy without shrinking the groups (smaller groups pay the
fixed cost per transaction more often, which is what made every earlier way of putting more
of a tenant's groups in flight slower). 32 one-change clients on PostgreSQL, alternated:
0.48-0.59 of a bare route against 0.41-0.51 (docs/performance.md, twenty-first session).
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


# The smallest second group of a tenant started before its running one commits: a group
# transaction's fixed cost is ~800 us of serve's CPU (`bench txn`), ~50 us per change here.
PAIR_MIN = 16


class ChangeCoalescer:
    def __init__(self, db: Database, max_changes: int = MAX_BATCH, parallel: int = 1,
                 pair_min: int = PAIR_MIN) -> None:
        """`parallel` transactions may run at once: 1 where the database has one writer
        (SQLite), more on PostgreSQL, where one group's commit overlaps the next's work."""
        self.db = db
        self.max_changes = max_changes
        self.parallel = max(1, parallel)
        self.pair_min = pair_min
        self._queue: deque[_Entry] = deque()
        self._drainers: set[asyncio.Task[None]] = set()
        self._busy: dict[Tenant, int] = {}  # transactions in flight per tenant
        self._flying: dict[Tenant, int] = {}  # changes in those transactions
        self._waiting: dict[Tenant, int] = {}  # changes queued per tenant

    async def submit(self, tenant: Tenant, inputs: list[ChangeInput]) -> dict[str, Any]:
        """Apply `inputs` atomically, possibly together with other requests; returns this
        request's response body once committed, or raises its own error."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((tenant, inputs, future))
        self._waiting[tenant] = self._waiting.get(tenant, 0) + len(inputs)
        # A busy tenant's drainer takes this request when its transaction ends.
        if len(self._drainers) < self.parallel and self._ready(tenant):
            self._drainers.add(asyncio.create_task(self._drain()))
        return await future

    def _ready(self, tenant: Tenant) -> bool:
        """Whether `tenant`'s waiting requests may start a transaction now: none is in
        flight, or they fill a group already, or they make a second group as large as the
        one in flight (see the module's docstring)."""
        running = self._busy.get(tenant, 0)
        if running == 0:
            return True
        waiting = self._waiting.get(tenant, 0)
        if waiting >= self.max_changes:
            return True
        return running == 1 and waiting >= max(self.pair_min, self._flying[tenant])

    def _take(self) -> list[_Entry]:
        """The oldest request of a ready tenant and every later one of the same tenant, up
        to max_changes; empty if no waiting tenant is ready."""
        tenant = next((t for t, _, _ in self._queue if self._ready(t)), None)
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
        left = self._waiting[tenant] - size
        if left:
            self._waiting[tenant] = left
        else:
            del self._waiting[tenant]
        return group

    async def _drain(self) -> None:
        try:
            while group := self._take():
                tenant = group[0][0]
                size = sum(len(inputs) for _, inputs, _ in group)
                self._busy[tenant] = self._busy.get(tenant, 0) + 1
                self._flying[tenant] = self._flying.get(tenant, 0) + size
                try:
                    await self._run(group)
                except Exception as exc:  # a bug, not bad input: fail this group, go on
                    log.exception("coalesce.group_failed", requests=len(group))
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                finally:
                    if self._busy[tenant] == 1:
                        del self._busy[tenant]
                        del self._flying[tenant]
                    else:
                        self._busy[tenant] -= 1
                        self._flying[tenant] -= size
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
