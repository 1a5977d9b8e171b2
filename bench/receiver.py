"""A loopback webhook receiver for the benchmarks (run as its own process).

`python -m bench.receiver --port P [--record] [--arrivals]` answers every POST /hook with 200
at once and counts it; with --record it also keeps (arrival time, parsed body) for latency
matching; with --arrivals it keeps (arrival time, webhook-id header) per request, which is
cheap enough for 100,000 deliveries (no body parsing, a few MB to fetch) and lets the peer
scenario match each arrival to its own enqueue time.
GET /stats answers {"count", "first", "last", "sample_body", "sample_headers"};
GET /records answers the recorded list; GET /arrivals answers [[time, webhook-id], ...];
POST /reset clears everything.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
from aiohttp import web


class State:
    def __init__(self, record: bool, arrivals: bool = False) -> None:
        self.record = record
        self.keep_arrivals = arrivals
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.sample_body = ""
        self.sample_headers: dict[str, str] = {}
        self.records: list[tuple[float, Any]] = []
        self.arrivals: list[tuple[float, str]] = []


def make_app(state: State) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        state.count += 1
        if state.count == 1:
            state.first = now
            state.sample_body = body.decode()
            state.sample_headers = {k: v for k, v in request.headers.items()
                                    if k.lower().startswith("webhook-")
                                    or k.lower() in ("content-type", "user-agent")}
        state.last = now
        if state.record:
            state.records.append((now, orjson.loads(body)))
        if state.keep_arrivals:
            state.arrivals.append((now, request.headers.get("webhook-id", "")))
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"count": state.count, "first": state.first,
                                  "last": state.last, "sample_body": state.sample_body,
                                  "sample_headers": state.sample_headers})

    async def records(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(state.records), content_type="application/json")

    async def arrivals(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(state.arrivals), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/records", records)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_post("/reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--arrivals", action="store_true")
    args = parser.parse_args()
    web.run_app(make_app(State(args.record, args.arrivals)), host="127.0.0.1", port=args.port,
                access_log=None, print=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
