"""Scenario 6's peer: the webhook sender a Python shop would write instead of Stockbell.

A Celery app on the local Redis broker with one task, `send_webhook(url, body, headers)`,
that POSTs an already rendered and signed body with `requests` and retries on any failure.
It is written the way the Celery documentation and common practice suggest, not tuned to lose:

- broker `redis://127.0.0.1:6379/15` (a dedicated database number, so the harness can flush
  it before and after without touching anything else; `BENCH_PEER_BROKER` overrides it);
  JSON serialisation; no result backend (`task_ignore_result`: nobody reads the results of
  fire-and-forget webhooks, and storing them would only cost the peer time);
- `acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after its POST,
  so a killed worker process loses nothing (the at-least-once promise Stockbell makes too);
- retries: `autoretry_for` any `requests` error (connection errors, timeouts, and non-2xx
  answers through `raise_for_status`), exponential `retry_backoff` with jitter, capped at
  600 s, `max_retries=8` (Stockbell's default schedule has 8 attempts after the first);
- timeouts (3 s connect, 10 s read) and no redirects, as Stockbell's sender;
- one `requests.Session` per worker process (keep-alive, as Stockbell's aiohttp session),
  made lazily so that it is created in the forked child, never shared across a fork.

The worker is started by the harness as a real subprocess:
`celery -A bench.peer worker --pool prefork --concurrency 8 --loglevel WARNING
--without-gossip --without-mingle --without-heartbeat`. Prefork is Celery's default pool; 8
processes (Celery's default would be one per core, 2 here) give the peer the same 8 requests
in flight that Stockbell allows per endpoint and process, so the comparison is at equal
concurrency; `BENCH_PEER_CONCURRENCY` overrides it. The prefetch multiplier stays at its
default (4), which suits short tasks. WARNING log level because at INFO Celery writes two log
lines per task, and Stockbell is run at warning too; gossip, mingle and heartbeat are the
usual switches for a single worker on Redis and only cut broker chatter.

When the worker is ready it sets `READY_KEY` in the broker's database (the harness waits for
it rather than parsing logs, which at WARNING level say nothing on start-up).
"""

from __future__ import annotations

import os
from typing import Any

import redis
import requests
from celery import Celery
from celery.signals import worker_ready

BROKER_URL = os.environ.get("BENCH_PEER_BROKER", "redis://127.0.0.1:6379/15")
READY_KEY = "bench:peer:ready"
USER_AGENT = "AcmeShop-Webhooks/1 (Celery peer)"
CONNECT_TIMEOUT, READ_TIMEOUT = 3.0, 10.0

app = Celery("bench.peer", broker=BROKER_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_session: requests.Session | None = None


def session() -> requests.Session:
    """This process's keep-alive session, made on first use (after the prefork fork)."""
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers["User-Agent"] = USER_AGENT
    return _session


@app.task(autoretry_for=(requests.RequestException,), retry_backoff=True,
          retry_backoff_max=600, retry_jitter=True, max_retries=8, acks_late=True)
def send_webhook(url: str, body: str, headers: dict[str, str]) -> int:
    """POST one signed webhook; any failure (network, timeout, non-2xx) raises and is retried."""
    r = session().post(url, data=body.encode(), headers=headers,
                       timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False)
    r.raise_for_status()
    return r.status_code


def broker_db() -> redis.Redis:
    """A plain client on the broker's database: the ready flag, and flushing around a run."""
    return redis.Redis.from_url(BROKER_URL)


@worker_ready.connect
def _announce_ready(sender: Any = None, **kwargs: Any) -> None:
    """Tell the harness the consumer is up (set once the pool and the consumer have started)."""
    broker_db().set(READY_KEY, str(os.getpid()))
