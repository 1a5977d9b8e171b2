"""`routing`: what finding a request's route costs, per surface, with Stockbell's routers
(`stockbell.api.routing.Router`, which turn a path away by its literal prefix) against
FastAPI's own matching of the same application, side by side in one process.

No server and no database: the figure is the CPU of route resolution alone, as the
application does it for every request (the top-level scan over the included routers, then
the chosen router's scan for its route). `--db` does not apply.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter
from starlette.routing import Match

from bench.report import Row, Table

# One request per surface, each a route a client calls in the hot path.
PATHS = [
    ("native", "POST", "/v1/inventory/changes"),
    ("native", "GET", "/v1/whoami"),
    ("native", "GET", "/v1/locations/LOC-000"),
    ("seed 000 (TI)", "POST", "/v2/store/subscriptions/inventory"),
    ("seed 001 (Square)", "POST", "/v2/inventory/changes/batch-create"),
    ("seed 002 (Sequenzy)", "POST", "/api/v1/back-in-stock"),
    ("seed 003 (Commerce Layer)", "GET", "/api/in_stock_subscriptions"),
    ("seed 004 (inventory update)", "POST", "/api/product/inventory"),
]


def _scope(app: Any, method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
            "app": app}


def resolve(app: Any, method: str, path: str) -> Any:
    """The endpoint the application selects, found as it finds it for a request."""
    scope = _scope(app, method, path)
    for entry in app.router.routes:
        match, child = entry.matches(scope)
        if match == Match.FULL:
            select = getattr(entry, "_match", None)  # an included router scans again
            return select(scope)[2].endpoint if select else child.get("endpoint")
    return None


@contextmanager
def fastapi_matching() -> Iterator[None]:
    """Stockbell's routers matching as plain FastAPI routers do (no prefix guard)."""
    from stockbell.api.routing import Router

    guarded = Router.matches
    Router.matches = APIRouter.matches  # type: ignore[method-assign]
    try:
        yield
    finally:
        Router.matches = guarded  # type: ignore[method-assign]


def _per_call_us(app: Any, method: str, path: str, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            resolve(app, method, path)
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def routing(db: str, quick: bool) -> Table:
    from stockbell.api.app import create_app
    from stockbell.config import Settings

    n = 300 if quick else 3000
    t = Table(f"routing (in-process{', quick' if quick else ''})")
    app = create_app(Settings(database_url="sqlite+aiosqlite:////nonexistent/stockbell.db",
                              secret_key="bench-routing-key-that-is-32-bytes!"))
    for surface, method, path in PATHS:
        ours = resolve(app, method, path)
        with fastapi_matching():
            theirs = resolve(app, method, path)
            plain = _per_call_us(app, method, path, n)
        if ours is None or ours is not theirs:
            raise RuntimeError(f"{method} {path}: resolved to {ours!r} and {theirs!r}")
        guarded = _per_call_us(app, method, path, n)
        t.add(Row(f"{surface}: {method} {path}", guarded, "us", plain,
                  "FastAPI's own matching, same app"))
    t.notes.append(f"CPU per route resolution, best of 5 rounds of {n}; both resolve every "
                   "path to the same endpoint (checked). A bare authenticated request costs "
                   "about 120 us of serve's CPU in `ingest`, for scale.")
    return t
