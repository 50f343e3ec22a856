"""The writer's SQL: one bulk statement per table, and the values each backend wants.

SQLite stores ids as 16 bytes and times as Unix seconds; PostgreSQL takes ``uuid.UUID`` and
timezone-aware ``datetime`` values as they are. The same statement text serves both backends
(``ON CONFLICT`` is SQLite 3.24+ and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from vivace.engine.runs import FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS, FlowRun, TaskRun
from vivace.store import schema

LOG_COLUMNS = ("id", "flow_run_id", "task_run_id", "name", "level", "message", "timestamp")
STATE_COLUMNS = ("seq", "type", "name", "timestamp", "message")
UTC = dt.UTC

# A batch ready for the database: (statement name, rows), in a fixed table order.
Batch = list[tuple[str, list[tuple[Any, ...]]]]


class Statement:
    """One write: ``INSERT INTO table (columns) VALUES ... <tail>``, done the fast way per backend.

    SQLite: executemany, which re-steps one prepared statement per row (its fastest path).
    PostgreSQL: COPY the rows into a temporary staging table, then one ``INSERT ... SELECT`` with
    the same conflict clause (about five times faster than executemany here, and still
    idempotent, which a plain COPY into the table would not be).
    """

    __slots__ = ("_copy", "_merge", "_sql", "_stage", "lengths", "postgres")

    def __init__(self, table: sa.Table, columns: Sequence[str], tail: str, dialect: str) -> None:
        names = ", ".join(columns)
        self.postgres = dialect == "postgresql"
        marker = "%s" if self.postgres else "?"
        self._sql = (
            f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([marker] * len(columns))}) "
            f"{tail}"
        )
        staging = f"vivace_staging_{table.name}"
        self._stage = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self._copy = f"COPY {staging} ({names}) FROM STDIN"
        self._merge = f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} {tail}"
        # Declared lengths of the text columns, used only to repair a row the database refused.
        self.lengths = tuple(getattr(table.c[name].type, "length", None) for name in columns)

    def execute(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if not self.postgres:
            connection.exec_driver_sql(self._sql, rows)
            return
        driver_connection: Any = connection.connection.driver_connection
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


def _insert_ignore(table: sa.Table, columns: Sequence[str], dialect: str) -> Statement:
    return Statement(table, columns, "ON CONFLICT DO NOTHING", dialect)


class Statements:
    """The write statements and value converters for one database dialect."""

    def __init__(self, dialect: str) -> None:
        self.by_name = {
            "flows": _insert_ignore(schema.flows, ("id", "name", "created"), dialect),
            "flow_runs": _upsert(schema.flow_runs, FLOW_RUN_COLUMNS, dialect),
            "task_runs": _upsert(schema.task_runs, TASK_RUN_COLUMNS, dialect),
            "flow_run_states": _insert_ignore(
                schema.flow_run_states, ("flow_run_id", *STATE_COLUMNS), dialect
            ),
            "task_run_states": _insert_ignore(
                schema.task_run_states, ("task_run_id", *STATE_COLUMNS), dialect
            ),
            "logs": _insert_ignore(schema.logs, LOG_COLUMNS, dialect),
        }
        self.sqlite = dialect == "sqlite"
        self.id: Callable[[uuid.UUID], Any] = _uuid_bytes if self.sqlite else _identity
        self.ts: Callable[[float], Any] = _identity if self.sqlite else _utc_datetime
        self.flow_run_layout = _Layout(
            FLOW_RUN_COLUMNS,
            ids=("id", "flow_id", "parent_flow_run_id", "parent_task_run_id"),
            times=("state_timestamp", "start_time", "end_time", "created"),
            jsons=("tags", "parameters"),
        )
        self.task_run_layout = _Layout(
            TASK_RUN_COLUMNS,
            ids=("id", "flow_run_id", "parent_task_run_id"),
            times=("state_timestamp", "start_time", "end_time", "created"),
            jsons=("tags", "task_inputs"),
        )
        # Many runs share one tags tuple (their task's): encode each distinct one once.
        self._json_cache: dict[Any, str] = {}

    def run_rows(self, runs: Iterable[FlowRun | TaskRun], layout: _Layout) -> list[tuple[Any, ...]]:
        """Database rows of the runs' current snapshots, sorted by id.

        One key order in every batch keeps concurrent writers from deadlocking on PostgreSQL.
        """
        to_id, to_ts, dumps = self.id, self.ts, json.dumps
        convert_times = not self.sqlite  # SQLite keeps Unix seconds as they are
        ids, times, jsons = layout.ids, layout.times, layout.jsons
        cache = self._json_cache
        rows = []
        for run in sorted(runs, key=_id_int):
            values = list(run.snapshot())
            for i in ids:
                if values[i] is not None:
                    values[i] = to_id(values[i])
            if convert_times:
                for i in times:
                    if values[i] is not None:
                        values[i] = to_ts(values[i])
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

    __slots__ = ("ids", "jsons", "times")

    def __init__(
        self,
        columns: Sequence[str],
        ids: Iterable[str],
        times: Iterable[str],
        jsons: Iterable[str],
    ) -> None:
        self.ids = tuple(columns.index(name) for name in ids)
        self.times = tuple(columns.index(name) for name in times)
        self.jsons = tuple(columns.index(name) for name in jsons)


def _uuid_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


def _identity(value: Any) -> Any:
    return value


def _utc_datetime(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, UTC)
