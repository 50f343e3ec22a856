"""Read helpers over the run-history tables: what the CLI and the HTTP API show.

Every function takes an engine or a database URL first (a URL uses the process's cached engine)
and migrates the schema on first use, so a new database reads as empty rather than failing.

Lists are paginated by keyset: a page comes with ``next_cursor``, an opaque string holding the
sort key and id of the page's last row, and the next page starts strictly after that row. Unlike
OFFSET, a page costs the same however deep it is, and rows added meanwhile neither repeat nor
vanish from the pages still to come. ``next_cursor`` is None on the last page. Example::

    runs, cursor = read_flow_runs(url, state_types=["FAILED"], limit=100)
    while cursor is not None:
        more, cursor = read_flow_runs(url, state_types=["FAILED"], limit=100, cursor=cursor)

Sorting by a time that may be missing (a run not started yet has no ``start_time``) treats the
missing time as later than any other: such runs come first in ``*_desc`` orders, last in ``*_asc``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from vivace._ids import parse_id
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine
from vivace.store.records import (
    FlowRecord,
    FlowRunRecord,
    LogRecord,
    StateRecord,
    TaskRunRecord,
)
from vivace.store.types import Timestamp

Bind = sa.Engine | str
"""An engine, or a database URL whose cached engine to use."""

MAX_LIMIT = 1000
RUN_SORTS = (
    "start_time_desc",
    "start_time_asc",
    "end_time_desc",
    "created_desc",
    "created_asc",
    "name_asc",
    "name_desc",
)

_R = TypeVar("_R")


# -- flows --------------------------------------------------------------------------------------


def read_flows(
    bind: Bind, *, name_like: str | None = None, limit: int = MAX_LIMIT
) -> list[FlowRecord]:
    """Flows ordered by name, optionally only those whose name contains ``name_like``."""
    _check_limit(limit)
    table = schema.flows
    query = sa.select(*_columns(table, FlowRecord)).order_by(table.c.name).limit(limit)
    if name_like is not None:
        query = query.where(_contains(table.c.name, name_like, "name_like"))
    with _reading(_engine(bind)) as conn:
        return [FlowRecord(**row._mapping) for row in conn.execute(query)]


def count_flow_runs_per_flow(bind: Bind, flow_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many runs each of these flows has (0 for a flow without runs)."""
    ids = list(dict.fromkeys(flow_ids))
    counts = dict.fromkeys(ids, 0)
    if not ids:
        return counts
    table = schema.flow_runs
    query = (
        sa.select(table.c.flow_id, sa.func.count())
        .where(table.c.flow_id.in_(ids))
        .group_by(table.c.flow_id)
    )
    with _reading(_engine(bind)) as conn:
        for flow_id, count in conn.execute(query):
            counts[flow_id] = count
    return counts


# -- flow runs ----------------------------------------------------------------------------------


def read_flow_run(bind: Bind, flow_run_id: uuid.UUID | str) -> FlowRunRecord | None:
    """The flow run with this id, or None if there is none."""
    run_id = parse_id(flow_run_id, "flow run id")
    return _read_by_id(bind, schema.flow_runs, FlowRunRecord, run_id, _flow_run)


def read_flow_runs(
    bind: Bind,
    *,
    flow_name: str | None = None,
    state_types: Iterable[StateType | str] | None = None,
    name_like: str | None = None,
    tags: Sequence[str] | None = None,
    started_after: dt.datetime | float | None = None,
    started_before: dt.datetime | float | None = None,
    deployment_id: uuid.UUID | None = None,
    sort: str = "start_time_desc",
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[FlowRunRecord], str | None]:
    """A page of flow runs matching every filter given, and the cursor of the next page.

    ``name_like`` matches part of the run's name, ignoring case; ``tags`` keeps runs that have all
    of them; ``started_after``/``started_before`` bound ``start_time`` inclusively (a datetime with
    a timezone, or Unix seconds). ``sort`` is one of ``RUN_SORTS``.
    """
    table = schema.flow_runs
    engine = _engine(bind)
    keyset = _Keyset.for_sort(table, sort, kind="flow_runs")
    states = None if state_types is None else list(dict.fromkeys(_state_type_values(state_types)))
    # Several states by start time on SQLite: one branch per state, each read in the order of
    # the (state_type, start_time) index. With ``state_type IN (...)`` SQLite reads every run in
    # those states from that index and sorts them all; kept off it, it scans far for rare states.
    # PostgreSQL already reads ``IN`` in order (incremental sort); the union only costs it time.
    split = (
        engine.dialect.name == "sqlite"
        and states is not None
        and len(states) > 1
        and keyset.column is table.c.start_time
    )
    filters = _flow_run_filters(
        engine.dialect.name,
        flow_name=flow_name,
        state_types=None if split else states,
        name_like=name_like,
        tags=tags,
        started_after=started_after,
        started_before=started_before,
        deployment_id=deployment_id,
    )
    query = sa.select(*_columns(table, FlowRunRecord)).where(*filters)
    branches = [table.c.state_type == state for state in states or ()] if split else None
    return _page(engine, query, keyset, limit, cursor, _flow_run, branches)


def count_flow_runs_by_state(
    bind: Bind,
    *,
    flow_name: str | None = None,
    state_types: Iterable[StateType | str] | None = None,
    name_like: str | None = None,
    tags: Sequence[str] | None = None,
    started_after: dt.datetime | float | None = None,
    started_before: dt.datetime | float | None = None,
    deployment_id: uuid.UUID | None = None,
) -> dict[StateType, int]:
    """How many flow runs match the filters (as in ``read_flow_runs``), per state type.

    Every state type is a key, with 0 when no run is in it.
    """
    table = schema.flow_runs
    engine = _engine(bind)
    filters = _flow_run_filters(
        engine.dialect.name,
        flow_name=flow_name,
        state_types=state_types,
        name_like=name_like,
        tags=tags,
        started_after=started_after,
        started_before=started_before,
        deployment_id=deployment_id,
    )
    return _count_by_state(engine, table, filters)


def read_flow_run_states(bind: Bind, flow_run_id: uuid.UUID | str) -> list[StateRecord]:
    """The flow run's state history, oldest first (empty for an unknown run)."""
    table = schema.flow_run_states
    return _states(bind, table, table.c.flow_run_id, parse_id(flow_run_id, "flow run id"))


def read_subflow_runs(
    bind: Bind, parent_flow_run_id: uuid.UUID | str, *, limit: int = MAX_LIMIT
) -> list[FlowRunRecord]:
    """Flow runs started from inside the given flow run, in the order they were created."""
    _check_limit(limit)
    table = schema.flow_runs
    query = (
        sa.select(*_columns(table, FlowRunRecord))
        .where(table.c.parent_flow_run_id == parse_id(parent_flow_run_id, "parent flow run id"))
        .order_by(table.c.created, table.c.id)
        .limit(limit)
    )
    with _reading(_engine(bind)) as conn:
        return [_flow_run(dict(row._mapping)) for row in conn.execute(query)]


# -- task runs ----------------------------------------------------------------------------------


def read_task_run(bind: Bind, task_run_id: uuid.UUID | str) -> TaskRunRecord | None:
    """The task run with this id, or None if there is none."""
    run_id = parse_id(task_run_id, "task run id")
    return _read_by_id(bind, schema.task_runs, TaskRunRecord, run_id, _task_run)


def read_task_runs(
    bind: Bind,
    flow_run_id: uuid.UUID | str | None = None,
    *,
    state_types: Iterable[StateType | str] | None = None,
    name_like: str | None = None,
    sort: str = "start_time_asc",
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[TaskRunRecord], str | None]:
    """A page of the flow run's task runs (of all task runs if ``flow_run_id`` is None).

    By default in the order they started, those not started yet last.
    """
    table = schema.task_runs
    keyset = _Keyset.for_sort(table, sort, kind="task_runs")
    filters = _task_run_filters(flow_run_id, state_types)
    if name_like is not None:
        filters.append(_contains(table.c.name, name_like, "name_like"))
    query = sa.select(*_columns(table, TaskRunRecord)).where(*filters)
    return _page(_engine(bind), query, keyset, limit, cursor, _task_run)


def count_task_runs(
    bind: Bind,
    flow_run_id: uuid.UUID | str | None = None,
    *,
    state_types: Iterable[StateType | str] | None = None,
) -> int:
    """How many task runs the flow run has (all task runs if ``flow_run_id`` is None)."""
    query = sa.select(sa.func.count()).select_from(schema.task_runs)
    query = query.where(*_task_run_filters(flow_run_id, state_types))
    with _reading(_engine(bind)) as conn:
        return int(conn.execute(query).scalar_one())


def count_task_runs_by_state(
    bind: Bind, flow_run_id: uuid.UUID | str | None = None
) -> dict[StateType, int]:
    """How many task runs the flow run has per state type (every state type a key, 0 if none)."""
    filters = _task_run_filters(flow_run_id, None)
    return _count_by_state(_engine(bind), schema.task_runs, filters)


def read_task_runs_by_id(
    bind: Bind, task_run_ids: Iterable[uuid.UUID | str]
) -> dict[uuid.UUID, TaskRunRecord]:
    """The task runs with these ids, by id; ids of no task run are left out.

    Any number of ids: they are asked ``MAX_LIMIT`` at a time (a reduce over 10,000 mapped runs
    has 10,000 upstreams).
    """
    table = schema.task_runs
    found: dict[uuid.UUID, TaskRunRecord] = {}
    for row in _rows_by_id(bind, _columns(table, TaskRunRecord), task_run_ids):
        run = _task_run(dict(row._mapping))
        found[run.id] = run
    return found


def read_task_run_names(
    bind: Bind, task_run_ids: Iterable[uuid.UUID | str]
) -> dict[uuid.UUID, tuple[str, StateType]]:
    """The name and state type of the task runs with these ids, by id; unknown ids left out.

    ``read_task_runs_by_id`` for a list of upstreams: three columns instead of whole rows (whose
    ``task_inputs`` alone can be a megabyte), ``MAX_LIMIT`` ids a query.
    """
    table = schema.task_runs
    columns = [table.c.id, table.c.name, table.c.state_type]
    return {
        row.id: (row.name, StateType(row.state_type))
        for row in _rows_by_id(bind, columns, task_run_ids)
    }


def read_task_run_states(bind: Bind, task_run_id: uuid.UUID | str) -> list[StateRecord]:
    """The task run's state history, oldest first (empty for an unknown run)."""
    table = schema.task_run_states
    return _states(bind, table, table.c.task_run_id, parse_id(task_run_id, "task run id"))


# -- logs ---------------------------------------------------------------------------------------


def read_logs(
    bind: Bind,
    *,
    flow_run_id: uuid.UUID | str | None = None,
    task_run_id: uuid.UUID | str | None = None,
    min_level: int | str | None = None,
    after: dt.datetime | float | None = None,
    limit: int = 200,
    cursor: str | None = None,
) -> tuple[list[LogRecord], str | None]:
    """A page of log lines, oldest first, and the cursor of the next page.

    ``flow_run_id`` keeps the lines of a flow run (its task runs' lines included), ``task_run_id``
    those of one task run, ``min_level`` those at or above a level (a number or a name such as
    ``"WARNING"``), ``after`` those stamped strictly after a time (aware datetime or Unix seconds).
    """
    page = read_log_page(
        bind,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
        min_level=min_level,
        after=after,
        limit=limit,
        cursor=cursor,
    )
    return page.records, page.next_cursor


@dataclasses.dataclass(frozen=True, slots=True)
class LogPage:
    """A page of log lines; ``resume_cursor`` is where a live tail polls from next.

    ``next_cursor`` is None on the last page, as for every list. ``resume_cursor`` is the
    position after the page's last line (the cursor given when the page is empty), so polling
    with it returns only lines written since. Lines are ordered by their own timestamps, so a
    line committed late with a time before the cursor is not returned to a tail.
    """

    records: list[LogRecord]
    next_cursor: str | None
    resume_cursor: str | None


def read_log_page(
    bind: Bind,
    *,
    flow_run_id: uuid.UUID | str | None = None,
    task_run_id: uuid.UUID | str | None = None,
    min_level: int | str | None = None,
    after: dt.datetime | float | None = None,
    limit: int = 200,
    cursor: str | None = None,
) -> LogPage:
    """``read_logs`` with the cursor a live tail resumes from (see ``LogPage``)."""
    table = schema.logs
    filters: list[sa.ColumnElement[bool]] = []
    if flow_run_id is not None:
        filters.append(table.c.flow_run_id == parse_id(flow_run_id, "flow run id"))
    if task_run_id is not None:
        filters.append(table.c.task_run_id == parse_id(task_run_id, "task run id"))
    if min_level is not None:
        filters.append(table.c.level >= _level(min_level))
    if after is not None:
        filters.append(table.c.timestamp > _when(after, "after"))
    keyset = _Keyset(kind="logs", column=table.c.timestamp, id_column=table.c.id, descending=False)
    query = sa.select(*_columns(table, LogRecord)).where(*filters)
    rows, next_cursor = _page_rows(_engine(bind), query, keyset, limit, cursor)
    resume_cursor = cursor
    if rows:
        resume_cursor = keyset.encode(rows[-1]["_sort_key"], rows[-1]["id"])
    records = []
    for values in rows:
        del values["_sort_key"]
        records.append(LogRecord(**values))
    return LogPage(records, next_cursor, resume_cursor)


# -- keyset pagination --------------------------------------------------------------------------


class _RawTimestamp(sa.types.TypeDecorator[Any]):
    """A Timestamp read as stored: float seconds on SQLite, a datetime on PostgreSQL.

    The cursor keeps this exact value; the datetime a ``Timestamp`` reads on SQLite is rounded to
    microseconds and would not compare equal to the stored float, repeating or skipping rows.
    """

    impl = sa.Float
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        return Timestamp().load_dialect_impl(dialect)


@dataclasses.dataclass(frozen=True, slots=True)
class _Keyset:
    """An order (one column, then the id as a tie-breaker) and how to resume after a row."""

    kind: str  # what the cursor pages through, so a cursor cannot be used elsewhere
    column: sa.Column[Any]
    id_column: sa.Column[Any]
    descending: bool

    @classmethod
    def for_sort(cls, table: sa.Table, sort: str, *, kind: str) -> _Keyset:
        if sort not in RUN_SORTS:
            raise ConfigurationError(
                f"sort {sort!r} is not a known order; expected one of {', '.join(RUN_SORTS)}"
            )
        name, _, direction = sort.rpartition("_")
        return cls(f"{kind}:{sort}", table.c[name], table.c.id, direction == "desc")

    @property
    def is_time(self) -> bool:
        return isinstance(self.column.type, Timestamp)

    def sort_key(self) -> sa.ColumnElement[Any]:
        key = sa.type_coerce(self.column, _RawTimestamp()) if self.is_time else self.column
        return key.label("_sort_key")

    def order_by(self) -> list[sa.ColumnElement[Any]]:
        # NULL (not started, not ended) sorts as the latest time, as PostgreSQL indexes have it.
        if self.descending:
            return [self.column.desc().nulls_first(), self.id_column.desc()]
        return [self.column.asc().nulls_last(), self.id_column.asc()]

    def after(self, value: Any, last_id: uuid.UUID) -> sa.ColumnElement[bool]:
        """Rows that come after the row with sort key ``value`` and id ``last_id``."""
        # The bound repeated on its own (``column <= value``) lets the index start the scan at
        # the cursor: a deep page, or a live tail's poll, then costs what the first page does
        # instead of growing with the rows before it. Not with trailing NULLs, where the OR with
        # IS NULL would make SQLite merge two index scans and sort the rest of the list.
        column, id_column = self.column, self.id_column
        if self.descending:
            if value is None:  # in the leading NULLs: later NULLs, then every non-NULL
                return sa.or_(sa.and_(column.is_(None), id_column < last_id), column.is_not(None))
            return sa.and_(column <= value, sa.or_(column < value, id_column < last_id))
        if value is None:  # in the trailing NULLs
            return sa.and_(column.is_(None), id_column > last_id)
        if column.nullable:
            condition = sa.or_(column > value, sa.and_(column == value, id_column > last_id))
            return sa.or_(condition, column.is_(None))
        return sa.and_(column >= value, sa.or_(column > value, id_column > last_id))

    def encode(self, value: Any, last_id: uuid.UUID) -> str:
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        text = json.dumps([self.kind, value, last_id.hex], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> tuple[Any, uuid.UUID]:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            kind, value, last_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if kind != self.kind:
                raise ValueError(kind)
            return self._decode_value(value), uuid.UUID(hex=last_id)
        except (ValueError, TypeError, OverflowError, OSError, binascii.Error, UnicodeDecodeError):
            raise ConfigurationError(
                f"cursor {cursor!r} is not a cursor of this list ({self.kind}); expected the "
                "next_cursor returned with the previous page, with the same sort"
            ) from None

    def _decode_value(self, value: Any) -> Any:
        if value is None:
            return None
        if self.is_time:
            # Only times a datetime can hold: a crafted cursor must not overflow in the driver.
            if isinstance(value, str):
                when = dt.datetime.fromisoformat(value)
                if when.tzinfo is None:
                    raise ValueError(value)
                when.astimezone(dt.UTC)  # raises OverflowError near the years 1 and 9999
                return when
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                dt.datetime.fromtimestamp(value, dt.UTC)  # raises past the year 9999
                return float(value)
        elif isinstance(value, str):
            return value
        raise ValueError(value)


def _page(
    engine: sa.Engine,
    query: sa.Select[Any],
    keyset: _Keyset,
    limit: int,
    cursor: str | None,
    convert: Callable[[dict[str, Any]], _R],
    branches: Sequence[sa.ColumnElement[bool]] | None = None,
) -> tuple[list[_R], str | None]:
    rows, next_cursor = _page_rows(engine, query, keyset, limit, cursor, branches)
    records = []
    for values in rows:
        del values["_sort_key"]
        records.append(convert(values))
    return records, next_cursor


def _page_rows(
    engine: sa.Engine,
    query: sa.Select[Any],
    keyset: _Keyset,
    limit: int,
    cursor: str | None,
    branches: Sequence[sa.ColumnElement[bool]] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The page's rows, each with its raw ``_sort_key``, and the cursor of the next page.

    With ``branches`` (conditions that split the rows, none in two), the page is merged from one
    page per branch: each reads no more rows than the page has, in the order of an index that its
    condition and the sort follow.
    """
    _check_limit(limit)
    if cursor is not None:
        query = query.where(keyset.after(*keyset.decode(cursor)))
    # One row more than asked tells whether there is a next page.
    query = query.order_by(*keyset.order_by()).limit(limit + 1)
    if branches:
        # Each branch's page in a subquery of its own (SQLite allows no ORDER BY or LIMIT in a
        # branch of a UNION), as ids only: the whole rows of as many subqueries would cost more
        # in building the statement (~1 ms) than the merged page's rows do to read again by id.
        ids = query.with_only_columns(keyset.id_column)
        pages = sa.union_all(*(sa.select(ids.where(each).subquery()) for each in branches))
        page_ids = pages.subquery()
        query = (
            sa.select(*query.selected_columns)
            .join_from(page_ids, keyset.id_column.table, page_ids.c.id == keyset.id_column)
            .order_by(*keyset.order_by())
            .limit(limit + 1)
        )
    query = query.add_columns(keyset.sort_key())
    with _reading(engine) as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    next_cursor = None
    if len(rows) > limit:
        del rows[limit:]
        next_cursor = keyset.encode(rows[-1]["_sort_key"], rows[-1]["id"])
    return rows, next_cursor


# -- filters and arguments ----------------------------------------------------------------------


def _flow_run_filters(
    dialect: str,
    *,
    flow_name: str | None,
    state_types: Iterable[StateType | str] | None,
    name_like: str | None,
    tags: Sequence[str] | None,
    started_after: dt.datetime | float | None,
    started_before: dt.datetime | float | None,
    deployment_id: uuid.UUID | None = None,
) -> list[sa.ColumnElement[bool]]:
    table = schema.flow_runs
    filters: list[sa.ColumnElement[bool]] = []
    if deployment_id is not None:
        filters.append(table.c.deployment_id == deployment_id)
    if flow_name is not None:
        filters.append(table.c.flow_name == flow_name)
    if state_types is not None:
        filters.append(table.c.state_type.in_(_state_type_values(state_types)))
    if name_like is not None:
        filters.append(_contains(table.c.name, name_like, "name_like"))
    if tags is not None:
        filters.extend(_has_tags(dialect, table.c.tags, tags))
    if started_after is not None:
        filters.append(table.c.start_time >= _when(started_after, "started_after"))
    if started_before is not None:
        filters.append(table.c.start_time <= _when(started_before, "started_before"))
    return filters


def _task_run_filters(
    flow_run_id: uuid.UUID | str | None, state_types: Iterable[StateType | str] | None
) -> list[sa.ColumnElement[bool]]:
    table = schema.task_runs
    filters: list[sa.ColumnElement[bool]] = []
    if flow_run_id is not None:
        filters.append(table.c.flow_run_id == parse_id(flow_run_id, "flow run id"))
    if state_types is not None:
        filters.append(table.c.state_type.in_(_state_type_values(state_types)))
    return filters


def _has_tags(
    dialect: str, column: sa.Column[Any], tags: Sequence[str]
) -> list[sa.ColumnElement[bool]]:
    if isinstance(tags, str):
        tags = [tags]
    if not all(isinstance(tag, str) for tag in tags):
        raise ConfigurationError(
            f"tags {tags!r} is not a list of strings; expected for instance ['etl', 'nightly']"
        )
    if not tags:
        return []
    if dialect == "postgresql":
        # JSONB containment: one condition, and a GIN index on tags can answer it.
        return [sa.type_coerce(column, postgresql.JSONB).contains(list(tags))]
    conditions: list[sa.ColumnElement[bool]] = []
    for tag in dict.fromkeys(tags):
        each = sa.func.json_each(column).table_valued("value")
        conditions.append(sa.exists(sa.select(1).select_from(each).where(each.c.value == tag)))
    return conditions


def _contains(column: sa.Column[Any], text: str, argument: str) -> sa.ColumnElement[bool]:
    if not isinstance(text, str):
        raise ConfigurationError(f"{argument} {text!r} is not a string; expected part of a name")
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def _state_type_values(state_types: Iterable[StateType | str]) -> list[str]:
    if isinstance(state_types, str):
        state_types = [state_types]
    values = [_state_type(value).value for value in state_types]
    if not values:
        raise ConfigurationError(
            "state_types is empty; expected None (any state) or at least one state type"
        )
    return values


def _state_type(value: StateType | str) -> StateType:
    if isinstance(value, StateType):
        return value
    try:
        return StateType(str(value).upper())
    except ValueError:
        expected = ", ".join(member.value for member in StateType)
        raise ConfigurationError(
            f"state type {value!r} is not a state type; expected one of {expected}"
        ) from None


def _when(value: dt.datetime | float, argument: str) -> dt.datetime | float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ConfigurationError(
                f"{argument} {value.isoformat()!r} has no timezone; expected an aware datetime "
                "such as datetime.now(timezone.utc), or Unix seconds"
            )
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # as it is: SQLite stores seconds finer than a datetime holds
    raise ConfigurationError(
        f"{argument} {value!r} is not a time; expected a datetime or Unix seconds"
    )


def _level(value: int | str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        level = logging.getLevelName(value.upper())
        if isinstance(level, int):
            return level
    raise ConfigurationError(
        f"log level {value!r} is not a level; expected a number or one of "
        "DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(
            f"limit {limit!r} is out of range; expected a whole number from 1 to {MAX_LIMIT}"
        )


# -- rows to records ----------------------------------------------------------------------------


def _engine(bind: Bind) -> sa.Engine:
    # No connection yet: every argument is checked before the database is touched.
    return get_engine(bind) if isinstance(bind, str) else bind


@contextlib.contextmanager
def _reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    ensure_schema(engine)
    with connect(engine) as conn:
        yield conn


def _columns(table: sa.Table, record: type[Any]) -> list[sa.Column[Any]]:
    """The table's columns that the record class has fields for, in the record's order."""
    return [table.c[field.name] for field in dataclasses.fields(record)]


def _read_by_id(
    bind: Bind,
    table: sa.Table,
    record: type[Any],
    run_id: uuid.UUID,
    convert: Callable[[dict[str, Any]], _R],
) -> _R | None:
    """The row of ``table`` with this id as a record, or None if there is none."""
    query = sa.select(*_columns(table, record)).where(table.c.id == run_id)
    with _reading(_engine(bind)) as conn:
        row = conn.execute(query).first()
    return None if row is None else convert(dict(row._mapping))


def _rows_by_id(
    bind: Bind, columns: Sequence[sa.Column[Any]], task_run_ids: Iterable[uuid.UUID | str]
) -> Iterator[sa.Row[Any]]:
    """The columns of the task runs with these ids (unknown ids yield nothing), asked
    ``MAX_LIMIT`` ids a query; no query at all for no ids."""
    ids = list(dict.fromkeys(parse_id(value, "task run id") for value in task_run_ids))
    if not ids:
        return
    id_column = schema.task_runs.c.id
    with _reading(_engine(bind)) as conn:
        for start in range(0, len(ids), MAX_LIMIT):
            query = sa.select(*columns).where(id_column.in_(ids[start : start + MAX_LIMIT]))
            yield from conn.execute(query)


def _count_by_state(
    engine: sa.Engine, table: sa.Table, filters: Sequence[sa.ColumnElement[bool]]
) -> dict[StateType, int]:
    """How many rows of ``table`` match the filters per state type (every type a key)."""
    query = (
        sa.select(table.c.state_type, sa.func.count()).where(*filters).group_by(table.c.state_type)
    )
    counts = dict.fromkeys(StateType, 0)
    with _reading(engine) as conn:
        for state_type, count in conn.execute(query):
            counts[StateType(state_type)] = count
    return counts


def _flow_run(values: dict[str, Any]) -> FlowRunRecord:
    values["state_type"] = StateType(values["state_type"])
    values["tags"] = tuple(values["tags"] or ())
    values["parameters"] = values["parameters"] or {}
    return FlowRunRecord(**values)


def _task_run(values: dict[str, Any]) -> TaskRunRecord:
    values["state_type"] = StateType(values["state_type"])
    values["tags"] = tuple(values["tags"] or ())
    values["task_inputs"] = values["task_inputs"] or {}
    return TaskRunRecord(**values)


def _states(
    bind: Bind, table: sa.Table, run_column: sa.Column[Any], run_id: uuid.UUID
) -> list[StateRecord]:
    query = (
        sa.select(table.c.seq, table.c.type, table.c.name, table.c.timestamp, table.c.message)
        .where(run_column == run_id)
        .order_by(table.c.seq)
    )
    with _reading(_engine(bind)) as conn:
        return [
            StateRecord(seq, StateType(type_), name, timestamp, message)
            for seq, type_, name, timestamp, message in conn.execute(query)
        ]
