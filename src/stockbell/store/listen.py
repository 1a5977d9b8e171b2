"""PostgreSQL LISTEN for new deliveries, so workers on any machine wake at once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from stockbell.store.repos.deliveries import NOTIFY_CHANNEL


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class DeliveryListener:
    """Sets `wake` whenever any process commits new or rescheduled deliveries."""

    def __init__(self, url: str, wake: asyncio.Event) -> None:
        self.url = url
        self.wake = wake
        self.conn: Any = None

    def _on_notify(self, *_args: Any) -> None:
        self.wake.set()

    async def start(self) -> None:
        self.conn = await asyncpg.connect(_dsn(self.url))
        await self.conn.add_listener(NOTIFY_CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
