"""vivace's benchmark suite: orchestration cost per task against raw baselines, in one run.

Each case runs in its own Python process (so its peak RSS is its own), measures its raw baseline in
that same process, alternates baseline and vivace rounds, and reports medians. Figures, not tests:
see benchmarks/README.md.

    python benchmarks/run.py                 # every case, N=10,000
    python benchmarks/run.py --case direct   # one case
    python benchmarks/run.py --tasks 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = ("direct", "sequential", "concurrent", "dask", "ray", "memory", "import")
DASK_TASKS = 2_000  # the dask case's N, at most: each cluster task costs ~2 ms on 2 cores


def noop(x: int) -> int:
    return x


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _count_task_runs(flow_run_ids: list[Any]) -> int:
    import sqlalchemy as sa

    from vivace.settings import get_settings
    from vivace.store import database, schema

    engine = database.get_engine(get_settings().resolved_database_url)
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).where(schema.task_runs.c.flow_run_id.in_(flow_run_ids))
        return int(connection.execute(query).scalar_one())


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _rounds(
    baseline: Callable[[], Any], measured: Callable[[], Any], rounds: int
) -> tuple[float, float]:
    base, vivace_times = [], []
    for _ in range(rounds):
        base.append(_timed(baseline))
        vivace_times.append(_timed(measured))
    return statistics.median(base), statistics.median(vivace_times)


def case_direct(n: int, rounds: int) -> dict[str, Any]:
    """Tasks called directly in a flow, recorded in SQLite, against plain function calls."""
    from vivace import flow, task
    from vivace.engine.context import current_flow_run_id

    noop_task = task(noop)
    run_ids: list[Any] = []

    @flow
    def direct_calls(count: int) -> None:
        run_ids.append(current_flow_run_id())
        for i in range(count):
            noop_task(i)

    def plain() -> None:
        for i in range(n):
            noop(i)

    direct_calls(10)  # warm up: database created and migrated, writer started
    run_ids.clear()
    base, measured = _rounds(plain, lambda: direct_calls(n), rounds)
    return _report(
        "task called directly in a flow", "plain function call", n, rounds, base, measured, run_ids
    )


def case_sequential(n: int, rounds: int) -> dict[str, Any]:
    """``.submit()`` + ``.result()`` on SequentialTaskRunner, against plain function calls."""
    from vivace import flow, task
    from vivace.engine.context import current_flow_run_id
    from vivace.runners import SequentialTaskRunner

    noop_task = task(noop)
    run_ids: list[Any] = []

    @flow(task_runner=SequentialTaskRunner())
    def submitted(count: int) -> None:
        run_ids.append(current_flow_run_id())
        futures = [noop_task.submit(i) for i in range(count)]
        for future in futures:
            future.result()

    def plain() -> None:
        for i in range(n):
            noop(i)

    submitted(10)
    run_ids.clear()
    base, measured = _rounds(plain, lambda: submitted(n), rounds)
    return _report(
        "SequentialTaskRunner submit+result",
        "plain function call",
        n,
        rounds,
        base,
        measured,
        run_ids,
    )


def case_concurrent(n: int, rounds: int) -> dict[str, Any]:
    """``.submit()`` + ``.result()`` on ConcurrentTaskRunner, against raw ThreadPoolExecutor."""
    from vivace import flow, task
    from vivace.engine.context import current_flow_run_id
    from vivace.runners import ConcurrentTaskRunner

    noop_task = task(noop)
    run_ids: list[Any] = []
    workers = min(32, (os.cpu_count() or 1) + 4)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=workers))
    def submitted(count: int) -> None:
        run_ids.append(current_flow_run_id())
        futures = [noop_task.submit(i) for i in range(count)]
        for future in futures:
            future.result()

    def raw_pool() -> None:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(noop, i) for i in range(n)]
            for future in futures:
                future.result()

    submitted(10)
    run_ids.clear()
    base, measured = _rounds(raw_pool, lambda: submitted(n), rounds)
    return _report(
        "ConcurrentTaskRunner submit+result",
        "ThreadPoolExecutor submit+result",
        n,
        rounds,
        base,
        measured,
        run_ids,
    )


def case_dask(n: int, rounds: int) -> dict[str, Any]:
    """One LocalCluster (2 worker processes): vivace against raw distributed, two ways.

    ``.submit()`` + ``.result()`` per task against raw ``client.submit`` + ``client.gather``; and
    ``.map(batch_size=...)`` against raw ``client.map`` + ``client.gather``.
    """
    import logging

    from distributed import Client, LocalCluster

    from vivace.runners import DaskTaskRunner

    n = min(n, DASK_TASKS)
    batch_size = 100
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    runner = DaskTaskRunner(address=cluster.scheduler_address)
    submitted, mapped, submit_ids, map_ids = _cluster_flows(runner, batch_size)

    def raw_submit() -> None:
        client.gather([client.submit(noop, i, pure=False) for i in range(n)])

    def raw_map() -> None:
        client.gather(client.map(noop, range(n), pure=False))

    try:
        _warm_up(submitted, mapped, raw_submit, submit_ids, map_ids)
        base, measured = _rounds(raw_submit, lambda: submitted(n), rounds)
        rows = [
            _report(
                "DaskTaskRunner submit+result",
                "client.submit+gather",
                n,
                rounds,
                base,
                measured,
                submit_ids,
            )
        ]
        base, measured = _rounds(raw_map, lambda: mapped(n), rounds)
        rows.append(
            _report(
                f"DaskTaskRunner map(batch_size={batch_size})",
                "client.map+gather",
                n,
                rounds,
                base,
                measured,
                map_ids,
            )
        )
    finally:
        client.close()
        cluster.close()
    return {"rows": rows}


def _cluster_flows(
    runner: Any, batch_size: int
) -> tuple[Callable[[int], None], Callable[[int], None], list[Any], list[Any]]:
    """The flows the dask and ray cases time on ``runner``, and the flow run ids they record.

    ``submitted(count)``: ``count`` no-op tasks by ``.submit()``, then each ``.result()``;
    ``mapped(count)``: the same by ``.map(batch_size=batch_size)``.
    """
    from vivace import flow, task
    from vivace.engine.context import current_flow_run_id

    noop_task = task(noop)
    submit_ids: list[Any] = []
    map_ids: list[Any] = []

    @flow(task_runner=runner)
    def submitted(count: int) -> None:
        submit_ids.append(current_flow_run_id())
        futures = [noop_task.submit(i) for i in range(count)]
        for future in futures:
            future.result()

    @flow(task_runner=runner)
    def mapped(count: int) -> None:
        map_ids.append(current_flow_run_id())
        for future in noop_task.map(range(count), batch_size=batch_size):
            future.result()

    return submitted, mapped, submit_ids, map_ids


def _warm_up(
    submitted: Callable[[int], None],
    mapped: Callable[[int], None],
    raw_submit: Callable[[], None],
    submit_ids: list[Any],
    map_ids: list[Any],
) -> None:
    """Database, writers in the workers, code on the workers; then forget the warm-up runs."""
    submitted(10)
    mapped(10)
    raw_submit()
    submit_ids.clear()
    map_ids.clear()


def case_memory(n: int, rounds: int) -> dict[str, Any]:
    """100,000 no-op tasks in one flow: RSS growth, and every run recorded."""
    from vivace import flow, task
    from vivace.engine.context import current_flow_run_id

    n = max(n, 100_000)
    noop_task = task(noop)
    run_ids: list[Any] = []

    @flow
    def warm() -> None:
        noop_task(0)

    @flow
    def many(count: int) -> None:
        run_ids.append(current_flow_run_id())
        for i in range(count):
            noop_task(i)

    warm()
    before = _current_rss_mb()
    peak_before = _peak_rss_mb()
    elapsed = _timed(lambda: many(n))
    growth = max(_peak_rss_mb(), _current_rss_mb()) - max(before, 0.0)
    recorded = _count_task_runs(run_ids)
    return {
        "case": "100,000 tasks in one flow (memory)",
        "tasks": n,
        "us_per_task": elapsed / n * 1e6,
        "rss_before_mb": round(before, 1),
        "peak_rss_before_mb": round(peak_before, 1),
        "peak_rss_growth_mb": round(growth, 1),
        "recorded": recorded,
        "all_recorded": recorded == n,
    }


def case_import(n: int, rounds: int) -> dict[str, Any]:
    """Wall time of ``python -c 'import vivace'`` minus a bare interpreter start, median of runs."""

    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    samples = max(rounds, 7)
    bare = statistics.median(run("pass") for _ in range(samples))
    with_vivace = statistics.median(run("import vivace") for _ in range(samples))
    return {
        "case": "import vivace",
        "import_ms": round((with_vivace - bare) * 1000, 1),
        "samples": samples,
    }


def case_ray(n: int, rounds: int) -> dict[str, Any]:
    """One local Ray (num_cpus=2): vivace against raw Ray, two ways.

    ``.submit()`` + ``.result()`` per task against raw ``ray.remote`` + ``ray.get``; and
    ``.map(batch_size=...)`` against the same raw baseline (Ray has no map of its own).
    """
    import ray

    from vivace.runners import RayTaskRunner

    n = min(n, DASK_TASKS)
    batch_size = 100
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
    )
    raw_noop = ray.remote(noop)
    runner = RayTaskRunner()  # uses the Ray initialised above
    submitted, mapped, submit_ids, map_ids = _cluster_flows(runner, batch_size)

    def raw_submit() -> None:
        ray.get([raw_noop.remote(i) for i in range(n)])

    # CPU time of the driver and every Ray process per round: steadier than wall time on a
    # shared machine (reported in the JSON, next to the wall-time figures).
    cpu: dict[str, list[float]] = {"raw": [], "vivace": []}

    def with_cpu(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def measured() -> None:
            before = _tree_cpu_seconds()
            fn()
            cpu[name].append(_tree_cpu_seconds() - before)

        return measured

    try:
        _warm_up(submitted, mapped, raw_submit, submit_ids, map_ids)
        base, measured = _rounds(
            with_cpu("raw", raw_submit), with_cpu("vivace", lambda: submitted(n)), rounds
        )
        rows = [
            _report(
                "RayTaskRunner submit+result",
                "ray.remote+ray.get",
                n,
                rounds,
                base,
                measured,
                submit_ids,
            )
        ]
        rows[0]["baseline_cpu_us_per_task"] = round(statistics.median(cpu["raw"]) / n * 1e6, 1)
        rows[0]["cpu_us_per_task"] = round(statistics.median(cpu["vivace"]) / n * 1e6, 1)
        base, measured = _rounds(raw_submit, lambda: mapped(n), rounds)
        rows.append(
            _report(
                f"RayTaskRunner map(batch_size={batch_size})",
                "ray.remote+ray.get",
                n,
                rounds,
                base,
                measured,
                map_ids,
            )
        )
    finally:
        ray.shutdown()
    return {"rows": rows}


def _tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and its live descendants (a local Ray's)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # ended meanwhile
            pass
    return total


def _report(
    case: str, baseline: str, n: int, rounds: int, base: float, measured: float, run_ids: list[Any]
) -> dict[str, Any]:
    recorded = _count_task_runs(run_ids[-1:]) if run_ids else 0
    return {
        "case": case,
        "baseline": baseline,
        "tasks": n,
        "rounds": rounds,
        "baseline_us_per_task": round(base / n * 1e6, 2),
        "us_per_task": round(measured / n * 1e6, 2),
        "overhead_us_per_task": round((measured - base) / n * 1e6, 2),
        "ratio": round(measured / base, 2),
        "recorded": recorded,
        "all_recorded": recorded == n,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def run_case(name: str, n: int, rounds: int) -> dict[str, Any]:
    return globals()[f"case_{name}"](n, rounds)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=CASES, action="append")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--database-url",
        help="record into this database (e.g. PostgreSQL) instead of a fresh SQLite file",
    )
    args = parser.parse_args()
    if args.child:
        (name,) = args.case
        print(json.dumps(run_case(name, args.tasks, args.rounds)))
        return
    results = []
    for name in args.case or CASES:
        with tempfile.TemporaryDirectory(prefix="vivace-bench-") as home:
            env = {**os.environ, "VIVACE_HOME": home, "VIVACE_LOGGING_CONSOLE": "false"}
            env.pop("VIVACE_DATABASE_URL", None)
            if args.database_url:
                env["VIVACE_DATABASE_URL"] = args.database_url
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--case",
                    name,
                    "--tasks",
                    str(args.tasks),
                    "--rounds",
                    str(args.rounds),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            for row in result.get("rows", [result]):  # a case may report several rows
                results.append(row)
                print(_format(row), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
    }
    args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwritten: {args.output}")


def _format(result: dict[str, Any]) -> str:
    if "ratio" in result:
        cpu = ""
        if "cpu_us_per_task" in result:
            cpu = (
                f"  CPU {result['cpu_us_per_task']:.0f} us/task "
                f"(baseline {result['baseline_cpu_us_per_task']:.0f})"
            )
        return (
            f"{result['case']:<38} {result['us_per_task']:>8.2f} us/task  baseline "
            f"{result['baseline_us_per_task']:>6.2f} us ({result['baseline']})  "
            f"ratio {result['ratio']:>6.2f}x  "
            f"recorded {result['recorded']}/{result['tasks']}  peak RSS {result['peak_rss_mb']} MB"
            f"{cpu}"
        )
    if "import_ms" in result:
        return f"{result['case']:<38} {result['import_ms']:>8.1f} ms"
    return (
        f"{result['case']:<38} {result['us_per_task']:>8.2f} us/task  peak RSS growth "
        f"{result['peak_rss_growth_mb']} MB  recorded {result['recorded']}/{result['tasks']}"
    )


if __name__ == "__main__":
    main()
