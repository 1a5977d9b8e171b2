"""deliveries: leave room on each page for the lease update (PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:35:00

Every delivery is updated at least twice: leased when claimed, then settled. The lease touches
no indexed column, so PostgreSQL can make it a heap-only (HOT) update that writes no index
entries, but only when the row's page has room for the new version; at the default fillfactor
(100) pages are full and every lease wrote a new entry into each of the table's four indexes.
Measured on 10,000 queued deliveries: the claims' server CPU fell from ~50 to ~42 us per
delivery. SQLite has no such setting.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
