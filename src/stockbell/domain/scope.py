"""Where availability is summed: one location, one market, or every location of the account."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum


class ScopeKind(StrEnum):
    ALL = "all"
    LOCATION = "location"
    MARKET = "market"


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    ref: int | None = None  # internal id of the location or market
    # A compact, ordered key stored next to availability and subscription rows. Computed once:
    # a batch reads it for every availability move.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self.kind, self.ref))

    @staticmethod
    def from_key(key: str) -> Scope:
        return _from_key(key)


@functools.lru_cache(maxsize=65536)
def _key(kind: ScopeKind, ref: int | None) -> str:
    if kind is ScopeKind.ALL:
        return "*"
    return f"{'L' if kind is ScopeKind.LOCATION else 'M'}:{ref}"


ALL = Scope(ScopeKind.ALL)


@functools.lru_cache(maxsize=4096)
def _from_key(key: str) -> Scope:
    """Memoised (scopes are immutable values): a restock reads the scope key of every
    subscription it fires, 100,000 rows sharing a handful of keys."""
    if key == "*":
        return ALL
    tag, _, ref = key.partition(":")
    return Scope(ScopeKind.LOCATION if tag == "L" else ScopeKind.MARKET, int(ref))


@functools.lru_cache(maxsize=4096)
def scopes_of_location(location_id: int, market_ids: frozenset[int]) -> tuple[Scope, ...]:
    """Every scope whose availability includes stock at this location. Memoised: a batch
    asks once per change, and the answer depends only on the arguments."""
    return (
        ALL,
        Scope(ScopeKind.LOCATION, location_id),
        *(Scope(ScopeKind.MARKET, m) for m in sorted(market_ids)),
    )
