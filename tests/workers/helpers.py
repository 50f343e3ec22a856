"""Helpers of the worker tests: deployments made without ``deploy``, runs, waiting, engines.

- ``deploy(url, project, function)``: upload the project folder to local storage and save a
  deployment of ``flows.py:<function>`` (what ``vivace deploy`` does, through the store's own
  functions); ``stored_deployment(url)``: one whose code is nowhere, for tests that run nothing;
- ``start_run``: a SCHEDULED run of it, due now; ``engine_process``: ``python -m vivace.engine``
  (a context manager);
- ``wait_for``: poll until something holds, failing the test after a timeout.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
HEARTBEAT = 0.3

FLOWS = """
import asyncio
import os
import time

from vivace import flow, get_run_logger, task
from vivace.runners.dask import DaskTaskRunner

_marker = os.environ.get("VIVACE_TEST_IMPORT_MARKER")
if _marker:  # a slow import: the test stops the engine's process while it sleeps here
    open(_marker, "w").close()
    time.sleep(60)


@task
def double(x: int) -> int:
    return 2 * x


@flow
def pipeline(n: int = 3) -> int:
    get_run_logger().info("pipeline with n=%d", n)
    return sum(future.result() for future in double.map(range(n)))


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow
def sleepy(seconds: float = 60.0) -> float:
    get_run_logger().info("sleepy starts")
    return nap.submit(seconds).result()


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1}))
def dask_sleepy(seconds: float = 60.0) -> float:
    first = nap.submit(seconds)
    second = nap.submit(seconds, wait_for=[first])  # never starts: cancelled while waiting
    return second.result()


@task
async def add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@flow
async def async_pipeline(n: int = 2) -> int:
    return await add(n, n)


@task(persist_result=True)
def step(x: int) -> int:
    get_run_logger().info("step %d runs", x)
    return x


@flow
def flaky(marker: str) -> int:
    # Fails its first attempt (after a task completed), completes once the marker exists.
    first = step(1)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return first + step(2)


@flow
async def async_sleepy(seconds: float = 60.0) -> float:
    get_run_logger().info("async sleepy starts")
    await asyncio.sleep(seconds)
    return seconds


@flow(retries=1, retry_delay_seconds=120)
def retries_slowly() -> None:
    raise RuntimeError("fails, then waits two minutes to retry")


@flow
def cancelled_as_it_ends() -> int:
    # Its last act cancels its own run, RUNNING in the database, its final state not yet
    # written: a cancel racing the run's end.
    from vivace.engine.context import current_flow_run_id
    from vivace.settings import get_settings
    from vivace.store.run_control import request_cancellation
    from vivace.store.writer import get_writer

    get_writer().flush()
    request_cancellation(get_settings().resolved_database_url, current_flow_run_id())
    return 7


@flow
def naps(seconds: float = 60.0) -> float:
    # Short naps: an exception raised in its thread from another lands between two.
    get_run_logger().info("naps start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds
"""


def deploy(
    url: str,
    project: Path,
    function: str,
    *,
    name: str | None = None,
    queue: str = "default",
    infrastructure: dict[str, Any] | None = None,
    entrypoint: str | None = None,
) -> Any:
    """A deployment of ``flows.py:<function>`` (version 1, or the next one)."""
    from vivace.deployments.parameters import parameter_schema
    from vivace.deployments.storage import upload_project
    from vivace.results.resume import load_flow
    from vivace.store.deployments import DeploymentSpec, save_deployment

    name = name or function
    flow = load_flow(f"{project / 'flows.py'}:{function}", function)
    spec = DeploymentSpec(
        name=name,
        flow_name=flow.name,
        entrypoint=entrypoint or f"flows.py:{function}",
        storage=upload_project(project, None, name),
        parameter_schema=parameter_schema(flow),
        infrastructure=infrastructure or {"type": "process"},
        work_queue_name=queue,
    )
    return save_deployment(url, spec)


def stored_deployment(
    url: str, name: str = "nightly", queue: str = "default", **options: Any
) -> Any:
    """A deployment of ``etl.py:etl`` saved straight in the store, its code nowhere: for the
    store, API and CLI tests whose runs are never executed. ``options``: more DeploymentSpec
    fields (``skip_late_after``, ``concurrency_limit``, ...)."""
    from vivace.store.deployments import DeploymentSpec, save_deployment

    return save_deployment(
        url,
        DeploymentSpec(
            name=name,
            flow_name="etl",
            entrypoint="etl.py:etl",
            storage={"url": "/srv/code"},
            parameter_schema={"type": "object", "properties": {}},
            work_queue_name=queue,
            **options,
        ),
    )


def start_run(url: str, deployment: Any, **parameters: Any) -> Any:
    """A new SCHEDULED run of the deployment, due now."""
    from vivace.deployments.parameters import run_parameters
    from vivace.store.deployments import create_deployment_run

    run, _ = create_deployment_run(
        url, deployment, parameters=run_parameters(deployment, parameters)
    )
    return run


def run_record(url: str, run_id: uuid.UUID) -> Any:
    from vivace.store.queries import read_flow_run

    return read_flow_run(url, run_id)


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """``check()``'s first truthy value, polled until ``timeout`` (then the test fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def engine_process(run_id: uuid.UUID, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m vivace.engine <run_id>``, with the test's environment and ``env`` over it;
    killed on the way out if it still runs (a test that failed waiting for it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vivace.engine", str(run_id)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def running_task(url: str, run_id: uuid.UUID) -> bool:
    """Whether the run is RUNNING with a task run RUNNING (the flow is inside its task)."""
    from vivace.store.queries import read_task_runs

    run = run_record(url, run_id)
    if run is None or run.state_type.value != "RUNNING":
        return False
    tasks, _ = read_task_runs(url, run_id)
    return any(task.state_type.value == "RUNNING" for task in tasks)
