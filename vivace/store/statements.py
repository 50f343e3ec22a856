"""The writer's SQL: one bulk statement per table, and the values each backend wants.

Times travel as Unix seconds on both backends: SQLite stores them so, PostgreSQL turns them into
``timestamptz`` with ``to_timestamp()`` on the server, so the writer thread never builds a
``datetime``. Ids are 16 bytes on SQLite and ``uuid.UUID`` on PostgreSQL. The same statement text
serves both backends (``ON CONFLICT`` is SQLite 3.24+ and PostgreSQL).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from vivace.engine.runs import FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS, FlowRun, TaskRun
from vivace.store import schema
from vivace.store.types import Timestamp

LOG_COLUMNS = ("id", "flow_run_id", "task_run_id", "name", "level", "message", "timestamp")
CACHE_COLUMNS = (
    "key",
    "task_key",
    "task_name",
    "task_run_id",
    "result_storage",
    "result_key",
    "result_serializer",
    "created",
    "expires",
)
STATE_COLUMNS = ("seq", "type", "name", "timestamp", "message")
# The task-run columns every run has; the rest (cache key, result reference) only runs that cache
# or persist have. On SQLite a run without them is written without them: binding four NULLs per
# row costs the writer about 1 us a task, which a task that persists nothing must not pay.
BARE_TASK_RUN_WIDTH = TASK_RUN_COLUMNS.index("cache_key")
_NO_EXTRAS = (None,) * (len(TASK_RUN_COLUMNS) - BARE_TASK_RUN_WIDTH)

# A batch ready for the database: (statement name, rows), in a fixed table order.
Batch = list[tuple[str, list[tuple[Any, ...]]]]


class Statement:
    """One write: ``INSERT INTO table (columns) VALUES ... <tail>``, done the fast way per backend.

    SQLite: executemany, which re-steps one prepared statement per row (its fastest path).
    PostgreSQL: COPY the rows into a temporary staging table, then one ``INSERT ... SELECT`` with
    the same conflict clause (about five times faster than executemany here, and still
    idempotent, which a plain COPY into the table would not be).
    """

    __slots__ = ("_copy", "_merge", "_sql", "_stage", "lengths", "postgres", "stamped")

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str],
        tail: str,
        dialect: str,
        stamped: str | None = None,
    ) -> None:
        # ``stamped``: a last column that each row gets when it is written (the time, in Unix
        # seconds), so a batch replayed from the journal is stamped when it lands.
        self.stamped = stamped is not None
        if stamped is not None:
            columns = (*columns, stamped)
        names = ", ".join(columns)
        self.postgres = dialect == "postgresql"
        marker = "%s" if self.postgres else "?"
        self._sql = (
            f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([marker] * len(columns))}) "
            f"{tail}"
        )
        staging = f"vivace_staging_{table.name}"
        # The staging table holds times as Unix seconds; the merge converts them on the server.
        pg = postgresql.dialect()  # type: ignore[no-untyped-call]
        definitions, selected = [], []
        for name in columns:
            column_type = table.c[name].type
            if isinstance(column_type, Timestamp):
                definitions.append(f"{name} double precision")
                selected.append(f"to_timestamp({name})")
            else:
                definitions.append(f"{name} {column_type.compile(dialect=pg)}")
                selected.append(name)
        self._stage = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({', '.join(definitions)}) "
            "ON COMMIT DELETE ROWS"
        )
        self._copy = f"COPY {staging} ({names}) FROM STDIN"
        self._merge = (
            f"INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)} FROM {staging} {tail}"
        )
        # Declared lengths of the text columns, used only to repair a row the database refused.
        self.lengths = tuple(getattr(table.c[name].type, "length", None) for name in columns)

    def execute(self, driver_connection: Any, rows: list[tuple[Any, ...]]) -> None:
        """Write ``rows`` on the database driver's own connection (``bulk_transaction``)."""
        if self.stamped:
            now = time.time()
            rows = [(*row, now) for row in rows]
        if not self.postgres:
            driver_connection.executemany(self._sql, rows)
            return
        with driver_connection.cursor() as cursor:
            # Every time, not once per connection: a rolled-back transaction drops the table
            # it created, and the check costs well under a millisecond per batch.
            cursor.execute(self._stage)
            with cursor.copy(self._copy) as copy:
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
            cursor.execute(self._merge)


def _upsert(table: sa.Table, columns: Sequence[str], dialect: str) -> Statement:
    """Insert, or update the row when the incoming state is newer, whichever process sent it."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("id", "created"))
    tail = (
        f"ON CONFLICT (id) DO UPDATE SET {updates} "
        f"WHERE excluded.state_seq > {table.name}.state_seq"
    )
    return Statement(table, columns, tail, dialect)


def _replace(table: sa.Table, columns: Sequence[str], key: str, dialect: str) -> Statement:
    """Insert, or overwrite the row with the same ``key``: the newest entry wins."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return Statement(table, columns, f"ON CONFLICT ({key}) DO UPDATE SET {updates}", dialect)


def _insert_ignore(
    table: sa.Table, columns: Sequence[str], dialect: str, stamped: str | None = None
) -> Statement:
    return Statement(table, columns, "ON CONFLICT DO NOTHING", dialect, stamped)


class Statements:
    """The write statements and value converters for one database dialect."""

    def __init__(self, dialect: str) -> None:
        self.by_name = {
            "flows": _insert_ignore(schema.flows, ("id", "name", "created"), dialect),
            "flow_runs": _upsert(schema.flow_runs, FLOW_RUN_COLUMNS, dialect),
            "task_runs": _upsert(schema.task_runs, TASK_RUN_COLUMNS, dialect),
            # Leaves the cache and result columns as they are (a run never drops its reference).
            "task_runs_bare": _upsert(
                schema.task_runs, TASK_RUN_COLUMNS[:BARE_TASK_RUN_WIDTH], dialect
            ),
            "flow_run_states": _insert_ignore(
                schema.flow_run_states, ("flow_run_id", *STATE_COLUMNS), dialect, "recorded"
            ),
            "task_run_states": _insert_ignore(
                schema.task_run_states, ("task_run_id", *STATE_COLUMNS), dialect
            ),
            "logs": _insert_ignore(schema.logs, LOG_COLUMNS, dialect),
            "task_cache": _replace(schema.task_cache, CACHE_COLUMNS, "key", dialect),
        }
        self.sqlite = dialect == "sqlite"
        self.id: Callable[[uuid.UUID], Any] = _uuid_bytes if self.sqlite else _identity
        self.flow_run_layout = _Layout(
            FLOW_RUN_COLUMNS,
            ids=("id", "flow_id", "parent_flow_run_id", "parent_task_run_id"),
            jsons=("tags", "parameters", "opaque_parameters"),
        )
        self.task_run_layout = _Layout(
            TASK_RUN_COLUMNS,
            ids=("id", "flow_run_id", "parent_task_run_id"),
            jsons=("tags", "task_inputs"),
        )
        # Many runs share one tags tuple (their task's): encode each distinct one once.
        self._json_cache: dict[Any, str] = {}

    def run_rows(self, runs: Iterable[FlowRun | TaskRun], layout: _Layout) -> list[tuple[Any, ...]]:
        """Database rows of the runs' current snapshots, sorted by id.

        One key order in every batch keeps concurrent writers from deadlocking on PostgreSQL.
        """
        to_id, dumps = self.id, json.dumps
        ids, jsons = layout.ids, layout.jsons
        cache = self._json_cache
        rows = []
        for run in sorted(runs, key=_id_int):
            values = list(run.snapshot())
            for i in ids:
                if values[i] is not None:
                    values[i] = to_id(values[i])
            for i in jsons:
                value = values[i]
                if value is None:
                    continue
                if type(value) is tuple:  # tags: few distinct values, shared by many runs
                    text = cache.get(value)
                    if text is None:
                        text = cache[value] = dumps(value)
                        if len(cache) > 10_000:
                            cache.clear()
                    values[i] = text
                else:
                    values[i] = dumps(value, default=str)
            rows.append(tuple(values))
        return rows

    def task_run_batches(self, runs: Iterable[TaskRun]) -> Batch:
        """The task runs' rows, as (statement name, rows): see ``BARE_TASK_RUN_WIDTH``.

        PostgreSQL gets every row in one statement: rows split over two statements would no
        longer lock in one id order, and two processes writing the same runs (a cluster worker
        and its driver) could deadlock.
        """
        rows = self.run_rows(runs, self.task_run_layout)
        if not self.sqlite:
            return [("task_runs", rows)]
        width = BARE_TASK_RUN_WIDTH
        bare, full = [], []
        for row in rows:
            if row[width:] == _NO_EXTRAS:
                bare.append(row[:width])
            else:
                full.append(row)
        parts = (("task_runs_bare", bare), ("task_runs", full))
        return [(name, part) for name, part in parts if part]


def repaired(row: tuple[Any, ...], lengths: Sequence[int | None]) -> tuple[Any, ...]:
    """``row`` with text the database refused made storable.

    NUL characters and JSON ``\\u0000`` escapes (PostgreSQL text and jsonb cannot hold them) and
    lone surrogates (from undecodable file names or bytes) are escaped, and text longer than its
    column is cut, with a marker.
    """
    values = list(row)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            continue
        text = value.replace("\x00", "\\x00").replace("\\u0000", "\\\\u0000")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        limit = lengths[i] if i < len(lengths) else None
        if limit is not None and len(text) > limit:
            text = text[: limit - 3] + "..."
        values[i] = text
    return tuple(values)


def _id_int(run: FlowRun | TaskRun) -> int:
    return run.id.int


class _Layout:
    """Positions of the values in a run snapshot that need converting for the database."""

    __slots__ = ("ids", "jsons")

    def __init__(
        self,
        columns: Sequence[str],
        ids: Iterable[str],
        jsons: Iterable[str],
    ) -> None:
        self.ids = tuple(columns.index(name) for name in ids)
        self.jsons = tuple(columns.index(name) for name in jsons)


def _uuid_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


def _identity(value: Any) -> Any:
    return value
