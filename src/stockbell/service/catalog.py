"""Items, locations and markets."""

from __future__ import annotations

from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, Location, Market
from stockbell.domain.errors import InvalidInput, NotFound
from stockbell.service.clock import utcnow
from stockbell.service.ids import new_id
from stockbell.service.pagination import Page, PageRequest, make_page
from stockbell.service.ports import UnitOfWork

ITEM_FILTERS = (
    "sku_code", "upc", "product_id", "variant_id", "size", "width", "part_number",
    "generic_part_number",
)


async def upsert_item(uow: UnitOfWork, tenant: Tenant, item: Item) -> Item:
    if item.public_id is None:
        item.public_id = new_id("item")
    return await uow.catalog.upsert_item(tenant, item, utcnow())


async def get_item(uow: UnitOfWork, tenant: Tenant, sku_code: str) -> Item:
    item = await uow.catalog.get_item(tenant, sku_code)
    if item is None:
        raise NotFound(f"item {sku_code!r} does not exist")
    return item


async def find_by_product(uow: UnitOfWork, tenant: Tenant, product_id: str,
                          variant_id: str | None = None) -> Item | None:
    """The item of (product_id, variant_id). The variant defaults to the product, and an item
    with no variant_id stands for the variant named like its product (seed 002)."""
    variant = variant_id or product_id
    exact = await uow.catalog.list_items(
        tenant, {"product_id": product_id, "variant_id": variant}, PageRequest(None, 1))
    if exact or variant != product_id:
        return exact[0][1] if exact else None
    after: int | None = None
    while True:
        rows = await uow.catalog.list_items(tenant, {"product_id": product_id},
                                            PageRequest(after, 200))
        found = next((item for _, item in rows if item.variant_id is None), None)
        if found is not None or len(rows) < 200:
            return found
        after = rows[-1][0]


async def list_items(
    uow: UnitOfWork, tenant: Tenant, filters: dict[str, str], page: PageRequest
) -> Page[Item]:
    unknown = set(filters) - set(ITEM_FILTERS)
    if unknown:
        raise InvalidInput(f"unknown filter {sorted(unknown)[0]!r}")
    page_req = PageRequest(page.after, page.limit)
    rows = await uow.catalog.list_items(tenant, filters, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page_req)


async def upsert_location(uow: UnitOfWork, tenant: Tenant, loc: Location) -> Location:
    return await uow.catalog.upsert_location(tenant, loc, utcnow())


async def list_locations(uow: UnitOfWork, tenant: Tenant, page: PageRequest) -> Page[Location]:
    rows = await uow.catalog.list_locations(tenant, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)


async def upsert_market(uow: UnitOfWork, tenant: Tenant, market: Market) -> Market:
    """Create or replace a market. Its availability is rebuilt from current stock; a change of
    membership is not a stock change, so it fires no restock. Inventory writes of the
    account wait while it runs, so none applies a change with the old membership after the
    availability was rebuilt without it."""
    await uow.catalog.lock_membership(tenant)
    codes = list(dict.fromkeys(market.location_codes))
    found = await uow.catalog.locations_by_code(tenant, codes)
    missing = [c for c in codes if c not in found]
    if missing:
        raise InvalidInput(f"unknown location {missing[0]!r}", field="locations")
    ids = [found[c].id for c in codes if found[c].id is not None]
    existing = await uow.catalog.get_market(tenant, market.code)
    saved = await uow.catalog.upsert_market(tenant, market, [i for i in ids if i], utcnow())
    if existing is None or sorted(existing.location_codes) != sorted(codes):
        assert saved.id is not None
        await uow.stock.rebuild_market(tenant, saved.id)
    return saved


async def get_market(uow: UnitOfWork, tenant: Tenant, code: str) -> Market:
    market = await uow.catalog.get_market(tenant, code)
    if market is None:
        raise NotFound(f"market {code!r} does not exist")
    return market


async def list_markets(uow: UnitOfWork, tenant: Tenant, page: PageRequest) -> Page[Market]:
    rows = await uow.catalog.list_markets(tenant, PageRequest(page.after, page.limit + 1))
    return make_page(rows, page)
