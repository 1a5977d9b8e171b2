"""The ASGI application: native API, OAuth token endpoint, problem details everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import FastAPI

from stockbell import __version__
from stockbell.api import auth, metrics, problems
from stockbell.api.compat import commercelayer, inventory_update, sequenzy, square, ti
from stockbell.api.limits import RequestLimits
from stockbell.api.native import catalog, events, inventory, subscriptions, webhooks
from stockbell.api.state import AppState
from stockbell.config import Settings, get_settings
from stockbell.delivery.dispatcher import sender_for, supervise
from stockbell.gc_tuning import freeze_startup_heap
from stockbell.service import subscriptions as subs_service
from stockbell.store.database import SqlDatabase
from stockbell.store.migrate import upgrade_async

log = structlog.get_logger(__name__)


async def _sweep_expired(state: AppState) -> None:
    """Turn past-due subscriptions `expired` (with their event) while the server runs."""
    while True:
        await asyncio.sleep(state.settings.expiry_sweep_seconds)
        try:
            n = await state.db.run(lambda uow: subs_service.expire_due(uow))
            if n:
                log.info("subscriptions.expired", count=n)
        except Exception:  # keep sweeping; the next round retries
            log.exception("subscriptions.expiry_sweep_failed")


def create_app(settings: Settings | None = None, *, migrate_sqlite: bool = True,
               sweep: bool = True, dispatcher: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = SqlDatabase(settings.db_url, synchronous=settings.sqlite_synchronous)
        if db.sqlite and migrate_sqlite:
            await upgrade_async(settings.db_url)
        state = AppState(settings, db, sender_for(settings),
                         disable_after=timedelta(seconds=settings.endpoint_disable_after_seconds))
        state.signing_key = settings.secret_key or await db.run(
            lambda uow: uow.accounts.signing_secret(secrets.token_urlsafe(48)))
        app.state.stockbell = state
        freeze_startup_heap()  # the app, its engine and state live as long as the process
        sweeper = asyncio.create_task(_sweep_expired(state)) if sweep else None
        stop = asyncio.Event()
        worker = asyncio.create_task(supervise(db, settings, stop)) if dispatcher else None
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await state.sender.close()
            await db.dispose()

    app = FastAPI(
        title="Stockbell",
        version=__version__,
        description="Back-in-stock subscriptions and inventory webhooks. Errors are RFC 9457 "
        "problem details. Authenticate with `Authorization: Bearer <token>`, where the token "
        "comes from `POST /oauth/token` or is the key's client_secret.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(auth.router)
    for module in (catalog, inventory, subscriptions, events, webhooks, metrics):
        app.include_router(module.router)
    for surface in (ti, square, sequenzy, commercelayer, inventory_update):
        app.include_router(surface.router)
    app.add_middleware(RequestLimits, max_body=settings.max_body_bytes)
    return app
