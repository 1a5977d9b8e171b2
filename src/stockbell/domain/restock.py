"""The restock rule: a subscription fires when availability crosses its threshold upward.

`before < threshold <= after`, within one applied change. Because the rule depends only on
(before, after, threshold), the store finds the subscriptions to fire with a range query on
thresholds in (before, after]; nothing ever scans all subscriptions.
"""

from __future__ import annotations


def crossed(before: int, after: int, threshold: int) -> bool:
    return before < threshold <= after


def threshold_window(before: int, after: int) -> tuple[int, int] | None:
    """The half-open range (low, high] of thresholds this move crosses upward, if any."""
    if after <= before:
        return None
    return before, after
