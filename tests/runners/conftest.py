"""Clusters for the runner tests: real ones, started by the tests themselves (no mocks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    """A LocalCluster with two worker processes, shared by the tests of one module.

    Its scheduler does not re-run a task whose worker died (``allowed-failures`` 0), like the
    temporary clusters DaskTaskRunner starts: vivace decides what a dead worker means.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0"
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def threads_left() -> Callable[[], set[threading.Thread]]:
    """Call it late in a test: the threads started since the test began that still run after up
    to 5 s (vivace's own, such as the store's writer, aside)."""
    before = set(threading.enumerate())

    def left() -> set[threading.Thread]:
        deadline = time.monotonic() + 5
        while True:
            new = set(threading.enumerate()) - before
            new = {thread for thread in new if not thread.name.startswith("vivace-")}
            if not new or time.monotonic() >= deadline:
                return new
            time.sleep(0.1)

    return left


RAY_TEST_INIT = {
    "num_cpus": 2,
    "include_dashboard": False,
    "object_store_memory": 200 * 1024 * 1024,
    "log_to_driver": False,
}


def ray_worker_env() -> dict[str, str]:
    """Environment for Ray's worker processes: they import the test modules' tasks by name."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray (2 CPUs) initialised in this process, shared by the tests of one module.

    ``RayTaskRunner()`` uses a Ray already initialised in the process and leaves it running.
    """
    import os

    ray = pytest.importorskip("ray")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ray_worker_env()["PYTHONPATH"]  # inherited by Ray's processes
    try:
        ray.init(**RAY_TEST_INIT)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        yield None
    finally:
        ray.shutdown()


@pytest.fixture
def greetings_recorded(history: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a greetings flow on a runner twice (3 then 2 runs); check every run and its logs stored.

    The flow maps ``greet`` (a task of the test module, which the workers import by reference)
    with log_prints on; ``greet`` must log "logged by task {i}", print "printed by task {i}" and
    return i. The workers' writers would write only every minute: what is in the store when a
    flow run returns got there through what the runner does before the flow run's final state.
    """
    from vivace import flow
    from vivace.settings import reset_settings

    monkeypatch.setenv("VIVACE_RECORDER_FLUSH_INTERVAL", "60")
    reset_settings()

    def check(runner: Any, greet: Any) -> None:
        @flow(task_runner=runner, log_prints=True)
        def greetings(n: int) -> list[int]:
            return [f.result() for f in greet.map(range(n))]

        states = [greetings(3, return_state=True), greetings(2, return_state=True)]

        assert [s.result() for s in states] == [[0, 1, 2], [0, 1]]
        for state, count in zip(states, (3, 2), strict=True):
            runs = history.task_runs(state.run_id)
            assert len(runs) == count and all(r.state_type == "COMPLETED" for r in runs)
            messages = {log.message for log in history.logs(state.run_id) if log.task_run_id}
            for i in range(count):
                assert f"logged by task {i}" in messages
                assert f"printed by task {i}" in messages

    return check
