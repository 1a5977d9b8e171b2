"""`python -m bench.inprocess ROUTE GROUPS SIZE`: Stockbell's real ASGI app, no server.

Drives `bare` (GET /v1/whoami) or `change` (POST /v1/inventory/changes, one count) in
GROUPS rounds of SIZE concurrent requests (16 is about the group commit's group under
`ingest`'s 32 clients), or `txn` (the same changes straight to `SqlDatabase.run(apply_grouped)`
SIZE at a time, no HTTP), after 20 rounds of warm-up. The database (STOCKBELL_DATABASE_URL)
must be migrated and BENCH_SECRET a key of it. Run under `valgrind --tool=callgrind
--instr-atstart=no` it switches the instrumentation on for the measured rounds only
(`callgrind_control -i on`), so the count is the requests' alone (`bench instructions`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvloop

WARM_UP = 20


async def _drive(route: str, groups: int, size: int) -> None:
    from stockbell.api.app import create_app
    from stockbell.api.state import AppState
    from stockbell.config import Settings
    from stockbell.service.accounts import principal_for_secret
    from stockbell.service.inventory import ChangeInput, apply_grouped

    app = create_app(Settings(), sweep=False, dispatcher=False)
    auth = [(b"authorization", b"Bearer " + os.environ["BENCH_SECRET"].encode())]

    async def call(method: str, path: str, body: bytes = b"") -> None:
        headers = auth + ([(b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode())] if body else [])
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}
        sent = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"{method} {path} -> {status}")

    n = 0

    def count() -> tuple[str, str, str]:
        nonlocal n
        n += 1
        return f"SKU-{n % 100:06d}", f"LOC-{(n // 100) % 4:03d}", str(n % 50)

    async def bare() -> None:
        await call("GET", "/v1/whoami")

    async def change() -> None:
        sku, loc, qty = count()
        await call("POST", "/v1/inventory/changes", orjson.dumps({"changes": [
            {"type": "count", "sku_code": sku, "location": loc, "quantity": qty}]}))

    async with app.router.lifespan_context(app):
        state: AppState = app.state.stockbell
        for k in range(100):
            await call("PUT", f"/v1/items/SKU-{k:06d}", b"{}")
        for k in range(4):
            await call("PUT", f"/v1/locations/LOC-{k:03d}", b"{}")
        principal = await state.db.run(
            lambda uow: principal_for_secret(uow, os.environ["BENCH_SECRET"]))
        assert principal is not None
        tenant = principal.tenant

        async def txn() -> None:
            requests = [[ChangeInput("count", *count(), "IN_STOCK")] for _ in range(size)]
            await state.db.run(lambda uow: apply_grouped(uow, tenant, requests))

        work: Callable[[], Awaitable[None]] = {"bare": bare, "change": change, "txn": txn}[route]
        width = 1 if route == "txn" else size

        async def rounds(k: int) -> None:
            for _ in range(k):
                await asyncio.gather(*(work() for _ in range(width)))

        await rounds(WARM_UP)
        if os.environ.get("BENCH_CALLGRIND"):
            on = await asyncio.create_subprocess_exec(
                "callgrind_control", "-i", "on", str(os.getpid()),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if await on.wait() != 0:
                raise RuntimeError("callgrind_control -i on failed")
        await rounds(groups)
    sys.stdout.flush()
    os._exit(0)  # the count ends here: no teardown in it


def main() -> None:
    route, groups, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvloop.run(_drive(route, groups, size))


if __name__ == "__main__":
    main()
