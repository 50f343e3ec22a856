"""Fixtures for the block tests: the ``blocks`` table read and written without the Block API.

- ``block_rows``: the stored rows, ``data`` as the database's own JSON text, so a test sees exactly
  what is at rest.
- ``insert_block_row``: store a row by hand (a type that cannot be imported, data a class no
  longer accepts), as another version of the code or another process would have.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine, transaction

BlockRows = Callable[[], dict[str, tuple[str, str]]]
InsertBlockRow = Callable[[str, str, dict[str, Any]], None]


@pytest.fixture
def block_rows(database_url: str) -> BlockRows:
    """Name -> (block_type, data as stored JSON text) for every row of the blocks table."""

    def read() -> dict[str, tuple[str, str]]:
        engine = get_engine(database_url)
        ensure_schema(engine)
        with connect(engine) as conn:
            rows = conn.execute(
                sa.text("SELECT name, block_type, CAST(data AS TEXT) FROM blocks ORDER BY name")
            )
            return {name: (block_type, data) for name, block_type, data in rows}

    return read


@pytest.fixture
def insert_block_row(database_url: str) -> InsertBlockRow:
    """Insert a block row directly: (name, block_type, data)."""

    def insert(name: str, block_type: str, data: dict[str, Any]) -> None:
        engine = get_engine(database_url)
        ensure_schema(engine)
        now = dt.datetime.now(dt.UTC)
        with transaction(engine) as conn:
            conn.execute(
                schema.blocks.insert().values(
                    id=uuid7(),
                    name=name,
                    block_type=block_type,
                    data=data,
                    created=now,
                    updated=now,
                )
            )

    return insert
