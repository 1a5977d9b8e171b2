"""The dispatcher: claims due deliveries, sends them concurrently, records every attempt.

At-least-once: a delivery is leased when claimed and settled only after its attempt is
recorded, so a worker killed at any point loses nothing; its leases run out and another
worker sends again, with the same webhook-id (the event id), so receivers can de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import structlog

from stockbell.config import Settings
from stockbell.delivery import metrics
from stockbell.delivery.formats import render
from stockbell.delivery.sender import Sender, Timeouts
from stockbell.delivery.signing import standard_headers
from stockbell.domain.webhooks import AttemptResult, RetryPolicy, judge, parse_allow_list
from stockbell.service import webhooks as webhooks_service
from stockbell.service.clock import utcnow
from stockbell.service.ports import Claimed
from stockbell.store.database import SqlDatabase
from stockbell.store.listen import DeliveryListener

log = structlog.get_logger(__name__)
STATS_EVERY = 5.0
PURGE_EVERY = 3600.0


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
        self.policy = RetryPolicy.parse(settings.retry_schedule)
        self.disable_after = timedelta(seconds=settings.endpoint_disable_after_seconds)
        self.sender = sender_for(settings)
        self.capacity = max(1, settings.delivery_concurrency)
        self.slots = asyncio.Semaphore(self.capacity)
        self.per_endpoint: dict[int, asyncio.Semaphore] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        self.results: list[AttemptResult] = []
        self.results_ready = asyncio.Event()
        self.slot_freed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener = None if self.db.sqlite else DeliveryListener(self.db.url,
                                                                self.db.new_deliveries)
        if listener is not None:
            await listener.start()
        flusher = asyncio.create_task(self._flush_loop())
        log.info("dispatcher.started", concurrency=self.capacity,
                 retry_schedule=self.settings.retry_schedule)
        last_stats = last_purge = 0.0
        try:
            while not stop.is_set():
                now_m = time.monotonic()
                if now_m - last_stats > STATS_EVERY:
                    last_stats = now_m
                    await self._stats()
                if now_m - last_purge > PURGE_EVERY:
                    last_purge = now_m
                    await self._purge()
                free = self.capacity - len(self.inflight)
                if free <= 0:
                    self.slot_freed.clear()
                    await self._wait(self.slot_freed, stop)
                    continue
                self.db.new_deliveries.clear()
                claimed = await self._claim(min(free, self.settings.delivery_batch))
                for c in claimed:
                    task = asyncio.create_task(self._deliver(c))
                    self.inflight.add(task)
                    task.add_done_callback(self._done)
                if len(claimed) < min(free, self.settings.delivery_batch):
                    await self._wait(self.db.new_deliveries, stop,
                                     self.settings.delivery_poll_seconds)
        finally:
            if self.inflight:
                await asyncio.wait(self.inflight, timeout=self.settings.total_timeout_seconds)
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush()
            await self.sender.close()
            if listener is not None:
                await listener.stop()
            log.info("dispatcher.stopped")

    @staticmethod
    async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float = 1.0) -> None:
        waiters = [asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self.slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery.task_failed", error=repr(task.exception()))

    async def _claim(self, limit: int) -> list[Claimed]:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.delivery_lease_seconds)
        try:
            return await self.db.run(lambda uow: uow.deliveries.claim(now, lease, limit))
        except Exception:
            log.exception("dispatcher.claim_failed")
            await asyncio.sleep(1.0)
            return []

    async def _deliver(self, c: Claimed) -> None:
        assert c.endpoint.pk is not None
        sem = self.per_endpoint.setdefault(
            c.endpoint.pk, asyncio.Semaphore(self.settings.endpoint_concurrency))
        # Send only while the lease will outlast the attempt; a delivery that queued behind
        # its endpoint's concurrency cap for too long is left for its lease to run out and be
        # claimed again, rather than sent twice by two workers.
        budget = self.settings.delivery_lease_seconds - self.settings.total_timeout_seconds - 1
        if c.lease_until is not None:
            budget = (c.lease_until - utcnow()).total_seconds() \
                - self.settings.total_timeout_seconds - 1
        try:
            async with asyncio.timeout(max(budget, 0.001)):
                await sem.acquire()
        except TimeoutError:
            log.info("delivery.lease_short", delivery=c.id)
            return
        try:
            headers, body = signed_request(c)
            attempt, retry_after = await self.sender.post(c.endpoint.url, headers, body)
        finally:
            sem.release()
        metrics.ATTEMPT_SECONDS.observe(attempt.duration_ms / 1000)
        metrics.DELIVERIES.labels(judge(attempt.status_code).value).inc()
        log.debug("delivery.attempt", delivery=c.id, url=c.endpoint.url,
                  status=attempt.status_code, error=attempt.error)
        self.results.append(AttemptResult(c.pk, c.endpoint.pk, c.attempts, attempt, retry_after,
                                          c.lease_until))
        self.results_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            await self.results_ready.wait()
            self.results_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self.results:
            return
        batch, self.results = self.results, []
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

    async def _purge(self) -> None:
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        try:
            n = await self.db.run(lambda uow: uow.deliveries.purge_before(cutoff))
            m = await self.db.run(lambda uow: uow.events.purge_before(cutoff))
        except Exception:
            log.exception("dispatcher.purge_failed")
            return
        if n or m:
            log.info("retention.purged", deliveries=n, events=m, before=cutoff.isoformat())


async def supervise(db: SqlDatabase, settings: Settings, stop: asyncio.Event) -> None:
    """Run a dispatcher until `stop`; if it crashes, log it and start a fresh one."""
    while not stop.is_set():
        try:
            await Dispatcher(db, settings).run(stop)
        except Exception:
            log.exception("dispatcher.crashed")
            await asyncio.sleep(1.0)
