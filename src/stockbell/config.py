"""Settings from the environment (STOCKBELL_*), read once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The URL schemes operators paste (Heroku-style `postgres://` among them), each mapped to the
# async driver Stockbell ships with.
_DRIVERS = {
    "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
}
_FORMS = "postgresql://user:password@host:5432/dbname or sqlite:///path/to/stockbell.db"


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{Path.cwd() / 'stockbell.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STOCKBELL_", extra="ignore")

    database_url: str = ""
    # HS256 key for access tokens. Empty: one is generated once and kept in the database,
    # so every process sharing the database agrees on it.
    secret_key: str = ""
    token_ttl_seconds: int = 3600
    max_body_bytes: int = 1024 * 1024
    expiry_sweep_seconds: float = 5.0
    sqlite_synchronous: str = "FULL"
    log_level: str = "info"
    # "console": one readable line per event; "json": one JSON object per line, for a log
    # shipper (tracebacks as structured frames, without local variables, like the console's).
    log_format: Literal["console", "json"] = "console"

    # Webhook delivery
    retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    endpoint_disable_after_seconds: float = 5 * 24 * 3600
    webhook_allow: str = ""  # CIDRs a webhook may reach although private/loopback
    delivery_concurrency: int = 64
    endpoint_concurrency: int = 8
    delivery_batch: int = 200
    delivery_lease_seconds: float = 60.0
    delivery_poll_seconds: float = 1.0
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    total_timeout_seconds: float = 15.0
    retention_days: float = 30.0

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value.encode()) < 32:
            raise ValueError("STOCKBELL_SECRET_KEY must be at least 32 bytes (HS256)")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        """Name the driver here, so that `postgresql://` works and a database Stockbell
        cannot use fails in one line at start-up instead of in a traceback from deep inside
        SQLAlchemy (a missing psycopg or MySQLdb module). The messages never echo the URL:
        it may hold a password."""
        if not value:
            return value
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(f"not a database URL; expected {_FORMS}") from None
        driver = _DRIVERS.get(url.drivername)
        if driver is None:
            raise ValueError(f"unsupported database or driver '{url.drivername}' (Stockbell "
                             f"runs on PostgreSQL with asyncpg or SQLite with aiosqlite); "
                             f"use {_FORMS}")
        if driver.startswith("sqlite") and not url.database:
            raise ValueError("SQLite needs a file (several processes share it): "
                             "sqlite:///path/to/stockbell.db")
        if driver == url.drivername:
            return value
        return url.set(drivername=driver).render_as_string(hide_password=False)

    @property
    def db_url(self) -> str:
        return self.database_url or default_database_url()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
