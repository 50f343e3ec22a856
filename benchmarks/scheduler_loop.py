"""How long one scheduler loop takes with 1,000 scheduled deployments.

The issue's target: with 1,000 deployments scheduled, one loop of the scheduler service takes at
most 1 s, and its cost follows what is due, not all history (the established orchestrator's loop
took 49.5 s for ~40 deployments, LESSONS.md). This script deploys N deployments (default 1,000),
each with one cron schedule (hourly, at minute ``i % 60``), and times
``vivace.store.schedules.run_scheduler_loop`` with an injected clock:

- *first fill*: every schedule is new and needs its ``max_runs`` runs ahead (100 each by
  default: 100,000 runs and their state rows). Timed as one loop without a time budget, and as
  the service makes it: loops of at most ``LOOP_BUDGET_SECONDS`` each (the longest is the figure;
  the number of loops and the time from first to last are printed under the table). Repeated
  from scratch (runs deleted, schedules made new) for each round.
- *steady state*: an hour later every schedule's earliest run has started, so every schedule is
  due and needs exactly one run (N runs). Each round moves the clock one more hour. Measured
  in the process that made the first fill (as the service runs: it keeps the schedules' times
  it computed) and, separately, with that memory cleared (a freshly started service).
- *nothing due*: a second later nothing is due: one indexed query. Measured before and after
  100,000 old runs (finished, of the same schedules) are added to the history, with the steady
  state measured again after them.

Figures, not a test: see RESULTS.md. Each figure is the median of ``--rounds`` rounds.

    python benchmarks/scheduler_loop.py                          # SQLite in a temp folder
    python benchmarks/scheduler_loop.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/vivace_bench
    python benchmarks/scheduler_loop.py --deployments 200 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HOUR = 3600.0
# Monday 2027-05-03 00:00:30 UTC: the clock the loops are given (not the machine's).
START = dt.datetime(2027, 5, 3, 0, 0, 30, tzinfo=dt.UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old-runs", type=int, default=100_000)
    parser.add_argument("--max-runs", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vivace-scheduler-loop-") as folder:
        url = arguments.database_url or f"sqlite:///{Path(folder) / 'vivace.db'}"
        os.environ.update(VIVACE_HOME=str(Path(folder) / "home"), VIVACE_DATABASE_URL=url)
        _run(url, arguments)


def _run(url: str, arguments: argparse.Namespace) -> None:
    from vivace.store.database import dispose_engines, reset_database

    reset_database(url)
    n, rounds, max_runs = arguments.deployments, arguments.rounds, arguments.max_runs
    started = time.perf_counter()
    _deploy(url, n)
    print(f"{n} deployments deployed in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    results: list[tuple[str, list[float], list[float], list[int]]] = []

    def record(label: str, loop: Callable[[], tuple[float, float, int]], times: int) -> None:
        seconds, cpu, created = zip(*(loop() for _ in range(times)), strict=True)
        results.append((label, list(seconds), list(cpu), list(created)))
        print(f"{label}: {_median(seconds)}", file=sys.stderr)

    record("first fill, one unbounded loop", lambda: _first_fill(url, max_runs), 1)
    budgeted: list[tuple[int, float]] = []

    def first_fill_in_service_loops() -> tuple[float, float, int]:
        longest, cpu, created, loops, total = _first_fill_in_loops(url, max_runs)
        budgeted.append((loops, total))
        return longest, cpu, created

    record(
        "first fill, as the service loops (longest loop)",
        first_fill_in_service_loops,
        max(1, rounds // 2 + 1),
    )
    clock = [START]

    def steady(clear_memory: bool) -> tuple[float, float, int]:
        from vivace.store import schedules

        clock[0] += HOUR
        if clear_memory:
            schedules._TIMES.clear()
        return _loop(url, clock[0], max_runs)

    record("steady state, one run per schedule", lambda: steady(False), rounds)
    record("steady state, a fresh process's first loop", lambda: steady(True), rounds)
    record("nothing due", lambda: _loop(url, clock[0] + 1, max_runs), rounds)
    _add_old_runs(url, arguments.old_runs)
    label = f"after {arguments.old_runs:,} old runs"
    record(f"steady state, {label}", lambda: steady(False), rounds)
    record(f"nothing due, {label}", lambda: _loop(url, clock[0] + 1, max_runs), rounds)
    dispose_engines()

    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{backend}, {n} deployments, max_runs {max_runs}, median of the rounds")
    print(f"load average at the end: {load}; {os.cpu_count()} CPUs")
    print("| loop | runs created | median | min | max | this process's CPU, median |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, seconds, cpu, created in results:
        print(
            f"| {label} | {statistics.median(created):,.0f} | {_median(seconds)} | "
            f"{min(seconds) * 1000:,.1f} ms | {max(seconds) * 1000:,.1f} ms | {_median(cpu)} |"
        )
    for loops, total in budgeted:
        print(f"first fill in service loops: {loops} loops, {total:.2f} s from first to last")


def _deploy(url: str, n: int) -> None:
    from vivace.schedules import Cron
    from vivace.store.deployments import DeploymentSpec, save_deployment

    for i in range(n):
        save_deployment(
            url,
            DeploymentSpec(
                name=f"scheduled-{i:04}",
                flow_name=f"flow-{i % 20}",
                entrypoint="flows.py:main",
                storage={"url": "/srv/project"},
                parameter_schema={"type": "object", "properties": {"day": {"type": "integer"}}},
                parameters={"day": i},
                tags=("bench",),
                work_queue_name=f"queue-{i % 5}",
                schedules=(Cron(f"{i % 60} * * * *"),),
            ),
        )


def _loop(url: str, now: float, max_runs: int) -> tuple[float, float, int]:
    """One loop at ``now``: its wall time, this process's CPU time, and the runs it created."""
    from vivace.store.schedules import run_scheduler_loop

    started, cpu = time.perf_counter(), time.process_time()
    created = run_scheduler_loop(url, now=now, max_runs=max_runs)
    return time.perf_counter() - started, time.process_time() - cpu, created


def _first_fill(url: str, max_runs: int) -> tuple[float, float, int]:
    """Forget every run and make every schedule new; then time the loop that fills them."""
    _forget_runs(url)
    return _loop(url, START, max_runs)


def _first_fill_in_loops(url: str, max_runs: int) -> tuple[float, float, int, int, float]:
    """The first fill as the service makes it: loops of at most ``LOOP_BUDGET_SECONDS``, each
    after the last (the pause between them left out). The longest loop's wall time, the CPU
    time and runs of all, the number of loops, and the wall time from first to last."""
    from vivace.services.scheduler import LOOP_BUDGET_SECONDS
    from vivace.store.schedules import has_due_schedules, run_scheduler_loop

    _forget_runs(url)
    longest, created, loops = 0.0, 0, 0
    first, cpu = time.perf_counter(), time.process_time()
    while has_due_schedules(url, now=START):
        started = time.perf_counter()
        created += run_scheduler_loop(
            url, now=START, max_runs=max_runs, time_budget=LOOP_BUDGET_SECONDS
        )
        longest = max(longest, time.perf_counter() - started)
        loops += 1
    return longest, time.process_time() - cpu, created, loops, time.perf_counter() - first


def _forget_runs(url: str) -> None:
    """Delete every run and make every schedule new (due at START, nothing filled)."""
    import sqlalchemy as sa

    from vivace.store import schedules, schema
    from vivace.store.database import get_engine, transaction

    with transaction(get_engine(url)) as conn:
        conn.execute(sa.delete(schema.flow_run_states))
        conn.execute(sa.delete(schema.flow_runs))
        conn.execute(sa.update(schema.deployment_schedules).values(filled_until=None, due_at=START))
    if url.startswith("postgresql"):
        with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE flow_runs")
            conn.exec_driver_sql("VACUUM ANALYZE flow_run_states")
    schedules._TIMES.clear()


def _add_old_runs(url: str, count: int) -> None:
    """``count`` finished runs of the schedules, in the weeks before the loops' clock."""
    import sqlalchemy as sa

    from vivace.store import schema
    from vivace.store.database import get_engine, transaction

    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(schema.deployment_schedules.c.id, schema.deployment_schedules.c.deployment_id)
        ).all()
    flow_id = uuid.uuid4()
    batch: list[dict[str, object]] = []
    for i in range(count):
        schedule_id, deployment_id = rows[i % len(rows)]
        scheduled = START - HOUR * (1 + i // len(rows))
        batch.append(
            {
                "id": uuid.uuid4(),
                "flow_id": flow_id,
                "flow_name": "old",
                "name": f"old-{i}",
                "state_type": "COMPLETED",
                "state_name": "Completed",
                "state_timestamp": scheduled + 60,
                "state_seq": 4,
                "start_time": scheduled,
                "end_time": scheduled + 60,
                "run_count": 1,
                "created": scheduled - 86400,
                "deployment_id": deployment_id,
                "deployment_version": 1,
                "work_queue_name": "queue-0",
                "expected_start_time": scheduled,
                "schedule_id": schedule_id,
            }
        )
        if len(batch) == 10_000 or i == count - 1:
            with transaction(engine) as conn:
                conn.execute(sa.insert(schema.flow_runs), batch)
            batch.clear()
    if url.startswith("postgresql"):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE flow_runs")


def _median(seconds: tuple[float, ...] | list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:,.1f} ms"


if __name__ == "__main__":
    main()
