"""Request guards that run before any route: body size and NUL bytes in the URL."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockbell.api.problems import ErrorInfo, render


async def _refuse(scope: Scope, receive: Receive, send: Send, info: ErrorInfo) -> None:
    """Answer before any route runs, in the format of the surface the path belongs to: a
    Square client gets Square's `errors`, a Commerce Layer client JSON:API's, and so on."""
    await render(Request(scope), info)(scope, receive, send)


class RequestLimits:
    """Buffers the body up to `max_body` bytes and answers 413 past that, before the app
    parses anything; answers 400 to a URL carrying NUL bytes, which no database stores."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def _too_large(self) -> ErrorInfo:
        return ErrorInfo(413, "Payload too large", f"the body exceeds {self.max_body} bytes",
                         "payload_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        if "\x00" in unquote(raw.decode("latin-1")) or b"%00" in scope.get("query_string", b""):
            await _refuse(scope, receive, send, ErrorInfo(
                400, "Bad request", "the URL contains a NUL byte", "bad_request"))
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_body:
                    await _refuse(scope, receive, send, self._too_large())
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _refuse(scope, receive, send, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
