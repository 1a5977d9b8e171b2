"""Commerce Layer's in-stock subscriptions (seed 003): a JSON:API surface over the core.

`/api/in_stock_subscriptions` (create, list, retrieve, update with the `_activate` /
`_deactivate` triggers, delete) and, far enough for relationships and `include` to resolve,
`/api/markets/{code}`, `/api/customers/{id}` and `/api/skus/{id}`. Every request and answer is
`application/vnd.api+json`; errors are JSON:API `errors` arrays with Commerce Layer's codes.

What maps onto what (docs/compat/commercelayer.md has the full table):
- a subscription is a core subscription scoped to a market; `DELETE` cancels it, and a
  cancelled subscription is gone from this surface (404), as a destroyed record is;
- statuses: active, notified, inactive (an expired subscription shows as inactive);
- a market's id is its code, an sku's id is the item's public id, a customer's id is the
  customer's id; `customer_email` / `sku_code` may stand in for the relationships;
- a token issued with `scope=market:<code>` sees and creates only that market's subscriptions.

The adapter parses and renders; subscribing, transitions and validation of thresholds stay in
`service.subscriptions`. Resource objects come from `delivery.formats.commercelayer`, so a
webhook body and a GET of the same subscription agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator, Field, ValidationError

from stockbell.api.auth import any_principal, secret_principal
from stockbell.api.problems import ErrorInfo, register_surface
from stockbell.api.routing import Router
from stockbell.api.schemas import Code, Email, JsonIn, Ref, Strict
from stockbell.api.state import app_state
from stockbell.delivery.formats import commercelayer as cl
from stockbell.domain.accounts import Principal, Tenant
from stockbell.domain.catalog import Item, Market
from stockbell.domain.errors import StockbellError
from stockbell.domain.quantity import to_micro
from stockbell.domain.scope import Scope, ScopeKind
from stockbell.domain.subscription import Customer, Status, Subscription
from stockbell.domain.text import json_problem, storable
from stockbell.service import customers as customers_service
from stockbell.service import subscriptions as subs
from stockbell.service.pagination import PageRequest
from stockbell.service.ports import UnitOfWork
from stockbell.service.views import iso, subscription_view

MEDIA_TYPE = "application/vnd.api+json"
PREFIXES = ("/api/in_stock_subscriptions", "/api/markets", "/api/customers", "/api/skus")
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 25
MAX_PAGE_NUMBER = 10**9
INCLUDABLE = ("market", "customer", "sku")
TO_MANY = ("events", "versions")  # links only: Stockbell keeps no per-resource history here


class JsonApi(JSONResponse):
    media_type = MEDIA_TYPE


# --- errors -------------------------------------------------------------------------------

class ApiError(StockbellError):
    """An error in Commerce Layer's terms: its status, code (VALIDATION_ERROR...) and title."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 pointer: str | None = None) -> None:
        super().__init__(detail, field=pointer)
        self.status, self.code, self.title = status, code, title


def _bad(code: str, title: str, detail: str, pointer: str | None = None) -> ApiError:
    return ApiError(400, code, title, detail, pointer)


def _invalid(pointer: str, message: str) -> ApiError:
    """422 the way Commerce Layer words it: title "can't be blank", detail "market - ..."."""
    return ApiError(422, "VALIDATION_ERROR", message,
                    f"{pointer.rsplit('/', 1)[-1]} - {message}", pointer)


def _not_found(detail: str, pointer: str | None = None) -> ApiError:
    return ApiError(404, "RECORD_NOT_FOUND", "Record not found", detail, pointer)


_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "RECORD_NOT_FOUND",
          405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 413: "PAYLOAD_TOO_LARGE",
          415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR", 429: "TOO_MANY_REQUESTS"}
_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Record not found",
           405: "Method not allowed", 406: "Not acceptable", 413: "Payload too large",
           415: "Unsupported media type", 429: "Too many requests"}
# Core field names (service errors) -> where they live in a Commerce Layer document.
_POINTERS = {"/threshold": "/data/attributes/stock_threshold",
             "/customer/email": "/data/attributes/customer_email",
             "/market": "/data/relationships/market", "/location": "/data/relationships/market"}


def _pointer(path: str | None) -> str | None:
    if not path:
        return None
    path = "/" + path.lstrip("/")  # problems.py prefixes "/" to a field that has one already
    if path.startswith("/data"):
        return path
    return _POINTERS.get(path, "/data/attributes" + path)


def render_error(request: Request, info: ErrorInfo) -> Response:
    """Every error under this surface's paths, as a JSON:API `errors` array."""
    pointer = _pointer(info.field)
    if info.code.isupper():  # already in Commerce Layer's terms (ApiError)
        status, code, title, detail = info.status, info.code, info.title, info.detail
    else:
        # A core conflict (activating an expired subscription) is a validation error to a
        # Commerce Layer client, whose API answers 422 for a trigger it cannot apply.
        status = 422 if info.status == 409 else info.status
        code = _CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_SERVER_ERROR")
        if status == 422:
            title = info.detail
            detail = f"{pointer.rsplit('/', 1)[-1]} - {info.detail}" if pointer else info.detail
        else:
            title, detail = _TITLES.get(status, info.title), info.detail
    error: dict[str, Any] = {"title": title, "detail": detail, "code": code,
                             "status": str(status)}
    if pointer:
        error["source"] = {"pointer": pointer}
    return JsonApi({"errors": [error]}, status_code=status, headers=info.headers)


for _prefix in PREFIXES:
    register_surface(_prefix, render_error)


# --- content negotiation ------------------------------------------------------------------

def negotiate(request: Request) -> None:
    """As Commerce Layer (jsonapi-resources) does: Accept may be absent, `*/*` or list the
    JSON:API media type without parameters (else 406); a body must be sent as exactly
    `application/vnd.api+json` (else 415)."""
    accepted = [t.strip().lower() for t in request.headers.get("accept", "").split(",")]
    accepted = [t for t in accepted if t]
    if accepted and not any(t == MEDIA_TYPE or t.startswith("*/*") for t in accepted):
        raise ApiError(406, "NOT_ACCEPTABLE", "Not acceptable",
                       f"the Accept header must allow {MEDIA_TYPE}")
    if request.method in ("POST", "PATCH"):
        ctype = request.headers.get("content-type", "").strip().lower()
        if ctype != MEDIA_TYPE:
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type",
                           f"the Content-Type header must be {MEDIA_TYPE}, without parameters")


router = Router(prefix="/api", include_in_schema=False, dependencies=[Depends(negotiate)])
SecretPrincipal = Annotated[Principal, Depends(secret_principal)]
AnyPrincipal = Annotated[Principal, Depends(any_principal)]


# --- request documents --------------------------------------------------------------------

def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


Threshold = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=10**12)]


class CreateAttributes(Strict):
    customer_email: Email | None = None
    sku_code: Code | None = None
    stock_threshold: Threshold = 1
    reference: Ref | None = None
    reference_origin: Ref | None = None
    metadata: JsonIn = {}


class UpdateAttributes(Strict):
    sku_code: Code | None = None
    stock_threshold: Threshold | None = None
    reference: Ref | None = None
    reference_origin: Ref | None = None
    metadata: JsonIn | None = None
    activate: bool | None = Field(default=None, alias="_activate")
    deactivate: bool | None = Field(default=None, alias="_deactivate")


_MESSAGES = {"string_pattern_mismatch": "is invalid", "int_parsing": "must be an integer",
             "int_from_float": "must be an integer", "int_type": "must be an integer",
             "greater_than_equal": "must be greater than or equal to 1",
             "less_than_equal": "is too large", "string_too_long": "is too long",
             "string_too_short": "can't be blank", "dict_type": "must be an object",
             "bool_parsing": "must be true or false", "bool_type": "must be true or false",
             "string_type": "must be a string"}


def _attributes(model: type[Strict], raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _invalid("/data/attributes", "must be an object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "attributes"
        pointer = f"/data/attributes/{name}"
        if err["type"] == "extra_forbidden":
            raise _bad("PARAM_NOT_ALLOWED", "Param not allowed",
                       f"{name} is not allowed", pointer) from None
        raise _invalid(pointer, _MESSAGES.get(err["type"], str(err["msg"]))) from None


def _no_bad_text(doc: Any) -> None:
    """No NUL and no lone surrogate anywhere (PostgreSQL cannot store them)."""
    if json_problem(doc, max_depth=10**6, allow_nul=False) is not None:
        raise _bad("INVALID_DATA_FORMAT", "Invalid data format",
                   "strings must be valid Unicode without NUL characters")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _data(request: Request, sub_id: str | None = None) -> dict[str, Any]:
    """The document's `data` object, checked as a resource of type in_stock_subscriptions."""
    raw = await request.body()
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("INVALID_DATA_FORMAT", "Invalid data format",
                   "the request body is not valid JSON") from None
    _no_bad_text(doc)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise _bad("PARAM_MISSING", "Param missing", "the document must hold a data object",
                   "/data")
    if data.get("type") != cl.RESOURCE_TYPE:
        raise _bad("INVALID_RESOURCE", "Invalid resource",
                   f"data.type must be {cl.RESOURCE_TYPE!r}", "/data/type")
    if sub_id is None:
        if "id" in data:
            raise _bad("PARAM_NOT_ALLOWED", "Param not allowed",
                       "client-generated ids are not supported", "/data/id")
    elif "id" not in data:
        raise _bad("PARAM_MISSING", "Param missing", "data.id is required", "/data/id")
    elif data["id"] != sub_id:
        raise _bad("KEY_NOT_INCLUDED_IN_URL", "Key is not included in URL",
                   f"the URL does not support the key {data['id']}", "/data/id")
    unknown = set(data) - {"type", "id", "attributes", "relationships"}
    if unknown:
        raise _bad("PARAM_NOT_ALLOWED", "Param not allowed",
                   f"{sorted(unknown)[0]} is not allowed", f"/data/{sorted(unknown)[0]}")
    return data


_REL_TYPES = {"market": "markets", "customer": "customers", "sku": "skus"}
_ABSENT = object()


def _relationships(data: dict[str, Any]) -> dict[str, str | None]:
    """{name: id or None (an explicit null)} for the relationships the document sets."""
    raw = data.get("relationships")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _invalid("/data/relationships", "must be an object")
    out: dict[str, str | None] = {}
    for name, rel in raw.items():
        pointer = f"/data/relationships/{name}"
        if name not in _REL_TYPES:
            raise _bad("PARAM_NOT_ALLOWED", "Param not allowed", f"{name} is not allowed",
                       pointer)
        linkage = rel.get("data", _ABSENT) if isinstance(rel, dict) else _ABSENT
        if linkage is None:
            out[name] = None
            continue
        if not isinstance(linkage, dict):
            raise _invalid(pointer, "must hold a data object with type and id")
        if linkage.get("type") != _REL_TYPES[name]:
            raise _bad("TYPE_MISMATCH", "Type mismatch",
                       f"{name} must have type {_REL_TYPES[name]!r}", pointer)
        rel_id = linkage.get("id")
        if not isinstance(rel_id, str) or not rel_id or len(rel_id) > 200:
            raise _invalid(pointer, "must have a string id")
        out[name] = rel_id
    return out


# --- query parameters ---------------------------------------------------------------------

_FILTER_KEY = re.compile(r"filter\[q\]\[([a-z_]+)\]")
_FIELDS_KEY = re.compile(r"fields\[([a-z_]+)\]")
# Commerce Layer attribute -> (core search field, kind)
_FILTERABLE = {
    "id": ("id", "text"), "status": ("status", "status"),
    "customer_email": ("customer_email", "text"), "sku_code": ("sku_code", "text"),
    "reference": ("reference", "text"), "reference_origin": ("reference_origin", "text"),
    "stock_threshold": ("threshold", "number"),
    "created_at": ("created_at", "time"), "updated_at": ("updated_at", "time"),
}
_SORTABLE = {name: core for name, (core, _) in _FILTERABLE.items()}
# Commerce Layer matcher -> core search op; *_any / *_all of each combine several values.
_SIMPLE = {"eq": "eq", "not_eq": "not_eq", "lt": "lt", "lteq": "lteq", "gt": "gt",
           "gteq": "gteq", "matches": "like", "does_not_match": "not_like",
           "cont": "contains", "not_cont": "not_contains", "start": "startswith",
           "not_start": "not_startswith", "end": "endswith", "not_end": "not_endswith"}
_TEXT_ONLY = {"like", "not_like", "contains", "not_contains", "startswith", "not_startswith",
              "endswith", "not_endswith"}
_BOOLEAN = ("null", "not_null", "present", "blank")
_MATCHERS = sorted(
    [*_SIMPLE, "in", "not_in", *_BOOLEAN,
     *(f"{m}_{q}" for m in _SIMPLE for q in ("any", "all"))],
    key=len, reverse=True,
)
Clause = list[tuple[str, str, Any]]


def _filter_error(detail: str) -> ApiError:
    return _bad("FILTER_NOT_ALLOWED", "Filter not allowed", detail)


def _value_error(detail: str) -> ApiError:
    return _bad("INVALID_FILTER_VALUE", "Invalid filter value", detail)


def _typed(kind: str, value: str) -> Any:
    if not storable(value) or len(value) > 1000:
        raise _value_error("filter values must be valid text of at most 1000 characters")
    if kind == "number":
        try:
            return to_micro(value, field="stock_threshold")
        except StockbellError:
            raise _value_error(f"{value!r} is not a number") from None
    if kind == "time":
        try:
            when = datetime.fromisoformat(value)
            return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise _value_error(f"{value!r} is not a time (2018-01-01T12:00:00.000Z)") from None
    return value


def _truth(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "t", "1"):
        return True
    if lowered in ("false", "f", "0"):
        return False
    raise _value_error(f"{value!r} is not true or false")


def _atom(core: str, kind: str, op: str, value: Any) -> tuple[str, str, Any]:
    if kind == "status" and op in ("eq", "not_eq", "in", "not_in"):
        values = value if isinstance(value, list) else [value]
        core_values = [c for v in values for c in cl.CORE_STATUSES.get(v, ())]
        return core, "in" if op in ("eq", "in") else "not_in", core_values
    return core, op, value


def _conditions(attr: str, matcher: str, raw: str) -> list[Clause]:
    """One attribute's filter as clauses that must all hold (each: any of its conditions)."""
    core, kind = _FILTERABLE[attr]
    if matcher in _BOOLEAN:
        want = _truth(raw)
        if matcher in ("null", "not_null"):
            is_null = want if matcher == "null" else not want
            return [[(core, "null" if is_null else "not_null", None)]]
        present = want if matcher == "present" else not want
        if kind != "text":
            return [[(core, "not_null" if present else "null", None)]]
        if present:
            return [[(core, "not_null", None)], [(core, "not_eq", "")]]
        return [[(core, "null", None), (core, "eq", "")]]
    if matcher in ("in", "not_in"):
        values = [_typed(kind, v) for v in raw.split(",")]
        op = matcher
        if kind == "status":
            return [[_atom(core, kind, op, values)]]
        return [[(core, op, values)]]
    base, _, quantifier = matcher.rpartition("_")
    if quantifier not in ("any", "all") or base not in _SIMPLE:
        base, quantifier = matcher, ""
    op = _SIMPLE[base]
    if kind != "text" and op in _TEXT_ONLY:
        raise _filter_error(f"{attr} cannot be filtered with _{base}")
    if kind == "status" and op not in ("eq", "not_eq"):
        raise _filter_error("status can be filtered with _eq, _not_eq, _in, _not_in only")
    if not quantifier:
        return [[_atom(core, kind, op, _typed(kind, raw))]]
    atoms = [_atom(core, kind, op, _typed(kind, v)) for v in raw.split(",")]
    return [atoms] if quantifier == "any" else [[a] for a in atoms]


def _predicate(predicate: str, raw: str) -> list[Clause]:
    """`filter[q][<attr>(_or_<attr>)*_<matcher>]` as clauses (Ransack's predicates)."""
    for matcher in _MATCHERS:
        if predicate.endswith("_" + matcher):
            attrs = predicate[: -len(matcher) - 1].split("_or_")
            if all(a in _FILTERABLE for a in attrs):
                break
    else:
        raise _filter_error(f"filter {predicate!r} is not supported; filterable attributes: "
                            f"{', '.join(_FILTERABLE)}")
    per_attr = [_conditions(a, matcher, raw) for a in attrs]
    if len(per_attr) == 1:
        return per_attr[0]
    if any(len(c) != 1 for c in per_attr):
        raise _filter_error(f"{predicate!r}: attributes joined with _or_ take a single value")
    return [[atom for clauses in per_attr for atom in clauses[0]]]


def _int_param(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise _bad("INVALID_PAGE_VALUE", "Invalid page value",
                   f"{name} must be an integer between {low} and {high}")
    return int(value)


@dataclass(slots=True)
class Query:
    include: list[str] = field(default_factory=list)
    fields: dict[str, set[str]] = field(default_factory=dict)
    where: list[Clause] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    number: int = 1
    size: int = DEFAULT_PAGE_SIZE


_FIELDSETS = {
    cl.RESOURCE_TYPE: {"status", "customer_email", "sku_code", "stock_threshold", "created_at",
                       "updated_at", "reference", "reference_origin", "metadata",
                       *cl.RELATIONSHIPS},
    "markets": {"name", "code", "created_at", "updated_at"},
    "customers": {"email", "reference", "metadata"},
    "skus": {"code", "name", "created_at", "updated_at", "metadata"},
}


def parse_query(request: Request, *, listing: bool = False) -> Query:
    q = Query()
    for key, value in request.query_params.multi_items():
        if key == "include":
            q.include = [n for n in value.split(",") if n]
            bad = [n for n in q.include if n not in INCLUDABLE]
            if bad:
                raise _bad("INVALID_INCLUDE", "Invalid include",
                           f"{bad[0]!r} is not a relationship that can be included "
                           f"({', '.join(INCLUDABLE)})")
        elif (m := _FIELDS_KEY.fullmatch(key)) is not None:
            type_ = m.group(1)
            if type_ not in _FIELDSETS:
                raise _bad("INVALID_RESOURCE", "Invalid resource", f"{type_!r} is not a type")
            names = {n for n in value.split(",") if n}
            bad = sorted(names - _FIELDSETS[type_])
            if bad:
                raise _bad("INVALID_FIELD", "Invalid field",
                           f"{bad[0]!r} is not a field of {type_}")
            q.fields[type_] = names
        elif not listing:
            continue
        elif (m := _FILTER_KEY.fullmatch(key)) is not None:
            q.where.extend(_predicate(m.group(1), value))
        elif key.startswith("filter"):
            raise _filter_error(f"{key!r}: filters are written filter[q][<attribute>_<matcher>]")
        elif key == "sort":
            for name in (n for n in value.split(",") if n):
                desc = name.startswith("-")
                core = _SORTABLE.get(name.lstrip("-"))
                if core is None:
                    raise _bad("INVALID_SORT_CRITERIA", "Invalid sort criteria",
                               f"{name.lstrip('-')!r} is not sortable ({', '.join(_SORTABLE)})")
                q.order.append((core, desc))
        elif key == "page[number]":
            q.number = _int_param(key, value, 1, MAX_PAGE_NUMBER)
        elif key == "page[size]":
            q.size = _int_param(key, value, 1, MAX_PAGE_SIZE)
    return q


# --- rendering ----------------------------------------------------------------------------

def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _mode(principal: Principal) -> str:
    return principal.tenant.mode.value


def market_resource(m: Market, mode: str, base: str) -> dict[str, Any]:
    return {"id": m.code, "type": "markets", "links": cl.links(base, "markets", m.code),
            "attributes": {"name": m.name, "code": m.code,
                           "created_at": cl.timestamp(iso(m.created_at)),
                           "updated_at": cl.timestamp(iso(m.updated_at))},
            "meta": {"mode": mode, "locations": m.location_codes}}


def customer_resource(customer_id: str, c: Customer, mode: str, base: str) -> dict[str, Any]:
    return {"id": customer_id, "type": "customers",
            "links": cl.links(base, "customers", customer_id),
            "attributes": {"email": c.email, "reference": c.external_id,
                           "metadata": c.attributes},
            "meta": {"mode": mode}}


def sku_resource(item: Item, mode: str, base: str) -> dict[str, Any]:
    assert item.public_id is not None
    return {"id": item.public_id, "type": "skus",
            "links": cl.links(base, "skus", item.public_id),
            "attributes": {"code": item.sku_code, "name": item.title,
                           "created_at": cl.timestamp(iso(item.created_at)),
                           "updated_at": cl.timestamp(iso(item.updated_at)),
                           "metadata": item.attributes},
            "meta": {"mode": mode}}


def _sparse(resource: dict[str, Any], q: Query) -> dict[str, Any]:
    wanted = q.fields.get(resource["type"])
    if wanted is None:
        return resource
    out = dict(resource)
    out["attributes"] = {k: v for k, v in resource["attributes"].items() if k in wanted}
    if "relationships" in resource:
        out["relationships"] = {k: v for k, v in resource["relationships"].items()
                                if k in wanted}
    return out


class Related:
    """Resolves a subscription's market, customer and sku (once per request each)."""

    def __init__(self, uow: UnitOfWork, tenant: Tenant, mode: str, base: str) -> None:
        self.uow, self.tenant, self.mode, self.base = uow, tenant, mode, base
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def get(self, sub: Subscription, name: str) -> dict[str, Any] | None:
        if name == "market":
            if sub.scope.kind is not ScopeKind.MARKET or not sub.scope_code:
                return None
            return await self._once(name, sub.scope_code, self._market)
        if name == "customer":
            if not sub.customer.email:
                return None
            return await self._once(name, sub.customer.email, self._customer)
        if not sub.sku_code:
            return None
        return await self._once(name, sub.sku_code, self._sku)

    async def _once(self, name: str, key: str,
                    load: Callable[[str], Awaitable[dict[str, Any] | None]]
                    ) -> dict[str, Any] | None:
        if (name, key) not in self.cache:
            self.cache[(name, key)] = await load(key)
        return self.cache[(name, key)]

    async def _market(self, code: str) -> dict[str, Any] | None:
        m = await self.uow.catalog.get_market(self.tenant, code)
        return None if m is None else market_resource(m, self.mode, self.base)

    async def _customer(self, email: str) -> dict[str, Any] | None:
        found = await self.uow.customers.by_email(self.tenant, email)
        return None if found is None else customer_resource(*found, self.mode, self.base)

    async def _sku(self, sku_code: str) -> dict[str, Any] | None:
        item = await self.uow.catalog.get_item(self.tenant, sku_code)
        return None if item is None else sku_resource(item, self.mode, self.base)


async def _documents(uow: UnitOfWork, principal: Principal, base: str,
                     rows: Sequence[Subscription], q: Query
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(primary resources, included resources) with linkage for included relationships."""
    related = Related(uow, principal.tenant, _mode(principal), base)
    primary: list[dict[str, Any]] = []
    included: dict[tuple[str, str], dict[str, Any]] = {}
    for sub in rows:
        res = cl.subscription_resource(subscription_view(sub), _mode(principal), base)
        for name in q.include:
            found = await related.get(sub, name)
            linkage = None if found is None else {"type": found["type"], "id": found["id"]}
            res["relationships"][name]["data"] = linkage
            if found is not None:
                included.setdefault((found["type"], found["id"]), _sparse(found, q))
        primary.append(_sparse(res, q))
    return primary, list(included.values())


def _single(primary: list[dict[str, Any]], included: list[dict[str, Any]],
            q: Query) -> dict[str, Any]:
    doc: dict[str, Any] = {"data": primary[0]}
    if q.include:
        doc["included"] = included
    return doc


# --- loading with this surface's visibility -----------------------------------------------

def _check_id(value: str) -> str:
    if not value or len(value) > 200 or not storable(value):
        raise _not_found("The requested resource was not found. Please double-check the "
                         "resource id.")
    return value


def visible(sub: Subscription, principal: Principal) -> bool:
    """Cancelled subscriptions are destroyed records here; a market-scoped token sees its
    market only."""
    if sub.status is Status.CANCELLED:
        return False
    return principal.market is None or (
        sub.scope.kind is ScopeKind.MARKET and sub.scope_code == principal.market)


async def load(uow: UnitOfWork, principal: Principal, sub_id: str) -> Subscription:
    sub = await uow.subscriptions.get(principal.tenant, _check_id(sub_id))
    if sub is None or not visible(sub, principal):
        raise _not_found(f"in_stock_subscription {sub_id!r} does not exist")
    return sub


async def _item_by_id(uow: UnitOfWork, tenant: Tenant, item_id: str) -> Item | None:
    rows = await uow.catalog.list_items(tenant, {"public_id": item_id}, PageRequest(None, 1))
    return rows[0][1] if rows else None


async def _customer(uow: UnitOfWork, tenant: Tenant, customer_id: str) -> Customer:
    found = await uow.customers.get(tenant, customer_id)
    if found is None:
        raise _not_found(f"customer {customer_id!r} does not exist",
                         "/data/relationships/customer")
    return found[1]


async def _sku_code(uow: UnitOfWork, tenant: Tenant, sku_id: str) -> str:
    item = await _item_by_id(uow, tenant, sku_id)
    if item is None:
        raise _not_found(f"sku {sku_id!r} does not exist", "/data/relationships/sku")
    return item.sku_code


# --- use cases, translated ----------------------------------------------------------------

async def create_subscription(uow: UnitOfWork, principal: Principal, attrs: CreateAttributes,
                              rels: dict[str, str | None]) -> Subscription:
    tenant = principal.tenant
    market = rels.get("market") or principal.market
    if market is None:
        raise _invalid("/data/relationships/market", "can't be blank")
    if principal.market is not None and market != principal.market:
        raise _invalid("/data/relationships/market", "is outside the token's market scope")
    if await uow.catalog.get_market(tenant, market) is None:
        raise _not_found(f"market {market!r} does not exist", "/data/relationships/market")

    sku_code = attrs.sku_code
    if rels.get("sku"):
        code = await _sku_code(uow, tenant, str(rels["sku"]))
        if sku_code is not None and sku_code != code:
            raise _invalid("/data/attributes/sku_code", "does not match the sku relationship")
        sku_code = code
    if not sku_code:
        raise _invalid("/data/relationships/sku", "can't be blank")

    email = attrs.customer_email
    if rels.get("customer"):
        customer = await _customer(uow, tenant, str(rels["customer"]))
        if email is not None and email.lower() != (customer.email or "").lower():
            raise _invalid("/data/attributes/customer_email",
                           "does not match the customer relationship")
    elif email:
        await customers_service.ensure_customer(uow, tenant, Customer(email=email))
        found = await uow.customers.by_email(tenant, email)
        assert found is not None
        customer = found[1]
    else:
        raise _invalid("/data/relationships/customer", "can't be blank")

    inp = subs.SubscriptionInput(
        sku_code=sku_code, market=market, threshold=str(attrs.stock_threshold),
        customer=customer, reference=attrs.reference, reference_origin=attrs.reference_origin,
        metadata=attrs.metadata,
    )
    return await subs.subscribe(uow, tenant, inp)


async def update_subscription(uow: UnitOfWork, principal: Principal, sub_id: str,
                              attrs: UpdateAttributes,
                              rels: dict[str, str | None]) -> Subscription:
    tenant = principal.tenant
    sub = await load(uow, principal, sub_id)
    sent = attrs.model_fields_set
    if attrs.activate and attrs.deactivate:
        raise _invalid("/data/attributes/_activate", "cannot be sent with _deactivate")
    # Item and market are what the restock rule evaluates a subscription on: they are fixed
    # for its life (create another subscription to follow another sku or market).
    if "sku_code" in sent and attrs.sku_code != sub.sku_code:
        raise _invalid("/data/attributes/sku_code", "cannot be changed")
    sku_id = rels.get("sku")
    if "sku" in rels and (sku_id is None or await _sku_code(uow, tenant, sku_id) != sub.sku_code):
        raise _invalid("/data/relationships/sku", "cannot be changed")
    if "market" in rels and (sub.scope.kind is not ScopeKind.MARKET
                             or rels["market"] != sub.scope_code):
        raise _invalid("/data/relationships/market", "cannot be changed")

    patch = subs.SubscriptionPatch()
    changed = False
    if "stock_threshold" in sent:
        if attrs.stock_threshold is None:
            raise _invalid("/data/attributes/stock_threshold", "can't be blank")
        patch.threshold, changed = str(attrs.stock_threshold), True
    for name in ("reference", "reference_origin", "metadata"):
        if name in sent:
            setattr(patch, name, getattr(attrs, name))
            changed = True
    if "customer" in rels:
        customer_id = rels["customer"]
        if customer_id is None:
            raise _invalid("/data/relationships/customer", "can't be blank")
        patch.customer, changed = await _customer(uow, tenant, customer_id), True
    if changed:
        sub = await subs.update(uow, tenant, sub.id, patch)
    if attrs.activate:
        sub = await subs.activate(uow, tenant, sub.id)
    if attrs.deactivate:
        sub = await subs.deactivate(uow, tenant, sub.id)
    return sub


async def _search(uow: UnitOfWork, principal: Principal,
                  q: Query) -> tuple[int, list[Subscription]]:
    where: list[Clause] = [*q.where, [("status", "not_eq", Status.CANCELLED.value)]]
    if principal.market is not None:
        market = await uow.catalog.get_market(principal.tenant, principal.market)
        key = Scope(ScopeKind.MARKET, market.id).key if market and market.id else ""
        where.append([("scope_key", "eq", key)])
    return await uow.subscriptions.search(principal.tenant, where, q.order,
                                          (q.number - 1) * q.size, q.size)


# --- routes -------------------------------------------------------------------------------

def _forbid_include(principal: Principal, q: Query) -> None:
    if principal.publishable and q.include:
        raise ApiError(403, "FORBIDDEN", "Forbidden",
                       "a publishable key may not include related resources")


@router.post("/in_stock_subscriptions", status_code=201)
async def create(request: Request, principal: AnyPrincipal) -> Response:
    q = parse_query(request)
    _forbid_include(principal, q)
    data = await _data(request)
    attrs = _attributes(CreateAttributes, data.get("attributes"))
    rels = _relationships(data)
    base = _base(request)

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        sub = await create_subscription(uow, principal, attrs, rels)
        return _single(*await _documents(uow, principal, base, [sub], q), q)

    doc = await app_state(request).db.run(work)
    return JsonApi(doc, status_code=201)


@router.get("/in_stock_subscriptions")
async def list_(request: Request, principal: SecretPrincipal) -> Response:
    q = parse_query(request, listing=True)
    base = _base(request)

    async def work(uow: UnitOfWork) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        total, rows = await _search(uow, principal, q)
        return (total, *await _documents(uow, principal, base, rows, q))

    total, primary, included = await app_state(request).db.read(work)
    pages = -(-total // q.size)
    doc: dict[str, Any] = {"data": primary}
    if q.include:
        doc["included"] = included
    doc["meta"] = {"record_count": total, "page_count": pages}
    doc["links"] = _page_links(request, q, pages)
    return JsonApi(doc)


def _page_links(request: Request, q: Query, pages: int) -> dict[str, str]:
    kept = [(k, v) for k, v in request.query_params.multi_items()
            if k not in ("page[number]", "page[size]")]

    def link(number: int) -> str:
        params = [*kept, ("page[number]", str(number)), ("page[size]", str(q.size))]
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params)
        return f"{_base(request)}/api/{cl.RESOURCE_TYPE}?{query}"

    links = {"first": link(1)}
    if q.number > 1:
        links["prev"] = link(q.number - 1)
    if q.number < pages:
        links["next"] = link(q.number + 1)
    links["last"] = link(max(pages, 1))
    return links


def _quote(text: str) -> str:
    return quote(text, safe="[],:-_.")


@router.get("/in_stock_subscriptions/{sub_id}")
async def retrieve(sub_id: str, request: Request, principal: SecretPrincipal) -> Response:
    q = parse_query(request)
    base = _base(request)

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        sub = await load(uow, principal, sub_id)
        return _single(*await _documents(uow, principal, base, [sub], q), q)

    return JsonApi(await app_state(request).db.read(work))


@router.patch("/in_stock_subscriptions/{sub_id}")
async def update(sub_id: str, request: Request, principal: SecretPrincipal) -> Response:
    q = parse_query(request)
    data = await _data(request, _check_id(sub_id))
    attrs = _attributes(UpdateAttributes, data.get("attributes"))
    rels = _relationships(data)
    base = _base(request)

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        sub = await update_subscription(uow, principal, sub_id, attrs, rels)
        return _single(*await _documents(uow, principal, base, [sub], q), q)

    return JsonApi(await app_state(request).db.run(work))


@router.delete("/in_stock_subscriptions/{sub_id}", status_code=204)
async def delete(sub_id: str, request: Request, principal: SecretPrincipal) -> Response:
    async def work(uow: UnitOfWork) -> None:
        sub = await load(uow, principal, sub_id)
        await subs.cancel(uow, principal.tenant, sub.id)

    await app_state(request).db.run(work)
    return Response(status_code=204)


@router.get("/in_stock_subscriptions/{sub_id}/relationships/{name}")
async def relationship(sub_id: str, name: str, request: Request,
                       principal: SecretPrincipal) -> Response:
    base = _base(request)
    if name not in cl.RELATIONSHIPS:
        raise _not_found(f"in_stock_subscriptions have no relationship {name!r}")

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        sub = await load(uow, principal, sub_id)
        doc: dict[str, Any] = {"links": cl.relationship_links(base, sub.id, name)}
        if name in TO_MANY:
            doc["data"] = []
            return doc
        found = await Related(uow, principal.tenant, _mode(principal), base).get(sub, name)
        doc["data"] = None if found is None else {"type": found["type"], "id": found["id"]}
        return doc

    return JsonApi(await app_state(request).db.read(work))


@router.get("/in_stock_subscriptions/{sub_id}/{name}")
async def related(sub_id: str, name: str, request: Request,
                  principal: SecretPrincipal) -> Response:
    q = parse_query(request)
    base = _base(request)
    if name not in cl.RELATIONSHIPS:
        raise _not_found(f"in_stock_subscriptions have no relationship {name!r}")

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        sub = await load(uow, principal, sub_id)
        if name in TO_MANY:
            return {"data": [], "meta": {"record_count": 0, "page_count": 0}}
        found = await Related(uow, principal.tenant, _mode(principal), base).get(sub, name)
        return {"data": None if found is None else _sparse(found, q)}

    return JsonApi(await app_state(request).db.read(work))


async def _one(request: Request,
               find: Callable[[UnitOfWork], Awaitable[dict[str, Any] | None]]) -> Response:
    q = parse_query(request)
    found = await app_state(request).db.read(find)
    if found is None:
        raise _not_found("The requested resource was not found. Please double-check the "
                         "resource id.")
    return JsonApi({"data": _sparse(found, q)})


@router.get("/markets/{code}")
async def market(code: str, request: Request, principal: SecretPrincipal) -> Response:
    base, mode = _base(request), _mode(principal)

    async def find(uow: UnitOfWork) -> dict[str, Any] | None:
        if principal.market is not None and code != principal.market:
            return None
        m = await uow.catalog.get_market(principal.tenant, _check_id(code))
        return None if m is None else market_resource(m, mode, base)

    return await _one(request, find)


@router.get("/customers/{customer_id}")
async def customer(customer_id: str, request: Request, principal: SecretPrincipal) -> Response:
    base, mode = _base(request), _mode(principal)

    async def find(uow: UnitOfWork) -> dict[str, Any] | None:
        found = await uow.customers.get(principal.tenant, _check_id(customer_id))
        return None if found is None else customer_resource(*found, mode, base)

    return await _one(request, find)


@router.get("/skus/{sku_id}")
async def sku(sku_id: str, request: Request, principal: SecretPrincipal) -> Response:
    base, mode = _base(request), _mode(principal)

    async def find(uow: UnitOfWork) -> dict[str, Any] | None:
        item = await _item_by_id(uow, principal.tenant, _check_id(sku_id))
        return None if item is None else sku_resource(item, mode, base)

    return await _one(request, find)
