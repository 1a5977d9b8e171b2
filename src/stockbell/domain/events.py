"""Events are plain records the rules append while they work; the service persists them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

INVENTORY_COUNT_UPDATED = "inventory.count.updated"
BACK_IN_STOCK = "back_in_stock"
BACK_IN_STOCK_REQUESTED = "back_in_stock.requested"
SUBSCRIPTION_CREATED = "subscription.created"
SUBSCRIPTION_UPDATED = "subscription.updated"
SUBSCRIPTION_EXPIRED = "subscription.expired"
SUBSCRIPTION_CANCELLED = "subscription.cancelled"

ALL_TYPES = (
    INVENTORY_COUNT_UPDATED,
    BACK_IN_STOCK,
    BACK_IN_STOCK_REQUESTED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_EXPIRED,
    SUBSCRIPTION_CANCELLED,
)


_NO_DATA: dict[str, Any] = {}  # replaced at once by `Event.stored`; never read or changed


class Event:
    """One observable fact. `data` is its JSON payload; an event read back from the store to
    be sent keeps that payload as the stored text until something reads `data` (see
    `stored`): the native format embeds the text as it is, so most deliveries never decode
    their event's payload only to encode it again. (A plain class, not a dataclass, because
    `data` is that property.)"""

    __slots__ = (
        "_data",
        "_decode",
        "_text",
        "created_at",
        "extra",
        "id",
        "item_id",
        "occurred_at",
        "pk",
        "sequence",
        "type",
    )

    def __init__(self, type: str, occurred_at: datetime, data: dict[str, Any],
                 item_id: int | None = None, sequence: int | None = None,
                 id: str | None = None, created_at: datetime | None = None,
                 pk: int | None = None, extra: dict[str, Any] | None = None) -> None:
        self.type = type
        self.occurred_at = occurred_at
        self._data: dict[str, Any] | None = data
        self._text: str | None = None
        self._decode: Callable[[str], Any] | None = None
        self.item_id = item_id
        self.sequence = sequence  # per-item, assigned when persisted
        self.id = id
        self.created_at = created_at
        self.pk = pk
        self.extra = {} if extra is None else extra

    @classmethod
    def stored(cls, type: str, occurred_at: datetime, text: str,
               decode: Callable[[str], Any], *, item_id: int | None = None,
               sequence: int | None = None, id: str | None = None,
               created_at: datetime | None = None, pk: int | None = None) -> Event:
        """An event as the store holds it: `text` is its payload's stored JSON, read with
        `decode` the first time `data` is used. (The fields are named, not passed on as
        `**fields`: a claim builds one of these for every delivery.)"""
        event = cls(type, occurred_at, _NO_DATA, item_id, sequence, id, created_at, pk)
        event._data, event._text, event._decode = None, text, decode
        return event

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            assert self._text is not None
            assert self._decode is not None
            self._data = self._decode(self._text)
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data, self._text = value, None

    @property
    def stored_text(self) -> str | None:
        """The payload's JSON text as stored, while `data` has not been read (after that,
        `data` may have been changed, and is the truth)."""
        return self._text if self._data is None else None

    def _fields(self) -> tuple[Any, ...]:
        return (self.type, self.occurred_at, self.data, self.item_id, self.sequence, self.id,
                self.created_at, self.pk, self.extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable: compared by value, not hashable

    def __repr__(self) -> str:
        # The stored text while not decoded: printing an event must not change how it is sent.
        data = self._text if self._data is None else self._data
        return (f"Event(type={self.type!r}, occurred_at={self.occurred_at!r}, "
                f"data={data!r}, item_id={self.item_id!r}, sequence={self.sequence!r}, "
                f"id={self.id!r}, created_at={self.created_at!r}, pk={self.pk!r})")
