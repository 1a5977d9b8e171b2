"""A test delivery sent now, outside the queue, whose outcome the caller answers with
(the native `/test` route and TI's `.../inventory/test`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from stockbell.delivery.dispatcher import signed_request
from stockbell.delivery.sender import Sender
from stockbell.domain.accounts import Tenant
from stockbell.domain.webhooks import Attempt, AttemptResult, RetryPolicy
from stockbell.service import webhooks as webhooks_service
from stockbell.service.ports import Claimed
from stockbell.store.database import SqlDatabase


@dataclass(frozen=True, slots=True)
class TestSend:
    attempt: Attempt
    url: str
    event_id: str
    delivery_id: str


async def send_test(db: SqlDatabase, sender: Sender, disable_after: timedelta, tenant: Tenant,
                    endpoint_id: str) -> TestSend:
    """Record a webhook.test event with a delivery to this endpoint only, send it signed,
    and record the attempt (final: a test is never retried)."""
    ep, event, pk, delivery_id = await db.run(
        lambda uow: webhooks_service.create_test_delivery(uow, tenant, endpoint_id))
    assert event.id is not None
    assert ep.pk is not None
    headers, body = signed_request(Claimed(pk, delivery_id, 0, ep, event))
    attempt, _ = await sender.post(ep.url, headers, body)
    result = AttemptResult(pk, ep.pk, 0, attempt)
    await db.run(lambda uow: webhooks_service.record_results(
        uow, [result], RetryPolicy(), disable_after, final=True))
    return TestSend(attempt, ep.url, event.id, delivery_id)
