"""GET /metrics in the Prometheus text format, with fresh queue figures at each scrape."""

from __future__ import annotations

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stockbell.api.routing import Router
from stockbell.api.state import app_state
from stockbell.delivery import metrics
from stockbell.service.clock import utcnow

router = Router(tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Metrics"}})
async def get_metrics(request: Request) -> Response:
    depth, oldest = await app_state(request).db.read(
        lambda uow: uow.deliveries.queue_stats(utcnow()))
    metrics.QUEUE_DEPTH.set(depth)
    metrics.OLDEST_PENDING.set(oldest or 0.0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
