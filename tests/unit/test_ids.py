"""Public ids: the same shape as before (prefix, 24 hex digits), unique, and in creation order."""

from __future__ import annotations

import re
import time

from stockbell.service.ids import new_id, new_ids


def test_ids_keep_their_shape_and_are_unique() -> None:
    many = new_ids("evt", 10_000) + [new_id("evt") for _ in range(1_000)]
    assert all(re.fullmatch(r"evt_[0-9a-f]{24}", i) for i in many)
    assert len(set(many)) == len(many)


def test_ids_sort_by_creation_time() -> None:
    """What makes them cheap to index: later ids sort after earlier ones (across calls at
    least a millisecond apart, and within one call)."""
    batch = new_ids("dlv", 1_000)
    assert batch == sorted(batch)
    earlier = new_id("dlv")
    time.sleep(0.002)
    later = new_id("dlv")
    assert earlier < later
    assert int(later[4:15], 16) - time.time_ns() // 1_000_000 <= 0  # milliseconds, not later
