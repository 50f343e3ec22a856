"""The ``blocks`` table: one row per saved block, keyed by its unique name.

Rows hold what ``Block.save`` produced: the block's type as ``"module:QualName"`` and its field
values as JSON with secrets already encrypted, so nothing here ever sees a plain secret. Each
function takes an engine or a database URL (whose cached engine is used) and migrates the schema on
first use, like the read helpers in ``vivace.store.queries``; the CLI and the HTTP API use these
directly, ``Block.save``/``load``/``delete`` through the settings' database URL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.exceptions import BlockExistsError
from vivace.store import schema
from vivace.store.database import (
    conflict_insert,
    connect,
    ensure_schema,
    get_engine,
    transaction,
)

Bind = sa.Engine | str
"""An engine, or a database URL whose cached engine to use."""


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """A saved block as stored: its secrets are still encrypted markers."""

    id: uuid.UUID
    name: str
    block_type: str
    data: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime

    @property
    def type_name(self) -> str:
        """The class name part of ``block_type`` (``"S3Bucket"``), for listings."""
        return self.block_type.rpartition(":")[2]


def write_block(
    bind: Bind, name: str, block_type: str, data: dict[str, Any], *, overwrite: bool
) -> uuid.UUID:
    """Insert the block, or replace the one of that name if ``overwrite``; return its id.

    One statement in one transaction: an upsert that keeps the row's id and creation time, or a
    plain insert whose unique-name violation (also when another process won a race for the name)
    becomes ``BlockExistsError``.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.blocks
    now = dt.datetime.now(dt.UTC)
    values = {
        "id": uuid7(),
        "name": name,
        "block_type": block_type,
        "data": data,
        "created": now,
        "updated": now,
    }
    statement = conflict_insert(engine.dialect.name, table).values(values)
    if overwrite:
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.name],
            set_={
                "block_type": statement.excluded.block_type,
                "data": statement.excluded.data,
                "updated": statement.excluded.updated,
            },
        )
    try:
        with transaction(engine) as conn:
            block_id: uuid.UUID = conn.execute(statement.returning(table.c.id)).scalar_one()
    except sa.exc.IntegrityError:
        raise BlockExistsError(
            f"a block named {name!r} already exists; pass overwrite=True to replace it"
        ) from None
    return block_id


def read_block(bind: Bind, name: str) -> BlockRecord | None:
    """The block saved under ``name``, or None."""
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.blocks
    with connect(engine) as conn:
        row = conn.execute(sa.select(table).where(table.c.name == name)).one_or_none()
    return None if row is None else BlockRecord(**row._mapping)


def list_blocks(bind: Bind, *, block_type: str | None = None) -> list[BlockRecord]:
    """Every saved block ordered by name, optionally only those of one ``block_type``."""
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.blocks
    query = sa.select(table).order_by(table.c.name)
    if block_type is not None:
        query = query.where(table.c.block_type == block_type)
    with connect(engine) as conn:
        return [BlockRecord(**row._mapping) for row in conn.execute(query)]


def delete_block(bind: Bind, name: str, *, block_type: str | None = None) -> bool:
    """Delete the block saved under ``name`` (only if of ``block_type``, when given).

    Returns whether a row was deleted.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.blocks
    statement = sa.delete(table).where(table.c.name == name)
    if block_type is not None:
        statement = statement.where(table.c.block_type == block_type)
    with transaction(engine) as conn:
        return conn.execute(statement).rowcount > 0


def _engine(bind: Bind) -> sa.Engine:
    return get_engine(bind) if isinstance(bind, str) else bind
