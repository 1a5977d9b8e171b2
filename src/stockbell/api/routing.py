"""A router that turns a request away by its path's literal prefix before matching routes.

FastAPI (0.163) keeps each included router as a branch and, for every request, asks the
branches in turn whether one of their routes matches, at about 2 us per route with the
scope bookkeeping around it, and scans the chosen branch twice. Stockbell has a dozen
routers and over fifty routes, so a vendor surface's request, matched near the end, paid
96-145 us of routing alone, about as much as a whole bare authenticated request
(`python -m bench routing`). Every Stockbell router is a `Router`: it knows the literal
part of each of its routes' paths (up to the first `{`) and answers "no match" at once to a
path that starts with none of them. That is exact: a route's path pattern is anchored and
begins with that literal text, so no path the guard turns away could have matched.

A `Router` carries its own prefix (`Router(prefix=...)`) and is included without one:
`include_router(router, prefix=...)` would put text in front of its paths that the guard
does not know, and turn every request away (tests/unit/test_routing.py would fail).

`answered_by` is the other way out of FastAPI's per-request work, for the hottest route only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope

Handler = Callable[[Request], Coroutine[Any, Any, Response]]  # an `async def` of the request


class Router(APIRouter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefixes: tuple[str, ...] = ()
        self._prefixes_of = -1  # len(self.routes) the prefixes were computed for

    def literal_prefixes(self) -> tuple[str, ...]:
        """The text before the first path parameter of each route, longest first.

        Routes are only added while the app is built; recomputed if their number changed."""
        if self._prefixes_of != len(self.routes):
            found = {getattr(r, "path", "").split("{", 1)[0] for r in self.routes}
            self._prefixes = tuple(sorted(found, key=len, reverse=True))
            self._prefixes_of = len(self.routes)
        return self._prefixes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not get_route_path(scope).startswith(
                self.literal_prefixes()):
            return Match.NONE, {}
        return super().matches(scope)


def answered_by(handler: Handler) -> type[APIRoute]:
    """A route class (for `add_api_route(route_class_override=...)`) whose requests
    `handler(request)` answers by itself.

    FastAPI still documents the operation from its endpoint's signature (body model, header,
    responses), but never calls that endpoint: for every request it would solve the signature
    parameter by parameter, and on `POST /v1/inventory/changes`, the route a merchant calls
    for every stock change, its handler cost about a quarter of the request (284,000 of
    1,175,700 instructions; docs/performance-history.md, ninth session). `handler` parses,
    authenticates and validates on its own and must accept and refuse exactly what the
    signature declares, in the same words: tests/integration/test_answered_by.py sends the
    same requests to it and to FastAPI's handler for the signature and compares the
    answers."""

    class AnsweredBy(APIRoute):
        def get_route_handler(self) -> Handler:
            return handler

    AnsweredBy.__qualname__ = f"answered_by({getattr(handler, '__qualname__', handler)})"
    return AnsweredBy
