"""The batched writer: the one path by which runs, states and logs reach the database.

Each process has one writer per database URL. The engine appends small tuples to an in-memory
queue (no I/O on the task's thread); a background thread drains the queue every
``VIVACE_RECORDER_FLUSH_INTERVAL`` seconds, or sooner once ``VIVACE_RECORDER_BATCH_SIZE`` records
are waiting, and writes each batch in one transaction with one bulk write per table
(:mod:`vivace.store.statements`).

- Coalescing: a run that changed state several times inside one window gets one upsert of its
  row (its state history rows are all kept).
- Ordering across processes: run rows are upserted only when the incoming ``state_seq`` is newer,
  so a late batch from another process never rolls a run back.
- Back-pressure: when ``VIVACE_RECORDER_MAX_QUEUE`` records are waiting, producers wait for the
  writer instead of letting memory grow.
- Nothing lost: ``flush()`` returns once everything queued before it is committed or journaled.
  An unreachable database is retried with backoff for ``VIVACE_RECORDER_RETRY_SECONDS``, then the
  batch goes to the journal (:mod:`vivace.store.journal`), replayed before the next write and when
  the next writer starts. A row the database refuses for its content is repaired (escaped,
  shortened) and written; one it still refuses is set aside with the reason, never blocking the
  rows behind it.
- Health: every ``VIVACE_WRITER_STATS_INTERVAL`` seconds the writer refreshes its row of
  ``writer_stats`` (queue depth, last flush time) for the server's /metrics
  (:mod:`vivace.store.writer_stats`); best-effort, in a transaction of its own.
- Heartbeats: the writer keeps the set of this process's flow runs that have started and not
  ended (the flow engine adds a run when it enters RUNNING, :meth:`BatchWriter.watch_flow_run`,
  and removes it when it leaves) and every ``VIVACE_HEARTBEAT_INTERVAL`` seconds stamps
  ``flow_runs.heartbeat`` of them all in one UPDATE, with ``heartbeat_interval`` (the interval
  the zombies service judges them by), only on rows that have not ended; also between two
  batches when the queue does not empty (a busy flow must not look dead). A run just added is
  stamped right after the flush that writes its RUNNING row, so a running row has a heartbeat
  within a flush or two. That is how the ``zombies`` service tells a run whose process died
  (:mod:`vivace.store.run_health`) without a thread per flow run or any cost per task. A
  deployment's run is not added: its engine's heartbeat thread beats for it
  (:mod:`vivace.engine.heartbeat`). Best-effort like the health row: never journaled (a late
  heartbeat means nothing), skipped while the database is known to be down.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.runs import FlowRun, TaskRun
from vivace.engine.states import FINAL_TYPES, State
from vivace.exceptions import StoreUnavailableError
from vivace.store import database, schema
from vivace.store.journal import Journal
from vivace.store.statements import Batch, Statements, repaired
from vivace.store.writer_stats import HealthReporter, WriterHealth

logger = logging.getLogger("vivace.store.writer")

# Record kinds: the first element of every queued tuple.
FLOW = 0  # (FLOW, flow_id, name, created)
FLOW_RUN_STATE = 1  # (FLOW_RUN_STATE, run, seq, type, name, timestamp, message)
TASK_RUN_STATE = 2  # (TASK_RUN_STATE, run, seq, type, name, timestamp, message)
LOG = 3  # (LOG, id, flow_run_id, task_run_id, logger name, level, message, timestamp)
BARRIER = 4  # (BARRIER, threading.Event): set once everything queued before it is written
CACHE = 5  # (CACHE, key, task_key, task_name, task_run_id, storage, result key, serializer,
#             created, expires): a cache index entry, written once its value is persisted


def is_transient(error: BaseException) -> bool:
    """Whether a failed write may succeed later unchanged: the database was unreachable or busy.

    Anything else (a value the database refuses, a bug) is about the rows, not the database.
    """
    if isinstance(error, (StoreUnavailableError, sa.exc.OperationalError, OSError)):
        return True
    # Driver errors arrive wrapped (database.bulk_transaction, database.transaction).
    return isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated


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
        stats_interval: float = 10.0,
        heartbeat_interval: float = 10.0,
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
        self._sql = Statements(self._engine.dialect.name)
        self._known_flows: set[uuid.UUID] = set()
        self._journal = Journal(journal_dir, url)
        self._journal_pending = True  # look for a journal left by an earlier process
        self._thread: threading.Thread | None = None
        # Figures for metrics and benchmarks.
        self.batches_written = 0
        self.rows_written = 0
        self.rows_journaled = 0
        self.rows_replayed = 0
        self.rows_rejected = 0
        self.last_flush_seconds = 0.0
        self._unreachable_until = 0.0
        # Health rows for the server's /metrics: the first right after start, then every interval.
        self.stats_interval = stats_interval
        self._health = HealthReporter(self._engine.dialect.name)
        self._next_health = 0.0
        # Heartbeats of this process's running flow runs (see the module docstring): those
        # started and not ended, and those of them not stamped since they (re)entered RUNNING.
        self.heartbeat_interval = heartbeat_interval
        self._beating: set[uuid.UUID] = set()
        # Not stamped yet: when to stop trying at every flush (a row that never lands).
        self._unstamped: dict[uuid.UUID, float] = {}
        self._beating_lock = threading.Lock()
        self._next_beat = time.monotonic() + heartbeat_interval

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

    def record_task_run_state(self, run: TaskRun, seq: int, state: State) -> None:
        """Record ``state`` as the run's state number ``seq``: one it was in before now."""
        self._put(
            (TASK_RUN_STATE, run, seq, state.type, state.name, state.timestamp, state.message)
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
        self._put((LOG, uuid7(), flow_run_id, task_run_id, name, level, message, timestamp))

    def record_cache_entry(self, entry: tuple[Any, ...]) -> None:
        """Queue a cache index entry: ``(key, task_key, task_name, task_run_id, storage,
        result_key, serializer, created, expires)``; the newest entry for a key wins."""
        self._put((CACHE, *entry))

    def watch_flow_run(self, flow_run_id: uuid.UUID) -> None:
        """Heartbeat for the flow run from now on; it has just entered RUNNING (its row is
        queued), so it is stamped right after the next flush. Once per attempt, not per task."""
        with self._beating_lock:
            self._beating.add(flow_run_id)
            self._unstamped[flow_run_id] = time.monotonic() + self.heartbeat_interval

    def unwatch_flow_run(self, flow_run_id: uuid.UUID) -> None:
        """Stop the flow run's heartbeat (it ended, or its engine is leaving)."""
        with self._beating_lock:
            self._beating.discard(flow_run_id)
            self._unstamped.pop(flow_run_id, None)

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
        try:
            self._replay_journal()
        except Exception as error:  # a journal must never stop the process from recording
            logger.warning("vivace writer: journal not replayed yet (%s); will retry", error)
        self._thread = threading.Thread(target=self._loop, name="vivace-writer", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun (records put from then on may not be written)."""
        return self._stopping

    def close(self) -> None:
        """Flush what is queued and stop the background thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._drain()
        if self._thread is not None and time.monotonic() >= self._unreachable_until:
            try:
                with database.transaction(self._engine) as connection:
                    self._health.remove(connection)
            except Exception as error:
                logger.debug("vivace writer: health row not removed (%s)", error)

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain(between=self._beat_if_due)
            except Exception:  # the writer must outlive any one bad batch
                logger.exception("vivace writer: unexpected error while writing a batch")
            self._beat_if_due()
            if time.monotonic() >= self._next_health:
                self._report_health()

    def _beat_if_due(self) -> None:
        """Stamp the heartbeats if an interval has passed, or a run waits for its first."""
        if self._unstamped or time.monotonic() >= self._next_beat:
            self._stamp_heartbeats()

    def _stamp_heartbeats(self) -> None:
        """Stamp the heartbeat of the flow runs due one: every watched run once an interval has
        passed, else those not stamped since they (re)entered RUNNING. One UPDATE per 500 runs,
        only on rows that have not ended; best-effort (see the module docstring)."""
        periodic = time.monotonic() >= self._next_beat
        with self._beating_lock:
            # In id order, like every batch: concurrent writers never lock rows crosswise.
            due = sorted(self._beating if periodic else self._unstamped, key=_id_int)
        if periodic:
            self._next_beat = time.monotonic() + self.heartbeat_interval
        if not due or time.monotonic() < self._unreachable_until:
            return
        runs = schema.flow_runs
        stamped: list[uuid.UUID] = []
        try:
            with database.transaction(self._engine) as connection:
                now = time.time()
                for start in range(0, len(due), 500):
                    found = connection.execute(
                        sa.update(runs)
                        .where(
                            runs.c.id.in_(due[start : start + 500]),
                            runs.c.state_type.not_in([kind.value for kind in FINAL_TYPES]),
                        )
                        .values(heartbeat=now, heartbeat_interval=self.heartbeat_interval)
                        .returning(runs.c.id)
                    )
                    stamped.extend(found.scalars())
        except Exception as error:
            logger.debug("vivace writer: heartbeats not stamped (%s)", error)
        finally:
            # A run whose RUNNING row has not landed yet is tried again at each flush, for one
            # interval at most: a row that never lands (set aside as refused) costs no more.
            give_up = time.monotonic()
            with self._beating_lock:
                for run_id in stamped:
                    self._unstamped.pop(run_id, None)
                for run_id in [key for key, until in self._unstamped.items() if until < give_up]:
                    del self._unstamped[run_id]

    def _report_health(self) -> None:
        """Refresh this writer's health row; skipped (not journaled) if the database is down."""
        self._next_health = time.monotonic() + self.stats_interval
        if time.monotonic() < self._unreachable_until:
            return
        health = WriterHealth(
            queue_depth=len(self._queue),
            last_flush_seconds=self.last_flush_seconds,
            records_written=self.rows_written,
            flushes=self.batches_written,
        )
        try:
            with database.transaction(self._engine) as connection:
                self._health.report(connection, health)
        except Exception as error:
            logger.debug("vivace writer: health row not written (%s)", error)

    def _drain(self, between: Callable[[], None] | None = None) -> None:
        """Write what is queued, batch after batch until the queue is empty; ``between`` runs
        between two batches (the heartbeats: a busy flow can keep the queue from emptying for
        as long as it runs, and its runs must not look dead meanwhile)."""
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
            barriers: list[threading.Event] = []
            try:
                self._write(self._batch(items, barriers))
            finally:
                # Even if writing failed past every fallback, nobody may wait forever.
                self._room.set()
                for event in barriers:
                    event.set()
            if between is not None and queue:
                between()

    def _batch(self, items: list[tuple[Any, ...]], barriers: list[threading.Event]) -> Batch:
        """Turn queued records into rows, one upsert per run however many states it went through."""
        sql = self._sql
        to_id = sql.id
        flows: list[tuple[Any, ...]] = []
        # Keyed by id(run): the same run object, found with a C-level hash.
        flow_runs: dict[int, FlowRun] = {}
        task_runs: dict[int, TaskRun] = {}
        db_ids: dict[int, Any] = {}
        flow_run_states: list[tuple[Any, ...]] = []
        task_run_states: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        cache_entries: dict[str, tuple[Any, ...]] = {}  # by key: one upsert per key and batch
        for item in items:
            kind = item[0]
            if kind == TASK_RUN_STATE:
                _, run, seq, type_, name, ts, message = item
                key = id(run)
                db_id = db_ids.get(key)
                if db_id is None:
                    db_id = db_ids[key] = to_id(run.id)
                    task_runs[key] = run
                task_run_states.append((db_id, seq, type_, name, ts, message))
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
                        ts,
                    )
                )
            elif kind == FLOW_RUN_STATE:
                _, run, seq, type_, name, ts, message = item
                flow_runs[id(run)] = run
                flow_run_states.append((to_id(run.id), seq, type_, name, ts, message))
            elif kind == FLOW:
                _, flow_id, name, created = item
                flows.append((to_id(flow_id), name, created))
            elif kind == BARRIER:
                barriers.append(item[1])
            elif kind == CACHE:
                run_id = item[4]
                cache_entries[item[1]] = (
                    *item[1:4],
                    None if run_id is None else to_id(run_id),
                    *item[5:],
                )
        batch: Batch = []
        if flows:
            batch.append(("flows", flows))
        if flow_runs:
            batch.append(("flow_runs", sql.run_rows(flow_runs.values(), sql.flow_run_layout)))
        if task_runs:
            batch.extend(sql.task_run_batches(task_runs.values()))
        if flow_run_states:
            batch.append(("flow_run_states", flow_run_states))
        if task_run_states:
            batch.append(("task_run_states", task_run_states))
        if logs:
            batch.append(("logs", logs))
        if cache_entries:
            batch.append(("task_cache", [cache_entries[key] for key in sorted(cache_entries)]))
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
                    if not is_transient(error):
                        self._salvage(batch, error)
                        break
                    if time.monotonic() + delay > deadline or self._stopping:
                        self._unreachable_until = time.monotonic() + self.retry_seconds
                        self._append_journal(batch, error)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        self.last_flush_seconds = time.perf_counter() - started

    def _execute(self, batch: Batch) -> None:
        statements = self._sql.by_name
        with database.bulk_transaction(self._engine) as connection:
            for name, rows in batch:
                statements[name].execute(connection, rows)
        self.batches_written += 1
        self.rows_written += sum(len(rows) for _, rows in batch)

    def _salvage(self, batch: Batch, error: Exception) -> None:
        """The database refused the batch for its content: write it row by row, repairing text.

        Rows still refused are set aside with the reason; unreachable-database errors on the way
        go on to the caller's retry and journal.
        """
        logger.warning("vivace writer: a batch was refused (%s); writing it row by row", error)
        statements = self._sql.by_name
        rejected: list[tuple[str, tuple[Any, ...], str]] = []
        for name, rows in batch:
            for row in rows:
                try:
                    self._execute([(name, [row])])
                    continue
                except Exception as first:
                    if is_transient(first):
                        raise
                try:
                    self._execute([(name, [repaired(row, statements[name].lengths)])])
                except Exception as second:
                    if is_transient(second):
                        raise
                    rejected.append((name, row, repr(second)))
        if rejected:
            path = self._journal.reject(rejected)
            self.rows_rejected += len(rejected)
            logger.error(
                "vivace writer: %d records could not be stored even after repair and were set "
                "aside in %s; first reason: %s",
                len(rejected),
                path,
                rejected[0][2],
            )

    # -- the journal: batches the database could not take ---------------------------------------

    def _append_journal(self, batch: Batch, error: Exception | None) -> None:
        if not batch:
            return
        try:
            self.rows_journaled += self._journal.append(batch)
        except OSError as disk_error:
            rows = sum(len(rows) for _, rows in batch)
            logger.error(
                "vivace writer: %d records lost: the database is unreachable (%s) and the journal "
                "in %s cannot be written (%s)",
                rows,
                error,
                self._journal.folder,
                disk_error,
            )
            return
        self._journal_pending = True
        if error is not None:
            logger.warning(
                "vivace writer: database %s unreachable (%s); records are journaled to %s and "
                "will be written when it is back",
                database.masked_url(self.url),
                error,
                self._journal.folder,
            )

    def _replay_journal(self) -> None:
        def write(batch: Batch) -> None:
            try:
                self._execute(batch)
            except Exception as error:
                if is_transient(error):
                    raise
                self._salvage(batch, error)

        self.rows_replayed += self._journal.replay(write)
        self._journal_pending = False


def _id_int(run_id: uuid.UUID) -> int:
    return run_id.int


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
                stats_interval=settings.writer_stats_interval,
                heartbeat_interval=settings.heartbeat_interval,
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
