"""Settings from the environment (STOCKBELL_*), read once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def db_url(self) -> str:
        return self.database_url or default_database_url()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
