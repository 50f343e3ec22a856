"""Column types that are compact on SQLite and native on PostgreSQL.

Ids are UUIDs: 16-byte BLOBs on SQLite, ``uuid`` on PostgreSQL. Times are Unix seconds: REAL on
SQLite (no text formatting on the write path), ``timestamptz`` on PostgreSQL. Reads through these
types give ``uuid.UUID`` and timezone-aware ``datetime`` on both backends.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

UTC = dt.UTC


class UUIDType(sa.types.TypeDecorator[uuid.UUID]):
    """A UUID stored as 16 bytes on SQLite and as a native uuid on PostgreSQL."""

    impl = sa.LargeBinary(16)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(sa.LargeBinary(16))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            value = uuid.UUID(str(value))
        return value if dialect.name == "postgresql" else value.bytes

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(bytes=bytes(value))


class Timestamp(sa.types.TypeDecorator[dt.datetime]):
    """A point in time: Unix seconds (REAL) on SQLite, timestamptz on PostgreSQL."""

    impl = sa.Float
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.Float())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            if isinstance(value, (int, float)):
                return dt.datetime.fromtimestamp(value, UTC)
            return value
        if isinstance(value, dt.datetime):
            return value.timestamp()
        return float(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value
        return dt.datetime.fromtimestamp(value, UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
