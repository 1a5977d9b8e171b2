"""deliveries.event_id: no foreign key on PostgreSQL, an index on SQLite

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 10:00:00

Every delivery names its event, and the two were kept together by a foreign key with no
index on the referencing column. That cost twice:
- Writing: on PostgreSQL each new delivery's check reads its event and locks it
  (`FOR KEY SHARE`, a WAL record per event). A restock that fires 100,000 subscriptions
  queues 100,000 deliveries in its transaction, and the checks took ~0.7 s of it (the
  floor's deliveries: 1.3-1.55 s with the key, 0.75-0.8 s without; scratch, 2026-12-07).
- Retention: deleting an event makes the database look for deliveries that still name it.
  Without an index that is a scan of the deliveries table per deleted event, so the hourly
  purge grew with the square of the log: 9,000 old events took 1.7 s and 29,000 took 12.8 s
  on PostgreSQL, and a month of events would have held the purge for hours.

PostgreSQL drops the key (as 0005 did for the accounts): a delivery is only ever queued in
the transaction that writes its event, or by a replay that locks the events it queues
(`FOR KEY SHARE`), and the purge deletes an event only once no delivery names it, re-checked
after it has locked the event (`store/repos/events.py`). SQLite keeps the key, which cannot
be dropped without rebuilding the table, and gets the index instead: the check on delete
becomes one probe.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "fk_deliveries_event_id_events"
_INDEX = "ix_deliveries_event"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_KEY, "deliveries", type_="foreignkey")
    else:
        op.create_index(_INDEX, "deliveries", ["event_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(_KEY, "deliveries", "events", ["event_id"], ["id"])
    else:
        op.drop_index(_INDEX, table_name="deliveries")
