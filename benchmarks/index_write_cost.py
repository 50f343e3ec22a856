"""What a migration's indexes cost the writer: batched inserts before the revision and after it.

Every index speeds up some read and slows down every insert into its table, and the writer inserts
every task run, state and log line. This script makes two fresh databases of one backend, one at
the given revision (default: the latest) and one migrated down to the revision before it, and
inserts the same kind of rows into both through the writer's own bulk statements
(``vivace.store.statements``: executemany on SQLite, COPY and merge on PostgreSQL), one transaction
per batch of 1,000 rows, alternating between the two databases round by round so that the
machine's load falls on both alike. It prints the median cost per row of each table and the ratio.

Figures, not a test: see benchmarks/README.md and RESULTS.md.

    python benchmarks/index_write_cost.py
    python benchmarks/index_write_cost.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/vivace_bench
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

BATCH = 1_000  # rows per transaction, the writer's default batch size


def _previous_revision(revision: str) -> str:
    from alembic.script import ScriptDirectory

    from vivace.store.database import alembic_config

    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    if script is None or not isinstance(script.down_revision, str):
        raise SystemExit(f"revision {revision!r} has no single revision before it")
    return script.down_revision


def _migrate(url: str, revision: str) -> None:
    """Bring the (empty) database at ``url`` to exactly ``revision``."""
    from alembic import command

    from vivace.store.database import alembic_config, get_engine, transaction

    with transaction(get_engine(url)) as conn:
        command.upgrade(alembic_config(conn), revision)


def _databases(url: str | None, folder: Path) -> Iterator[str]:
    """Two empty databases of the backend of ``url`` (SQLite files in ``folder`` if None)."""
    if url is None:
        yield f"sqlite:///{folder / 'before.db'}"
        yield f"sqlite:///{folder / 'after.db'}"
        return
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    for suffix in ("before", "after"):
        yield parsed.set(database=f"{parsed.database}_{suffix}").render_as_string(False)


def _admin(url: str, sql: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(
        sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(sql)
    admin.dispose()


class RowMaker:
    """Batches of rows as the writer hands them to its statements, for one backend."""

    def __init__(self, dialect: str, seed: int) -> None:
        from vivace._ids import uuid7

        self.uuid7 = uuid7
        self.rng = random.Random(seed)
        self.id: Callable[[uuid.UUID], Any] = (
            (lambda value: value.bytes) if dialect == "sqlite" else (lambda value: value)
        )
        self.now = time.time()
        # Ten flow runs logging at once, as a busy process's writer sees them.
        self.flow_runs = [uuid7() for _ in range(10)]

    def _tick(self) -> float:
        self.now += 0.0005
        return self.now

    def logs(self) -> list[tuple[Any, ...]]:
        rows = []
        for _ in range(BATCH):
            run = self.rng.choice(self.flow_runs)
            level = self.rng.choice((20, 20, 20, 20, 10, 30))
            count, part = self.rng.randint(1, 50_000), self.rng.randint(0, 9)
            text = f"processed {count} rows from part {part}"
            rows.append(
                (
                    self.id(self.uuid7()),
                    self.id(run),
                    self.id(self.uuid7()),
                    "vivace.task_runs",
                    level,
                    text,
                    self._tick(),
                )
            )
        return rows

    def task_runs(self, columns: tuple[str, ...]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """Finished task runs (one upsert each, as the writer coalesces them) and their states."""
        runs, states = [], []
        run = self.rng.choice(self.flow_runs)
        for i in range(BATCH):
            task_id = self.uuid7()
            start = self._tick()
            values = {
                "id": self.id(task_id),
                "flow_run_id": self.id(run),
                "task_key": "benchmarks.noop",
                "name": f"noop-{i}",
                "state_type": "COMPLETED",
                "state_name": "Completed",
                "state_timestamp": start + 0.0001,
                "state_seq": 3,
                "start_time": start,
                "end_time": start + 0.0001,
                "run_count": 1,
                "created": start - 0.0001,
            }
            runs.append(tuple(values.get(name) for name in columns))
            for seq, (type_, name) in enumerate(
                (("PENDING", "Pending"), ("RUNNING", "Running"), ("COMPLETED", "Completed")), 1
            ):
                states.append((self.id(task_id), seq, type_, name, start, None))
        return sorted(runs, key=lambda row: row[0]), states


def measure(urls: list[str], rounds: int, batches: int, seed: int) -> dict[str, list[float]]:
    """Median µs per row, per table, for each database, alternating databases every round."""
    from vivace.engine.runs import TASK_RUN_COLUMNS
    from vivace.store.database import get_engine, transaction
    from vivace.store.statements import Statements

    engines = [get_engine(url) for url in urls]
    statements = Statements(engines[0].dialect.name).by_name
    makers = [RowMaker(engines[0].dialect.name, seed) for _ in urls]
    samples: dict[str, list[list[float]]] = {
        table: [[] for _ in urls] for table in ("logs", "task_runs", "task_run_states")
    }
    for round_number in range(rounds):
        order = list(range(len(urls)))
        if round_number % 2:
            order.reverse()
        for index in order:
            engine, maker = engines[index], makers[index]
            for _ in range(batches):
                rows = maker.logs()
                started = time.perf_counter()
                with transaction(engine) as conn:
                    statements["logs"].execute(conn, rows)
                samples["logs"][index].append((time.perf_counter() - started) / len(rows))
                runs, states = maker.task_runs(TASK_RUN_COLUMNS)
                started = time.perf_counter()
                with transaction(engine) as conn:
                    statements["task_runs"].execute(conn, runs)
                middle = time.perf_counter()
                with transaction(engine) as conn:
                    statements["task_run_states"].execute(conn, states)
                finished = time.perf_counter()
                samples["task_runs"][index].append((middle - started) / len(runs))
                samples["task_run_states"][index].append((finished - middle) / len(states))
    return {
        table: [statistics.median(each) * 1e6 for each in per_database]
        for table, per_database in samples.items()
    }


def main() -> None:
    from vivace.store.database import HEAD_REVISION, dispose_engines

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL URL whose database name is used as a prefix: <name>_before and "
        "<name>_after are created and dropped (default: two SQLite files in a temporary folder)",
    )
    parser.add_argument("--revision", default=HEAD_REVISION, help="default: the latest")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=10, help="batches per round and database")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    os.environ["VIVACE_HOME"] = home = tempfile.mkdtemp(prefix="vivace-write-cost-")
    previous = _previous_revision(args.revision)
    urls = list(_databases(args.database_url, Path(home)))
    postgres = args.database_url is not None
    try:
        for url in urls:
            if postgres:
                name = url.rsplit("/", 1)[1].split("?")[0]
                _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
                _admin(url, f'CREATE DATABASE "{name}"')
        _migrate(urls[0], previous)
        _migrate(urls[1], args.revision)
        costs = measure(urls, args.rounds, args.batches, args.seed)
    finally:
        dispose_engines()
        if postgres:
            for url in urls:
                name = url.rsplit("/", 1)[1].split("?")[0]
                _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)
    load = os.getloadavg()[0]
    print(
        f"{'sqlite' if not postgres else 'postgresql'}: revision {previous} against "
        f"{args.revision}, {args.rounds} rounds x {args.batches} batches of {BATCH} rows, "
        f"load average {load:.1f}"
    )
    print(f"{'table':<16} {'µs/row ' + previous:>14} {'µs/row ' + args.revision:>14}  ratio")
    for table, (before, after) in costs.items():
        print(f"{table:<16} {before:>14.2f} {after:>14.2f}  {after / before:.2f}x")


if __name__ == "__main__":
    main()
