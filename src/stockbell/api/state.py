"""What the running app holds: the database, the token signing key, an HTTP sender."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import Request

from stockbell.config import Settings
from stockbell.delivery.sender import Sender
from stockbell.domain.accounts import Principal
from stockbell.store.database import SqlDatabase


@dataclass
class AppState:
    settings: Settings
    db: SqlDatabase
    sender: Sender
    signing_key: str = ""
    disable_after: timedelta = timedelta(days=5)
    # client_secret hash -> (principal, cached-at monotonic seconds)
    key_cache: dict[str, tuple[Principal | None, float]] = field(default_factory=dict)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.stockbell
    return state
