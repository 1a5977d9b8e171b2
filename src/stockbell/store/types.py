"""Column types that behave identically on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcMicros(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes stored as integer microseconds since the epoch.

    Exact, ordered the same on both databases, and never naive on the way out.
    """

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return from_micros(int(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_text(value: Any) -> str:
    """A JSON column's stored text. orjson is several times faster than the standard library
    on the bulk paths; what it refuses (integers beyond 64 bits in free-form attributes) the
    standard library still writes, so every value a client may send is stored as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def to_micros(value: datetime | None) -> int | None:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
