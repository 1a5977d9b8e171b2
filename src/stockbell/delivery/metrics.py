"""Prometheus metrics of the delivery pipeline."""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from stockbell.domain.webhooks import Verdict

_NO_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "false").lower() in (
    "true", "1", "t")


class PlainHistogram(Collector):
    """A histogram counted in plain integers by its one writer, the event loop's thread, and
    exposed like prometheus_client's own `Histogram` (same name, buckets and series).
    `Histogram.observe` takes two locks and walks the buckets on every attempt, ~3 us of
    the dispatcher's ~130 per delivery (performance.md, twelfth session). A scrape from
    another thread reads a copy and may miss an attempt counted meanwhile, never more."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [*sorted(buckets), float("inf")]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # `le`: the first bound >= it
        self.sum += amount

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total, cumulative = list(self.counts), self.sum, 0
        buckets = []
        for bound, n in zip(self.bounds, counts, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                       sum_value=total)
        if not _NO_CREATED:  # as prometheus_client's own metrics do
            family.add_sample(f"{self.name}_created", {}, self.created)
        yield family


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))

DELIVERIES = Counter(
    "stockbell_delivery_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
ATTEMPT_SECONDS = PlainHistogram(
    "stockbell_delivery_attempt_seconds", "Duration of one webhook HTTP attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
REGISTRY.register(ATTEMPT_SECONDS)
HANDED_OFF = Counter(
    "stockbell_deliveries_handed_off_total",
    "Deliveries leased to this process's dispatcher by the transaction that queued them (SQLite)",
)
QUEUE_DEPTH = Gauge("stockbell_delivery_queue_depth", "Deliveries due now and not yet sent")
OLDEST_PENDING = Gauge(
    "stockbell_delivery_oldest_pending_seconds", "Age of the oldest due delivery (0: none)"
)

# One child per outcome, looked up once: `labels()` on every attempt costs a lock and a dict.
OUTCOMES = {v: DELIVERIES.labels(v.value) for v in Verdict}
