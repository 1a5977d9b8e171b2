"""Payload formats: pure functions event -> (extra headers, body), rendered at send time."""

from __future__ import annotations

from collections.abc import Callable

from stockbell.delivery.formats import native
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint

Renderer = Callable[[Event, Endpoint], tuple[dict[str, str], str]]

RENDERERS: dict[str, Renderer] = {"native": native.render}


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    return RENDERERS[endpoint.format](event, endpoint)
