"""The batched writer: the one path by which runs, states and logs reach the database.

Each process has one writer per database URL. The engine appends small tuples to an in-memory
queue (no I/O on the task's thread); a background thread drains the queue every
``VIVACE_RECORDER_FLUSH_INTERVAL`` seconds, or sooner once ``VIVACE_RECORDER_BATCH_SIZE`` records
are waiting, and writes each batch in one transaction with one bulk write per table.

- Coalescing: a run that changed state several times inside one window gets one upsert of its
  row (its state history rows are all kept).
- Ordering across processes: run rows are upserted only when the incoming ``state_seq`` is newer,
  so a late batch from another process never rolls a run back.
- Back-pressure: when ``VIVACE_RECORDER_MAX_QUEUE`` records are waiting, producers wait for the
  writer instead of letting memory grow.
- Nothing lost: ``flush()`` returns once everything queued before it is committed (or journaled);
  an unreachable database is retried with backoff for ``VIVACE_RECORDER_RETRY_SECONDS``, then the
  batch is appended to a journal under ``$VIVACE_HOME/journal`` that is replayed, idempotently,
  before the next write and when the next writer starts.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import logging
import os
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from vivace.engine.runs import FLOW_RUN_COLUMNS, TASK_RUN_COLUMNS, FlowRun, TaskRun
from vivace.store import database, schema

logger = logging.getLogger("vivace.store.writer")

# Record kinds: the first element of every queued tuple.
FLOW = 0  # (FLOW, flow_id, name, created)
FLOW_RUN_STATE = 1  # (FLOW_RUN_STATE, run, seq, type, name, timestamp, message)
TASK_RUN_STATE = 2  # (TASK_RUN_STATE, run, seq, type, name, timestamp, message)
LOG = 3  # (LOG, id, flow_run_id, task_run_id, logger name, level, message, timestamp)
BARRIER = 4  # (BARRIER, threading.Event): set once everything queued before it is written

LOG_COLUMNS = ("id", "flow_run_id", "task_run_id", "name", "level", "message", "timestamp")
STATE_COLUMNS = ("seq", "type", "name", "timestamp", "message")
UTC = dt.UTC


class _Statement:
    """One write: ``INSERT INTO table (columns) VALUES ... <tail>``, done the fast way per backend.

    SQLite: executemany, which re-steps one prepared statement per row (its fastest path).
    PostgreSQL: COPY the rows into a temporary staging table, then one ``INSERT ... SELECT`` with
    the same conflict clause (about five times faster than executemany here, and still
    idempotent, which a plain COPY into the table would not be).
    """

    __slots__ = ("_copy", "_merge", "_sql", "_stage", "postgres")

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

    def execute(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if not self.postgres:
            connection.exec_driver_sql(self._sql, rows)
            return
        driver_connection: Any = connection.connection.driver_connection
        with driver_connection.cursor() as cursor:
            cursor.execute(self._stage)
            with cursor.copy(self._copy) as copy:
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
            cursor.execute(self._merge)


def _upsert(table: sa.Table, columns: Sequence[str], dialect: str) -> _Statement:
    """Insert, or update the row when the incoming state is newer, whichever process sent it."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("id", "created"))
    tail = (
        f"ON CONFLICT (id) DO UPDATE SET {updates} "
        f"WHERE excluded.state_seq > {table.name}.state_seq"
    )
    return _Statement(table, columns, tail, dialect)


def _insert_ignore(table: sa.Table, columns: Sequence[str], dialect: str) -> _Statement:
    return _Statement(table, columns, "ON CONFLICT DO NOTHING", dialect)


class _Statements:
    """The write statements and value converters for one database dialect."""

    def __init__(self, dialect: str) -> None:
        self.flows = _insert_ignore(schema.flows, ("id", "name", "created"), dialect)
        self.flow_runs = _upsert(schema.flow_runs, FLOW_RUN_COLUMNS, dialect)
        self.task_runs = _upsert(schema.task_runs, TASK_RUN_COLUMNS, dialect)
        self.flow_run_states = _insert_ignore(
            schema.flow_run_states, ("flow_run_id", *STATE_COLUMNS), dialect
        )
        self.task_run_states = _insert_ignore(
            schema.task_run_states, ("task_run_id", *STATE_COLUMNS), dialect
        )
        self.logs = _insert_ignore(schema.logs, LOG_COLUMNS, dialect)
        # SQLite stores ids as 16 bytes and times as Unix seconds; PostgreSQL takes UUID and
        # datetime objects as they are.
        self.id: Callable[[uuid.UUID], Any]
        self.ts: Callable[[float], Any]
        if dialect == "sqlite":
            self.id = _uuid_bytes
            self.ts = _identity
        else:
            self.id = _identity
            self.ts = _utc_datetime
        # Where the ids, times and JSON values sit in each run snapshot.
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

    def run_rows(self, runs: Iterable[FlowRun | TaskRun], layout: _Layout) -> list[tuple[Any, ...]]:
        """Database rows of the runs' current snapshots, sorted by id.

        One key order in every batch keeps concurrent writers from deadlocking on PostgreSQL.
        """
        to_id, to_ts, dumps = self.id, self.ts, json.dumps
        ids, times, jsons = layout.ids, layout.times, layout.jsons
        rows = []
        for run in sorted(runs, key=_id_int):
            values = list(run.snapshot())
            for i in ids:
                if values[i] is not None:
                    values[i] = to_id(values[i])
            for i in times:
                if values[i] is not None:
                    values[i] = to_ts(values[i])
            for i in jsons:
                if values[i] is not None:
                    values[i] = dumps(values[i], default=str)
            rows.append(tuple(values))
        return rows


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


# A batch ready for the database: (statement attribute name, rows), in a fixed table order.
Batch = list[tuple[str, list[tuple[Any, ...]]]]


class BatchWriter:
    """Queues records from any thread and writes them in batches from one background thread."""

    def __init__(
        self,
        url: str,
        *,
        flush_interval: float,
        batch_size: int,
        max_queue: int,
        retry_seconds: float,
        journal_dir: Path,
    ) -> None:
        self.url = url
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.retry_seconds = retry_seconds
        self.journal_dir = journal_dir
        self.pid = os.getpid()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._room = threading.Event()
        self._stopping = False
        self._engine = database.get_engine(url)
        self._sql = _Statements(self._engine.dialect.name)
        self._known_flows: set[uuid.UUID] = set()
        self._journal_pending = True  # look for a journal left by an earlier process
        self._thread: threading.Thread | None = None
        # Figures for metrics and benchmarks.
        self.batches_written = 0
        self.rows_written = 0
        self.rows_journaled = 0
        self.rows_replayed = 0
        self.last_flush_seconds = 0.0
        self._unreachable_until = 0.0

    # -- producer side: called on the engine's hot path, no I/O ---------------------------------

    def record_flow(self, flow_id: uuid.UUID, name: str, created: float) -> None:
        if flow_id not in self._known_flows:
            self._known_flows.add(flow_id)
            self._put((FLOW, flow_id, name, created))

    def record_flow_run(self, run: FlowRun) -> None:
        state = run.state
        self._put(
            (
                FLOW_RUN_STATE,
                run,
                run.state_seq,
                state.type,  # a str enum: both drivers bind it as its text
                state.name,
                state.timestamp,
                state.message,
            )
        )

    def record_task_run(self, run: TaskRun) -> None:
        state = run.state
        self._put(
            (
                TASK_RUN_STATE,
                run,
                run.state_seq,
                state.type,  # a str enum: both drivers bind it as its text
                state.name,
                state.timestamp,
                state.message,
            )
        )

    def record_log(
        self,
        flow_run_id: uuid.UUID | None,
        task_run_id: uuid.UUID | None,
        name: str,
        level: int,
        message: str,
        timestamp: float,
    ) -> None:
        from vivace._ids import uuid7

        self._put((LOG, uuid7(), flow_run_id, task_run_id, name, level, message, timestamp))

    def _put(self, item: tuple[Any, ...]) -> None:
        queue = self._queue
        queue.append(item)
        waiting = len(queue)
        if waiting >= self.batch_size:
            if not self._wake.is_set():
                self._wake.set()
            if waiting >= self.max_queue and threading.current_thread() is not self._thread:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        # The database is slower than the flow: hold the producer until the writer catches up.
        while len(self._queue) >= self.max_queue and not self._stopping:
            self._room.clear()
            self._wake.set()
            self._room.wait(0.05)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record queued before this call is committed or journaled."""
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            return True
        done = threading.Event()
        self._queue.append((BARRIER, done))
        self._wake.set()
        return done.wait(timeout)

    # -- writer side ----------------------------------------------------------------------------

    def start(self) -> None:
        database.ensure_schema(self._engine)
        self._replay_journal()
        self._thread = threading.Thread(target=self._loop, name="vivace-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush what is queued and stop the background thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._drain()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # the writer must outlive any one bad batch
                logger.exception("vivace writer: unexpected error while writing a batch")

    def _drain(self) -> None:
        queue = self._queue
        # When the writer has fallen behind, bigger transactions catch up faster: one commit
        # per up to 8 batches' worth of records.
        limit = self.batch_size * 8
        while queue:
            items: list[tuple[Any, ...]] = []
            append, popleft = items.append, queue.popleft
            try:
                for _ in range(limit):
                    append(popleft())
            except IndexError:
                pass
            barriers = [item[1] for item in items if item[0] == BARRIER]
            self._write(self._batch(items))
            self._room.set()
            for event in barriers:
                event.set()

    def _batch(self, items: list[tuple[Any, ...]]) -> Batch:
        """Turn queued records into rows, one upsert per run however many states it went through."""
        sql = self._sql
        to_id, to_ts = sql.id, sql.ts
        flows: list[tuple[Any, ...]] = []
        # Keyed by id(run): the same run object, found with a C-level hash.
        flow_runs: dict[int, FlowRun] = {}
        task_runs: dict[int, TaskRun] = {}
        db_ids: dict[int, Any] = {}
        flow_run_states: list[tuple[Any, ...]] = []
        task_run_states: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        for item in items:
            kind = item[0]
            if kind == TASK_RUN_STATE:
                _, run, seq, type_, name, ts, message = item
                key = id(run)
                db_id = db_ids.get(key)
                if db_id is None:
                    db_id = db_ids[key] = to_id(run.id)
                    task_runs[key] = run
                task_run_states.append((db_id, seq, type_, name, to_ts(ts), message))
            elif kind == LOG:
                _, id_, flow_run_id, task_run_id, name, level, message, ts = item
                logs.append(
                    (
                        to_id(id_),
                        None if flow_run_id is None else to_id(flow_run_id),
                        None if task_run_id is None else to_id(task_run_id),
                        name,
                        level,
                        message,
                        to_ts(ts),
                    )
                )
            elif kind == FLOW_RUN_STATE:
                _, run, seq, type_, name, ts, message = item
                flow_runs[id(run)] = run
                flow_run_states.append((to_id(run.id), seq, type_, name, to_ts(ts), message))
            elif kind == FLOW:
                _, flow_id, name, created = item
                flows.append((to_id(flow_id), name, to_ts(created)))
        batch: Batch = []
        if flows:
            batch.append(("flows", flows))
        if flow_runs:
            batch.append(("flow_runs", sql.run_rows(flow_runs.values(), sql.flow_run_layout)))
        if task_runs:
            batch.append(("task_runs", sql.run_rows(task_runs.values(), sql.task_run_layout)))
        if flow_run_states:
            batch.append(("flow_run_states", flow_run_states))
        if task_run_states:
            batch.append(("task_run_states", task_run_states))
        if logs:
            batch.append(("logs", logs))
        return batch

    def _write(self, batch: Batch) -> None:
        """Commit the batch; if the database stays unreachable, journal it instead."""
        if not batch and not self._journal_pending:
            return
        started = time.perf_counter()
        if time.monotonic() < self._unreachable_until:
            # Known to be down: do not make every batch wait out the retries again.
            self._append_journal(batch, None)
        else:
            delay = 0.05
            deadline = time.monotonic() + self.retry_seconds
            while True:
                try:
                    if self._journal_pending:
                        self._replay_journal()
                    if batch:
                        self._execute(batch)
                    break
                except Exception as error:
                    if time.monotonic() + delay > deadline or self._stopping:
                        self._unreachable_until = time.monotonic() + self.retry_seconds
                        self._append_journal(batch, error)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        self.last_flush_seconds = time.perf_counter() - started

    def _execute(self, batch: Batch) -> None:
        with database.transaction(self._engine) as connection:
            for statement, rows in batch:
                getattr(self._sql, statement).execute(connection, rows)
        self.batches_written += 1
        self.rows_written += sum(len(rows) for _, rows in batch)

    # -- the journal: batches the database could not take ---------------------------------------

    def _journal_folder(self) -> Path:
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return self.journal_dir / key

    def _append_journal(self, batch: Batch, error: Exception | None) -> None:
        if not batch:
            return
        folder = self._journal_folder()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}"
        partial = folder / f"{name}.partial"
        with open(partial, "wb") as file:
            pickle.dump({"url": self.url, "batch": batch}, file)
            file.flush()
            os.fsync(file.fileno())
        # Renamed only once complete, so a crash mid-write never leaves a half batch to replay.
        partial.rename(folder / f"{name}{_JOURNAL_SUFFIX}")
        self._journal_pending = True
        self.rows_journaled += sum(len(rows) for _, rows in batch)
        if error is not None:
            logger.warning(
                "vivace writer: database %s unreachable (%s); records are journaled to %s and "
                "will be written when it is back",
                database.masked_url(self.url),
                error,
                folder,
            )

    def _replay_journal(self) -> None:
        """Write journaled batches, oldest first, and delete each once committed.

        A process claims a file by renaming it before replaying, so two writers starting at once
        do not both replay it; a claim whose process died is taken over. Replaying the same batch
        twice is harmless anyway: runs are upserts and the rest insert-or-ignore.
        """
        folder = self._journal_folder()
        if not folder.is_dir():
            self._journal_pending = False
            return
        claim_suffix = f".replaying-{os.getpid()}"
        candidates = sorted(folder.glob(f"*{_JOURNAL_SUFFIX}"))
        candidates += sorted(p for p in folder.glob("*.replaying-*") if _claim_is_orphaned(p))
        for path in candidates:
            claimed = path.with_name(path.name.split(".", 1)[0] + claim_suffix)
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another writer claimed it first
            try:
                with open(claimed, "rb") as file:
                    batch: Batch = pickle.load(file)["batch"]
                self._execute(batch)
            except BaseException:
                claimed.rename(path)  # give it back for the next attempt
                raise
            claimed.unlink()
            self.rows_replayed += sum(len(rows) for _, rows in batch)
        self._journal_pending = False


_JOURNAL_SUFFIX = ".batch"


def _claim_is_orphaned(path: Path) -> bool:
    """A ``.replaying-<pid>`` file whose process is gone."""
    try:
        pid = int(path.suffix.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_writers: dict[str, BatchWriter] = {}
_writers_lock = threading.Lock()
_atexit_registered = False


def get_writer() -> BatchWriter:
    """This process's writer for the configured database, started on first use."""
    from vivace.settings import get_settings

    settings = get_settings()
    url = settings.resolved_database_url
    writer = _writers.get(url)
    if writer is not None and writer.pid == os.getpid():
        return writer
    with _writers_lock:
        writer = _writers.get(url)
        if writer is None or writer.pid != os.getpid():  # a forked child starts its own writer
            writer = BatchWriter(
                url,
                flush_interval=settings.recorder_flush_interval,
                batch_size=settings.recorder_batch_size,
                max_queue=settings.recorder_max_queue,
                retry_seconds=settings.recorder_retry_seconds,
                journal_dir=settings.home / "journal",
            )
            writer.start()
            _writers[url] = writer
            _register_atexit()
    return writer


def shutdown_writers() -> None:
    """Flush and stop every writer of this process (at exit, and between tests)."""
    with _writers_lock:
        writers = [w for w in _writers.values() if w.pid == os.getpid()]
        _writers.clear()
    for writer in writers:
        writer.close()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown_writers)
        _atexit_registered = True
