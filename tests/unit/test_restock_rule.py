"""The pure restock rule, the stock ledger and exact quantities: no database, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockbell.domain.errors import InvalidInput
from stockbell.domain.quantity import MAX_ABS, SCALE, from_micro, to_micro
from stockbell.domain.restock import crossed, threshold_window
from stockbell.domain.scope import ALL, Scope, ScopeKind, scopes_of_location
from stockbell.domain.stock import (
    Adjustment,
    AvailabilityMove,
    Count,
    StockLedger,
    StockState,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
IN, SOLD, NONE = StockState.IN_STOCK, StockState.SOLD, StockState.NONE
M = SCALE  # one unit in micro-units


# ---------------------------------------------------------------- restock rule


@pytest.mark.parametrize(
    ("before", "after", "threshold", "fires"),
    [
        (0, 3, 3, True),  # reaching T exactly fires
        (2, 3, 3, True),
        (0, 5, 3, True),  # passing T fires
        (3, 5, 3, False),  # already at T: no upward crossing
        (4, 5, 3, False),  # already above T
        (0, 2, 3, False),  # not reached
        (5, 0, 3, False),  # downward never fires
        (5, 3, 3, False),  # falling onto T is not a crossing
        (3, 3, 3, False),  # no move
        (-2, 1, 1, True),  # from negative stock
        (2_999_999, 3_000_000, 3_000_000, True),  # micro-unit boundaries
        (3_000_000, 3_000_001, 3_000_000, False),
    ],
)
def test_crossed(before: int, after: int, threshold: int, fires: bool) -> None:
    assert crossed(before, after, threshold) is fires


def test_threshold_window_is_half_open_and_upward_only() -> None:
    assert threshold_window(0, 5) == (0, 5)
    assert threshold_window(-3, -1) == (-3, -1)
    assert threshold_window(5, 5) is None
    assert threshold_window(5, 2) is None


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-50, 50))
def test_window_matches_rule(before: int, after: int, threshold: int) -> None:
    window = threshold_window(before, after)
    in_window = window is not None and window[0] < threshold <= window[1]
    assert in_window is crossed(before, after, threshold)


@given(st.lists(st.integers(-20, 20), min_size=2, max_size=12), st.integers(1, 20))
def test_crossings_of_a_path_alternate_with_drops(path: list[int], threshold: int) -> None:
    """Along any path, consecutive upward crossings of T are separated by a drop below T."""
    below = path[0] < threshold
    for before, after in pairwise(path):
        if crossed(before, after, threshold):
            assert below
        below = after < threshold


# ---------------------------------------------------------------- scopes


def test_scope_keys_round_trip() -> None:
    for scope in (ALL, Scope(ScopeKind.LOCATION, 7), Scope(ScopeKind.MARKET, 12)):
        assert Scope.from_key(scope.key) == scope
    assert ALL.key == "*"
    assert Scope(ScopeKind.LOCATION, 7).key == "L:7"
    assert Scope(ScopeKind.MARKET, 12).key == "M:12"


def test_scopes_of_location() -> None:
    assert scopes_of_location(4, frozenset()) == (ALL, Scope(ScopeKind.LOCATION, 4))
    assert scopes_of_location(4, frozenset({9, 2})) == (
        ALL,
        Scope(ScopeKind.LOCATION, 4),
        Scope(ScopeKind.MARKET, 2),
        Scope(ScopeKind.MARKET, 9),
    )


# ---------------------------------------------------------------- stock ledger


def ledger(**markets: frozenset[int]) -> StockLedger:
    led = StockLedger()
    led.markets_of = {int(k[1:]): v for k, v in markets.items()}
    return led


def count(qty: int, *, item: int = 1, loc: int = 10, state: StockState = IN,
          at: datetime = T0) -> Count:
    return Count(item, loc, state, qty, at)


def adjust(src: StockState, dst: StockState, qty: int, *, item: int = 1,
           loc: int = 10) -> Adjustment:
    return Adjustment(item, loc, src, dst, qty, T0)


def test_count_sets_quantity_and_moves_every_scope_of_the_location() -> None:
    led = ledger(L10=frozenset({5}))
    out = led.apply(count(3 * M))
    assert out.applied
    assert out.counts == ((IN, 3 * M),)
    assert out.moves == (
        AvailabilityMove(1, ALL, 0, 3 * M),
        AvailabilityMove(1, Scope(ScopeKind.LOCATION, 10), 0, 3 * M),
        AvailabilityMove(1, Scope(ScopeKind.MARKET, 5), 0, 3 * M),
    )
    assert led.quantities[(1, 10, "IN_STOCK")] == 3 * M
    assert led.availability == {(1, "*"): 3 * M, (1, "L:10"): 3 * M, (1, "M:5"): 3 * M}
    assert led.dirty_stock == {(1, 10, "IN_STOCK")}
    assert led.dirty_availability == {(1, "*"), (1, "L:10"), (1, "M:5")}
    assert led.counted_at[(1, 10, "IN_STOCK")] == T0


def test_count_is_a_set_not_an_add() -> None:
    led = ledger()
    led.apply(count(5 * M))
    out = led.apply(count(2 * M, at=T0 + timedelta(seconds=1)))
    assert out.moves[0] == AvailabilityMove(1, ALL, 5 * M, 2 * M)
    assert not out.moves[0].rose
    assert led.availability[(1, "*")] == 2 * M


def test_availability_sums_locations() -> None:
    led = ledger(L10=frozenset({5}), L11=frozenset({5}))
    led.apply(count(2 * M, loc=10))
    out = led.apply(count(3 * M, loc=11))
    assert AvailabilityMove(1, ALL, 2 * M, 5 * M) in out.moves
    assert AvailabilityMove(1, Scope(ScopeKind.MARKET, 5), 2 * M, 5 * M) in out.moves
    assert AvailabilityMove(1, Scope(ScopeKind.LOCATION, 11), 0, 3 * M) in out.moves
    assert led.availability[(1, "L:10")] == 2 * M


def test_older_count_is_recorded_but_moves_nothing() -> None:
    led = ledger()
    led.apply(count(5 * M, at=T0))
    led.dirty_stock.clear()
    led.dirty_availability.clear()
    out = led.apply(count(1 * M, at=T0 - timedelta(seconds=1)))
    assert not out.applied
    assert out.moves == ()
    assert out.counts == ((IN, 5 * M),)
    assert led.quantities[(1, 10, "IN_STOCK")] == 5 * M
    assert led.counted_at[(1, 10, "IN_STOCK")] == T0
    assert not led.dirty_stock
    assert not led.dirty_availability


def test_count_at_the_same_time_applies_in_arrival_order() -> None:
    led = ledger()
    led.apply(count(5 * M, at=T0))
    out = led.apply(count(1 * M, at=T0))
    assert out.applied
    assert led.quantities[(1, 10, "IN_STOCK")] == 1 * M


def test_newest_count_is_per_state_and_location() -> None:
    led = ledger()
    led.apply(count(5 * M, at=T0))
    # an older count of another state or location is not stale
    assert led.apply(count(2 * M, state=SOLD, at=T0 - timedelta(hours=1))).applied
    assert led.apply(count(2 * M, loc=11, at=T0 - timedelta(hours=1))).applied
    assert led.apply(count(2 * M, item=2, at=T0 - timedelta(hours=1))).applied


def test_adjustments_do_not_advance_the_count_clock() -> None:
    led = ledger()
    led.apply(adjust(NONE, IN, 4 * M))
    assert (1, 10, "IN_STOCK") not in led.counted_at
    assert led.apply(count(1 * M, at=T0 - timedelta(days=1))).applied


def test_count_of_another_state_moves_no_availability() -> None:
    led = ledger()
    out = led.apply(count(7 * M, state=SOLD))
    assert out.applied
    assert out.moves == ()
    assert led.quantities[(1, 10, "SOLD")] == 7 * M
    assert led.availability == {}


def test_unchanged_count_moves_no_availability() -> None:
    led = ledger()
    led.apply(count(2 * M))
    out = led.apply(count(2 * M, at=T0 + timedelta(seconds=1)))
    assert out.applied
    assert out.moves == ()


def test_adjustment_moves_quantity_between_states() -> None:
    led = ledger()
    led.apply(count(5 * M))
    out = led.apply(adjust(IN, SOLD, 2 * M))
    assert out.applied
    assert out.counts == ((IN, 3 * M), (SOLD, 2 * M))
    assert out.moves == (
        AvailabilityMove(1, ALL, 5 * M, 3 * M),
        AvailabilityMove(1, Scope(ScopeKind.LOCATION, 10), 5 * M, 3 * M),
    )
    back = led.apply(adjust(SOLD, IN, M // 2))
    assert back.counts == ((SOLD, 1_500_000), (IN, 3_500_000))
    assert back.moves[0] == AvailabilityMove(1, ALL, 3 * M, 3_500_000)
    assert back.moves[0].rose


def test_adjustment_from_and_to_outside_world() -> None:
    led = ledger()
    inbound = led.apply(adjust(NONE, IN, 2 * M))
    assert inbound.counts == ((IN, 2 * M),)
    assert inbound.moves[0] == AvailabilityMove(1, ALL, 0, 2 * M)
    assert (1, 10, "NONE") not in led.quantities
    outbound = led.apply(adjust(IN, NONE, 2 * M))
    assert outbound.counts == ((IN, 0),)
    assert outbound.moves[0] == AvailabilityMove(1, ALL, 2 * M, 0)
    assert all(k[2] != "NONE" for k in led.quantities)


def test_adjustment_between_other_states_leaves_availability() -> None:
    led = ledger()
    led.apply(count(3 * M))
    out = led.apply(adjust(SOLD, StockState.RETURNED_BY_CUSTOMER, M))
    assert out.moves == ()
    assert led.quantities[(1, 10, "SOLD")] == -M
    assert led.quantities[(1, 10, "RETURNED_BY_CUSTOMER")] == M
    assert led.availability[(1, "*")] == 3 * M


def test_ledger_starts_from_loaded_rows() -> None:
    led = StockLedger(
        quantities={(1, 10, "IN_STOCK"): 4 * M},
        counted_at={(1, 10, "IN_STOCK"): T0},
        availability={(1, "*"): 9 * M, (1, "L:10"): 4 * M},
    )
    out = led.apply(count(6 * M, at=T0 + timedelta(seconds=1)))
    assert out.moves == (
        AvailabilityMove(1, ALL, 9 * M, 11 * M),
        AvailabilityMove(1, Scope(ScopeKind.LOCATION, 10), 4 * M, 6 * M),
    )


@given(st.lists(st.tuples(st.sampled_from([10, 11, 12]), st.integers(0, 20)), max_size=15))
def test_availability_is_the_sum_of_in_stock(counts: list[tuple[int, int]]) -> None:
    led = ledger(L10=frozenset({1}), L11=frozenset({1, 2}), L12=frozenset({2}))
    for i, (loc, qty) in enumerate(counts):
        out = led.apply(count(qty * M, loc=loc, at=T0 + timedelta(seconds=i)))
        for move in out.moves:
            assert led.availability[(1, move.scope.key)] == move.after
    members = {"*": {10, 11, 12}, "L:10": {10}, "L:11": {11}, "L:12": {12},
               "M:1": {10, 11}, "M:2": {11, 12}}
    for key, locs in members.items():
        want = sum(led.quantities.get((1, loc, "IN_STOCK"), 0) for loc in locs)
        assert led.availability.get((1, key), 0) == want


# ---------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        ("12.375", 12_375_000),
        ("3", 3_000_000),
        (3, 3_000_000),
        (2.5, 2_500_000),
        (0.1, 100_000),
        (Decimal("0.000001"), 1),
        ("-0.5", -500_000),
        ("0", 0),
        ("-0", 0),
        (" 4.25 ", 4_250_000),
        ("2.5000000000", 2_500_000),  # trailing zeros are exact
        ("1E+3", 1_000_000_000),
        (str(MAX_ABS), MAX_ABS * SCALE),
        (f"-{MAX_ABS}", -MAX_ABS * SCALE),
    ],
)
def test_to_micro(value: str | int | float | Decimal, micro: int) -> None:
    assert to_micro(value) == micro


@pytest.mark.parametrize(
    "value",
    [
        "0.0000001",
        "1.1234567",
        1e-7,
        "1.0000000000000000000000000001",  # beyond the 28-digit context: must not round
        "1e-999999999",  # underflows to 0 if multiplied first
        "123456789012.1234567",
    ],
)
def test_to_micro_rejects_more_than_six_places(value: str | float) -> None:
    with pytest.raises(InvalidInput, match="decimal places"):
        to_micro(value)


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity", float("nan"),
                                   float("inf"), Decimal("NaN")])
def test_to_micro_rejects_non_finite(value: str | float | Decimal) -> None:
    with pytest.raises(InvalidInput, match="finite"):
        to_micro(value)


@pytest.mark.parametrize("value", ["", "abc", "1,5", "1.2.3", "0x10", True, False])
def test_to_micro_rejects_non_numbers(value: str | bool) -> None:
    with pytest.raises(InvalidInput, match="decimal number"):
        to_micro(value)


@pytest.mark.parametrize("value", [MAX_ABS + 1, f"{MAX_ABS}.000001", "1e13", 1e300,
                                   "1e999999999", "-1e999999999"])
def test_to_micro_rejects_out_of_range(value: str | int | float) -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        to_micro(value)


def test_to_micro_names_the_field() -> None:
    with pytest.raises(InvalidInput) as info:
        to_micro("x", field="changes/0/quantity")
    assert info.value.field == "changes/0/quantity"
    assert "changes/0/quantity" in info.value.detail


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (12_375_000, "12.375"),
        (3_000_000, "3"),
        (-500_000, "-0.5"),
        (-1, "-0.000001"),
        (-2_000_000, "-2"),
        (10_000_000, "10"),
        (1_000_001, "1.000001"),
    ],
)
def test_from_micro(micro: int, text: str) -> None:
    assert from_micro(micro) == text


@given(st.integers(-MAX_ABS * SCALE, MAX_ABS * SCALE))
def test_micro_round_trip(micro: int) -> None:
    text = from_micro(micro)
    assert to_micro(text) == micro
    assert Decimal(text) == Decimal(micro) / SCALE
    # the rendering is the shortest exact one: no trailing zeros after a point
    assert not (("." in text) and text.endswith("0"))


@given(st.decimals(min_value=-MAX_ABS, max_value=MAX_ABS, places=6, allow_nan=False,
                   allow_infinity=False))
def test_decimal_round_trip(value: Decimal) -> None:
    micro = to_micro(value)
    assert Decimal(from_micro(micro)) == value
    assert to_micro(str(value)) == micro


@given(st.from_regex(r"[0-9]{1,14}", fullmatch=True)
       | st.from_regex(r"[0-9\u0660-\u0669\u00b2 ]{1,14}", fullmatch=True))
def test_whole_numbers_parse_exactly_as_decimals_do(text: str) -> None:
    """to_micro reads plain ASCII digit strings without Decimal (a batch parses a thousand):
    the answer, or the refusal, is the one the exact decimal path gives."""
    try:
        dec = Decimal(text.strip())
    except ArithmeticError:
        dec = None
    if dec is None or abs(dec) > MAX_ABS:
        with pytest.raises(InvalidInput):
            to_micro(text)
    else:
        assert to_micro(text) == int(dec * SCALE)
    assert to_micro("999999999999") == 999_999_999_999 * SCALE  # the longest fast one
    with pytest.raises(InvalidInput):
        to_micro("1000000000001")
