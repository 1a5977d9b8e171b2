"""subscriptions, deliveries: the status indexes hold only the rows their queries look for

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:30:00

Three indexes were read only for one status or only for rows with a value, yet every row was
written into them:
- `ix_subscriptions_crossing` is read by the restock rule for active subscriptions only;
- `ix_subscriptions_expiry` by the expiry sweep for subscriptions with an expiry only;
- `ix_deliveries_due` by the dispatcher's claim for pending deliveries only.
A restock that fires 100,000 subscriptions changes each one's status, an indexed column, so
PostgreSQL cannot update them in place (HOT) and writes each new row version into every
index; SQLite moves each row's entry in both status indexes. Every settled delivery did the
same in the due index. As partial indexes, a notified subscription leaves the crossing index
and enters no other, one without an expiry is in no expiry index, and a settled delivery
leaves the due queue. Measured on PostgreSQL (scratch, 100,000 status updates in one
transaction): 1.43-1.63 s with the full indexes, 1.03-1.26 s with the partial ones.

The queries name the same literal conditions (`status = 'active'`, `expires_at IS NOT NULL`,
`status = 'pending'`), which is what lets both planners use a partial index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> (table, columns before, columns after, the rows kept)
_INDEXES = {
    "ix_subscriptions_crossing": ("subscriptions", ["item_id", "scope_key", "status", "threshold"],
                                  ["item_id", "scope_key", "threshold"], "status = 'active'"),
    "ix_subscriptions_expiry": ("subscriptions", ["status", "expires_at"],
                                ["status", "expires_at"], "expires_at IS NOT NULL"),
    "ix_deliveries_due": ("deliveries", ["status", "next_attempt_at"], ["next_attempt_at"],
                          "status = 'pending'"),
}


def upgrade() -> None:
    for name, (table, _, after, where) in _INDEXES.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, after, postgresql_where=sa.text(where),
                        sqlite_where=sa.text(where))


def downgrade() -> None:
    for name, (table, before, _, _) in _INDEXES.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, before)
