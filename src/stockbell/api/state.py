"""What the running app holds: the database and the token signing key."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from stockbell.config import Settings
from stockbell.domain.accounts import Principal
from stockbell.store.database import SqlDatabase


@dataclass
class AppState:
    settings: Settings
    db: SqlDatabase
    signing_key: str = ""
    # client_secret hash -> (principal, cached-at monotonic seconds)
    key_cache: dict[str, tuple[Principal | None, float]] = field(default_factory=dict)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.stockbell
    return state
