"""The routers' literal-prefix guard (api/routing.py) changes how fast a route is found, never
which: through the real application, every route's path, with any parameter values, reaches
exactly the endpoint a plain first-match scan over all routes in order picks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st

from stockbell.api.app import create_app
from stockbell.api.routing import Router
from stockbell.config import Settings

APP = create_app(Settings(database_url="sqlite+aiosqlite:////nonexistent/stockbell.db",
                          secret_key="routing-test-key-that-is-32-bytes!"))
PARAM = re.compile(r"{([^}:]+)(?::([^}]+))?}")
# What a path parameter may hold in a URL: no slash (except a `path` parameter), not empty.
segment = st.text(st.characters(codec="ascii", categories=["L", "N"],
                                include_characters="-_.~%"), min_size=1, max_size=12)


def included_routers(app: FastAPI) -> list[Any]:
    """The routers the app includes, in include order (FastAPI keeps each as a branch)."""
    return [e.original_router for e in app.router.routes if hasattr(e, "original_router")]


def all_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route in the order the app tries them (its routers in include order)."""
    return [r for router in included_routers(app) for r in router.routes
            if isinstance(r, APIRoute)]


ROUTES = all_routes(APP)


def expected(method: str, path: str) -> Any:
    """The endpoint a first-match scan picks: the first route whose pattern and method fit."""
    for route in ROUTES:
        if route.path_regex.match(path) and method in route.methods:
            return route.endpoint
    return None


def resolved(method: str, path: str) -> Any:
    """The endpoint the real application selected for this request (its ASGI scope records
    it), whatever the request then did: no database exists, so most then fail."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {}, "app": APP,
    }
    seen: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        seen.setdefault("status", message.get("status"))

    async def go() -> None:
        with contextlib.suppress(Exception):  # the handler's failure is not tested here
            await APP.router(scope, receive, send)

    asyncio.run(go())
    return scope.get("endpoint")


def test_every_included_router_is_guarded() -> None:
    routers = included_routers(APP)
    assert len(routers) >= 12
    assert all(isinstance(r, Router) for r in routers), routers
    assert len(ROUTES) > 40


@settings(max_examples=60, deadline=None)
@given(values=st.lists(segment, min_size=4, max_size=4))
def test_each_routes_path_reaches_the_endpoint_a_plain_scan_picks(values: list[str]) -> None:
    for route in ROUTES:
        fill = iter(values)
        path = PARAM.sub(lambda _, fill=fill: next(fill, "x"), route.path)
        for method in sorted(route.methods):
            assert resolved(method, path) is expected(method, path), (method, path)


def test_paths_no_route_has_reach_no_endpoint() -> None:
    for path in ("/", "/v1", "/v1/nothing-here", "/v2/inventory", "/api", "/apix/v1/x"):
        assert resolved("GET", path) is expected("GET", path) is None, path
