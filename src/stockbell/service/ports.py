"""What the use cases need from storage, as protocols the store implements.

The service layer never imports the store: the API wires a concrete unit of work in.
Repositories never commit; only the unit of work does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from stockbell.domain.accounts import ApiKey, Mode, Tenant
from stockbell.domain.catalog import Item, ItemRef, Location, Market
from stockbell.domain.events import Event
from stockbell.domain.stock import AvailabilityKey, Outcome, StockKey, StockLedger
from stockbell.domain.subscription import Candidate, Customer, Status, Subscription
from stockbell.domain.webhooks import Attempt, Delivery, DeliveryStatus, Endpoint
from stockbell.service.pagination import PageRequest

T = TypeVar("T")


class AccountsRepo(Protocol):
    async def create_account(self, name: str, now: datetime) -> int: ...
    async def account_id(self, name: str) -> int | None: ...
    async def create_key(
        self, account_id: int, mode: Mode, client_id: str, secret_hash: str,
        publishable: bool, now: datetime,
    ) -> ApiKey: ...
    async def key_by_client_id(self, client_id: str) -> ApiKey | None: ...
    async def key_by_secret_hash(self, secret_hash: str) -> ApiKey | None: ...
    async def signing_secret(self, candidate: str) -> str: ...


class CatalogRepo(Protocol):
    async def upsert_item(self, tenant: Tenant, item: Item, now: datetime) -> Item: ...
    async def get_item(self, tenant: Tenant, sku_code: str) -> Item | None: ...
    async def item_refs_by_sku(self, tenant: Tenant, sku_codes: Iterable[str], *,
                               lock: bool = False) -> dict[str, ItemRef]: ...
    async def items_by_id(self, tenant: Tenant, item_ids: Iterable[int]) -> dict[int, Item]: ...
    async def list_items(
        self, tenant: Tenant, filters: dict[str, str], page: PageRequest
    ) -> list[tuple[int, Item]]: ...
    async def upsert_location(self, tenant: Tenant, loc: Location, now: datetime) -> Location: ...
    async def locations_by_code(
        self, tenant: Tenant, codes: Iterable[str]
    ) -> dict[str, Location]: ...
    async def list_locations(
        self, tenant: Tenant, page: PageRequest
    ) -> list[tuple[int, Location]]: ...
    async def upsert_market(
        self, tenant: Tenant, market: Market, location_ids: list[int], now: datetime
    ) -> Market: ...
    async def lock_membership(self, tenant: Tenant) -> None: ...
    async def get_market(self, tenant: Tenant, code: str) -> Market | None: ...
    async def list_markets(self, tenant: Tenant, page: PageRequest) -> list[tuple[int, Market]]: ...
    async def locations_with_markets(
        self, tenant: Tenant, codes: Iterable[str]
    ) -> tuple[dict[str, Location], dict[int, frozenset[int]]]: ...
    async def locked_refs_and_locations(
        self, tenant: Tenant, sku_codes: Iterable[str], location_codes: Iterable[str]
    ) -> tuple[dict[str, ItemRef], dict[str, Location], dict[int, frozenset[int]]]: ...
    async def scope_codes(
        self, location_ids: Iterable[int], market_ids: Iterable[int]
    ) -> dict[str, str]: ...
    async def lock_items(self, item_ids: Sequence[int]) -> None: ...
    async def bump_sequences(self, counts: dict[int, int]) -> dict[int, int]: ...


@dataclass(frozen=True, slots=True)
class ItemStock:
    """One item's stock as `GET /v1/inventory/{sku}` shows it, read in one statement."""

    sku_code: str
    # (location id, its code or None if gone, state, quantity), by location id and state
    stock: list[tuple[int, str | None, str, int]]
    # (scope key, its location's or market's code or None, quantity)
    availability: list[tuple[str, str | None, int]]


class StockRepo(Protocol):
    async def load(
        self, stock_keys: Iterable[StockKey], availability_keys: Iterable[AvailabilityKey]
    ) -> StockLedger: ...
    async def save(self, tenant: Tenant, ledger: StockLedger, outcomes: Sequence[Outcome],
                   now: datetime) -> None: ...
    async def item_stock(self, tenant: Tenant, sku_code: str) -> ItemStock | None: ...
    async def availability(self, item_id: int, scope_key: str) -> int: ...
    async def rebuild_market(self, tenant: Tenant, market_id: int) -> None: ...
    async def purge_before(
        self, cutoff: datetime, after: int, limit: int
    ) -> tuple[int, int | None]: ...


class SubscriptionsRepo(Protocol):
    async def add(self, tenant: Tenant, sub: Subscription) -> Subscription: ...
    async def get(self, tenant: Tenant, sub_id: str) -> Subscription | None: ...
    async def active_by_reference(
        self, tenant: Tenant, item_id: int, origin: str, reference: str
    ) -> list[Subscription]: ...
    async def page(
        self, tenant: Tenant, filters: dict[str, Any], page: PageRequest
    ) -> list[tuple[int, Subscription]]: ...
    async def search(
        self, tenant: Tenant, where: Sequence[Sequence[tuple[str, str, Any]]],
        order: Sequence[tuple[str, bool]], offset: int, limit: int,
    ) -> tuple[int, list[Subscription]]: ...
    async def update(self, sub: Subscription) -> None: ...
    async def candidates(self, windows: Sequence[tuple[int, str, int, int]]) -> list[Candidate]: ...
    async def by_pks(self, pks: Sequence[int]) -> dict[int, Subscription]: ...
    async def set_statuses(
        self, changes: Sequence[tuple[int, Status, bool]], now: datetime
    ) -> None: ...
    async def due_to_expire(
        self, now: datetime, limit: int
    ) -> list[tuple[Tenant, Subscription]]: ...


@dataclass(frozen=True, slots=True)
class FiredScene:
    """What every back_in_stock event of one availability move shares: the views of its
    item and scope (`service.views`), the availability before and after and the time of
    notification, as text."""

    item_id: int
    sku_code: str
    scope: dict[str, Any]
    item: dict[str, Any]
    availability: str
    previous_availability: str
    notified_at: str
    occurred_at: datetime


# One back_in_stock event of a FiredScene, its data rendered by the database from the
# subscription's row: (event id, sequence, subscription pk, status after firing,
# notify_count after firing, threshold as text).
FiredRow = tuple[str, int, int, str, int, str]


class EventsRepo(Protocol):
    async def add_many(self, tenant: Tenant, events: Sequence[Event]) -> None: ...
    async def add_back_in_stock(self, tenant: Tenant, scene: FiredScene,
                                rows: Sequence[FiredRow], now: datetime) -> None: ...
    async def page(
        self, tenant: Tenant, filters: dict[str, Any], page: PageRequest
    ) -> list[tuple[int, Event]]: ...
    async def purge_before(
        self, cutoff: datetime, after: int, limit: int
    ) -> tuple[int, int | None]: ...


class IdempotencyRepo(Protocol):
    async def get(self, tenant: Tenant, key: str) -> tuple[str, int, dict[str, Any]] | None: ...
    async def put(
        self, tenant: Tenant, key: str, request_hash: str, status: int,
        body: dict[str, Any], now: datetime,
    ) -> None: ...
    async def purge_before(self, cutoff: datetime, limit: int) -> int: ...


class WebhooksRepo(Protocol):
    async def add(self, tenant: Tenant, endpoint: Endpoint) -> Endpoint: ...
    async def get(
        self, tenant: Tenant, endpoint_id: str, for_update: bool = False,
        for_deliveries: bool = False,
    ) -> Endpoint | None: ...
    async def by_pks(self, pks: Iterable[int]) -> dict[int, tuple[Tenant, Endpoint]]: ...
    async def page(self, tenant: Tenant, page: PageRequest) -> list[tuple[int, Endpoint]]: ...
    async def update(self, endpoint: Endpoint) -> None: ...
    async def delete(self, endpoint: Endpoint) -> None: ...
    async def enabled(self, tenant: Tenant) -> list[Endpoint]: ...


@dataclass(slots=True)
class Claimed:
    """A due delivery leased to one dispatcher, with what it needs to send it. (Not frozen:
    a frozen dataclass sets each field through object.__setattr__, ~0.5 us more for every
    delivery claimed.)"""

    pk: int
    id: str
    attempts: int
    endpoint: Endpoint
    event: Event
    lease_until: datetime | None = None


# (pk, status, attempts, next_attempt_at, last_status_code, last_error, lease it was sent under)
Settlement = tuple[int, DeliveryStatus, int, datetime | None, int | None, str | None,
                   datetime | None]


class DeliveriesRepo(Protocol):
    async def add_many(
        self, tenant: Tenant, pairs: Sequence[tuple[str, int]], now: datetime,
        status: DeliveryStatus = DeliveryStatus.PENDING,
    ) -> list[tuple[int, str]]: ...
    async def queue(
        self, tenant: Tenant, pairs: Sequence[tuple[str, int]], now: datetime
    ) -> None: ...
    async def replay(
        self, tenant: Tenant, endpoint: Endpoint, since: datetime, now: datetime
    ) -> int: ...
    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]: ...
    async def add_attempts(self, rows: Sequence[tuple[int, Attempt]]) -> None: ...
    async def settle(self, updates: Sequence[Settlement], now: datetime) -> None: ...
    async def get(self, tenant: Tenant, delivery_id: str) -> Delivery | None: ...
    async def page(
        self, tenant: Tenant, endpoint: Endpoint, status: DeliveryStatus | None,
        page: PageRequest,
    ) -> list[tuple[int, Delivery]]: ...
    async def retry(self, tenant: Tenant, delivery_id: str, now: datetime) -> bool: ...
    async def queue_stats(self, now: datetime) -> tuple[int, float | None]: ...
    async def purge_before(
        self, cutoff: datetime, after: int, limit: int
    ) -> tuple[int, int | None]: ...


class CustomersRepo(Protocol):
    async def ensure(
        self, tenant: Tenant, customer: Customer, new_id: str, now: datetime
    ) -> tuple[str, bool]: ...
    async def by_email(self, tenant: Tenant, email: str) -> tuple[str, Customer] | None: ...
    async def get(self, tenant: Tenant, customer_id: str) -> tuple[str, Customer] | None: ...


class UnitOfWork(Protocol):
    @property
    def accounts(self) -> AccountsRepo: ...
    @property
    def catalog(self) -> CatalogRepo: ...
    @property
    def stock(self) -> StockRepo: ...
    @property
    def subscriptions(self) -> SubscriptionsRepo: ...
    @property
    def events(self) -> EventsRepo: ...
    @property
    def idempotency(self) -> IdempotencyRepo: ...
    @property
    def webhooks(self) -> WebhooksRepo: ...
    @property
    def deliveries(self) -> DeliveriesRepo: ...
    @property
    def customers(self) -> CustomersRepo: ...
    def combined_writes(self) -> AbstractAsyncContextManager[None]:
        """A scope whose writes may be kept back and sent together with a later statement
        (fewer round trips on PostgreSQL); all are sent by its end. Inside it, only the
        repositories' bulk methods may run (see store/repos/bulk.py)."""
        ...


class Database(Protocol):
    """Runs a use case in one transaction; commits on success, retries a transient conflict."""

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T: ...

    async def read(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """`work` only reads: it need not wait for writers (SQLite) and may not write."""
        ...
