"""Customers: one per email per (account, mode), created on first request, never duplicated."""

from __future__ import annotations

from stockbell.domain.accounts import Tenant
from stockbell.domain.errors import InvalidInput
from stockbell.domain.subscription import Customer
from stockbell.service.clock import utcnow
from stockbell.service.ids import new_id
from stockbell.service.ports import UnitOfWork


async def ensure_customer(uow: UnitOfWork, tenant: Tenant, customer: Customer) -> tuple[str, bool]:
    """(customer id, created?). The same email always maps to the same id."""
    if not customer.email:
        raise InvalidInput("customer.email is required", field="customer/email")
    return await uow.customers.ensure(tenant, customer, new_id("sub"), utcnow())
