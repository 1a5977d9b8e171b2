"""The native format: a Standard Webhooks envelope {type, timestamp, data} plus the event's id,
occurred_at and per-item sequence, so receivers can de-duplicate and drop stale notices."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint
from stockbell.service.views import iso


def _iso(when: datetime | None) -> str:
    text = iso(when)  # memoised: a fan-out's events share their instants
    assert text is not None
    return text


def dumps(value: Any) -> str:
    """The very text of `json.dumps(value, separators=(",", ":"))`, at orjson's speed
    (every delivery renders one). orjson writes some things differently: non-ASCII as UTF-8,
    DEL unescaped, and numbers below 1e-4 (`0.000025` or `1e-7` for `2.5e-05` and `1e-07`;
    every other float reads the same), and cannot write integers beyond 64 bits. Text that
    may hold any of these (a string with "e-" in it, too) is written by json.dumps. The one
    difference left is NaN and infinities, which are not JSON: null here, as the store
    writes them (`store.types.json_text`), where json.dumps writes NaN and Infinity."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        text = ""
    if not text or not text.isascii() or "\x7f" in text or "e-" in text or "0.0000" in text:
        return json.dumps(value, separators=(",", ":"))
    return text


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    body = {
        "id": event.id,
        "type": event.type,
        "timestamp": _iso(event.created_at),
        "occurred_at": _iso(event.occurred_at),
        "sequence": event.sequence,
        "data": event.data,
    }
    return {"content-type": "application/json"}, dumps(body)
