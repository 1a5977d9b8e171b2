"""STOCKBELL_DATABASE_URL as operators write it: normalised to the shipped drivers, or one
clear error that never repeats the URL (it may hold a password)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stockbell.config import Settings


@pytest.mark.parametrize(("given", "used"), [
    ("postgresql://u:p%40ss@db.example:5432/shop?ssl=require",
     "postgresql+asyncpg://u:p%40ss@db.example:5432/shop?ssl=require"),
    ("postgres://db.example/shop", "postgresql+asyncpg://db.example/shop"),
    ("postgresql+asyncpg://db.example/shop", "postgresql+asyncpg://db.example/shop"),
    ("sqlite:///var/lib/stockbell.db", "sqlite+aiosqlite:///var/lib/stockbell.db"),
    ("sqlite+aiosqlite:////abs/stockbell.db", "sqlite+aiosqlite:////abs/stockbell.db"),
])
def test_common_url_forms_get_the_async_driver(given: str, used: str) -> None:
    assert Settings(database_url=given).db_url == used


def test_no_url_means_a_sqlite_file_in_the_working_directory() -> None:
    assert Settings(database_url="").db_url.startswith("sqlite+aiosqlite:///")
    assert Settings(database_url="").db_url.endswith("/stockbell.db")


@pytest.mark.parametrize(("given", "says"), [
    ("mysql://root:hunter2@db/shop", "unsupported database or driver 'mysql'"),
    ("postgresql+psycopg://root:hunter2@db/shop", "'postgresql+psycopg'"),
    ("postgresql://root:hunter2@db:fivefour/shop", "not a database URL"),
    ("hunter2", "not a database URL"),
    ("sqlite://", "SQLite needs a file"),
])
def test_unusable_urls_fail_with_one_message_without_the_url(given: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(database_url=given)
    (error,) = caught.value.errors()
    assert error["loc"] == ("database_url",)
    assert says in error["msg"]
    assert "hunter2" not in error["msg"]
