"""What the running app holds: the database, the token signing key, an HTTP sender, the
change coalescer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import Request

from stockbell.config import Settings
from stockbell.delivery.sender import Sender
from stockbell.domain.accounts import Principal
from stockbell.service.coalesce import ChangeCoalescer
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
    # Concurrent inventory change requests share transactions (group commit).
    changes: ChangeCoalescer = field(init=False)

    def __post_init__(self) -> None:
        self.changes = ChangeCoalescer(self.db, parallel=1 if self.db.sqlite else 4)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.stockbell
    return state
