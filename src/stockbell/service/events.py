"""Listing stored events so a receiver can reconcile what it was sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import InvalidInput
from stockbell.domain.events import ALL_TYPES, Event
from stockbell.domain.webhooks import ENDPOINT_DISABLED, ENDPOINT_RECOVERED, WEBHOOK_TEST
from stockbell.service.clock import as_utc
from stockbell.service.pagination import Page, PageRequest, make_page
from stockbell.service.ports import UnitOfWork


async def list_events(
    uow: UnitOfWork, tenant: Tenant, type_: str | None, created_after: datetime | None,
    page: PageRequest,
) -> Page[Event]:
    filters: dict[str, Any] = {}
    if type_ is not None:
        # The webhook operational events are stored in the same log and filterable too.
        if type_ not in (*ALL_TYPES, ENDPOINT_DISABLED, ENDPOINT_RECOVERED, WEBHOOK_TEST):
            raise InvalidInput(f"unknown event type {type_!r}", field="type")
        filters["type"] = type_
    if created_after is not None:
        filters["created_after"] = as_utc(created_after)
    rows = await uow.events.page(tenant, filters, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)
