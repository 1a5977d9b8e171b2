"""A lean HTTP/1.1 keep-alive client for closed-loop load (`ingest`).

Why not aiohttp here: the load generator shares the machine's two cores with `serve` and
PostgreSQL, so whatever it costs per request is taken from what is measured. aiohttp's client
on asyncio's own loop cost 108-151 us of CPU per one-change POST (a third of a core at
`ingest`'s rates); this one writes each request as prepared bytes and reads the answer with
httptools' parser (uvicorn's) on uvloop, as `bench/receiver.py` does on the other side, for
28-52 us (docs/performance.md, twenty-first session). It speaks only what
`serve` answers: HTTP/1.1 responses with Content-Length or chunked bodies, kept alive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionResetError("the connection is closed")
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await waiter


class LeanClient:
    """`size` keep-alive connections to `serve`, every request with the same bearer key.

    A request takes a free connection and gives it back when answered; with no more callers
    at once than connections (a closed loop of `size`), one is always free."""

    def __init__(self, host: str, port: int, secret: str, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n").encode()
        self._free: list[_Connection] = []

    async def __aenter__(self) -> LeanClient:
        for _ in range(self.size):
            self._free.append(await self._connect())
        return self

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._free:
            if conn.transport is not None:
                conn.transport.close()
        self._free.clear()

    def get_request(self, path: str) -> bytes:
        return b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head + b"\r\n"

    def post_request(self, path: str, body: Any) -> bytes:
        data = orjson.dumps(body)
        return (b"POST " + path.encode() + b" HTTP/1.1\r\n" + self._head
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(data)).encode() + b"\r\n\r\n" + data)

    async def ok(self, request: bytes, expect: int = 200) -> bytes:
        """Send `request` and return the body of its answer with status `expect`; anything
        else raises."""
        conn = self._free.pop() if self._free else await self._connect()  # one was lost
        try:
            status, body = await conn.send(request)
        finally:
            if conn.transport is not None:
                self._free.append(conn)
        if status != expect:
            raise RuntimeError(f"{request.split(b' ', 2)[:2]!r} -> {status}: {body[:300]!r}")
        return body
