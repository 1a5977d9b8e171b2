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
_NO_MARKETS: frozenset[int] = frozenset()

# Changes, moves and outcomes are values that nothing mutates once built. They are not frozen
# dataclasses only because a batch builds thousands of them and a frozen one costs three times
# as much to build (each field is set through object.__setattr__).


@dataclass(slots=True)
class Count:
    """A physical count: the quantity in `state` at the location is now `quantity`."""

    item_id: int
    location_id: int
    state: StockState
    quantity: int
    occurred_at: datetime


@dataclass(slots=True)
class Adjustment:
    """`quantity` units moved from one state to another (NONE = in from / out to the world)."""

    item_id: int
    location_id: int
    from_state: StockState
    to_state: StockState
    quantity: int
    occurred_at: datetime


Change = Count | Adjustment


@dataclass(slots=True)
class AvailabilityMove:
    item_id: int
    scope: Scope
    before: int
    after: int

    @property
    def rose(self) -> bool:
        return self.after > self.before


@dataclass(slots=True)
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
        state = c.state
        key = (c.item_id, c.location_id, state.value)
        old = self.quantities.get(key, 0)
        newest = self.counted_at.get(key)
        # Out-of-order feeds must not resurrect old quantities; equal times: arrival order wins.
        if newest is not None and c.occurred_at < newest:
            return Outcome(c, False, ((state, old),), ())
        self.counted_at[key] = c.occurred_at
        moves = self._shift(key, state, c.quantity - old)
        return Outcome(c, True, ((state, c.quantity),), moves)

    def _adjust(self, a: Adjustment) -> Outcome:
        moves: list[AvailabilityMove] = []
        counts: list[tuple[StockState, int]] = []
        for state, delta in ((a.from_state, -a.quantity), (a.to_state, a.quantity)):
            if state is StockState.NONE:
                continue
            key = (a.item_id, a.location_id, state.value)
            moves.extend(self._shift(key, state, delta))
            counts.append((state, self.quantities[key]))
        return Outcome(a, True, tuple(counts), tuple(moves))

    def _shift(self, key: StockKey, state: StockState, delta: int
               ) -> tuple[AvailabilityMove, ...]:
        """Move `delta` units into the stock row `key` (item, location, state); available stock
        moves the availability of every scope holding the location with it."""
        self.quantities[key] = self.quantities.get(key, 0) + delta
        self.dirty_stock.add(key)
        if state is not AVAILABLE or delta == 0:
            return ()
        item_id, location_id = key[0], key[1]
        availability = self.availability
        moves = []
        for scope in scopes_of_location(location_id,
                                        self.markets_of.get(location_id, _NO_MARKETS)):
            akey = (item_id, scope.key)
            before = availability.get(akey, 0)
            availability[akey] = before + delta
            self.dirty_availability.add(akey)
            moves.append(AvailabilityMove(item_id, scope, before, before + delta))
        return tuple(moves)
