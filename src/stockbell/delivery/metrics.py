"""Prometheus metrics of the delivery pipeline."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from stockbell.domain.webhooks import Verdict

DELIVERIES = Counter(
    "stockbell_delivery_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "stockbell_delivery_attempt_seconds", "Duration of one webhook HTTP attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
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
