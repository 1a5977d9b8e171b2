"""Items, locations and markets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from stockbell.api.auth import SecretTenant
from stockbell.api.native.common import CodePath, Cursor, Limit, paging, render_page
from stockbell.api.problems import ERROR_RESPONSES
from stockbell.api.routing import Router
from stockbell.api.schemas import (
    ItemIn,
    ItemOut,
    ItemPage,
    LocationIn,
    LocationOut,
    LocationPage,
    MarketIn,
    MarketOut,
    MarketPage,
)
from stockbell.api.state import app_state
from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.errors import NotFound
from stockbell.service import catalog
from stockbell.service.views import item_view, location_view, market_view

router = Router(prefix="/v1", responses=ERROR_RESPONSES)
Filter = Annotated[str | None, Query(max_length=200)]


@router.put("/items/{sku_code}", response_model=ItemOut, tags=["items"],
            summary="Create or update an item")
async def put_item(sku_code: CodePath, body: ItemIn, tenant: SecretTenant,
                   request: Request) -> dict[str, Any]:
    data = body.model_dump(exclude={"pricing"})
    pricing = [
        {"currency": p.currency,
         "price_breaks": [{"quantity": b.quantity, "price": format(b.price.normalize(), "f")}
                          for b in p.price_breaks]}
        for p in body.pricing
    ]
    item = Item(sku_code=sku_code, pricing=pricing, **data)
    saved = await app_state(request).db.run(lambda uow: catalog.upsert_item(uow, tenant, item))
    return item_view(saved)


@router.get("/items", response_model=ItemPage, tags=["items"], summary="List items")
async def list_items(tenant: SecretTenant, request: Request, sku_code: Filter = None,
                     upc: Filter = None, product_id: Filter = None, variant_id: Filter = None,
                     size: Filter = None, width: Filter = None, part_number: Filter = None,
                     generic_part_number: Filter = None, cursor: Cursor = None,
                     limit: Limit = 50) -> dict[str, Any]:
    filters = {k: v for k, v in {
        "sku_code": sku_code, "upc": upc, "product_id": product_id, "variant_id": variant_id,
        "size": size, "width": width, "part_number": part_number,
        "generic_part_number": generic_part_number}.items() if v is not None}
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: catalog.list_items(uow, tenant, filters, page_req))
    return render_page(page, item_view)


@router.get("/items/{sku_code}", response_model=ItemOut, tags=["items"], summary="Get an item")
async def get_item(sku_code: CodePath, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    item = await app_state(request).db.read(lambda uow: catalog.get_item(uow, tenant, sku_code))
    return item_view(item)


@router.put("/locations/{code}", response_model=LocationOut, tags=["locations"],
            summary="Create or update a location")
async def put_location(code: CodePath, body: LocationIn, tenant: SecretTenant,
                       request: Request) -> dict[str, Any]:
    loc = Location(code=code, name=body.name)
    saved = await app_state(request).db.run(
        lambda uow: catalog.upsert_location(uow, tenant, loc))
    return location_view(saved)


@router.get("/locations", response_model=LocationPage, tags=["locations"],
            summary="List locations")
async def list_locations(tenant: SecretTenant, request: Request, cursor: Cursor = None,
                         limit: Limit = 50) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: catalog.list_locations(uow, tenant, page_req))
    return render_page(page, location_view)


@router.get("/locations/{code}", response_model=LocationOut, tags=["locations"],
            summary="Get a location")
async def get_location(code: CodePath, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    found = await app_state(request).db.read(
        lambda uow: uow.catalog.locations_by_code(tenant, [code]))
    if code not in found:
        raise NotFound(f"location {code!r} does not exist")
    return location_view(found[code])


@router.put("/markets/{code}", response_model=MarketOut, tags=["markets"],
            summary="Create or replace a market (a named set of locations)")
async def put_market(code: CodePath, body: MarketIn, tenant: SecretTenant,
                     request: Request) -> dict[str, Any]:
    """A change of the locations rebuilds the market's availability from the current
    stock; it fires no restock. The account's inventory changes wait while it runs."""
    market = Market(code=code, name=body.name, location_codes=list(body.locations))
    saved = await app_state(request).db.run(
        lambda uow: catalog.upsert_market(uow, tenant, market))
    return market_view(saved)


@router.get("/markets", response_model=MarketPage, tags=["markets"], summary="List markets")
async def list_markets(tenant: SecretTenant, request: Request, cursor: Cursor = None,
                       limit: Limit = 50) -> dict[str, Any]:
    page_req = paging(cursor, limit)
    page = await app_state(request).db.read(
        lambda uow: catalog.list_markets(uow, tenant, page_req))
    return render_page(page, market_view)


@router.get("/markets/{code}", response_model=MarketOut, tags=["markets"],
            summary="Get a market")
async def get_market(code: CodePath, tenant: SecretTenant, request: Request) -> dict[str, Any]:
    market = await app_state(request).db.read(lambda uow: catalog.get_market(uow, tenant, code))
    return market_view(market)
