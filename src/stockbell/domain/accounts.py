"""Accounts (merchants), modes and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    TEST = "test"
    LIVE = "live"


SCOPE_ALL = "read write"
SCOPE_PUBLISHABLE = "subscriptions:create"


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who is asking: every query is scoped by (account, mode)."""

    account_id: int
    mode: Mode


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    key_id: int
    publishable: bool
    market: str | None = None  # code of the market a token is scoped to (scope=market:...)

    @property
    def scope(self) -> str:
        return SCOPE_PUBLISHABLE if self.publishable else SCOPE_ALL


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    account_id: int
    mode: Mode
    client_id: str
    publishable: bool
    secret_hash: str
