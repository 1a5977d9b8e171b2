"""The `stockbell` command: serve, migrate, accounts, keys."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import structlog
import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.engine import make_url

from stockbell.config import Settings, get_settings
from stockbell.domain.accounts import Mode
from stockbell.domain.errors import StockbellError
from stockbell.service import accounts as accounts_service
from stockbell.service.ports import UnitOfWork
from stockbell.store.database import SqlDatabase
from stockbell.store.migrate import upgrade

T = TypeVar("T")

app = typer.Typer(help="Stockbell: back-in-stock notifications and inventory webhooks.",
                  no_args_is_help=True, add_completion=False)
accounts_app = typer.Typer(help="Manage merchant accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Issue API keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)


def _logging(level: str, fmt: str = "console") -> None:
    """structlog's defaults, except for exceptions: its default renderer prints a rich
    traceback with every frame's local variables. Those held the database URL with its
    password (and could hold a client's key), and one traceback cost ~30 KB of log and tens
    of milliseconds of CPU: a worker whose database was gone logged one a second and spent a
    third of a core on it. Tracebacks are now plain, without locals, and uncoloured when the
    output is not a terminal; `fmt="json"` writes one JSON object per line instead, with the
    traceback as structured frames (again without locals)."""
    logging.basicConfig(level=level.upper(), format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        last: list[Any] = [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]
    else:
        tty = sys.stdout.isatty()
        formatter = (structlog.dev.RichTracebackFormatter(show_locals=False) if tty
                     else structlog.dev.plain_traceback)
        last = [
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=formatter),
        ]
    structlog.configure(
        processors=shared + last,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
    )
    if fmt == "json":
        _stdlib_as_json(shared)


def _stdlib_as_json(shared: list[Any]) -> None:
    """In JSON mode the standard library's records (uvicorn's start-up and errors, asyncio's,
    alembic's) become JSON lines on stdout too, so a log shipper reads one format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]))
    logging.getLogger().handlers[:] = [handler]


def _settings() -> Settings:
    """The settings, or a one-line error per bad STOCKBELL_* variable (exit status 2)
    instead of pydantic's traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "STOCKBELL_" + "_".join(str(part) for part in err["loc"]).upper()
            console.print(f"[red]error:[/red] {name}: {err['msg']}", markup=True,
                          highlight=False)
        raise typer.Exit(2) from None


def _shown(url: str) -> str:
    """A database URL as printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _run(work: Callable[[UnitOfWork], Awaitable[T]], migrate: bool = True) -> T:
    settings = _settings()
    if migrate:
        upgrade(settings.db_url)

    async def go() -> T:
        db = SqlDatabase(settings.db_url, synchronous=settings.sqlite_synchronous, pool_size=1)
        try:
            return await db.run(work)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except StockbellError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    no_dispatcher: Annotated[bool, typer.Option(
        "--no-dispatcher", help="Serve the API only; run `stockbell worker` elsewhere.")] = False,
) -> None:
    """Run the HTTP API (and, by default, the webhook dispatcher) in this process.

    On SQLite the schema is migrated on start; on PostgreSQL run `stockbell migrate` first.
    """
    import uvicorn

    from stockbell.api.app import create_app

    settings = _settings()
    _logging(settings.log_level, settings.log_format)
    console.print(f"[bold]Stockbell[/bold] database: {_shown(settings.db_url)}")
    console.print(f"Listening on [bold]http://{host}:{port}[/bold]  (API docs at /docs)")
    console.print("Get a key (in another terminal, same directory):\n"
                  "  ./run accounts create shop\n"
                  "  ./run keys create --account shop --mode test\n"
                  "(or `stockbell accounts create ...` inside the virtualenv)")
    if no_dispatcher:
        console.print("Dispatcher disabled (--no-dispatcher).")
    # JSON mode: no uvicorn handlers of its own, its records go to the root's JSON handler
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(create_app(settings, dispatcher=not no_dispatcher), host=host, port=port,
                log_level=settings.log_level, access_log=False, log_config=log_config)


@app.command()
def worker() -> None:
    """Run the webhook dispatcher alone (scale out: any number, on PostgreSQL).

    Claims due deliveries with a lease (FOR UPDATE SKIP LOCKED), wakes on LISTEN/NOTIFY,
    retries on STOCKBELL_RETRY_SCHEDULE. Stops cleanly on SIGINT/SIGTERM.
    """
    import signal

    import uvloop

    from stockbell.delivery.dispatcher import supervise

    settings = _settings()
    _logging(settings.log_level, settings.log_format)

    async def go() -> None:
        db = SqlDatabase(settings.db_url, synchronous=settings.sqlite_synchronous)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"Stockbell worker on {_shown(settings.db_url)}")
        try:
            await supervise(db, settings, stop)
        finally:
            await db.dispose()

    # The same event loop as `serve` (uvicorn picks uvloop): ~15 % less CPU per delivery.
    uvloop.run(go())


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) to STOCKBELL_DATABASE_URL."""
    url = _settings().db_url
    upgrade(url)
    console.print(f"Schema is up to date on {_shown(url)}")


@accounts_app.command("create")
def accounts_create(name: Annotated[str, typer.Argument(help="Account (merchant) name.")]) -> None:
    """Create a merchant account."""
    account_id = _run(lambda uow: accounts_service.create_account(uow, name))
    console.print(f"Created account [bold]{name}[/bold] (id {account_id})")


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option(help="Account name.")],
    mode: Annotated[Mode, typer.Option(help="test or live; a key only sees its mode's data.")],
    publishable: Annotated[bool, typer.Option(
        "--publishable", help="A storefront key that may only create subscriptions.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Issue an API key: prints client_id and client_secret (shown once, stored hashed)."""
    key = _run(lambda uow: accounts_service.create_key(uow, account, mode, publishable))
    out = {"account": key.account, "mode": key.mode.value, "client_id": key.client_id,
           "client_secret": key.client_secret, "publishable": key.publishable}
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"client_id:     {key.client_id}")
    typer.echo(f"client_secret: {key.client_secret}")
    console.print("Use the secret as `Authorization: Bearer <client_secret>`, or exchange both "
                  "at POST /oauth/token. It is not shown again.")


def main() -> None:
    app()
