"""One HTTP attempt: POST, no redirects, bounded time, a 4 KiB response excerpt."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from stockbell.delivery.ssrf import GuardedResolver, Networks, literal_host
from stockbell.domain.webhooks import Attempt, address_allowed
from stockbell.service.clock import utcnow

EXCERPT = 4096
USER_AGENT = "Stockbell-Webhooks/1"
# How often attempts are checked against their total time: an attempt ends at most this long
# after its limit (aiohttp itself rounds a limit of 5 s or more up to the next whole second).
WATCH_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 3.0
    read: float = 10.0
    total: float = 15.0


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


class Sender:
    def __init__(self, allow: Networks, timeouts: Timeouts, limit: int = 100) -> None:
        self.allow = allow
        self.timeouts = timeouts
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._refusals: dict[str, str | None] = {}  # url -> why it is refused (IP literals)
        # The total time of an attempt is kept here, not by aiohttp: its per-request timer
        # (a loop timer, a timer context and their callbacks) cost ~4 us of the dispatcher's
        # ~125 per delivery (performance.md, twelfth session). One watchdog checks every
        # attempt in flight a few times a second and cancels the ones over their time.
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow),
                                             limit=self.limit, ttl_dns_cache=None,
                                             use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # total: see _watch
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect,
                                              sock_read=self.timeouts.read),
                # The answer is kept only as an excerpt, never decompressed: ask for it
                # uncompressed (aiohttp would otherwise offer gzip and deflate, and a
                # receiver that took it up was recorded as binary noise).
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=False,
                # A webhook never carries cookies: one receiver's Set-Cookie must not travel
                # to the next request (and a jar costs a lookup per request).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._watchdog = asyncio.create_task(self._watch())
        return self._session

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _watch(self) -> None:
        """Cancel every attempt that has run past its total time (`post` reports it as a
        timeout)."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def _refusal(self, url: str) -> str | None:
        """Why `url` may not be sent to, judged once per URL: an IP-literal host is checked
        here (aiohttp does not resolve it); names are checked on every connect by the
        resolver."""
        try:
            return self._refusals[url]
        except KeyError:
            pass
        ip = literal_host(urlsplit(url).hostname or "")
        refusal = None if ip is None or address_allowed(ip, self.allow) else \
            f"refused: {ip} is not a public address (STOCKBELL_WEBHOOK_ALLOW)"
        if len(self._refusals) >= 10_000:
            self._refusals.clear()
        self._refusals[url] = refusal
        return refusal

    async def post(self, url: str, headers: dict[str, str], body: str,
                   task: asyncio.Task[Any] | None = None) -> tuple[Attempt, float | None]:
        """One attempt. `task` is the task awaiting this (the watchdog cancels it when the
        attempt runs out of time): a dispatcher lane passes its own, looked up once per lane
        instead of once per attempt."""
        started_at = utcnow()
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        excerpt: str | None = None
        retry_after: float | None = None
        refusal = self._refusal(url)
        if refusal is not None:
            error = refusal
        else:
            task = task or asyncio.current_task()
            assert task is not None
            try:
                session = self._session or await self.session()
                self._deadlines[task] = time.monotonic() + self.timeouts.total
                async with session.post(url, data=body.encode(), headers=headers,
                                        allow_redirects=False) as resp:
                    status = resp.status
                    raw = await resp.content.read(EXCERPT)
                    # PostgreSQL text holds no NUL: a receiver's binary answer must not make
                    # its attempt unrecordable (and the delivery re-sent for ever).
                    excerpt = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
                    if status in (429, 503):
                        retry_after = _retry_after(resp.headers.get("Retry-After"), utcnow())
            except asyncio.CancelledError:
                # Ours (the watchdog's) and nobody else's: anyone else's stands.
                if task not in self._expired or task.uncancel() > 0:
                    raise
                error = "timeout"
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientConnectorError as exc:
                error = f"connection failed: {exc.os_error or exc}"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                error = f"connection failed: {exc}"
            finally:
                self._deadlines.pop(task, None)
                self._expired.discard(task)
        duration_ms = (time.perf_counter() - t0) * 1000
        return Attempt(started_at, duration_ms, status, error, excerpt), retry_after
