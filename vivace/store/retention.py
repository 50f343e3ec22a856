"""Retention: delete the run history older than a cutoff, in small transactions.

What goes (``expired`` below means "in a final state, COMPLETED, FAILED, CRASHED or CANCELLED,
and ended before the cutoff": its ``end_time``, else its ``state_timestamp``):

- expired flow runs, each with its state history, its task runs (``task_runs.flow_run_id``, the
  tasks called inside other tasks included), their state histories and every log line of the
  run. A subflow run is a flow run of its own: it goes when it is expired itself, which it is
  once its parent is (a subflow ends before its parent), in the same or a later batch. Runs made
  from a deployment follow the same rule;
- expired task runs called outside any flow (``flow_run_id`` NULL), with their state histories
  and logs;
- notification deliveries created before the cutoff (those of the deleted runs among them);
- concurrency leases that expired a day ago or more (their holder is long gone);
- ``writer_stats`` rows not updated since the cutoff.

A run that is not final is never deleted, however old: a RUNNING run is the zombie service's to
end, a SCHEDULED one the scheduler's or a worker's. Result files in result storage and the cache
index (``task_cache``, which expires on its own) are left alone.

Short locks: flow runs go ``batch_size`` at a time, each batch in one transaction, together with
all their rows, so a reader sees a run whole or not at all; except that a batch deletes at most
``CHILD_ROWS`` logs and task runs: the rows of runs with more go over several transactions, the
runs themselves last. The other tables go ``batch_size`` rows at a time. On PostgreSQL a batch
locks its flow runs ``FOR UPDATE SKIP LOCKED``, so two processes deleting at once (two servers)
take different runs, and a run whose state is changing at that moment is left for the next
pass. :func:`delete_expired` stops starting new batches once
``time_budget`` seconds have gone (each kind of row gets at least one batch per call) and says
how many runs remain.

The queries follow the indexes of :mod:`vivace.store.schema`: expired flow runs through
``ix_flow_runs_state_type_start_time`` (a run that ended before the cutoff started before it, or
never started: two ranges, queried one after the other), their rows through the ``flow_run_id``
indexes of task runs and logs and the primary keys of the state tables; standalone task runs
through ``ix_task_runs_flow_run_id_start_time`` (``flow_run_id IS NULL``) and their logs through
``ix_logs_task_run_id_timestamp``; the other tables through their time indexes.

Example::

    report = delete_expired(url, retention_cutoff(30), batch_size=500, time_budget=5.0)
    report.deleted["flow_runs"], report.remaining
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa

from vivace.engine.states import FINAL_TYPES
from vivace.exceptions import StoreUnavailableError
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, transaction
from vivace.store.queries import Bind, _engine, _reading

DAY_SECONDS = 86_400.0
LEASE_GRACE_SECONDS = DAY_SECONDS
"""Concurrency leases expired this long ago are deleted: their holders are long gone."""

CHILD_ROWS = 10_000
"""Logs, and task runs, of expired flow runs deleted per transaction at most (see below)."""

REMAINING_COUNT_CAP = 100_000
"""Runs left to delete are counted up to this many (a count must not scan a huge backlog)."""

TABLES = (
    "flow_runs",
    "flow_run_states",
    "task_runs",
    "task_run_states",
    "logs",
    "notification_deliveries",
    "concurrency_leases",
    "writer_stats",
)
"""The tables retention deletes from, in the order reports list them."""

_FINAL = sorted(state.value for state in FINAL_TYPES)
# Ids per IN (...) list: far below SQLite's and PostgreSQL's limits on bound parameters.
_IN_CHUNK = 500


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one pass deleted, per table, and how many expired runs it left for later."""

    deleted: dict[str, int]
    # Expired flow runs and standalone task runs still there (at most REMAINING_COUNT_CAP).
    remaining: int

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def summary(self) -> str | None:
        """One line for the service's log and ``vivace server services ls``; None if the pass
        found nothing to do."""
        if not self.total and not self.remaining:
            return None
        parts = [f"{count:,} {table}" for table, count in self.deleted.items() if count]
        text = "deleted " + (", ".join(parts) if parts else "nothing")
        if self.remaining:
            capped = self.remaining >= REMAINING_COUNT_CAP
            shown = f"{self.remaining:,}" + ("+" if capped else "")
            text += f"; {shown} expired runs remain for the next loop"
        return text


def retention_cutoff(days: float, now: float | None = None) -> float:
    """The Unix time before which a run that ended is expired, keeping ``days`` days."""
    if not days > 0:
        raise ValueError(f"retention of {days!r} days is not valid; expected a number above 0")
    return (time.time() if now is None else now) - days * DAY_SECONDS


def count_expired(bind: Bind, cutoff: float, now: float | None = None) -> dict[str, int]:
    """The rows per table that :func:`delete_expired` would delete now (for a dry run)."""
    now = time.time() if now is None else now
    runs, tasks = schema.flow_runs, schema.task_runs
    flow_run_states, task_run_states, logs = (
        schema.flow_run_states,
        schema.task_run_states,
        schema.logs,
    )
    queries: dict[str, list[sa.Select[int]]] = {table: [] for table in TABLES}
    # The two selections of each kind are disjoint (started or not), so their counts add up.
    for expired in _expired_flow_runs(cutoff):
        old_runs = sa.select(runs.c.id).where(expired)
        run_tasks = sa.select(tasks.c.id).where(tasks.c.flow_run_id.in_(old_runs))
        queries["flow_runs"].append(_count(runs, expired))
        queries["flow_run_states"].append(
            _count(flow_run_states, flow_run_states.c.flow_run_id.in_(old_runs))
        )
        queries["task_runs"].append(_count(tasks, tasks.c.flow_run_id.in_(old_runs)))
        queries["task_run_states"].append(
            _count(task_run_states, task_run_states.c.task_run_id.in_(run_tasks))
        )
        queries["logs"].append(_count(logs, logs.c.flow_run_id.in_(old_runs)))
    for expired in _expired_standalone(cutoff):
        old_tasks = sa.select(tasks.c.id).where(expired)
        queries["task_runs"].append(_count(tasks, expired))
        queries["task_run_states"].append(
            _count(task_run_states, task_run_states.c.task_run_id.in_(old_tasks))
        )
        queries["logs"].append(_count(logs, logs.c.task_run_id.in_(old_tasks)))
    queries["notification_deliveries"].append(_count(*_old_deliveries(cutoff)))
    queries["concurrency_leases"].append(_count(*_old_leases(now)))
    queries["writer_stats"].append(_count(*_old_writer_stats(cutoff)))
    with _reading(_engine(bind)) as conn:
        return {
            table: sum(int(conn.execute(query).scalar_one()) for query in table_queries)
            for table, table_queries in queries.items()
        }


def delete_expired(
    bind: Bind,
    cutoff: float,
    *,
    batch_size: int,
    time_budget: float | None = None,
    now: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RetentionReport:
    """Delete what is expired at ``cutoff`` (see the module docstring), batch by batch.

    ``time_budget``: seconds after which no new batch starts, beyond the first one of each kind
    of row (None: go on until everything expired is gone). ``now`` places the lease grace period
    (default: the current time); ``clock`` measures the budget.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r} is not valid; expected a whole number >= 1")
    engine = _engine(bind)
    ensure_schema(engine)
    now = time.time() if now is None else now
    deadline = None if time_budget is None else clock() + time_budget
    deleted: collections.Counter[str] = collections.Counter()
    passes: list[Callable[[sa.Connection], tuple[collections.Counter[str], bool]]] = [
        lambda conn: _delete_flow_run_batch(conn, cutoff, batch_size),
        lambda conn: _delete_standalone_batch(conn, cutoff, batch_size),
        lambda conn: _delete_rows_batch(
            conn, "notification_deliveries", _old_deliveries(cutoff), batch_size
        ),
        lambda conn: _delete_rows_batch(conn, "concurrency_leases", _old_leases(now), batch_size),
        lambda conn: _delete_rows_batch(
            conn, "writer_stats", _old_writer_stats(cutoff), batch_size
        ),
    ]
    stopped_early = False
    for delete_batch in passes:
        while True:
            with transaction(engine) as conn:
                counts, more = delete_batch(conn)
            deleted.update(counts)
            if not more:
                break
            if deadline is not None and clock() >= deadline:
                stopped_early = True
                break
    remaining = _count_remaining(engine, cutoff) if stopped_early else 0
    return RetentionReport({table: deleted[table] for table in TABLES}, remaining)


# -- what is expired ----------------------------------------------------------------------------


def _ended_before(table: sa.Table, cutoff: float) -> tuple[sa.ColumnElement[bool], ...]:
    """Final and ended before the cutoff, as two selections: runs that started (before the
    cutoff, since they ended before it) and runs that never did. Each is one range of the
    ``(state_type, start_time)`` index; one OR of the two would leave PostgreSQL's planner
    guessing, and scanning the whole table once nothing is left to delete."""
    final = table.c.state_type.in_(_FINAL)
    ended = sa.func.coalesce(table.c.end_time, table.c.state_timestamp) < cutoff
    return (
        sa.and_(final, table.c.start_time < cutoff, ended),
        sa.and_(final, table.c.start_time.is_(None), ended),
    )


def _expired_flow_runs(cutoff: float) -> tuple[sa.ColumnElement[bool], ...]:
    return _ended_before(schema.flow_runs, cutoff)


def _expired_standalone(cutoff: float) -> tuple[sa.ColumnElement[bool], ...]:
    tasks = schema.task_runs
    return tuple(
        sa.and_(tasks.c.flow_run_id.is_(None), expired) for expired in _ended_before(tasks, cutoff)
    )


def _old_deliveries(cutoff: float) -> tuple[sa.Table, sa.ColumnElement[bool]]:
    table = schema.notification_deliveries
    return table, table.c.created < cutoff


def _old_leases(now: float) -> tuple[sa.Table, sa.ColumnElement[bool]]:
    table = schema.concurrency_leases
    return table, table.c.expires < now - LEASE_GRACE_SECONDS


def _old_writer_stats(cutoff: float) -> tuple[sa.Table, sa.ColumnElement[bool]]:
    table = schema.writer_stats
    return table, table.c.updated < cutoff


# -- one batch each -----------------------------------------------------------------------------


def _delete_flow_run_batch(
    conn: sa.Connection, cutoff: float, batch_size: int, child_rows: int | None = None
) -> tuple[collections.Counter[str], bool]:
    """Up to ``batch_size`` expired flow runs with all their rows; whether more may remain.

    At most ``child_rows`` logs and ``child_rows`` task runs (with their states) go in one
    batch, so a run of a hundred thousand tasks does not make one long transaction: when its
    rows are more, this batch deletes that many of them and leaves the runs themselves to the
    next batch, which takes the rest (a run goes last, once nothing of it is left).
    """
    child_rows = CHILD_ROWS if child_rows is None else child_rows
    runs, tasks, logs = schema.flow_runs, schema.task_runs, schema.logs
    ids = _select_ids(conn, runs, _expired_flow_runs(cutoff), batch_size)
    counts: collections.Counter[str] = collections.Counter()
    whole = True  # every log and task run of these runs is deleted
    for chunk in _chunks(ids):
        log_room = child_rows - counts["logs"]
        run_logs = sa.select(logs.c.id).where(logs.c.flow_run_id.in_(chunk)).limit(log_room)
        deleted_logs = _delete(conn, logs, logs.c.id.in_(run_logs.scalar_subquery()))
        counts["logs"] += deleted_logs
        task_room = child_rows - counts["task_runs"]
        run_tasks = sa.select(tasks.c.id).where(tasks.c.flow_run_id.in_(chunk)).limit(task_room)
        task_ids = list(conn.execute(run_tasks).scalars())
        for task_chunk in _chunks(task_ids):
            counts["task_run_states"] += _delete(
                conn, schema.task_run_states, schema.task_run_states.c.task_run_id.in_(task_chunk)
            )
            counts["task_runs"] += _delete(conn, tasks, tasks.c.id.in_(task_chunk))
        if deleted_logs >= log_room or len(task_ids) >= task_room:
            whole = False  # maybe more: the runs go in a later batch
            break
    if not whole:
        return counts, True
    for chunk in _chunks(ids):
        counts["flow_run_states"] += _delete(
            conn, schema.flow_run_states, schema.flow_run_states.c.flow_run_id.in_(chunk)
        )
        counts["flow_runs"] += _delete(conn, runs, runs.c.id.in_(chunk))
    return counts, len(ids) == batch_size


def _delete_standalone_batch(
    conn: sa.Connection, cutoff: float, batch_size: int
) -> tuple[collections.Counter[str], bool]:
    """Up to ``batch_size`` expired task runs of no flow run, with their states and logs."""
    tasks = schema.task_runs
    ids = _select_ids(conn, tasks, _expired_standalone(cutoff), batch_size)
    counts: collections.Counter[str] = collections.Counter()
    for chunk in _chunks(ids):
        counts["logs"] += _delete(conn, schema.logs, schema.logs.c.task_run_id.in_(chunk))
        counts["task_run_states"] += _delete(
            conn, schema.task_run_states, schema.task_run_states.c.task_run_id.in_(chunk)
        )
        counts["task_runs"] += _delete(conn, tasks, tasks.c.id.in_(chunk))
    return counts, len(ids) == batch_size


def _delete_rows_batch(
    conn: sa.Connection,
    name: str,
    selection: tuple[sa.Table, sa.ColumnElement[bool]],
    batch_size: int,
) -> tuple[collections.Counter[str], bool]:
    """Up to ``batch_size`` rows of a table with a one-column primary key."""
    table, condition = selection
    (key,) = table.primary_key.columns
    ids = [row[0] for row in conn.execute(sa.select(key).where(condition).limit(batch_size))]
    deleted = sum(_delete(conn, table, key.in_(chunk)) for chunk in _chunks(ids))
    return collections.Counter({name: deleted}), len(ids) == batch_size


def _select_ids(
    conn: sa.Connection,
    table: sa.Table,
    selections: tuple[sa.ColumnElement[bool], ...],
    limit: int,
) -> list[uuid.UUID]:
    """Up to ``limit`` ids of rows in any of the selections, taken in turn."""
    ids: list[uuid.UUID] = []
    for condition in selections:
        query = sa.select(table.c.id).where(condition).limit(limit - len(ids))
        if conn.dialect.name == "postgresql":
            # Rows another transaction is changing (a state write, another server's retention
            # pass) are skipped, not waited for: they are looked at again next time.
            query = query.with_for_update(skip_locked=True)
        ids.extend(row[0] for row in conn.execute(query))
        if len(ids) >= limit:
            break
    return ids


def _delete(conn: sa.Connection, table: sa.Table, condition: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.delete(table).where(condition)).rowcount)


def _chunks(ids: Sequence[uuid.UUID]) -> Iterator[Sequence[uuid.UUID]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]


def _count(table: sa.Table, condition: sa.ColumnElement[bool]) -> sa.Select[int]:
    return sa.select(sa.func.count()).select_from(table).where(condition)


def _count_remaining(engine: sa.Engine, cutoff: float) -> int:
    """Expired flow runs and standalone task runs left, counted up to REMAINING_COUNT_CAP."""
    total = 0
    with _reading(engine) as conn:
        for table, selections in (
            (schema.flow_runs, _expired_flow_runs(cutoff)),
            (schema.task_runs, _expired_standalone(cutoff)),
        ):
            for condition in selections:
                capped = sa.select(table.c.id).where(condition).limit(REMAINING_COUNT_CAP - total)
                count = sa.select(sa.func.count()).select_from(capped.subquery())
                total += int(conn.execute(count).scalar_one())
                if total >= REMAINING_COUNT_CAP:
                    return total
    return total


def compact_sqlite(bind: Bind) -> tuple[int, int] | None:
    """``VACUUM`` a SQLite database, so its file gives back the space of deleted rows; return
    its size in bytes before and after. None on PostgreSQL, where autovacuum makes the space
    of deleted rows reusable and nothing is done here.

    Deleted rows' pages are reused by new rows anyway; VACUUM only shrinks the file. It rewrites
    the whole database, needs as much free disk again, and holds an exclusive lock meanwhile:
    every writer waits (up to its busy timeout) until it is done.
    """
    engine = _engine(bind)
    if engine.dialect.name != "sqlite":
        return None
    ensure_schema(engine)
    path = engine.url.database or ""
    before = _sqlite_size(path)
    with connect(engine) as conn:
        # Straight on the driver's connection, which is in autocommit (vivace emits BEGIN
        # itself): VACUUM cannot run inside a transaction. Then the WAL it filled is folded back
        # into the file and truncated.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as error:
            raise StoreUnavailableError(
                f"cannot compact the SQLite database at {path}: {error}; expected no other "
                "process to hold it for longer than VIVACE_SQLITE_BUSY_TIMEOUT, and free disk "
                "space as large as the database"
            ) from error
        finally:
            cursor.close()
    return before, _sqlite_size(path)


def _sqlite_size(path: str) -> int:
    """The database file's size plus its WAL's, in bytes."""
    total = 0
    for name in (path, f"{path}-wal"):
        try:
            total += os.path.getsize(name)
        except OSError:
            pass
    return total


__all__ = [
    "DAY_SECONDS",
    "LEASE_GRACE_SECONDS",
    "REMAINING_COUNT_CAP",
    "TABLES",
    "RetentionReport",
    "compact_sqlite",
    "count_expired",
    "delete_expired",
    "retention_cutoff",
]
