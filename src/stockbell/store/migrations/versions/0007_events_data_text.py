"""events.data: text, not json (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 01:20:00

PostgreSQL's `json` type parses every value written to it, to check it is JSON. Every event's
data is written by Stockbell itself (orjson, or the database's own JSON functions for a
restock's events, `store/repos/fired_events.py`), read back whole (the dispatcher sends it as
stored) and never queried into, so the check finds nothing and costs the writer: measured on
100,000 rows of a 1.1 KB event, an `INSERT ... SELECT` took 0.83-0.91 s into `json` and
0.44-0.49 s into `text` (scratch, 2026-12-07). A restock that fires 100,000 subscriptions
writes that many events inside its transaction. SQLite stores JSON as text already.

The upgrade rewrites the table (ALTER ... TYPE); on a large event log it takes a while and
holds the table's lock meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN data TYPE text USING data::text")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN data TYPE json USING data::json")
