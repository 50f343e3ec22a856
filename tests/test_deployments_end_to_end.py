"""Deployments end to end: a server, a process worker, a flow deployed from a project folder.

What a user does, with nothing stood in for: ``vivace deploy`` uploads a temporary project
folder (to local storage, and to S3 on a moto server), a ``vivace worker start`` process polls a
real uvicorn server, and runs are created from the CLI, through the API and from Python. Each run
is executed by ``python -m vivace.engine`` in a process of its own, which fetches the code from
storage and records into the run's row; the test reads the outcome from the store: every run
COMPLETED with its task runs and its log lines. A run with a bad parameter is refused with 422 and
creates nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vivace
from vivace.cli import cli
from vivace.engine.states import FINAL_TYPES, StateType
from vivace.store import queries
from vivace.store.deployments import read_deployment

VIVACE = str(Path(sys.executable).with_name("vivace"))
WORKER_COMMAND = [VIVACE, "worker", "start", "--queue", "default", "--limit", "4"]

FLOW_MODULE = """
from helpers import double

from vivace import flow, get_run_logger


@flow
def etl(n: int, label: str = "run") -> int:
    total = sum(future.result() for future in [double.submit(i) for i in range(n)])
    get_run_logger().info("etl %s: total %d", label, total)
    return total
"""

HELPERS_MODULE = """
from vivace import task


@task
def double(x: int) -> int:
    return 2 * x
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: a flow module importing a sibling module, and an ignored file."""
    folder = tmp_path / "project"
    (folder / "flows").mkdir(parents=True)
    (folder / "flows" / "etl.py").write_text(FLOW_MODULE)
    (folder / "flows" / "helpers.py").write_text(HELPERS_MODULE)
    (folder / "notes.secret").write_text("not for storage")
    (folder / ".vivaceignore").write_text("*.secret\n")
    return folder


@pytest.fixture
def worker(
    live_server: str, database_url: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``vivace worker start`` in a process of its own, polling the live server."""
    log = tmp_path / "worker.log"
    environment = {
        **os.environ,
        "VIVACE_DATABASE_URL": database_url,
        "VIVACE_API_URL": live_server,
        "VIVACE_HEARTBEAT_INTERVAL": "0.5",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*WORKER_COMMAND, "--poll-interval", "0.2"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            print(log.read_text()[-4000:])


def vivace_cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until_final(url: str, run_ids: list[uuid.UUID], timeout: float = 90) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [queries.read_flow_run(url, run_id) for run_id in run_ids]
        if all(run is not None and run.state_type in FINAL_TYPES for run in runs):
            return runs
        if time.monotonic() > deadline:
            pytest.fail(f"runs did not end within {timeout} s: {runs}")
        time.sleep(0.2)


def assert_completed_with_records(url: str, run: Any, n: int, label: str) -> None:
    assert run.state_type is StateType.COMPLETED, run.state_message
    task_runs = queries.read_task_runs(url, flow_run_id=run.id, limit=1000)[0]
    assert len(task_runs) == n
    assert all(task_run.state_type is StateType.COMPLETED for task_run in task_runs)
    lines = [log.message for log in queries.read_logs(url, flow_run_id=run.id, limit=1000)[0]]
    assert f"etl {label}: total {n * (n - 1)}" in lines


@pytest.mark.timeout(240)
def test_a_deployed_flow_runs_from_the_cli_the_api_and_python(
    project: Path,
    database_url: str,
    live_server: str,
    worker: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(project)
    vivace_cli("deploy", "flows/etl.py:etl", "--name", "etl", "--param", "label=e2e")
    deployment = read_deployment(database_url, "etl")
    assert deployment is not None

    vivace_cli("deployment", "run", "etl", "--param", "n=3")
    from_cli = queries.read_flow_runs(database_url, deployment_id=deployment.id)[0]
    status, from_api = post(f"{live_server}/api/deployments/etl/runs", {"parameters": {"n": 4}})
    assert status == 201, from_api
    from_python = vivace.run_deployment("etl", parameters={"n": 2}, timeout=90)

    runs = wait_until_final(
        database_url, [from_cli[0].id, uuid.UUID(from_api["id"]), from_python.id]
    )
    for run, n in zip(runs, (3, 4, 2), strict=True):
        assert_completed_with_records(database_url, run, n, "e2e")
        assert run.deployment_id == deployment.id and run.deployment_version == 1
    assert worker.poll() is None  # the worker lives on between runs

    status, refused = post(f"{live_server}/api/deployments/etl/runs", {"parameters": {"n": "x"}})
    assert status == 422 and "'n'" in refused["detail"]
    assert len(queries.read_flow_runs(database_url, deployment_id=deployment.id)[0]) == 3


@pytest.mark.timeout(240)
def test_a_flow_deployed_to_s3_runs_from_its_bucket(
    project: Path,
    database_url: str,
    moto_server: str,
    live_server: str,
    worker: subprocess.Popen[bytes],
) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="e2e-flows")
    (project / "notes.secret").unlink()
    from vivace.deployments.runs import run_deployment

    vivace_flow = _load_flow(project / "flows" / "etl.py")
    deployment = vivace_flow.deploy("etl-s3", storage="s3://e2e-flows/deployments")
    assert deployment.storage["url"].startswith("s3://e2e-flows/deployments/etl-s3/")
    listed = boto3.client("s3").list_objects_v2(Bucket="e2e-flows")["Contents"]
    assert {item["Key"].rsplit("/", 1)[-1] for item in listed} >= {"etl.py", "helpers.py"}

    run = run_deployment("etl-s3", parameters={"n": 5, "label": "s3"}, timeout=90)

    assert_completed_with_records(database_url, run, 5, "s3")


def _load_flow(path: Path) -> Any:
    from vivace.results.resume import load_flow

    return load_flow(f"{path}:etl", "etl")
