"""Webhook endpoints, deliveries and the rules of retrying them.

What counts as success, when to retry, when to give up or disable an endpoint: all decided
here from plain values, so the dispatcher only moves bytes.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

# Its own generator: jitter never draws from (or disturbs) the global `random` state.
_JITTER = random.Random()

DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_RETRY_AFTER = 3600.0
FORMATS = ("native", "ti", "square", "sequenzy", "commercelayer")

# The event types each payload format carries; None: every type. An endpoint never gets a
# delivery for an event its format cannot express (e.g. a Square endpoint only hears
# inventory.count.updated), decided when deliveries are created, not at send time.
FORMAT_EVENT_TYPES: dict[str, frozenset[str] | None] = {"native": None}
FORMAT_EVENT_TYPES["ti"] = frozenset({"back_in_stock", "webhook.test"})  # seed 000
FORMAT_EVENT_TYPES["square"] = frozenset({"inventory.count.updated"})  # seed 001
FORMAT_EVENT_TYPES["sequenzy"] = frozenset({"back_in_stock", "back_in_stock.requested"})  # 002
FORMAT_EVENT_TYPES["commercelayer"] = frozenset({  # seed 003
    "subscription.created", "subscription.updated", "back_in_stock", "subscription.cancelled"})
# Finer than the type: a format may carry only some events of a type, judged on the event's
# data. Commerce Layer has topics for activate and deactivate but none for a plain edit; a TI
# push answers a TI subscription, so subscriptions made through other surfaces don't push.
EventFilter = Callable[[str, Mapping[str, Any]], bool]


def _commercelayer(event_type: str, data: Mapping[str, Any]) -> bool:
    return event_type != "subscription.updated" or data.get("change") in (
        "activated", "deactivated")


def _ti(event_type: str, data: Mapping[str, Any]) -> bool:
    if event_type != "back_in_stock":
        return True
    subscription = data.get("subscription")
    return isinstance(subscription, dict) and subscription.get("reference_origin") == "ti"


FORMAT_FILTERS: dict[str, EventFilter] = {"commercelayer": _commercelayer, "ti": _ti}

ENDPOINT_DISABLED = "endpoint.disabled"
ENDPOINT_RECOVERED = "endpoint.recovered"
WEBHOOK_TEST = "webhook.test"
# Event types a replay leaves out: a test send pinged one endpoint once; it is not part of
# the stream a receiver reconciles from.
NOT_REPLAYED = frozenset({WEBHOOK_TEST})


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(slots=True)
class Endpoint:
    id: str
    url: str
    secret: str
    format: str = "native"
    description: str | None = None
    event_types: list[str] | None = None  # None: every event type
    enabled: bool = True
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    failing_since: datetime | None = None
    disabled_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    pk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def wants(self, event_type: str, data: Mapping[str, Any] | None = None) -> bool:
        """Its filter and its format both take this event (enabled or not)."""
        carried = FORMAT_EVENT_TYPES.get(self.format)
        keep = FORMAT_FILTERS.get(self.format)
        return ((self.event_types is None or event_type in self.event_types)
                and (carried is None or event_type in carried)
                and (keep is None or keep(event_type, data or {})))

    @property
    def filters_on_data(self) -> bool:
        """Whether `wants` reads an event's data (its format keeps some events of a type),
        so a replay knows whether to load it."""
        return self.format in FORMAT_FILTERS

    def accepts(self, event_type: str, data: Mapping[str, Any] | None = None) -> bool:
        return self.enabled and self.wants(event_type, data)

    def signing_secrets(self, now: datetime) -> list[str]:
        """During a rotation both secrets sign, so receivers can switch over without a gap."""
        secrets = [self.secret]
        if (self.previous_secret and self.previous_secret_expires_at is not None
                and self.previous_secret_expires_at > now):
            secrets.append(self.previous_secret)
        return secrets


class Verdict(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    GONE = "gone"  # 410: the receiver asks us to stop; disable the endpoint at once


def judge(status: int | None) -> Verdict:
    """2xx succeeds; 410 disables; everything else (3xx included, never followed) retries."""
    if status is not None and 200 <= status < 300:
        return Verdict.SUCCESS
    if status == 410:
        return Verdict.GONE
    return Verdict.RETRY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before attempt n+1 is schedule[n]; after len(schedule) attempts: failed."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.1

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)

    def next_delay(self, attempts_made: int, retry_after: float | None = None,
                   rng: random.Random | None = None) -> float | None:
        """Seconds until the next attempt, or None when the delivery has failed for good."""
        if attempts_made >= self.max_attempts:
            return None
        base = self.schedule[attempts_made]
        if retry_after is not None:
            base = max(base, min(retry_after, MAX_RETRY_AFTER))
        spread = (rng or _JITTER).uniform(0, self.jitter * base) if base else 0.0
        return base + spread

    @staticmethod
    def parse(text: str) -> RetryPolicy:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
        if not values or any(v < 0 for v in values):
            raise ValueError("retry schedule needs one or more non-negative seconds")
        return RetryPolicy(values)


def should_disable(failing_since: datetime | None, now: datetime, span: timedelta) -> bool:
    return failing_since is not None and now - failing_since >= span


# Loopback, private, link-local, CGNAT, cloud metadata, and other non-public ranges.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "255.255.255.255/32",
    "::/96",  # unspecified, loopback and the deprecated IPv4-compatible ::a.b.c.d
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "64:ff9b::/96", "64:ff9b:1::/48",
    "100::/64", "fd00:ec2::254/128",
))


def parse_allow_list(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",")
                 if p.strip())


def address_allowed(address: str, allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                 ...] = ()) -> bool:
    """False for addresses a webhook must not reach unless the operator allow-listed them."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside IPv6 (mapped, 6to4, Teredo) is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not address_allowed(str(embedded), allow):
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    if any(ip in net for net in allow):
        return True
    return not any(ip in net for net in BLOCKED_NETWORKS) and ip.is_global


@dataclass(slots=True)
class Attempt:
    attempted_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


@dataclass(slots=True)
class Delivery:
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    pk: int | None = None
    attempt_log: list[Attempt] = field(default_factory=list)


@dataclass(slots=True)
class AttemptResult:
    """What one HTTP attempt produced, as the dispatcher reports it back."""

    delivery_pk: int
    endpoint_pk: int
    attempts_before: int
    attempt: Attempt
    retry_after: float | None = None
    lease_until: datetime | None = None  # the claim it was sent under, if any
