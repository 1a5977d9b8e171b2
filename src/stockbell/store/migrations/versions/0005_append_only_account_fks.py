"""events, inventory_changes, deliveries: no foreign key to accounts (PostgreSQL)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:20:00

These three tables only grow, by thousands of rows per request (a 1,000-change batch, a
restock that fires 100,000 subscriptions), and their account is always the authenticated
tenant's, which exists and is never deleted. On PostgreSQL each inserted row's foreign key
check reads the account row and takes a share lock on it, so every concurrent writer of one
account locks the same row once per row it writes (and several at once turn it into a
MultiXact). Measured on a 1,000-change batch: PostgreSQL's own CPU per batch fell from ~48 to
~41 ms. The columns and their indexes stay; the other foreign keys (endpoint, event, item)
stay too: those rows are deleted, and the checks guard real relationships.

SQLite keeps the constraints: there a check is one primary-key probe by the one writer, and
removing a constraint means rebuilding the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("events", "inventory_changes", "deliveries")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.drop_constraint(f"fk_{table}_account_id_accounts", table, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.create_foreign_key(f"fk_{table}_account_id_accounts", table, "accounts",
                                  ["account_id"], ["id"])
