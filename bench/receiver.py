"""A loopback webhook receiver for the benchmarks (run as its own process).

`python -m bench.receiver --port P [--record] [--arrivals]` answers every POST /hook with 200
at once and counts it; with --record it also keeps (arrival time, parsed body) for latency
matching; with --arrivals it keeps (arrival time, webhook-id header) per request, which is
cheap enough for 100,000 deliveries (no body parsing, a few MB to fetch) and lets the peer
scenario match each arrival to its own enqueue time.
GET /stats answers {"count", "first", "last", "sample_body", "sample_headers"};
GET /records answers the recorded list; GET /arrivals answers [[time, webhook-id], ...];
POST /reset clears everything.

Why it is a bare asyncio protocol (httptools' parser, uvicorn's, on uvloop) and not a web
framework: it shares the machine's two cores with what is measured, so the less it costs per
request, the less the figures measure the receiver. An aiohttp.web receiver cost ~70 us of
CPU per request, a third of a core at the dispatcher's rates; this one costs ~15 us. It speaks
HTTP/1.1 with keep-alive, Content-Length and chunked bodies, which is all the clients here
(aiohttp, requests) send.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httptools
import orjson
import uvloop

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_KEPT = (b"content-type", b"user-agent")


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

    def hook(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = now
            self.sample_body = body.decode()
            self.sample_headers = {k.decode(): v.decode() for k, v in headers
                                   if k.lower().startswith(b"webhook-") or k.lower() in _KEPT}
        self.last = now
        if self.record:
            self.records.append((now, orjson.loads(body)))
        if self.keep_arrivals:
            wid = next((v for k, v in headers if k.lower() == b"webhook-id"), b"")
            self.arrivals.append((now, wid.decode()))

    def answer(self, method: bytes, path: bytes) -> bytes:
        """The response to anything but POST /hook (the harness's control requests)."""
        body: bytes
        if method == b"GET" and path == b"/stats":
            body = orjson.dumps({"count": self.count, "first": self.first, "last": self.last,
                                 "sample_body": self.sample_body,
                                 "sample_headers": self.sample_headers})
        elif method == b"GET" and path == b"/records":
            body = orjson.dumps(self.records)
        elif method == b"GET" and path == b"/arrivals":
            body = orjson.dumps(self.arrivals)
        elif method == b"POST" and path == b"/reset":
            self.reset()
            body = b'{"ok":true}'
        else:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)


class Receiver(asyncio.Protocol):
    """One connection: parse requests as they arrive, answer each when it is complete."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                 b"Content-Length: 0\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/hook":
            self.state.hook(self.headers, b"".join(self.body))
            self.transport.write(_OK)
        else:
            self.transport.write(self.state.answer(method, path))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int, state: State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Receiver(state), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--arrivals", action="store_true")
    args = parser.parse_args()
    uvloop.run(serve(args.port, State(args.record, args.arrivals)))


if __name__ == "__main__":
    main()
