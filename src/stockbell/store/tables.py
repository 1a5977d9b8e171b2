"""The schema. Quantities and thresholds are integer micro-units; times are UTC micros."""

from __future__ import annotations

import sqlalchemy as sa

from stockbell.domain.subscription import Status
from stockbell.domain.webhooks import DeliveryStatus
from stockbell.store.types import BigPK, JsonText, UtcMicros

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Mode = sa.String(8)

# The rows a partial index holds (migration 0006). A query that means to use one names the
# same condition, in these words: that is what lets SQLite's planner (and PostgreSQL's, for
# a prepared statement's generic plan) take the index.
ACTIVE = f"status = '{Status.ACTIVE.value}'"
WITH_EXPIRY = "expires_at IS NOT NULL"
PENDING = f"status = '{DeliveryStatus.PENDING.value}'"


def _partial(name: str, *columns: str, where: str) -> sa.Index:
    return sa.Index(name, *columns, postgresql_where=sa.text(where),
                    sqlite_where=sa.text(where))


def _tenant(account_fk: bool = True) -> list[sa.Column[object]]:
    """The tenant columns. `account_fk=False` on the append-only, high-volume tables, which
    have no such constraint on PostgreSQL (migration 0005 says why)."""
    account: sa.Column[object] = (
        sa.Column("account_id", sa.BigInteger, sa.ForeignKey("accounts.id"), nullable=False)
        if account_fk else sa.Column("account_id", sa.BigInteger, nullable=False))
    return [
        account,
        sa.Column("mode", Mode, nullable=False),
    ]


accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", UtcMicros, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    *_tenant(),
    sa.Column("client_id", sa.String(64), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("publishable", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcMicros, nullable=False),
)

server_secrets = sa.Table(
    "server_secrets", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

items = sa.Table(
    "items", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    *_tenant(),
    sa.Column("public_id", sa.String(40), nullable=False, unique=True),
    sa.Column("sku_code", sa.String(200), nullable=False),
    sa.Column("title", sa.Text),
    sa.Column("variant_title", sa.Text),
    sa.Column("upc", sa.String(64)),
    sa.Column("product_id", sa.String(200)),
    sa.Column("variant_id", sa.String(200)),
    sa.Column("size", sa.String(64)),
    sa.Column("width", sa.String(64)),
    sa.Column("part_number", sa.String(200)),
    sa.Column("generic_part_number", sa.String(200)),
    sa.Column("pricing", sa.JSON, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    sa.UniqueConstraint("account_id", "mode", "sku_code"),
    sa.Index("ix_items_upc", "account_id", "mode", "upc"),
    sa.Index("ix_items_product", "account_id", "mode", "product_id", "variant_id"),
    sa.Index("ix_items_part", "account_id", "mode", "part_number"),
)

locations = sa.Table(
    "locations", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    *_tenant(),
    sa.Column("code", sa.String(200), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    sa.UniqueConstraint("account_id", "mode", "code"),
)

markets = sa.Table(
    "markets", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    *_tenant(),
    sa.Column("code", sa.String(200), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    sa.UniqueConstraint("account_id", "mode", "code"),
)

market_locations = sa.Table(
    "market_locations", metadata,
    sa.Column("market_id", sa.BigInteger, sa.ForeignKey("markets.id"), primary_key=True),
    sa.Column("location_id", sa.BigInteger, sa.ForeignKey("locations.id"), primary_key=True),
    sa.Index("ix_market_locations_location", "location_id"),
)

stock = sa.Table(
    "stock", metadata,
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("location_id", sa.BigInteger, sa.ForeignKey("locations.id"), primary_key=True),
    sa.Column("state", sa.String(40), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("counted_at", UtcMicros),
    sa.Column("updated_at", UtcMicros, nullable=False),
)

# Materialised sum of IN_STOCK per (item, scope); scope_key is "*", "L:<id>" or "M:<id>".
availability = sa.Table(
    "availability", metadata,
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("scope_key", sa.String(40), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
)

inventory_changes = sa.Table(
    "inventory_changes", metadata,
    sa.Column("id", BigPK, primary_key=True, autoincrement=True),
    *_tenant(account_fk=False),
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("location_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(40)),
    sa.Column("from_state", sa.String(40)),
    sa.Column("to_state", sa.String(40)),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", UtcMicros, nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcMicros, nullable=False),
)

subscriptions = sa.Table(
    "subscriptions", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    *_tenant(),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("scope_key", sa.String(40), nullable=False),
    sa.Column("threshold", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("customer_email", sa.String(320)),
    sa.Column("customer_external_id", sa.String(200)),
    sa.Column("customer_first_name", sa.String(200)),
    sa.Column("customer_last_name", sa.String(200)),
    sa.Column("customer_attributes", sa.JSON, nullable=False),
    sa.Column("auto_resubscribe", sa.Boolean, nullable=False),
    sa.Column("expires_at", UtcMicros),
    sa.Column("reference", sa.String(500)),
    sa.Column("reference_origin", sa.String(500)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("notify_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("notified_at", UtcMicros),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    # The restock rule's range query: thresholds in (before, after] for one (item, scope),
    # active subscriptions only. Partial (migration 0006): a notified subscription leaves it.
    _partial("ix_subscriptions_crossing", "item_id", "scope_key", "threshold", where=ACTIVE),
    sa.Index("ix_subscriptions_tenant", "account_id", "mode", "pk"),
    _partial("ix_subscriptions_expiry", "status", "expires_at", where=WITH_EXPIRY),
)

events = sa.Table(
    "events", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    *_tenant(account_fk=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("item_id", sa.BigInteger),
    sa.Column("sequence", sa.BigInteger),
    sa.Column("occurred_at", UtcMicros, nullable=False),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("data", JsonText, nullable=False),  # text on PostgreSQL: migration 0007
    sa.Index("ix_events_tenant", "account_id", "mode", "pk"),
    sa.Index("ix_events_tenant_type", "account_id", "mode", "type", "pk"),
    # created_after and retention; BRIN on PostgreSQL (migration 0010)
    sa.Index("ix_events_created", "created_at", postgresql_using="brin"),
)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True),
    sa.Column("mode", Mode, primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Index("ix_idempotency_keys_created", "created_at"),  # retention (migration 0009)
)

webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    *_tenant(),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("event_types", sa.JSON),  # null: every type
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    # Kept in clear: every delivery is signed with it (HMAC needs the secret itself).
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("previous_secret", sa.String(100)),
    sa.Column("previous_secret_expires_at", UtcMicros),
    sa.Column("failing_since", UtcMicros),
    sa.Column("disabled_reason", sa.Text),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    sa.Index("ix_webhook_endpoints_tenant", "account_id", "mode", "pk"),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    *_tenant(account_fk=False),
    sa.Column("endpoint_pk", sa.BigInteger, sa.ForeignKey("webhook_endpoints.pk"),
              nullable=False),
    # No foreign key on PostgreSQL, a key and this column's index on SQLite (migration 0008)
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcMicros),
    sa.Column("lease_until", UtcMicros),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    # The dispatcher's claim: pending rows by due time (a settled one leaves it: 0006).
    _partial("ix_deliveries_due", "next_attempt_at", where=PENDING),
    sa.Index("ix_deliveries_endpoint", "endpoint_pk", "pk"),
    sa.Index("ix_deliveries_event", "event_id").ddl_if(dialect="sqlite"),
    # room on each page for the lease update to stay there (HOT): migration 0004
    postgresql_with={"fillfactor": 70},
)

delivery_attempts = sa.Table(
    "delivery_attempts", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("delivery_pk", sa.BigInteger, sa.ForeignKey("deliveries.pk"), nullable=False),
    sa.Column("attempted_at", UtcMicros, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("response_excerpt", sa.Text),
    sa.Index("ix_delivery_attempts_delivery", "delivery_pk", "pk"),
)

# Shoppers who asked to be told (Sequenzy "subscribers", Commerce Layer "customers").
customers = sa.Table(
    "customers", metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    *_tenant(),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("external_id", sa.String(200)),
    sa.Column("first_name", sa.String(200)),
    sa.Column("last_name", sa.String(200)),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("created_at", UtcMicros, nullable=False),
    sa.Column("updated_at", UtcMicros, nullable=False),
    sa.UniqueConstraint("account_id", "mode", "email"),
)
