"""Stock changes and how they move quantities and availability.

A batch is applied in memory against a `StockLedger` holding exactly the rows it touches; the
service loads the ledger under a per-item lock and writes the dirty rows back, so the rule
here never sees a half-applied batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from stockbell.domain.scope import Scope, scopes_of_location


class StockState(StrEnum):
    """Inventory states as Square names them (seed 001). NONE is the outside world."""

    IN_STOCK = "IN_STOCK"
    SOLD = "SOLD"
    RETURNED_BY_CUSTOMER = "RETURNED_BY_CUSTOMER"
    RESERVED_FOR_SALE = "RESERVED_FOR_SALE"
    SOLD_ONLINE = "SOLD_ONLINE"
    ORDERED_FROM_VENDOR = "ORDERED_FROM_VENDOR"
    RECEIVED_FROM_VENDOR = "RECEIVED_FROM_VENDOR"
    IN_TRANSIT_TO = "IN_TRANSIT_TO"
    IN_TRANSIT = "IN_TRANSIT"
    WASTE = "WASTE"
    UNLINKED_RETURN = "UNLINKED_RETURN"
    COMPOSED = "COMPOSED"
    DECOMPOSED = "DECOMPOSED"
    SUPPORTED_BY_NEWER_VERSION = "SUPPORTED_BY_NEWER_VERSION"
    NONE = "NONE"


AVAILABLE = StockState.IN_STOCK

StockKey = tuple[int, int, str]  # (item_id, location_id, state)
AvailabilityKey = tuple[int, str]  # (item_id, scope key)


@dataclass(frozen=True, slots=True)
class Count:
    """A physical count: the quantity in `state` at the location is now `quantity`."""

    item_id: int
    location_id: int
    state: StockState
    quantity: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Adjustment:
    """`quantity` units moved from one state to another (NONE = in from / out to the world)."""

    item_id: int
    location_id: int
    from_state: StockState
    to_state: StockState
    quantity: int
    occurred_at: datetime


Change = Count | Adjustment


@dataclass(frozen=True, slots=True)
class AvailabilityMove:
    item_id: int
    scope: Scope
    before: int
    after: int

    @property
    def rose(self) -> bool:
        return self.after > self.before


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one change did: whether it applied, the resulting counts, the availability moves."""

    change: Change
    applied: bool
    counts: tuple[tuple[StockState, int], ...]
    moves: tuple[AvailabilityMove, ...]


@dataclass
class StockLedger:
    quantities: dict[StockKey, int] = field(default_factory=dict)
    counted_at: dict[StockKey, datetime] = field(default_factory=dict)
    availability: dict[AvailabilityKey, int] = field(default_factory=dict)
    markets_of: dict[int, frozenset[int]] = field(default_factory=dict)
    dirty_stock: set[StockKey] = field(default_factory=set)
    dirty_availability: set[AvailabilityKey] = field(default_factory=set)

    def apply(self, change: Change) -> Outcome:
        if isinstance(change, Count):
            return self._count(change)
        return self._adjust(change)

    def _count(self, c: Count) -> Outcome:
        key = (c.item_id, c.location_id, c.state.value)
        newest = self.counted_at.get(key)
        # Out-of-order feeds must not resurrect old quantities; equal times: arrival order wins.
        if newest is not None and c.occurred_at < newest:
            return Outcome(c, False, ((c.state, self.quantities.get(key, 0)),), ())
        delta = c.quantity - self.quantities.get(key, 0)
        self.counted_at[key] = c.occurred_at
        moves = self._move(c.item_id, c.location_id, c.state, delta)
        self.dirty_stock.add(key)
        return Outcome(c, True, ((c.state, self.quantities[key]),), moves)

    def _adjust(self, a: Adjustment) -> Outcome:
        moves: list[AvailabilityMove] = []
        counts: list[tuple[StockState, int]] = []
        for state, delta in ((a.from_state, -a.quantity), (a.to_state, a.quantity)):
            if state is StockState.NONE:
                continue
            moves.extend(self._move(a.item_id, a.location_id, state, delta))
            counts.append((state, self.quantities[(a.item_id, a.location_id, state.value)]))
        return Outcome(a, True, tuple(counts), tuple(moves))

    def _move(
        self, item_id: int, location_id: int, state: StockState, delta: int
    ) -> tuple[AvailabilityMove, ...]:
        key = (item_id, location_id, state.value)
        self.quantities[key] = self.quantities.get(key, 0) + delta
        self.dirty_stock.add(key)
        if state is not AVAILABLE or delta == 0:
            return ()
        moves = []
        for scope in scopes_of_location(location_id, self.markets_of.get(location_id, frozenset())):
            akey = (item_id, scope.key)
            before = self.availability.get(akey, 0)
            after = before + delta
            self.availability[akey] = after
            self.dirty_availability.add(akey)
            moves.append(AvailabilityMove(item_id, scope, before, after))
        return tuple(moves)
