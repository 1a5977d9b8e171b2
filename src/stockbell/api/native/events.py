"""The event log, for receivers that reconcile."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from stockbell.api.auth import SecretTenant
from stockbell.api.native.common import Cursor, Limit, paging, render_page
from stockbell.api.problems import ERROR_RESPONSES
from stockbell.api.routing import Router
from stockbell.api.schemas import EventPage, Timestamp
from stockbell.api.state import app_state
from stockbell.service import events
from stockbell.service.views import event_view

router = Router(prefix="/v1", tags=["events"], responses=ERROR_RESPONSES)


@router.get("/events", response_model=EventPage, summary="List events, oldest first")
async def list_events(
    tenant: SecretTenant, request: Request,
    type: Annotated[str | None, Query(max_length=64)] = None,
    created_after: Timestamp | None = None, cursor: Cursor = None, limit: Limit = 50,
) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: events.list_events(uow, tenant, type, created_after, page_req))
    return render_page(page, event_view)
