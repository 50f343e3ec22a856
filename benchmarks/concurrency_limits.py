"""Cost of task tag concurrency limits, per task: figures, not tests.

    python benchmarks/concurrency_limits.py [--tasks 2000] [--rounds 5] [--database-url URL]

Without ``--database-url`` it runs on a fresh SQLite file in a temporary VIVACE_HOME. With it, that
database is RESET first (every vivace table dropped and made anew): point it at a scratch one.

Cases (each a flow calling a no-op task directly N times, median of the rounds):
- untagged: the hot path, no tags;
- tagged, no limit: tags whose limit does not exist (a per-process cache lookup);
- tagged, limited: a tag with a limit large enough never to block (one acquire and one release
  transaction per task run);
- handoff: ConcurrentTaskRunner, 8 threads, N/4 tagged runs of a limit of 1: how fast the slot
  passes from one run to the next (the waiters are woken by the release).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any


def noop(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="vivace-bench-")
    os.environ["VIVACE_HOME"] = home
    os.environ["VIVACE_LOGGING_CONSOLE"] = "false"
    if args.database_url:
        os.environ["VIVACE_DATABASE_URL"] = args.database_url

    from vivace import flow, task
    from vivace.runners import ConcurrentTaskRunner
    from vivace.settings import get_settings
    from vivace.store import concurrency as store
    from vivace.store.database import reset_database

    url = get_settings().resolved_database_url
    if args.database_url:
        reset_database(url)
    store.create_limit(url, "tag:limited", 1_000_000)
    store.create_limit(url, "tag:one", 1)

    untagged = task(noop)
    unlimited = task(noop, tags=["no-limit"])
    limited = task(noop, tags=["limited"])
    one = task(noop, tags=["one"])

    def direct(fn: Any) -> Any:
        @flow
        def calls(count: int) -> None:
            for i in range(count):
                fn(i)

        return calls

    @flow(task_runner=ConcurrentTaskRunner(max_workers=8))
    def handoff(count: int) -> None:
        for future in one.map(range(count)):
            future.result()

    n = args.tasks
    cases = {
        "untagged": (direct(untagged), n),
        "tagged, no limit": (direct(unlimited), n),
        "tagged, limited (never full)": (direct(limited), n),
        "handoff, limit 1, 8 threads": (handoff, max(n // 4, 10)),
    }
    for fn, _ in cases.values():
        fn(10)  # warm up
    print(f"database: {url.split('://')[0]}, N={n}, rounds={args.rounds}")
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fn, count) in cases.items():
            started = time.perf_counter()
            fn(count)
            times[name].append((time.perf_counter() - started) / count)
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32s} {median * 1e6:9.1f} µs/task  (min {min(values) * 1e6:.1f})")


if __name__ == "__main__":
    main()
