"""Items (the unit of stock), locations and markets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PriceBreak:
    quantity: int
    price: str


@dataclass(frozen=True, slots=True)
class Pricing:
    currency: str
    price_breaks: tuple[PriceBreak, ...] = ()


@dataclass(slots=True)
class Item:
    sku_code: str
    id: int | None = None
    public_id: str | None = None
    title: str | None = None
    variant_title: str | None = None
    upc: str | None = None
    product_id: str | None = None
    variant_id: str | None = None
    size: str | None = None
    width: str | None = None
    part_number: str | None = None
    generic_part_number: str | None = None
    pricing: list[dict[str, Any]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ItemRef:
    """What applying stock changes needs of an item: its key and its names. A change's
    event names the item; only a fired subscription's event carries the whole item, so the
    whole row (two JSON columns, two times) is read for those alone."""

    id: int
    public_id: str
    sku_code: str


@dataclass(slots=True)
class Location:
    code: str
    id: int | None = None
    name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class Market:
    code: str
    id: int | None = None
    name: str | None = None
    location_codes: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
