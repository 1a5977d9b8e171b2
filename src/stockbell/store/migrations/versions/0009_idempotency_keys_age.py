"""idempotency_keys: an index on created_at, for retention

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:10:00

Every request sent with an idempotency key stores its first answer (a 1,000-change batch's
answer is ~100 KB), and nothing ever deleted them: a busy integration that keys every batch
grew the table by gigabytes a day. Retention now deletes keys older than
STOCKBELL_RETENTION_DAYS, the oldest first, a chunk at a time; this index finds them
without reading the table. On a large table the upgrade takes a while and holds back keyed
requests meanwhile (CREATE INDEX locks the table against writes).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created", table_name="idempotency_keys")
