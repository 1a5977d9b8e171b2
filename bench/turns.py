"""Routes measured side by side in alternating turns (`ingest`, `reads`).

The machine's speed moved within the minute: with 20 s per route in a row the ratio of the
same code read 0.28-0.63 (docs/performance.md, sixteenth session). So each route runs in
turns of a few seconds (ABC CBA ...), each turn after a short warm-up that is not counted,
and the CPU of `serve`, of this process and of PostgreSQL is read around every turn.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.env import Proc, postgres_cpu_seconds

Route = Callable[[int], Awaitable[None]]


async def closed_loop(work: Route, concurrency: int, seconds: float,
                      warmup: float) -> tuple[float, int, int]:
    """`concurrency` tasks calling `work(i)` back to back. Returns (ops/s, ops, errors)
    over `seconds`, after `warmup` seconds that are not counted."""
    counter = itertools.count()
    done = 0
    errors = 0
    counting = False
    stop = False

    async def one() -> None:
        nonlocal done, errors
        while not stop:
            try:
                await work(next(counter))
                if counting:
                    done += 1
            except Exception:
                errors += 1

    tasks = [asyncio.create_task(one()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks)
    return done / elapsed, done, errors


@dataclass
class Turns:
    """One route's turns, summed: requests and errors counted, seconds measured, and over
    whole turns (warm-up included) wall seconds and the CPU seconds of serve, this process
    and PostgreSQL."""

    requests: int = 0
    errors: int = 0
    measured: float = 0.0
    wall: float = 0.0
    serve_cpu: float = 0.0
    harness_cpu: float = 0.0
    postgres_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.measured

    def cpu(self, name: str, pg: bool) -> str:
        """CPU over whole turns, per request (rate x wall time as the count) and as a share
        of one core: tells a CPU-bound route from one that waits (a commit's fsync, a queue
        behind another transaction). On PostgreSQL its server processes' CPU too: the three
        share 2 cores."""
        n = max(1.0, self.rate * self.wall)
        return (f"{name}: serve {1e6 * self.serve_cpu / n:.0f} us/request "
                f"({100 * self.serve_cpu / self.wall:.0f}% of a core), harness "
                f"{1e6 * self.harness_cpu / n:.0f} us/request"
                + (f", PostgreSQL {1e6 * self.postgres_cpu / n:.0f} us/request" if pg else ""))


async def in_turns(routes: dict[str, Route], serve: Proc, pg: bool, rounds: int,
                   turn: float, warmup: float, concurrency: int) -> dict[str, Turns]:
    """Every route `rounds` times, in the order given, then back; a failed request is a
    harness error (a rate of failures would say nothing about the routes)."""
    turns = {name: Turns() for name in routes}
    for r in range(rounds):
        for name in (list(routes) if r % 2 == 0 else list(routes)[::-1]):
            s0, h0, w0 = serve.cpu(), time.process_time(), time.monotonic()
            p0 = postgres_cpu_seconds() if pg else 0.0
            rate, done, errors = await closed_loop(routes[name], concurrency, turn, warmup)
            s1, h1, w1 = serve.cpu(), time.process_time(), time.monotonic()
            p1 = postgres_cpu_seconds() if pg else 0.0
            a = turns[name]
            a.requests += done
            a.errors += errors
            a.measured += done / rate if rate else turn
            a.wall += w1 - w0
            a.serve_cpu += s1 - s0
            a.harness_cpu += h1 - h0
            a.postgres_cpu += p1 - p0
    failed = {name: a.errors for name, a in turns.items() if a.errors}
    if failed:
        raise RuntimeError(f"requests failed: {failed}")
    return turns


def counts(turns: dict[str, Turns]) -> str:
    return ", ".join(f"{name} {a.requests} ({a.errors} errors)" for name, a in turns.items())
