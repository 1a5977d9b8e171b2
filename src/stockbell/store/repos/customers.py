"""Customers (shoppers), unique per (account, mode, email)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stockbell.domain.accounts import Tenant
from stockbell.domain.subscription import Customer
from stockbell.store.repos.util import insert_for
from stockbell.store.tables import customers as c


def _customer(m: Any) -> tuple[str, Customer]:
    return m["id"], Customer(m["email"], m["external_id"], m["first_name"], m["last_name"],
                             m["attributes"] or {})


class SqlCustomers:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def ensure(self, tenant: Tenant, customer: Customer, new_id: str,
                     now: datetime) -> tuple[str, bool]:
        """(id, created): the existing customer with this email, or a new one."""
        assert customer.email
        stmt = insert_for(self.conn, c).values(
            id=new_id, account_id=tenant.account_id, mode=tenant.mode.value,
            email=customer.email.lower(), external_id=customer.external_id,
            first_name=customer.first_name, last_name=customer.last_name,
            attributes=customer.attributes, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["account_id", "mode", "email"])
        res = await self.conn.execute(stmt.returning(c.c.id))
        row = res.first()
        if row is not None:
            return str(row[0]), True
        found = await self.by_email(tenant, customer.email)
        assert found is not None
        return found[0], False

    async def by_email(self, tenant: Tenant, email: str) -> tuple[str, Customer] | None:
        res = await self.conn.execute(sa.select(c).where(
            c.c.account_id == tenant.account_id, c.c.mode == tenant.mode.value,
            c.c.email == email.lower()))
        row = res.first()
        return _customer(row._mapping) if row else None

    async def get(self, tenant: Tenant, customer_id: str) -> tuple[str, Customer] | None:
        res = await self.conn.execute(sa.select(c).where(
            c.c.account_id == tenant.account_id, c.c.mode == tenant.mode.value,
            c.c.id == customer_id))
        row = res.first()
        return _customer(row._mapping) if row else None
