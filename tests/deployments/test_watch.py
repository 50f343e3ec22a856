"""``vivace flow-run watch ID`` and ``deployment run --watch`` on runs that really execute."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.deployments.helpers import crash_first_run_soon
from vivace import flow, get_run_logger, task
from vivace.cli import cli
from vivace.store.deployments import DeploymentRecord
from vivace.store.queries import read_flow_runs

gate = threading.Event()


@task
def step(n: int) -> int:
    if n == 0:
        gate.wait(timeout=30)  # the watcher sees the run going before it ends
    return n


@flow
def watched(fail: bool = False) -> int:
    get_run_logger().info("watched flow starts")
    total = sum(future.result() for future in [step.submit(n) for n in range(3)])
    if fail:
        raise ValueError("the watched flow failed")
    return total


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def running() -> Iterator[Any]:
    """Start ``watched`` in a thread; yields a function returning the id of its flow run."""
    gate.clear()
    threads: list[threading.Thread] = []

    def start(**parameters: Any) -> uuid.UUID:
        url = _url()
        thread = threading.Thread(
            target=lambda: watched(**parameters, return_state=True), daemon=True
        )
        thread.start()
        threads.append(thread)
        while not (runs := read_flow_runs(url, flow_name="watched")[0]):
            time.sleep(0.02)
        threading.Timer(0.3, gate.set).start()
        return runs[0].id

    yield start
    gate.set()
    for thread in threads:
        thread.join(timeout=30)


def _url() -> str:
    from vivace.settings import get_settings

    return get_settings().resolved_database_url


def test_watch_a_run_to_completion(database_url: str, running: Any) -> None:
    run_id = running()

    result = vivace("flow-run", "watch", str(run_id))

    assert result.exit_code == 0, result.output
    assert "3/3 task runs finished" in result.output
    assert "watched flow starts" in result.output
    assert "ended Completed (COMPLETED)" in result.output


def test_watch_a_failed_run(database_url: str, running: Any) -> None:
    run_id = running(fail=True)

    result = vivace("flow-run", "watch", str(run_id))

    assert result.exit_code == 1, result.output
    assert "3/3 task runs finished" in result.output
    assert "the watched flow failed" in result.output
    assert "(FAILED)" in result.output


def test_watch_an_unknown_or_bad_id(database_url: str) -> None:
    unknown = vivace("flow-run", "watch", str(uuid.uuid4()))
    bad = vivace("flow-run", "watch", "not-an-id")

    assert unknown.exit_code == 1 and "not found in the run history" in unknown.output
    assert bad.exit_code == 2 and bad.output.startswith("Error: ")


def test_deployment_run_watch_follows_the_new_run(
    database_url: str, deployment: DeploymentRecord
) -> None:
    thread = crash_first_run_soon(database_url, deployment.id)
    result = vivace("deployment", "run", "nightly", "-p", "day=1", "--watch")
    thread.join(timeout=10)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Created flow run")
    assert "process 42 exited with code 9" in result.output
    assert "0/0 task runs finished" in result.output
