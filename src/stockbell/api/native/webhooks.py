"""Webhook endpoints, their deliveries, retries, replays and the test send."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request

from stockbell.api.auth import SecretTenant
from stockbell.api.native.common import Cursor, Limit, paging, render_page
from stockbell.api.problems import ERROR_RESPONSES
from stockbell.api.routing import Router
from stockbell.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    EndpointIn,
    EndpointOut,
    EndpointPage,
    EndpointPatchIn,
    EndpointWithSecret,
    ReplayIn,
    ReplayOut,
    TestOut,
)
from stockbell.api.state import app_state
from stockbell.delivery.ssrf import check_resolves_public, check_url
from stockbell.delivery.test_send import send_test
from stockbell.domain.errors import Unreachable
from stockbell.domain.webhooks import parse_allow_list
from stockbell.service import webhooks as svc

router = Router(prefix="/v1", tags=["webhooks"], responses=ERROR_RESPONSES)
EndpointId = Annotated[str, Path(min_length=1, max_length=40)]


async def _check_target(request: Request, url: str) -> None:
    allow = parse_allow_list(app_state(request).settings.webhook_allow)
    check_url(url, allow)
    await check_resolves_public(url, allow)


@router.post("/webhook-endpoints", status_code=201, response_model=EndpointWithSecret,
             summary="Register a webhook endpoint (its secret is shown only here)")
async def create(body: EndpointIn, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    await _check_target(request, body.url)
    ep = await app_state(request).db.run(lambda uow: svc.create_endpoint(
        uow, tenant, body.url, body.description, body.event_types, body.enabled, body.format))
    return svc.endpoint_view(ep, with_secret=True)


@router.get("/webhook-endpoints", response_model=EndpointPage, summary="List endpoints")
async def list_(tenant: SecretTenant, request: Request, cursor: Cursor = None,
                limit: Limit = 50) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: svc.list_endpoints(uow, tenant, page_req))
    return render_page(page, svc.endpoint_view)


@router.get("/webhook-endpoints/{endpoint_id}", response_model=EndpointOut,
            summary="Get an endpoint")
async def get(endpoint_id: EndpointId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    ep = await app_state(request).db.read(lambda uow: svc.get_endpoint(uow, tenant, endpoint_id))
    return svc.endpoint_view(ep)


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=EndpointOut,
              summary="Change an endpoint (re-enabling clears its failure state)")
async def patch(endpoint_id: EndpointId, body: EndpointPatchIn, tenant: SecretTenant,
                request: Request) -> dict[str, Any]:
    p = svc.EndpointPatch()
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in ("url", "enabled", "format"):
            continue
        setattr(p, name, value)
    if body.url is not None:
        await _check_target(request, body.url)
    ep = await app_state(request).db.run(
        lambda uow: svc.update_endpoint(uow, tenant, endpoint_id, p))
    return svc.endpoint_view(ep)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204,
               summary="Delete an endpoint and its deliveries")
async def delete(endpoint_id: EndpointId, tenant: SecretTenant, request: Request) -> None:
    await app_state(request).db.run(lambda uow: svc.delete_endpoint(uow, tenant, endpoint_id))


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret",
             response_model=EndpointWithSecret,
             summary="New secret; the old one keeps signing alongside for 24 hours")
async def rotate(endpoint_id: EndpointId, tenant: SecretTenant,
                 request: Request) -> dict[str, Any]:
    ep = await app_state(request).db.run(lambda uow: svc.rotate_secret(uow, tenant, endpoint_id))
    return svc.endpoint_view(ep, with_secret=True)


@router.get("/webhook-endpoints/{endpoint_id}/deliveries", response_model=DeliveryPage,
            summary="Deliveries to this endpoint, with their attempts")
async def deliveries(endpoint_id: EndpointId, tenant: SecretTenant, request: Request,
                     status: Annotated[str | None, Query(max_length=20)] = None,
                     cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: svc.list_deliveries(uow, tenant, endpoint_id, status, page_req))
    return render_page(page, svc.delivery_view)


@router.post("/webhook-endpoints/{endpoint_id}/replay", response_model=ReplayOut,
             summary="Queue again every event created since a time")
async def replay(endpoint_id: EndpointId, body: ReplayIn, tenant: SecretTenant,
                 request: Request) -> dict[str, Any]:
    n = await app_state(request).db.run(
        lambda uow: svc.replay(uow, tenant, endpoint_id, body.since))
    return {"queued": n}


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut,
            summary="A delivery and every attempt made")
async def get_delivery(delivery_id: EndpointId, tenant: SecretTenant,
                       request: Request) -> dict[str, Any]:
    d = await app_state(request).db.read(lambda uow: svc.get_delivery(uow, tenant, delivery_id))
    return svc.delivery_view(d)


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryOut,
             summary="Send a delivery again now (also a failed one)")
async def retry(delivery_id: EndpointId, tenant: SecretTenant,
                request: Request) -> dict[str, Any]:
    d = await app_state(request).db.run(
        lambda uow: svc.retry_delivery(uow, tenant, delivery_id))
    return svc.delivery_view(d)


@router.post("/webhook-endpoints/{endpoint_id}/test", response_model=TestOut,
             responses={502: ERROR_RESPONSES[422] | {"description": "Receiver unreachable"}},
             summary="Send a signed webhook.test event now; answers the receiver's status")
async def test(endpoint_id: EndpointId, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    state = app_state(request)
    sent = await send_test(state.db, state.sender, state.disable_after, tenant, endpoint_id)
    code = sent.attempt.status_code
    if code is None:
        raise Unreachable(f"could not reach {sent.url}: {sent.attempt.error}")
    return {"status_code": code, "ok": 200 <= code < 300,
            "duration_ms": round(sent.attempt.duration_ms, 3),
            "delivery_id": sent.delivery_id, "event_id": sent.event_id}
