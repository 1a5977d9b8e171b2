"""Back-in-stock subscriptions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request

from stockbell.api.auth import AnyTenant, SecretTenant
from stockbell.api.native.common import Cursor, Limit, paging, render_page
from stockbell.api.problems import ERROR_RESPONSES
from stockbell.api.routing import Router
from stockbell.api.schemas import (
    CustomerIn,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionPatchIn,
)
from stockbell.api.state import app_state
from stockbell.domain.subscription import Customer
from stockbell.service import subscriptions as subs
from stockbell.service.views import subscription_view

router = Router(prefix="/v1", tags=["subscriptions"], responses=ERROR_RESPONSES)
SubId = Annotated[str, Path(min_length=1, max_length=40)]


def _customer(c: CustomerIn | None) -> Customer:
    if c is None:
        return Customer()
    return Customer(c.email, c.external_id, c.first_name, c.last_name, c.attributes)


@router.post("/subscriptions", status_code=201, response_model=SubscriptionOut,
             summary="Subscribe to an item coming back in stock")
async def create(body: SubscriptionIn, tenant: AnyTenant, request: Request) -> dict[str, Any]:
    """Fires when availability in the scope (a location, a market, or all locations) crosses
    the threshold upward. Publishable keys may call this route and no other."""
    inp = subs.SubscriptionInput(
        sku_code=body.sku_code, location=body.location, market=body.market,
        threshold=str(body.threshold), customer=_customer(body.customer),
        auto_resubscribe=body.auto_resubscribe, expires_at=body.expires_at,
        reference=body.reference, reference_origin=body.reference_origin,
        metadata=body.metadata,
    )
    sub = await app_state(request).db.run(lambda uow: subs.subscribe(uow, tenant, inp))
    return subscription_view(sub)


@router.get("/subscriptions", response_model=SubscriptionPage, summary="List subscriptions")
async def list_(tenant: SecretTenant, request: Request,
                status: Annotated[str | None, Query(max_length=20)] = None,
                sku_code: Annotated[str | None, Query(max_length=200)] = None,
                cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: subs.list_subscriptions(uow, tenant, status, sku_code, page_req))
    return render_page(page, subscription_view)


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionOut,
            summary="Get a subscription")
async def get(sub_id: SubId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    sub = await app_state(request).db.read(lambda uow: subs.get(uow, tenant, sub_id))
    return subscription_view(sub)


@router.patch("/subscriptions/{sub_id}", response_model=SubscriptionOut,
              summary="Change a subscription's threshold, customer, expiry or references")
async def patch(sub_id: SubId, body: SubscriptionPatchIn, tenant: SecretTenant,
                request: Request) -> dict[str, Any]:
    patch = subs.SubscriptionPatch()
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name == "customer":
            value = _customer(value)
        elif name == "threshold":
            if value is None:
                continue
            value = str(value)
        setattr(patch, name, value)
    sub = await app_state(request).db.run(lambda uow: subs.update(uow, tenant, sub_id, patch))
    return subscription_view(sub)


@router.delete("/subscriptions/{sub_id}", response_model=SubscriptionOut,
               summary="Cancel a subscription (it stays listable as cancelled)")
async def delete(sub_id: SubId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    sub = await app_state(request).db.run(lambda uow: subs.cancel(uow, tenant, sub_id))
    return subscription_view(sub)


@router.post("/subscriptions/{sub_id}/activate", response_model=SubscriptionOut,
             summary="Make a subscription active again")
async def activate(sub_id: SubId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    sub = await app_state(request).db.run(lambda uow: subs.activate(uow, tenant, sub_id))
    return subscription_view(sub)


@router.post("/subscriptions/{sub_id}/deactivate", response_model=SubscriptionOut,
             summary="Pause a subscription")
async def deactivate(sub_id: SubId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    sub = await app_state(request).db.run(lambda uow: subs.deactivate(uow, tenant, sub_id))
    return subscription_view(sub)
