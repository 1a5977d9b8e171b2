"""The dispatcher's plain-integer histogram is exposed exactly as prometheus_client's own."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stockbell.delivery.metrics import PlainHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)


def _exposed(collector: object) -> str:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    # the creation time is the only thing that may differ
    return re.sub(r"(_created) \S+", r"\1 T", generate_latest(registry).decode())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(BUCKETS),  # exactly on a bound: `le` counts it
                          st.floats(min_value=0, max_value=30, allow_nan=False)),
                max_size=40))
def test_plain_histogram_exposes_what_prometheus_clients_histogram_does(
        seconds: list[float]) -> None:
    ours = PlainHistogram("t_attempt_seconds", "Duration", BUCKETS)
    registry = CollectorRegistry()
    theirs = Histogram("t_attempt_seconds", "Duration", buckets=BUCKETS, registry=registry)
    for s in seconds:
        ours.observe(s)
        theirs.observe(s)
    assert _exposed(ours) == re.sub(r"(_created) \S+", r"\1 T",
                                    generate_latest(registry).decode())
    assert f't_attempt_seconds_count {float(len(seconds))}' in _exposed(ours)
