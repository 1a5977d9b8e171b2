"""Settings from the environment (STOCKBELL_*), read once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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

    @property
    def db_url(self) -> str:
        return self.database_url or default_database_url()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
