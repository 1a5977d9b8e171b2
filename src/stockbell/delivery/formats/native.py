"""The native format: a Standard Webhooks envelope {type, timestamp, data} plus the event's id,
occurred_at and per-item sequence, so receivers can de-duplicate and drop stale notices."""

from __future__ import annotations

import json

from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint


def _iso(event: Event) -> str:
    assert event.created_at is not None
    return event.created_at.isoformat().replace("+00:00", "Z")


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    body = {
        "id": event.id,
        "type": event.type,
        "timestamp": _iso(event),
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "sequence": event.sequence,
        "data": event.data,
    }
    return {"content-type": "application/json"}, json.dumps(body, separators=(",", ":"))
