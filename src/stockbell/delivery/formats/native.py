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


def embeds_as_is(text: str) -> bool:
    """Whether a payload's stored JSON text is exactly what `dumps` writes for the value it
    holds, so it can be sent without decoding and encoding it again. Payloads are stored by
    `store.types.json_text`: orjson's text, or, for what orjson cannot write, json.dumps's
    with its default ", " and ": " separators. An object's text without ": " is therefore
    orjson's own, which reads back to the same value and writes back to the same text (no
    integers beyond 64 bits, NaN or lone surrogates: orjson writes none of them). Over that
    text `dumps` keeps orjson's output unless it holds what json.dumps writes differently:
    the checks below are its own."""
    return (text.startswith("{") and ": " not in text and text.isascii()
            and "\x7f" not in text and "e-" not in text and "0.0000" not in text)


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    head: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "timestamp": _iso(event.created_at),
        "occurred_at": _iso(event.occurred_at),
        "sequence": event.sequence,
    }
    text = event.stored_text
    if text is not None and embeds_as_is(text):
        # json.dumps writes keys in order, "data" last: the envelope's text up to its
        # closing brace, then the payload's.
        return _HEADERS.copy(), f'{dumps(head)[:-1]},"data":{text}}}'
    head["data"] = event.data
    return _HEADERS.copy(), dumps(head)


_HEADERS = {"content-type": "application/json"}
