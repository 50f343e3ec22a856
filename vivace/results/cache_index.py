"""The cache index in the database: look up a key, list entries, clear them.

Entries are written by the batched writer (``BatchWriter.record_cache_entry``) once the value is
persisted; a lookup is one primary-key read, done only by tasks that have a cache policy.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from vivace.results.persistence import ResultRef
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine, transaction
from vivace.store.records import CacheEntryRecord
from vivace.store.statements import CACHE_COLUMNS

_COLUMNS = [schema.task_cache.c[name] for name in CACHE_COLUMNS]


def lookup(
    url: str, key: str, now: float | None = None
) -> tuple[ResultRef, uuid.UUID | None] | None:
    """The unexpired entry for ``key``: its result reference and the run that wrote it."""
    table = schema.task_cache
    engine = get_engine(url)
    ensure_schema(engine)
    query = sa.select(
        table.c.result_storage,
        table.c.result_key,
        table.c.result_serializer,
        table.c.task_run_id,
        table.c.expires,
    ).where(table.c.key == key)
    with connect(engine) as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    storage, result_key, serializer, task_run_id, expires = row
    if expires is not None and expires.timestamp() <= (time.time() if now is None else now):
        return None
    return (storage, result_key, serializer), task_run_id


def entry(
    key: str,
    task_key: str,
    task_name: str,
    task_run_id: uuid.UUID | None,
    ref: ResultRef,
    expiration: float | None,
) -> tuple[Any, ...]:
    """The record the writer takes (``record_cache_entry``) for a freshly persisted value."""
    created = time.time()
    expires = None if expiration is None else created + expiration
    return (key, task_key, task_name, task_run_id, *ref, created, expires)


def read_entries(
    url: str, task_name: str | None = None, key: str | None = None, limit: int = 100
) -> list[CacheEntryRecord]:
    """Entries of the index, newest first, optionally of one task or one key."""
    table = schema.task_cache
    engine = get_engine(url)
    ensure_schema(engine)
    query = sa.select(*_COLUMNS).order_by(table.c.created.desc(), table.c.key).limit(limit)
    query = _filtered(query, task_name, key)
    with connect(engine) as conn:
        return [CacheEntryRecord(**row._mapping) for row in conn.execute(query)]


def count_entries(url: str, task_name: str | None = None, key: str | None = None) -> int:
    table = schema.task_cache
    engine = get_engine(url)
    ensure_schema(engine)
    query = _filtered(sa.select(sa.func.count()).select_from(table), task_name, key)
    with connect(engine) as conn:
        return int(conn.execute(query).scalar_one())


def delete_entries(url: str, task_name: str | None = None, key: str | None = None) -> int:
    """Delete entries (all of them, or one task's, or one key); return how many went.

    The persisted values stay in result storage: task runs may still refer to them.
    """
    table = schema.task_cache
    engine = get_engine(url)
    ensure_schema(engine)
    statement = _filtered(sa.delete(table), task_name, key)
    with transaction(engine) as conn:
        return int(conn.execute(statement).rowcount)


def _filtered(query: Any, task_name: str | None, key: str | None) -> Any:
    table = schema.task_cache
    if task_name is not None:
        query = query.where(table.c.task_name == task_name)
    if key is not None:
        query = query.where(table.c.key == key)
    return query
