"""Payload formats: pure functions event -> (extra headers, body), rendered at send time."""

from __future__ import annotations

from collections.abc import Callable

from stockbell.delivery.formats import commercelayer, native, sequenzy, square, ti
from stockbell.domain.events import Event
from stockbell.domain.webhooks import Endpoint

Renderer = Callable[[Event, Endpoint], tuple[dict[str, str], str]]

RENDERERS: dict[str, Renderer] = {"native": native.render, "ti": ti.render}
RENDERERS["square"] = square.render  # seed 001
RENDERERS["sequenzy"] = sequenzy.render  # seed 002
RENDERERS["commercelayer"] = commercelayer.render  # seed 003


def render(event: Event, endpoint: Endpoint) -> tuple[dict[str, str], str]:
    return RENDERERS[endpoint.format](event, endpoint)
