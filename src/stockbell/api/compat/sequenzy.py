"""Sequenzy's Commerce API (seed 002): back-in-stock requests and the product upsert.

- `POST /api/v1/back-in-stock` finds the item of (productId, variantId), creates the subscriber
  if absent (`service.customers.ensure_customer`, no signup event) and records the request as
  a subscription (`service.subscriptions.subscribe`, which emits back_in_stock.requested). The
  title snapshots and ids are kept in the subscription's metadata under "sequenzy".
- `POST /api/v1/products` upserts one item per variant and sets each variant's stock at the
  location "sequenzy" through `service.inventory.apply_changes`, so a variant coming back in
  stock fires back_in_stock for its waiting subscribers.

Errors under `/api/v1/` are Sequenzy's `{"success": false, "error": "..."}`. Events reach
receivers in the `sequenzy` payload format (`delivery/formats/sequenzy.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from stockbell.api.auth import AnyTenant, SecretTenant
from stockbell.api.problems import ErrorInfo, register_surface
from stockbell.api.routing import Router
from stockbell.api.schemas import Code, Email, JsonIn, LongText, Name
from stockbell.api.state import app_state
from stockbell.domain.accounts import Tenant
from stockbell.domain.catalog import Item, Location
from stockbell.domain.errors import Conflict, InvalidInput, NotFound
from stockbell.domain.stock import AVAILABLE
from stockbell.domain.subscription import Customer
from stockbell.service import catalog, customers, inventory, subscriptions
from stockbell.service.inventory import ChangeInput
from stockbell.service.ports import UnitOfWork

PREFIX = "/api/v1/"
LOCATION = "sequenzy"  # where Sequenzy-synced stock lives; created on first use
METADATA_KEY = "sequenzy"
MAX_SKU = 200

router = Router(prefix="/api/v1", tags=["sequenzy"])


# --- errors ----------------------------------------------------------------------------------

class SequenzyError(BaseModel):
    success: bool
    error: str


def render_error(request: Request, info: ErrorInfo) -> Response:
    detail = info.detail
    if info.field and detail.startswith(info.field + ": "):
        # "/customer/email: Field required" -> "customer.email: Field required"
        detail = info.field.strip("/").replace("/", ".") + detail[len(info.field):]
    status = 400 if info.status == 422 else info.status
    return JSONResponse({"success": False, "error": detail}, status_code=status,
                        headers=info.headers)


register_surface(PREFIX, render_error)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": SequenzyError, "description": desc}
    for status, desc in (
        (400, "Invalid request"), (401, "Missing or invalid API key"),
        (403, "The key may not do this"), (404, "Unknown product or variant"),
        (409, "The derived SKU belongs to another product"), (413, "Body too large"),
    )
}


# --- bodies ----------------------------------------------------------------------------------

class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")


Cents = Annotated[StrictInt, Field(ge=0, le=10**12)]
Units = Annotated[StrictInt, Field(ge=-(10**12), le=10**12)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")]


class CustomerIn(_Camel):
    email: Email
    external_id: Name | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    attributes: JsonIn = {}


class BackInStockIn(_Camel):
    product_id: Code
    variant_id: Code | None = None
    product_title: LongText | None = None
    variant_title: LongText | None = None
    customer: CustomerIn


class BackInStockOut(_Camel):
    success: bool
    subscriber_id: str


class VariantIn(_Camel):
    variant_id: Code
    title: LongText | None = None
    sku: Name | None = None
    image_url: LongText | None = None
    price_cents: Cents | None = None
    compare_at_price_cents: Cents | None = None
    in_stock: StrictBool | None = None
    inventory_quantity: Units | None = None


class ProductIn(_Camel):
    product_id: Code
    title: LongText
    description: LongText | None = None
    image_url: LongText | None = None
    url: LongText | None = None
    price_cents: Cents | None = None
    compare_at_price_cents: Cents | None = None
    currency: Currency | None = None
    in_stock: StrictBool | None = None
    inventory_quantity: Units | None = None
    variants: Annotated[list[VariantIn], Field(max_length=100)] = []


class ProductsIn(_Camel):
    products: Annotated[list[ProductIn], Field(min_length=1, max_length=100)]

    @model_validator(mode="before")
    @classmethod
    def _one_product(cls, data: Any) -> Any:
        """A single product object is accepted as shorthand for {"products": [it]}."""
        if isinstance(data, dict) and "products" not in data and "productId" in data:
            return {"products": [data]}
        return data


class VariantOut(_Camel):
    variant_id: str
    title: str | None
    sku: str
    in_stock: bool | None
    inventory_quantity: int | None


class ProductOut(_Camel):
    product_id: str
    provider: str
    title: str
    in_stock: bool | None
    variants: list[VariantOut]


class ProductsOut(_Camel):
    success: bool
    upserted: int
    back_in_stock_events_triggered: int
    products: list[ProductOut]


# --- back-in-stock requests ------------------------------------------------------------------

@router.post("/back-in-stock", response_model=BackInStockOut, responses=ERRORS,
             summary="Sequenzy: register a customer's back-in-stock request")
async def back_in_stock(body: BackInStockIn, tenant: AnyTenant,
                        request: Request) -> dict[str, Any]:
    """variantId defaults to productId. The subscriber is created if absent (the same email
    always answers the same subscriberId); ecommerce.back_in_stock_requested is recorded, and
    ecommerce.back_in_stock fires when a later upsert brings the variant back in stock.
    Publishable keys may call this route."""
    c = body.customer
    customer = Customer(c.email, c.external_id, c.first_name, c.last_name, c.attributes)
    variant_id = body.variant_id or body.product_id

    async def work(uow: UnitOfWork) -> str:
        item = await catalog.find_by_product(uow, tenant, body.product_id, variant_id)
        if item is None:
            raise NotFound(f"product {body.product_id!r} has no variant {variant_id!r}; "
                           "upsert it first with POST /api/v1/products", field="variantId")
        subscriber_id, _ = await customers.ensure_customer(uow, tenant, customer)
        snapshot = {
            "subscriberId": subscriber_id, "productId": body.product_id,
            "variantId": variant_id,
            "productTitle": body.product_title or item.title,
            "variantTitle": body.variant_title or item.variant_title,
        }
        # Asking twice for the same variant keeps one waiting request, so the shopper is
        # told once when it is back.
        await subscriptions.subscribe_once(uow, tenant, subscriptions.SubscriptionInput(
            sku_code=item.sku_code, customer=customer, reference=subscriber_id,
            reference_origin="sequenzy", metadata={METADATA_KEY: snapshot}), refresh=False)
        return subscriber_id

    subscriber_id = await app_state(request).db.run(work)
    return {"success": True, "subscriberId": subscriber_id}


# --- product upsert --------------------------------------------------------------------------

_PRODUCT_ATTRIBUTES = ("description", "image_url", "url", "price_cents",
                       "compare_at_price_cents", "currency")
_VARIANT_ATTRIBUTES = ("sku", "image_url", "price_cents", "compare_at_price_cents")


def _merge(attributes: dict[str, Any], model: _Camel, names: tuple[str, ...]) -> None:
    """Sequenzy's partial update: an omitted field keeps its value, an explicit null clears."""
    for name in names:
        if name in model.model_fields_set:
            value = getattr(model, name)
            if value is None:
                attributes.pop(to_camel(name), None)
            else:
                attributes[to_camel(name)] = value


def _stock(own: VariantIn | ProductIn, product: ProductIn) -> int | None:
    """The variant's IN_STOCK quantity: inventoryQuantity (below zero: none left), else
    inStock as 1 or 0, else the product's; None when nothing says."""
    for source in (own, product):
        if source.inventory_quantity is not None:
            return max(0, source.inventory_quantity)
        if source.in_stock is not None:
            return 1 if source.in_stock else 0
    return None


async def _variant_item(uow: UnitOfWork, tenant: Tenant, product: ProductIn,
                        variant: VariantIn | None) -> Item:
    variant_id = variant.variant_id if variant else None
    item = await catalog.find_by_product(uow, tenant, product.product_id, variant_id)
    if item is None:
        sku = f"{product.product_id}:{variant_id}" if variant_id else product.product_id
        if len(sku) > MAX_SKU:
            raise InvalidInput(f"productId and variantId make a SKU longer than {MAX_SKU} "
                               "characters", field="productId")
        try:
            item = await catalog.get_item(uow, tenant, sku)
        except NotFound:
            item = Item(sku_code=sku)
        if item.product_id is not None and (item.product_id, item.variant_id) != (
                product.product_id, variant_id):
            raise Conflict(f"SKU {sku!r} already belongs to product {item.product_id!r}",
                           field="productId")
        item.product_id, item.variant_id = product.product_id, variant_id
    item.title = product.title
    attributes = dict(item.attributes)
    _merge(attributes, product, _PRODUCT_ATTRIBUTES)
    if variant is not None:
        if "title" in variant.model_fields_set:
            item.variant_title = variant.title
        _merge(attributes, variant, _VARIANT_ATTRIBUTES)
    item.attributes = attributes
    return await catalog.upsert_item(uow, tenant, item)


@router.post("/products", response_model=ProductsOut, responses=ERRORS,
             summary="Sequenzy: create or update products, their variants and stock")
async def upsert_products(body: ProductsIn, tenant: SecretTenant,
                          request: Request) -> dict[str, Any]:
    """One item per variant (sku_code `productId:variantId`, or productId for a product
    without variants, unless an item with that product_id/variant_id already exists). Stock
    goes to location "sequenzy": inventoryQuantity, else inStock as 1/0. Everything applies
    in one transaction; a variant back in stock fires ecommerce.back_in_stock."""

    async def work(uow: UnitOfWork) -> tuple[list[dict[str, Any]], int]:
        out: list[dict[str, Any]] = []
        changes: list[ChangeInput] = []
        for product in body.products:
            variants: list[dict[str, Any]] = []
            each: list[VariantIn | None] = list(product.variants) or [None]
            for variant in each:
                item = await _variant_item(uow, tenant, product, variant)
                qty = _stock(variant or product, product)
                if qty is not None:
                    changes.append(ChangeInput("count", item.sku_code, LOCATION, str(qty),
                                               state=AVAILABLE.value))
                variants.append({"variantId": item.variant_id or product.product_id,
                                 "title": item.variant_title, "sku": item.sku_code,
                                 "inStock": None if qty is None else qty > 0,
                                 "inventoryQuantity": qty})
            known = [v["inStock"] for v in variants if v["inStock"] is not None]
            out.append({"productId": product.product_id, "provider": "api",
                        "title": product.title, "inStock": any(known) if known else None,
                        "variants": variants if product.variants else []})
        notifications = 0
        if changes:
            await catalog.upsert_location(uow, tenant, Location(LOCATION, name="Sequenzy"))
            _, result = await inventory.apply_changes(uow, tenant, changes)
            notifications = int(result["notifications"])
        return out, notifications

    products, triggered = await app_state(request).db.run(work)
    return {"success": True, "upserted": len(products),
            "backInStockEventsTriggered": triggered, "products": products}
