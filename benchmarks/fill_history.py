"""Fill a database with a realistic run history, fast, for ``api_read.py``.

The history: several flows, flow runs in mixed states over 30 days with tags and parameters, task
runs per flow run from 1 to 25,000 (a few big mapped runs: one task, then a mapped task, then one
task taking or waiting for every mapped run), ``task_inputs`` linking each task run to its
upstreams as the engine records them, the state history of every run, and log lines (one big run
logs ten times as much as the others, for a deep log list).

Rows go straight through the driver in batches of ``BATCH_ROWS`` (executemany on SQLite, COPY on
PostgreSQL), in the store's column formats (``vivace/store/types.py``): ids as 16-byte BLOBs or
``uuid``, times as Unix seconds or ``timestamptz``, JSON as text. Secondary indexes are dropped
before the load and rebuilt after it from their own DDL, so the database ends with exactly the
indexes the migrations made.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from vivace._ids import uuid7

UTC = dt.UTC
DAY = 86_400.0
BATCH_ROWS = 50_000  # rows per executemany / COPY
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

# -- what the history looks like ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """A flow of the generated history: one task, then a mapped task, then one last task."""

    name: str
    share: float  # of the ordinary (not big mapped) flow runs
    tasks: tuple[str, str, str]
    tags: tuple[str, ...]
    last_waits: bool  # the last task waits for the mapped runs (wait_for) instead of taking data


FLOWS = (
    FlowSpec("hourly-sync", 0.30, ("fetch", "upsert", "notify"), ("sync",), True),
    FlowSpec("nightly-etl", 0.28, ("extract", "transform", "load"), ("etl", "nightly"), False),
    FlowSpec("report-builder", 0.14, ("query", "render", "publish"), ("reports",), True),
    FlowSpec("data-quality", 0.14, ("sample", "check", "summarize"), ("quality",), False),
    FlowSpec("ml-training", 0.08, ("load_dataset", "train_fold", "evaluate"), ("ml",), False),
    FlowSpec("backfill", 0.055, ("plan", "copy_partition", "verify"), ("etl", "backfill"), True),
    FlowSpec("adhoc-debug", 0.005, ("probe", "inspect", "dump"), ("debug",), False),
)
MAP_REDUCE = FlowSpec("map-reduce", 0.0, ("split", "map_chunk", "reduce"), ("mapreduce",), False)
EXTRA_TAGS = (("prod", 0.6), ("team-data", 0.3), ("critical", 0.05), ("incident-4711", 0.002))
FLOW_RUN_STATES = (
    ("COMPLETED", 0.82),
    ("FAILED", 0.08),
    ("CRASHED", 0.01),
    ("CANCELLED", 0.02),
    ("RUNNING", 0.02),
    ("PAUSED", 0.005),
    ("PENDING", 0.015),
    ("SCHEDULED", 0.03),
)
NOT_STARTED = ("PENDING", "SCHEDULED")
BIG_RUN_MIN, BIG_RUN_MAX = 10_000, 25_000  # task runs of a big mapped run; the first has the min
CHATTY_LOG_FACTOR = 10.0  # one big run logs ten times as much as the others: a deep log list
_ADJECTIVES = "amber brisk calm daring eager golden keen lively noble quiet rapid swift".split()
_ANIMALS = "badger condor falcon heron ibex koala lynx otter puffin raven tapir walrus".split()


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much history to generate (log lines come out within a few percent of ``logs``)."""

    flow_runs: int
    task_runs: int
    logs: int


@dataclasses.dataclass
class RunPlan:
    """One flow run to generate: its flow, state, times and how many task runs it has."""

    flow: FlowSpec
    state: str
    created: float
    start: float | None
    end: float | None
    task_runs: int = 0
    log_factor: float = 1.0  # log lines per task run, relative to the average


def plan_history(rng: random.Random, sizes: Sizes, now: float) -> list[RunPlan]:
    """Flow runs in creation order; task runs spread over them to add up to ``sizes.task_runs``."""
    big = max(1, sizes.flow_runs // 500)
    plans = [
        _plan_run(rng, MAP_REDUCE, "FAILED" if i == 1 else "COMPLETED", now) for i in range(big)
    ]
    flows, weights = list(FLOWS), [f.share for f in FLOWS]
    states, state_weights = zip(*FLOW_RUN_STATES, strict=True)
    for _ in range(sizes.flow_runs - big):
        flow = rng.choices(flows, weights)[0]
        plans.append(_plan_run(rng, flow, rng.choices(states, state_weights)[0], now))
    # Big mapped runs take at most 40% of the task runs; the rest follow a long-tailed spread.
    big_sizes = [BIG_RUN_MIN] + [rng.randint(BIG_RUN_MIN, BIG_RUN_MAX) for _ in range(big - 1)]
    scale = min(1.0, 0.4 * sizes.task_runs / sum(big_sizes))
    for plan, size in zip(plans, big_sizes, strict=False):
        plan.task_runs = max(3, int(size * scale))
    plans[min(2, big - 1)].log_factor = CHATTY_LOG_FACTOR
    ordinary = [p for p in plans[big:] if p.state not in NOT_STARTED]
    _spread(rng, ordinary, sizes.task_runs - sum(p.task_runs for p in plans[:big]))
    plans.sort(key=lambda p: p.created)
    return plans


def _plan_run(rng: random.Random, flow: FlowSpec, state: str, now: float) -> RunPlan:
    if state in NOT_STARTED:
        created = now - rng.uniform(0, 3600)
        return RunPlan(flow, state, created, None, None)
    if state in ("RUNNING", "PAUSED"):
        start = now - rng.uniform(60, 3 * 3600)
        return RunPlan(flow, state, start - rng.uniform(0.5, 30), start, None)
    start = now - rng.uniform(2 * 3600, 30 * DAY)
    end = start + rng.uniform(5, 900)
    return RunPlan(flow, state, start - rng.uniform(0.5, 30), start, end)


def _spread(rng: random.Random, plans: list[RunPlan], total: int) -> None:
    """Give each run at least one task run and the rest in proportion to long-tailed weights."""
    if not plans:
        return
    weights = [rng.lognormvariate(0, 1.2) for _ in plans]
    spare = max(0, total - len(plans))
    scale = spare / sum(weights)
    shares = [w * scale for w in weights]
    counts = [int(s) for s in shares]
    leftover = spare - sum(counts)
    for i in sorted(range(len(plans)), key=lambda i: counts[i] - shares[i])[:leftover]:
        counts[i] += 1
    for plan, count in zip(plans, counts, strict=True):
        plan.task_runs = 1 + count


# -- rows -----------------------------------------------------------------------------------------

FLOW_COLUMNS = ("id", "name", "created")
FLOW_RUN_COLUMNS = (
    "id", "flow_id", "flow_name", "name", "parent_flow_run_id", "parent_task_run_id",
    "state_type", "state_name", "state_timestamp", "state_message", "state_seq", "start_time",
    "end_time", "run_count", "tags", "parameters", "created",
)  # fmt: skip
TASK_RUN_COLUMNS = (
    "id", "flow_run_id", "parent_task_run_id", "task_key", "name", "state_type", "state_name",
    "state_timestamp", "state_message", "state_seq", "start_time", "end_time", "run_count",
    "tags", "task_inputs", "created",
)  # fmt: skip
STATE_COLUMNS = ("seq", "type", "name", "timestamp", "message")
LOG_COLUMNS = ("id", "flow_run_id", "task_run_id", "name", "level", "message", "timestamp")
TABLE_COLUMNS = {
    "flows": FLOW_COLUMNS,
    "flow_runs": FLOW_RUN_COLUMNS,
    "flow_run_states": ("flow_run_id", *STATE_COLUMNS),
    "task_runs": TASK_RUN_COLUMNS,
    "task_run_states": ("task_run_id", *STATE_COLUMNS),
    "logs": LOG_COLUMNS,
}

# A task run's state history by its final state: (type, name) per transition.
_HISTORIES = {
    "COMPLETED": (("PENDING", "Pending"), ("RUNNING", "Running"), ("COMPLETED", "Completed")),
    "RETRIED": (
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("SCHEDULED", "AwaitingRetry"),
        ("RUNNING", "Retrying"),
        ("COMPLETED", "Completed"),
    ),
    "FAILED": (("PENDING", "Pending"), ("RUNNING", "Running"), ("FAILED", "Failed")),
    "UPSTREAM": (("PENDING", "Pending"), ("FAILED", "UpstreamFailed")),
    "CRASHED": (("PENDING", "Pending"), ("RUNNING", "Running"), ("CRASHED", "Crashed")),
    "CANCELLED": (("PENDING", "Pending"), ("CANCELLED", "Cancelled")),
    "RUNNING": (("PENDING", "Pending"), ("RUNNING", "Running")),
    "PENDING": (("PENDING", "Pending"),),
    "PAUSED": (("PENDING", "Pending"), ("RUNNING", "Running"), ("PAUSED", "Paused")),
    "SCHEDULED": (("SCHEDULED", "Scheduled"),),
}
_MESSAGES = {
    "FAILED": "ValueError: bad record at line {n}",
    "UPSTREAM": "upstream task run ended Failed",
    "CRASHED": "KeyboardInterrupt",
    "CANCELLED": "cancelled by the user",
}


def _nothing() -> None:
    """The function behind the generated flows, whose ids the engine derives from their names."""


def _state_times(transitions: int, plan: RunPlan) -> list[float]:
    """When a flow run's states began: created, started, then ended (or paused)."""
    latest = plan.end if plan.end is not None else plan.start if plan.start is not None else 0.0
    if transitions == 1:
        return [plan.created]
    if transitions == 2:
        return [plan.created, latest]
    return [plan.created, plan.start or plan.created, latest] + [latest] * (transitions - 3)


class Encoder:
    """Ids and times in the form the backend's driver takes, as the store's column types do."""

    def __init__(self, dialect: str) -> None:
        if dialect == "sqlite":  # 16-byte BLOBs and Unix seconds (vivace/store/types.py)
            self.id: Callable[[uuid.UUID], Any] = lambda value: value.bytes
            self.time: Callable[[float], Any] = float
        else:  # uuid and timestamptz
            self.id = lambda value: value
            self.time = lambda value: dt.datetime.fromtimestamp(value, UTC)


class HistoryWriter:
    """Turns run plans into rows and hands them to a loader in batches of ``BATCH_ROWS``."""

    def __init__(
        self, rng: random.Random, loader: Loader, encoder: Encoder, logs_per_task: float
    ) -> None:
        self.rng = rng
        self.loader = loader
        self.enc = encoder
        self.logs_per_task = logs_per_task
        self.run_logs_per_task = logs_per_task
        self.buffers: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLE_COLUMNS}
        self.counts = dict.fromkeys(TABLE_COLUMNS, 0)
        self.flow_ids: dict[str, uuid.UUID] = {}

    def write(self, plans: list[RunPlan]) -> dict[str, int]:
        from vivace import flow as flow_decorator

        first = plans[0].created if plans else 0.0
        for flow in (*FLOWS, MAP_REDUCE):
            # The engine derives a flow's id from its name (uuid5), as here.
            self.flow_ids[flow.name] = flow_id = flow_decorator(name=flow.name)(_nothing).flow_id
            self._add("flows", (self.enc.id(flow_id), flow.name, self.enc.time(first)))
        for number, plan in enumerate(plans):
            self._flow_run(number, plan)
        for table in TABLE_COLUMNS:
            self._flush(table)
        return self.counts

    def _add(self, table: str, row: tuple[Any, ...]) -> None:
        buffer = self.buffers[table]
        buffer.append(row)
        if len(buffer) >= BATCH_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self.buffers[table]
        if rows:
            self.loader.write(table, TABLE_COLUMNS[table], rows)
            self.counts[table] += len(rows)
            self.buffers[table] = []

    def _flow_run(self, number: int, plan: RunPlan) -> None:
        rng, enc, time_ = self.rng, self.enc, self.enc.time
        run_id = uuid7()
        flow = plan.flow
        tags = [*flow.tags, *(tag for tag, share in EXTRA_TAGS if rng.random() < share)]
        day = dt.datetime.fromtimestamp(plan.start or plan.created, UTC).date().isoformat()
        parameters = {"date": day, "limit": 500 * rng.randint(1, 8), "dry_run": rng.random() < 0.1}
        name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_ANIMALS)}-{number}"
        history = _HISTORIES[plan.state]
        times = _state_times(len(history), plan)
        state_time = times[-1]
        message = _MESSAGES.get(plan.state, "").format(n=rng.randint(1, 9999)) or None
        self._add(
            "flow_runs",
            (
                enc.id(run_id), enc.id(self.flow_ids[flow.name]), flow.name, name, None, None,
                plan.state, history[-1][1], time_(state_time), message, len(history),
                None if plan.start is None else time_(plan.start),
                None if plan.end is None else time_(plan.end),
                0 if plan.start is None else 1, json.dumps(tags), json.dumps(parameters),
                time_(plan.created),
            ),
        )  # fmt: skip
        for seq, ((type_, state_name), when) in enumerate(zip(history, times, strict=True), 1):
            row = (enc.id(run_id), seq, type_, state_name, time_(when), None)
            self._add("flow_run_states", row)
        if plan.start is None:
            return
        self._log(
            run_id, None, "vivace.flow_runs", INFO, f"Beginning flow run {name!r}", plan.start
        )
        self.run_logs_per_task = self.logs_per_task * plan.log_factor
        self._task_runs(run_id, plan)
        if plan.end is not None:
            level = INFO if plan.state == "COMPLETED" else ERROR
            text = f"Finished in state {history[-1][1]}()"
            self._log(run_id, None, "vivace.flow_runs", level, text, plan.end)

    def _task_runs(self, run_id: uuid.UUID, plan: RunPlan) -> None:
        """The run's task runs: one first task, ``n - 2`` mapped over its result, one last."""
        rng = self.rng
        n = plan.task_runs
        assert plan.start is not None
        finish = plan.end if plan.end is not None else time.time()
        span = max(finish - plan.start, 1.0)
        first, mapped, last = plan.flow.tasks
        module = plan.flow.name.replace("-", "_")
        fail_share = 0.005 if plan.flow is MAP_REDUCE else 0.03
        # Where a run that did not complete stopped (tasks after it did not complete either).
        cut = n if plan.state in ("COMPLETED", "FAILED") else int(n * rng.uniform(0.3, 0.95))
        first_id = uuid7()
        mapped_ids: list[str] = []
        any_failed = False
        for i in range(n):
            task_id = first_id if i == 0 else uuid7()
            if i == 0:
                task, inputs, index = first, None, 0
            elif i == n - 1 and n > 1:
                task, index = last, 0
                key = "__wait_for__" if plan.flow.last_waits else "values"
                inputs = json.dumps({key: mapped_ids or [str(first_id)]})
            else:
                task, index = mapped, i - 1
                inputs = json.dumps({"x": [str(first_id)]})
            # The final task run's outcome.
            if i < cut:
                outcome = "COMPLETED"
                if plan.state == "FAILED" and 0 < i < n - 1 and rng.random() < fail_share:
                    outcome, any_failed = "FAILED", True
                elif plan.state == "FAILED" and i == n - 1:
                    outcome = "UPSTREAM" if any_failed or n > 2 else "FAILED"
                elif rng.random() < 0.02:
                    outcome = "RETRIED"
            elif plan.state == "RUNNING":
                outcome = "RUNNING" if i < cut + 4 else "PENDING"
            elif plan.state == "PAUSED":
                outcome = "PAUSED" if i == cut else "PENDING"
            else:  # CRASHED, CANCELLED
                outcome = plan.state if i < cut + 4 else "CANCELLED"
            start = plan.start + 0.01 + span * 0.9 * i / n
            duration = rng.uniform(0.01, 2.0) * (3 if outcome == "RETRIED" else 1)
            history = _HISTORIES[outcome]
            started = (
                len(history) > 1 and history[1][0] != "FAILED" and history[1][0] != "CANCELLED"
            )
            ends = history[-1][0] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            end = start + duration if ends else None
            times = [start - 0.005] + [start + duration * k / 4 for k in range(1, len(history))]
            if end is not None:
                times[-1] = end
            self._task_run(
                run_id, task_id, f"{module}.{task}", f"{task}-{index}", outcome, history, times,
                start if started else None, end if started else None, inputs,
            )  # fmt: skip
            if i and i < n - 1:
                mapped_ids.append(str(task_id))

    def _task_run(
        self,
        run_id: uuid.UUID,
        task_id: uuid.UUID,
        task_key: str,
        name: str,
        outcome: str,
        history: tuple[tuple[str, str], ...],
        times: list[float],
        start: float | None,
        end: float | None,
        inputs: str | None,
    ) -> None:
        rng, enc, time_ = self.rng, self.enc, self.enc.time
        message = _MESSAGES.get(outcome)
        if message is not None:
            message = message.format(n=rng.randint(1, 9999))
        self._add(
            "task_runs",
            (
                enc.id(task_id), enc.id(run_id), None, task_key, name, history[-1][0],
                history[-1][1], time_(times[-1]), message, len(history),
                None if start is None else time_(start), None if end is None else time_(end),
                (2 if outcome == "RETRIED" else 1) if start is not None else 0,
                None, inputs, time_(times[0]),
            ),
        )  # fmt: skip
        task_id_value = enc.id(task_id)
        for seq, ((type_, state_name), when) in enumerate(zip(history, times, strict=True), 1):
            text = message if seq == len(history) else None
            self._add("task_run_states", (task_id_value, seq, type_, state_name, time_(when), text))
        if start is None:
            return
        lines = int(self.run_logs_per_task)
        if rng.random() < self.run_logs_per_task - lines:
            lines += 1
        duration = (end or start + 1.0) - start
        for k in range(lines):
            roll = rng.random()
            level = DEBUG if roll < 0.08 else WARNING if roll > 0.96 else INFO
            if level == WARNING:
                text = f"slow response from the source: {rng.uniform(1, 9):.1f} s"
            else:
                text = f"{name}: processed {rng.randint(1, 50_000)} rows from part {k}"
            when = start + duration * k / max(lines, 1)
            self._log(run_id, task_id, "vivace.task_runs", level, text, when)
        if message is not None and outcome in ("FAILED", "CRASHED"):
            text = f"Task run {name!r} failed: {message}\nTraceback (most recent call last): ..."
            self._log(run_id, task_id, "vivace.task_runs", ERROR, text, end or start)

    def _log(
        self,
        run_id: uuid.UUID,
        task_id: uuid.UUID | None,
        logger: str,
        level: int,
        text: str,
        when: float,
    ) -> None:
        enc = self.enc
        task = None if task_id is None else enc.id(task_id)
        self._add(
            "logs", (enc.id(uuid7()), enc.id(run_id), task, logger, level, text, enc.time(when))
        )


# -- loading --------------------------------------------------------------------------------------


class Loader(abc.ABC):
    """Bulk inserts straight through the driver; secondary indexes dropped while loading."""

    @abc.abstractmethod
    def drop_indexes(self) -> None:
        """Drop the tables' secondary indexes, keeping their DDL for ``finish``."""

    @abc.abstractmethod
    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Insert and commit one batch of rows."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Rebuild the dropped indexes and close the connection."""


class SqliteLoader(Loader):
    """executemany in transactions of one batch; the index DDL kept from ``sqlite_master``."""

    def __init__(self, path: str) -> None:
        import sqlite3

        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = OFF")
        self.indexes: list[tuple[str, str]] = []

    def drop_indexes(self) -> None:
        names = ", ".join(f"'{t}'" for t in TABLE_COLUMNS)
        self.indexes = self.connection.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({names})"
        ).fetchall()
        for name, _ in self.indexes:
            self.connection.execute(f"DROP INDEX {name}")

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        self.connection.execute("BEGIN")
        self.connection.executemany(sql, rows)
        self.connection.execute("COMMIT")

    def finish(self) -> None:
        for _, ddl in self.indexes:
            self.connection.execute(ddl)
        self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.connection.close()


class PostgresLoader(Loader):
    """COPY per batch; the index DDL kept from ``pg_get_indexdef``; VACUUM ANALYZE at the end.

    The ANALYZE is what autovacuum does by itself within a minute of such a load.
    """

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.connection = psycopg.connect(conninfo, autocommit=True)
        self.connection.execute("SET synchronous_commit = off")
        self.indexes: list[tuple[str, str]] = []

    def drop_indexes(self) -> None:
        rows = self.connection.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relname = ANY(%s) AND NOT x.indisprimary AND NOT x.indisunique",
            (list(TABLE_COLUMNS),),
        ).fetchall()
        self.indexes = [(name, ddl) for name, ddl in rows]
        for name, _ in self.indexes:
            self.connection.execute(f"DROP INDEX {name}")

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with (
            self.connection.transaction(),
            self.connection.cursor() as cursor,
            cursor.copy(sql) as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def finish(self) -> None:
        self.connection.execute("SET maintenance_work_mem = '256MB'")
        for _, ddl in self.indexes:
            self.connection.execute(ddl)
        for table in TABLE_COLUMNS:
            self.connection.execute(f"VACUUM ANALYZE {table}")
        self.connection.close()


def populate(url: str, sizes: Sizes, seed: int) -> dict[str, Any]:
    """Empty the database at ``url`` (tables at the latest revision), fill it, return counts."""
    import sqlalchemy as sa

    from vivace.store.database import dispose_engines, reset_database

    reset_database(url)
    dispose_engines()
    parsed = sa.make_url(url)
    loader: Loader
    if parsed.get_backend_name() == "sqlite":
        loader = SqliteLoader(parsed.database or "")
    else:
        loader = PostgresLoader(parsed.set(drivername="postgresql").render_as_string(False))
    rng = random.Random(seed)
    started = time.perf_counter()
    plans = plan_history(rng, sizes, time.time())
    flow_level_logs = 2 * sum(1 for p in plans if p.start is not None)
    weighted_tasks = sum(p.task_runs * p.log_factor for p in plans)
    logs_per_task = max(0.0, sizes.logs - flow_level_logs) / max(1.0, weighted_tasks)
    loader.drop_indexes()
    counts = HistoryWriter(rng, loader, Encoder(parsed.get_backend_name()), logs_per_task).write(
        plans
    )
    loaded = time.perf_counter()
    loader.finish()
    finished = time.perf_counter()
    return {
        "rows": counts,
        "load_seconds": round(loaded - started, 1),
        "index_seconds": round(finished - loaded, 1),
    }


def existing_sizes(url: str) -> dict[str, int] | None:
    """Row counts of a database populated before (None if it has no vivace tables)."""
    import sqlalchemy as sa

    from vivace.store.database import connect, get_engine

    engine = get_engine(url)
    with connect(engine) as conn:
        if not sa.inspect(conn).has_table("task_runs"):
            return None
        return {
            table: int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
            for table in TABLE_COLUMNS
        }
