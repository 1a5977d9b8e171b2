"""Webhook endpoints and the bookkeeping of delivery attempts."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import InvalidInput, NotFound
from stockbell.domain.events import ALL_TYPES, Event
from stockbell.domain.webhooks import (
    ENDPOINT_DISABLED,
    ENDPOINT_RECOVERED,
    FORMATS,
    WEBHOOK_TEST,
    AttemptResult,
    Delivery,
    DeliveryStatus,
    Endpoint,
    RetryPolicy,
    Verdict,
    judge,
    should_disable,
)
from stockbell.service.clock import as_utc, utcnow
from stockbell.service.ids import new_id
from stockbell.service.outbox import persist_events
from stockbell.service.pagination import Page, PageRequest, make_page
from stockbell.service.ports import UnitOfWork
from stockbell.service.views import iso

ROTATION_OVERLAP = timedelta(hours=24)
EVENT_TYPES = (*ALL_TYPES, ENDPOINT_DISABLED, ENDPOINT_RECOVERED, WEBHOOK_TEST)

_UNSET: Any = object()


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def endpoint_view(ep: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": ep.id, "url": ep.url, "description": ep.description,
        "event_types": ep.event_types, "enabled": ep.enabled, "format": ep.format,
        "disabled_reason": ep.disabled_reason, "failing_since": iso(ep.failing_since),
        "created_at": iso(ep.created_at), "updated_at": iso(ep.updated_at),
    }
    if with_secret:
        view["secret"] = ep.secret
    return view


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "endpoint_id": d.endpoint_id, "event_id": d.event_id,
        "event_type": d.event_type, "status": d.status.value, "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status is DeliveryStatus.PENDING
        else None,
        "last_status_code": d.last_status_code, "last_error": d.last_error,
        "created_at": iso(d.created_at), "updated_at": iso(d.updated_at),
        "attempt_log": [
            {"attempted_at": iso(a.attempted_at), "duration_ms": round(a.duration_ms, 3),
             "status_code": a.status_code, "error": a.error,
             "response_excerpt": a.response_excerpt}
            for a in d.attempt_log
        ],
    }


def _check(event_types: list[str] | None, fmt: str) -> None:
    if event_types is not None:
        unknown = [t for t in event_types if t not in EVENT_TYPES]
        if unknown:
            raise InvalidInput(f"unknown event type {unknown[0]!r}", field="event_types")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")


@dataclass(slots=True)
class EndpointPatch:
    url: Any = _UNSET
    description: Any = _UNSET
    event_types: Any = _UNSET
    enabled: Any = _UNSET
    format: Any = _UNSET


async def create_endpoint(uow: UnitOfWork, tenant: Tenant, url: str, description: str | None,
                          event_types: list[str] | None, enabled: bool, fmt: str) -> Endpoint:
    _check(event_types, fmt)
    now = utcnow()
    ep = Endpoint(id=new_id("we"), url=url, secret=new_secret(), format=fmt,
                  description=description, event_types=event_types, enabled=enabled,
                  created_at=now, updated_at=now)
    return await uow.webhooks.add(tenant, ep)


async def get_endpoint(uow: UnitOfWork, tenant: Tenant, endpoint_id: str,
                       for_update: bool = False, for_deliveries: bool = False) -> Endpoint:
    """`for_update` locks the row (PostgreSQL) for a read-modify-write, so a change here and
    the dispatcher's health bookkeeping never write back each other's stale copy.
    `for_deliveries` locks it as a transaction that queues deliveries to it must: one being
    deleted meanwhile is waited for and then not found (404). Without it, the deliveries'
    key check failed the transaction once the deletion committed."""
    ep = await uow.webhooks.get(tenant, endpoint_id, for_update, for_deliveries)
    if ep is None:
        raise NotFound(f"webhook endpoint {endpoint_id!r} does not exist")
    return ep


async def list_endpoints(uow: UnitOfWork, tenant: Tenant, page: PageRequest) -> Page[Endpoint]:
    rows = await uow.webhooks.page(tenant, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)


async def update_endpoint(uow: UnitOfWork, tenant: Tenant, endpoint_id: str,
                          patch: EndpointPatch) -> Endpoint:
    ep = await get_endpoint(uow, tenant, endpoint_id, for_update=True)
    for name in ("url", "description", "event_types", "format"):
        value = getattr(patch, name)
        if value is not _UNSET:
            setattr(ep, name, value)
    if patch.enabled is not _UNSET and patch.enabled != ep.enabled:
        ep.enabled = bool(patch.enabled)
        if ep.enabled:
            ep.disabled_reason = None
            ep.failing_since = None
        else:
            ep.disabled_reason = "disabled by the merchant"
    _check(ep.event_types, ep.format)
    ep.updated_at = utcnow()
    await uow.webhooks.update(ep)
    return ep


async def delete_endpoint(uow: UnitOfWork, tenant: Tenant, endpoint_id: str) -> None:
    await uow.webhooks.delete(await get_endpoint(uow, tenant, endpoint_id, for_update=True))


async def rotate_secret(uow: UnitOfWork, tenant: Tenant, endpoint_id: str) -> Endpoint:
    """New secret now; the old one keeps signing alongside for 24 hours."""
    ep = await get_endpoint(uow, tenant, endpoint_id, for_update=True)
    now = utcnow()
    ep.previous_secret, ep.previous_secret_expires_at = ep.secret, now + ROTATION_OVERLAP
    ep.secret = new_secret()
    ep.updated_at = now
    await uow.webhooks.update(ep)
    return ep


async def replay(uow: UnitOfWork, tenant: Tenant, endpoint_id: str, since: datetime) -> int:
    ep = await get_endpoint(uow, tenant, endpoint_id, for_deliveries=True)
    return await uow.deliveries.replay(tenant, ep, as_utc(since), utcnow())


async def retry_delivery(uow: UnitOfWork, tenant: Tenant, delivery_id: str) -> Delivery:
    if not await uow.deliveries.retry(tenant, delivery_id, utcnow()):
        raise NotFound(f"delivery {delivery_id!r} does not exist")
    return await get_delivery(uow, tenant, delivery_id)


async def get_delivery(uow: UnitOfWork, tenant: Tenant, delivery_id: str) -> Delivery:
    found = await uow.deliveries.get(tenant, delivery_id)
    if found is None:
        raise NotFound(f"delivery {delivery_id!r} does not exist")
    return found


async def list_deliveries(uow: UnitOfWork, tenant: Tenant, endpoint_id: str,
                          status: str | None, page: PageRequest) -> Page[Delivery]:
    ep = await get_endpoint(uow, tenant, endpoint_id)
    try:
        wanted = DeliveryStatus(status) if status is not None else None
    except ValueError:
        raise InvalidInput(f"unknown status {status!r}", field="status") from None
    rows = await uow.deliveries.page(tenant, ep, wanted, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)


async def create_test_delivery(uow: UnitOfWork, tenant: Tenant,
                               endpoint_id: str) -> tuple[Endpoint, Event, int, str]:
    """A webhook.test event with a delivery to this endpoint only, sent by the caller now."""
    ep = await get_endpoint(uow, tenant, endpoint_id, for_deliveries=True)
    now = utcnow()
    event = Event(WEBHOOK_TEST, now, {"endpoint_id": ep.id, "message": "Stockbell test event"})
    await uow.events.add_many(tenant, [event])
    assert event.id is not None
    assert ep.pk is not None
    [(pk, delivery_id)] = await uow.deliveries.add_many(tenant, [(event.id, ep.pk)], now,
                                                        status=DeliveryStatus.FAILED)
    return ep, event, pk, delivery_id


async def record_results(uow: UnitOfWork, results: list[AttemptResult], policy: RetryPolicy,
                         disable_after: timedelta, *, final: bool = False) -> datetime | None:
    """Store attempts, settle or reschedule each delivery, and track endpoint health:
    410 disables at once; failures for longer than `disable_after` disable with an
    `endpoint.disabled` event; the first success after failures emits `endpoint.recovered`.
    Returns the earliest rescheduled attempt, so the dispatcher can wake for it."""
    now = utcnow()
    endpoints = await uow.webhooks.by_pks(r.endpoint_pk for r in results)
    # An endpoint deleted while its deliveries were in flight took them with it: their
    # results have nothing left to land on, and writing them would fail the attempts' key
    # and with it every other endpoint's results in this batch. The endpoints found are
    # locked now, so their deliveries stay until this commits.
    results = [r for r in results if r.endpoint_pk in endpoints]
    await uow.deliveries.add_attempts([(r.delivery_pk, r.attempt) for r in results])
    updates = []
    health: dict[int, Verdict] = {}
    for r in results:
        verdict = judge(r.attempt.status_code)
        made = r.attempts_before + 1
        if verdict is Verdict.SUCCESS:
            status, nxt = DeliveryStatus.SUCCEEDED, None
        else:
            delay = None if (final or verdict is Verdict.GONE) else policy.next_delay(
                made, r.retry_after)
            status = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
            nxt = None if delay is None else now + timedelta(seconds=delay)
        updates.append((r.delivery_pk, status, made, nxt, r.attempt.status_code,
                        r.attempt.error, r.lease_until))
        # An endpoint's health follows its latest outcome in this batch; GONE sticks.
        if health.get(r.endpoint_pk) is not Verdict.GONE:
            health[r.endpoint_pk] = verdict
    await uow.deliveries.settle(updates, now)
    for pk, verdict in health.items():  # only endpoints still there (filtered above)
        tenant, ep = endpoints[pk]
        await _track_health(uow, tenant, ep, verdict, disable_after, now)
    return min((u[3] for u in updates if u[3] is not None), default=None)


async def _track_health(uow: UnitOfWork, tenant: Tenant, ep: Endpoint, verdict: Verdict,
                        disable_after: timedelta, now: datetime) -> None:
    kind: str | None = None
    if verdict is Verdict.SUCCESS:
        if ep.failing_since is None:
            return
        ep.failing_since = None
        kind = ENDPOINT_RECOVERED
    elif not ep.enabled:
        return
    elif verdict is Verdict.GONE:
        ep.enabled, ep.disabled_reason = False, "the receiver answered 410 Gone"
        kind = ENDPOINT_DISABLED
    elif ep.failing_since is None:
        ep.failing_since = now
    elif should_disable(ep.failing_since, now, disable_after):
        ep.enabled = False
        ep.disabled_reason = f"deliveries failed since {iso(ep.failing_since)}"
        kind = ENDPOINT_DISABLED
    ep.updated_at = now
    await uow.webhooks.update(ep)
    if kind is not None:
        data = {"endpoint_id": ep.id, "url": ep.url, "reason": ep.disabled_reason}
        await persist_events(uow, tenant, [Event(kind, now, data)])
