"""Test helpers: databases, a real server on loopback, tenants with keys."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI

from stockbell.api.app import create_app
from stockbell.config import Settings
from stockbell.domain.accounts import Mode
from stockbell.service import accounts as accounts_service
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.migrate import upgrade

T = TypeVar("T")
SIGNING_KEY = "test-signing-key-that-is-32-bytes-long!"
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(user="postgres", host="127.0.0.1", port=5432,
                                 database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database, migrated, dropped afterwards."""
    name = f"stockbell_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def sqlite_database(directory: str) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{directory}/stockbell-{uuid.uuid4().hex[:8]}.db"
    upgrade(url)
    yield url


@contextmanager
def own_database(db_url: str) -> Iterator[str]:
    """A fresh, migrated database of the same backend as `db_url`."""
    if db_url.startswith("sqlite"):
        with sqlite_database(os.path.dirname(urlsplit(db_url).path)) as url:
            yield url
    else:
        with postgres_database() as url:
            yield url


def run_db(url: str, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Run one use case in its own transaction, from synchronous test code."""

    async def go() -> T:
        db = SqlDatabase(url, pool_size=1)
        try:
            return await db.run(work)
        finally:
            await db.dispose()

    return asyncio.run(go())


@dataclass
class Tenant:
    account: str
    mode: str
    client_id: str
    client_secret: str
    client: httpx.Client

    def __getattr__(self, name: str) -> Any:
        # get/put/post/patch/delete straight on the authenticated client
        return getattr(self.client, name)


class Server:
    """`stockbell`'s real ASGI app under uvicorn in a thread, on a loopback port."""

    def __init__(self, url: str, *, adjust: Callable[[FastAPI], None] | None = None,
                 **settings: Any) -> None:
        """`adjust`: called with the app before it serves (say, to put a route in front)."""
        self.db_url = url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cfg = Settings(database_url=url, secret_key=SIGNING_KEY, **settings)
        app = create_app(cfg, migrate_sqlite=False)
        if adjust is not None:
            adjust(app)
        config = uvicorn.Config(app, host="127.0.0.1",
                                port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self._clients: list[httpx.Client] = []

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self._clients.append(c)
        return c

    def tenant(self, mode: str = "test", *, publishable: bool = False,
               account: str | None = None) -> Tenant:
        """A fresh account (or another key on `account`) with a client authenticated by it."""
        name = account or f"acct-{uuid.uuid4().hex[:10]}"

        async def make(uow: UnitOfWork) -> accounts_service.IssuedKey:
            if account is None:
                await accounts_service.create_account(uow, name)
            return await accounts_service.create_key(uow, name, Mode(mode), publishable)

        key = run_db(self.db_url, make)
        return Tenant(name, mode, key.client_id, key.client_secret,
                      self.client(key.client_secret))


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem response with this status and a non-empty type, title and detail."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    assert all(isinstance(body[k], str) and body[k] for k in ("type", "title", "detail")), body
    return dict(body)
