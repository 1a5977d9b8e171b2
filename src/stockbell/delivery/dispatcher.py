"""The dispatcher: claims due deliveries, sends them concurrently, records every attempt.

At-least-once: a delivery is leased when claimed and settled only after its attempt is
recorded, so a worker killed at any point loses nothing; its leases run out and another
worker sends again, with the same webhook-id (the event id), so receivers can de-duplicate.

How the work flows, and why (the per-delivery overhead decides the throughput):
- claims are batches (at most `delivery_batch`), made when the local queue has room for at
  least half a batch, so each claim's transaction is shared by many deliveries;
- claimed deliveries wait in one queue per endpoint; per endpoint, at most
  `endpoint_concurrency` lanes (tasks) take them one after another and send them, and all
  lanes together never exceed `delivery_concurrency` requests in flight; a lane whose
  endpoint keeps it busy hands its slot over when another endpoint waits for one;
- results are written in batches too: one transaction records the attempts and settles the
  deliveries that finished meanwhile (waiting up to FLUSH_LINGER for more while requests are
  in flight: the receivers have them already, only the bookkeeping waits);
- the per-delivery work is kept small: endpoints are loaded once per claim, signing keys
  decoded once per secret, metric children and the debug level looked up once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from datetime import timedelta

import structlog

from stockbell.config import Settings
from stockbell.delivery import metrics, retention
from stockbell.delivery.formats import render
from stockbell.delivery.sender import Sender, Timeouts
from stockbell.delivery.signing import standard_headers
from stockbell.domain.webhooks import AttemptResult, RetryPolicy, judge, parse_allow_list
from stockbell.gc_tuning import freeze_startup_heap
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.service.ports import Claimed
from stockbell.store.database import SqlDatabase
from stockbell.store.listen import DeliveryListener

log = structlog.get_logger(__name__)
STATS_EVERY = 5.0
PURGE_EVERY = 3600.0
# While requests are in flight, a flush waits this long for more results to share its
# transaction (the receiver has them already; only the bookkeeping waits).
FLUSH_LINGER = 0.05

# A claimed delivery waiting in its endpoint's queue: (delivery, latest monotonic start).
Queued = tuple[Claimed, float]


def _debug_enabled() -> bool:
    bound = log.bind()
    enabled = getattr(bound, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.DEBUG))


def sender_for(settings: Settings) -> Sender:
    return Sender(
        parse_allow_list(settings.webhook_allow),
        Timeouts(settings.connect_timeout_seconds, settings.read_timeout_seconds,
                 settings.total_timeout_seconds),
        limit=settings.delivery_concurrency,
    )


def signed_request(c: Claimed) -> tuple[dict[str, str], str]:
    headers, body = render(c.event, c.endpoint)
    assert c.event.id is not None
    now = utcnow()
    headers.update(standard_headers(c.endpoint.signing_secrets(now), c.event.id, now, body))
    return headers, body


class Dispatcher:
    def __init__(self, db: SqlDatabase, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        # Looked up once: the per-attempt debug line would cost a logger bind per delivery.
        self.debug = _debug_enabled()
        self.policy = RetryPolicy.parse(settings.retry_schedule)
        self.disable_after = timedelta(seconds=settings.endpoint_disable_after_seconds)
        self.sender = sender_for(settings)
        self.capacity = max(1, settings.delivery_concurrency)  # requests in flight, in all
        self.endpoint_cap = max(1, settings.endpoint_concurrency)  # ... and per endpoint
        self.batch = max(1, settings.delivery_batch)
        # Claimed and not yet sent or in flight, at most: room for one batch beyond the
        # requests in flight, so a claim is made while the previous one is still being sent.
        self.window = self.capacity + self.batch
        self.refill = max(1, min(self.batch, self.window // 2))
        # Send only while the lease will outlast the attempt (see _lane).
        self.margin = settings.total_timeout_seconds + 1
        self.queues: dict[int, deque[Queued]] = {}  # endpoint pk -> claimed, not yet sent
        self.lanes_of: dict[int, int] = {}  # endpoint pk -> lanes sending to it
        self.lanes: set[asyncio.Task[None]] = set()
        self.starved = False  # an endpoint with queued deliveries waits for a free lane
        self.closing = False  # stopping: no new lanes
        self.outstanding = 0  # claimed and neither sent nor given up yet
        self.room = asyncio.Event()
        self.results: list[AttemptResult] = []
        self.results_ready = asyncio.Event()
        self.lease_seconds = settings.delivery_lease_seconds
        self.purging: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        listener = None if self.db.sqlite else DeliveryListener(self.db.url,
                                                                self.db.new_deliveries)
        if listener is not None:
            await listener.start()
        flusher = asyncio.create_task(self._flush_loop())
        if self.db.sqlite:
            # New deliveries come leased straight from the transactions that queue them.
            self.db.handoff = self
        log.info("dispatcher.started", concurrency=self.capacity,
                 retry_schedule=self.settings.retry_schedule)
        last_stats = last_purge = 0.0
        poll = self.settings.delivery_poll_seconds
        polled = False
        try:
            while not stop.is_set():
                now_m = time.monotonic()
                if now_m - last_stats > STATS_EVERY:
                    last_stats = now_m
                    await self._stats()
                if now_m - last_purge > PURGE_EVERY:
                    last_purge = now_m
                    self._start_purge(stop)
                free = self.window - self.outstanding
                # Claim a good batch at once; a smaller one only when a whole poll interval
                # passed without room for more (say, lanes held by a slow endpoint).
                if free < self.refill and not (polled and free > 0):
                    self.room.clear()
                    polled = not await self._wait(self.room, stop, poll)
                    continue
                polled = False
                want = min(free, self.batch)
                self.db.new_deliveries.clear()
                claimed = await self._claim(want)
                self._enqueue(claimed)
                if len(claimed) < want:
                    await self._wait(self.db.new_deliveries, stop, poll)
        finally:
            if self.db.handoff is self:
                self.db.handoff = None
            if self.purging is not None:
                # On stop it ends after its chunk in hand; on a crash it is cut short (the
                # chunk's transaction rolls back: nothing is half-deleted).
                if not stop.is_set():
                    self.purging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.purging
            await self._drain()
            # The flusher records what is left and returns; cut it short only if the
            # database does not answer (the leases then run out: at-least-once holds).
            self.results_ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(flusher), self.settings.total_timeout_seconds)
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.sender.close()
            if listener is not None:
                await listener.stop()
            log.info("dispatcher.stopped")

    async def _drain(self) -> None:
        """On stop: let the lanes send what they hold, for at most the attempt timeout."""
        deadline = time.monotonic() + self.settings.total_timeout_seconds
        while self.lanes and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self.lanes), timeout=left)
        self.closing = True
        for lane in list(self.lanes):
            lane.cancel()
        if self.lanes:
            await asyncio.wait(set(self.lanes))

    @staticmethod
    async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float = 1.0) -> bool:
        """Wait for `event` or `stop`, at most `seconds`; True unless it timed out."""
        if event.is_set() or stop.is_set():
            return True
        waiters = [asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())]
        done, _ = await asyncio.wait(waiters, timeout=seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        return bool(done)

    async def _claim(self, limit: int) -> list[Claimed]:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.delivery_lease_seconds)
        try:
            return await self.db.run(lambda uow: uow.deliveries.claim(now, lease, limit))
        except Exception:
            log.exception("dispatcher.claim_failed")
            await asyncio.sleep(1.0)
            return []

    # --- hand-off (SQLite: see SqlDatabase._lease_for_handoff) ---------------------------

    def handoff_room(self) -> int:
        """How many more claimed deliveries this dispatcher takes now."""
        return 0 if self.closing else max(0, self.window - self.outstanding)

    def handoff_take(self, claimed: list[Claimed]) -> None:
        """Deliveries a committed transaction leased to this process: send them as if
        claimed here."""
        metrics.HANDED_OFF.inc(len(claimed))
        self._enqueue(claimed)

    # --- sending -------------------------------------------------------------------------

    def _enqueue(self, claimed: list[Claimed]) -> None:
        if not claimed:
            return
        now, now_m = utcnow(), time.monotonic()
        lease_seconds = self.settings.delivery_lease_seconds
        for c in claimed:
            assert c.endpoint.pk is not None
            left = lease_seconds if c.lease_until is None \
                else (c.lease_until - now).total_seconds()
            # The latest moment to start sending: the lease must outlast the attempt. A lease
            # shorter than that (a test setting) still lets a delivery go out if a lane takes
            # it soon: within a quarter of the lease, at most 0.5 s, since a lane spawned now
            # may only start after the loop has served other work.
            start_by = now_m + max(left - self.margin, min(left / 4, 0.5))
            queue = self.queues.get(c.endpoint.pk)
            if queue is None:
                queue = self.queues[c.endpoint.pk] = deque()
                self.lanes_of[c.endpoint.pk] = 0
            queue.append((c, start_by))
        self.outstanding += len(claimed)
        self._spawn()

    def _spawn(self) -> None:
        """Start lanes for queued deliveries, within both caps, endpoints in queue order."""
        if self.closing:
            return
        starved = False
        for pk, queue in self.queues.items():
            lanes = self.lanes_of[pk]
            while lanes < self.endpoint_cap and lanes < len(queue):
                if len(self.lanes) >= self.capacity:
                    starved = starved or lanes == 0
                    break
                lane = asyncio.create_task(self._lane(pk, queue))
                self.lanes.add(lane)
                lanes += 1
            self.lanes_of[pk] = lanes
        self.starved = starved

    async def _lane(self, pk: int, queue: deque[Queued]) -> None:
        """Send this endpoint's queued deliveries one after another."""
        me = asyncio.current_task()
        try:
            while queue:
                c, start_by = queue.popleft()
                try:
                    if time.monotonic() > start_by:
                        # Its lease could run out mid-attempt: leave it to run out and the
                        # delivery to be claimed again, rather than sent twice by two workers.
                        log.info("delivery.lease_short", delivery=c.id)
                    else:
                        await self._send(c, me)
                finally:
                    self.outstanding -= 1
                    if self.outstanding <= self.window - self.refill:
                        self.room.set()
                if self.starved:
                    break  # another endpoint waits for a lane: hand this one over
        finally:
            if me is not None:
                self.lanes.discard(me)
            self.lanes_of[pk] -= 1
            if queue:
                # served for now: queue behind the endpoints that wait
                self.queues[pk] = self.queues.pop(pk)
            elif not self.lanes_of[pk]:
                del self.queues[pk], self.lanes_of[pk]
            self._spawn()

    async def _send(self, c: Claimed, lane: asyncio.Task[None] | None) -> None:
        assert c.endpoint.pk is not None
        try:
            headers, body = signed_request(c)
            attempt, retry_after = await self.sender.post(c.endpoint.url, headers, body,
                                                          lane)
        except Exception as exc:
            # The lease runs out and the delivery is sent again: at-least-once holds.
            log.error("delivery.task_failed", delivery=c.id, error=repr(exc))
            return
        metrics.ATTEMPT_SECONDS.observe(attempt.duration_ms / 1000)
        if self.debug:
            log.debug("delivery.attempt", delivery=c.id, url=c.endpoint.url,
                      status=attempt.status_code, error=attempt.error)
        self.results.append(AttemptResult(c.pk, c.endpoint.pk, c.attempts, attempt, retry_after,
                                          c.lease_until))
        self.results_ready.set()

    # --- recording -----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        """Record results as they come, a batch per transaction, until the dispatcher closes
        and nothing is left."""
        while True:
            await self.results_ready.wait()
            if self.closing and not self.results:
                return
            if self.lanes and not self.closing and len(self.results) < 2 * self.batch:
                # More results are on their way: let them share this flush's transaction.
                await asyncio.sleep(FLUSH_LINGER)
            self.results_ready.clear()
            await self._flush()
            if self.closing:
                self.results_ready.set()  # once more: returns when nothing is left

    async def _flush(self) -> None:
        if not self.results:
            return
        batch, self.results = self.results, []
        # Counted per batch: a locked increment per attempt cost ~1 us of each delivery.
        outcomes = Counter(judge(r.attempt.status_code) for r in batch)
        for verdict, n in outcomes.items():
            metrics.OUTCOMES[verdict].inc(n)
        try:
            next_retry = await self.db.run(lambda uow: webhooks_service.record_results(
                uow, batch, self.policy, self.disable_after))
        except Exception:
            # Leases run out and the deliveries are sent again: at-least-once holds.
            log.exception("dispatcher.record_failed", count=len(batch))
            return
        if next_retry is not None:
            # Wake for the earliest retry instead of waiting for the next poll. The margin
            # matters: uvloop's millisecond timers can fire up to ~1 ms early, and a claim
            # made just before the retry is due finds nothing, leaving it to the next poll.
            delay = max(0.0, (next_retry - utcnow()).total_seconds()) + 0.01
            asyncio.get_running_loop().call_later(delay, self.db.new_deliveries.set)

    async def _stats(self) -> None:
        try:
            depth, oldest = await self.db.run(lambda uow: uow.deliveries.queue_stats(utcnow()))
        except Exception:
            log.exception("dispatcher.stats_failed")
            return
        metrics.QUEUE_DEPTH.set(depth)
        metrics.OLDEST_PENDING.set(oldest or 0.0)

    def _start_purge(self, stop: asyncio.Event) -> None:
        """Purge in a task of its own: a large purge takes a while, and deliveries keep
        going meanwhile (only one purge at a time)."""
        if self.purging is None or self.purging.done():
            self.purging = asyncio.create_task(self._purge(stop))

    async def _purge(self, stop: asyncio.Event) -> None:
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        started = time.monotonic()
        try:
            done = await retention.purge(self.db, cutoff, stop=stop)
        except Exception:
            log.exception("dispatcher.purge_failed")
            return
        if done.deliveries or done.events or done.keys or done.changes:
            log.info("retention.purged", deliveries=done.deliveries, events=done.events,
                     idempotency_keys=done.keys, changes=done.changes,
                     before=cutoff.isoformat(),
                     seconds=round(time.monotonic() - started, 3))


async def supervise(db: SqlDatabase, settings: Settings, stop: asyncio.Event) -> None:
    """Run a dispatcher until `stop`; if it crashes, log it and start a fresh one."""
    freeze_startup_heap()
    while not stop.is_set():
        try:
            await Dispatcher(db, settings).run(stop)
        except Exception:
            log.exception("dispatcher.crashed")
            await asyncio.sleep(1.0)
