"""The worker against a real server (``live_server``) and real processes: claim, launch, watch,
report exits, cancel, crash, and two workers racing over one queue."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.workers.helpers import deploy, run_record, running_task, start_run, wait_for
from vivace.cli import cli
from vivace.exceptions import ResumeError
from vivace.store.queries import read_flow_run_states, read_logs, read_task_runs
from vivace.store.work_queues import read_workers
from vivace.workers import Worker


def make_worker(live_server: str, **options: Any) -> Worker:
    options.setdefault("poll_interval", 0.1)
    options.setdefault("grace_seconds", 5.0)
    return Worker(f"{live_server}/api", queues=options.pop("queues", ["default"]), **options)


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The worker's ``run()`` in a thread, stopped (and wound down) on the way out."""
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the worker did not stop"


def final(url: str, run_id: uuid.UUID) -> Any:
    run = run_record(url, run_id)
    return run if run.state_type.value in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def launched_pid(url: str, run_id: uuid.UUID) -> int:
    """The pid the worker reported for the run (it reports it just after the launch)."""
    found = wait_for(lambda: run_record(url, run_id).infrastructure_id, "the launch's report")
    return int(found)


def pid_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_runs_a_claimed_run_to_completion(
    live_server: str, database_url: str, project: Path
) -> None:
    deployment = deploy(database_url, project, "pipeline")
    created = start_run(database_url, deployment, n=3)

    worker = make_worker(live_server)
    assert worker.run_once() == [created.id]

    run = run_record(database_url, created.id)
    assert run.state_type.value == "COMPLETED", run.state_message
    assert run.worker_id is not None and run.infrastructure_id is not None
    assert pid_is_gone(int(run.infrastructure_id))
    assert [(s.type.value, s.name) for s in read_flow_run_states(database_url, run.id)] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Claimed"),
        ("RUNNING", "Running"),
        ("COMPLETED", "Completed"),
    ]
    tasks, _ = read_task_runs(database_url, run.id)
    assert len(tasks) == 3 and {task.state_type.value for task in tasks} == {"COMPLETED"}
    logs, _ = read_logs(database_url, flow_run_id=run.id, limit=100)
    assert "pipeline with n=3" in [log.message for log in logs]
    assert read_workers(database_url) == []  # deregistered


@pytest.mark.timeout(240)
def test_two_workers_racing_over_50_queued_runs_execute_each_once(
    live_server: str, database_url: str, project: Path
) -> None:
    # 50 real engine processes (about half a second of CPU each): the claims, the engine's take
    # of each run and its deployed mode, as in production.
    deployment = deploy(database_url, project, "pipeline")
    runs = [start_run(database_url, deployment, n=2) for _ in range(50)]

    one, two = make_worker(live_server, name="one"), make_worker(live_server, name="two")
    with running(one), running(two):
        for run in runs:
            wait_for(lambda run=run: final(database_url, run.id), f"run {run.id} to end", 100)

    claimants = set()
    for run in runs:
        after = run_record(database_url, run.id)
        assert after.state_type.value == "COMPLETED", after.state_message
        claimants.add(after.worker_id)
        history = [(s.type.value, s.name) for s in read_flow_run_states(database_url, run.id)]
        assert history.count(("PENDING", "Claimed")) == 1
        assert [kind for kind, _ in history].count("RUNNING") == 1
        tasks, _ = read_task_runs(database_url, run.id)
        assert len(tasks) == 2
    assert len(claimants) == 2  # both workers took part


def test_kill_9_of_a_runs_process_crashes_the_run_with_its_exit_code(
    live_server: str, database_url: str, project: Path
) -> None:
    deployment = deploy(database_url, project, "sleepy")
    run = start_run(database_url, deployment, seconds=120)

    with running(make_worker(live_server)):
        wait_for(lambda: running_task(database_url, run.id), "the task to run")
        pid = launched_pid(database_url, run.id)
        os.kill(pid, signal.SIGKILL)
        after = wait_for(lambda: final(database_url, run.id), "the run to end")

    assert after.state_type.value == "CRASHED"
    assert after.state_message == (
        "the flow run's infrastructure ended without a final state: "
        f"process {pid} exited with code -9"
    )


def test_cancelling_a_running_run_stops_its_process_through_the_worker(
    live_server: str, database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    # The engine's own heartbeat is slow: the worker's heartbeat is what stops the run.
    infrastructure = {"type": "process", "env": {"VIVACE_HEARTBEAT_INTERVAL": "600"}}
    deployment = deploy(database_url, project, "sleepy", infrastructure=infrastructure)
    run = start_run(database_url, deployment, seconds=120)

    with running(make_worker(live_server)):
        wait_for(lambda: running_task(database_url, run.id), "the task to run")
        pid = launched_pid(database_url, run.id)
        request_cancellation(database_url, run.id)
        after = wait_for(lambda: final(database_url, run.id), "the run to end")
        wait_for(lambda: pid_is_gone(pid), "the process to be gone", 20)

    assert after.state_type.value == "CANCELLED", after.state_message
    assert "SystemExit: 143" in after.state_message  # its engine ended it, on the SIGTERM
    tasks, _ = read_task_runs(database_url, run.id)
    assert [task.state_type.value for task in tasks] == ["CANCELLED"]


@pytest.mark.parametrize(
    ("infrastructure", "message"),
    [
        pytest.param(
            {"type": "process", "working_dir": "/no/such/folder"},
            "Process cannot start",
            id="cannot-start",
        ),
        pytest.param({"type": "process", "bogus": 1}, "ValidationError", id="bad-record"),
    ],
)
def test_an_infrastructure_that_cannot_start_crashes_the_run(
    infrastructure: dict[str, Any],
    message: str,
    live_server: str,
    database_url: str,
    project: Path,
) -> None:
    deployment = deploy(database_url, project, "pipeline", infrastructure=infrastructure)
    run = start_run(database_url, deployment)

    assert make_worker(live_server).run_once() == [run.id]

    after = run_record(database_url, run.id)
    assert after.state_type.value == "CRASHED"
    assert after.state_message.startswith("the flow run's infrastructure could not be started: ")
    assert message in after.state_message


def test_a_stopping_worker_gives_back_what_it_did_not_launch_and_stops_what_it_did(
    live_server: str, database_url: str, project: Path
) -> None:
    from vivace.store.deployments import create_deployment_run

    sleepy = deploy(database_url, project, "sleepy")
    launched = start_run(database_url, sleepy, seconds=120)
    later, _ = create_deployment_run(
        database_url, sleepy, parameters={"seconds": 1}, expected_start_time=time.time() + 60
    )

    with running(make_worker(live_server, prefetch_seconds=120)):
        wait_for(lambda: running_task(database_url, launched.id), "the task to run")
        wait_for(
            lambda: run_record(database_url, later.id).state_name == "Claimed",
            "the later run to be claimed",
        )

    given_back = run_record(database_url, later.id)
    assert (given_back.state_type.value, given_back.worker_id) == ("SCHEDULED", None)
    stopped = run_record(database_url, launched.id)
    assert stopped.state_type.value == "CRASHED"
    assert "SystemExit: 143" in stopped.state_message
    assert read_workers(database_url) == []


def test_a_failed_deployment_run_is_retried_through_its_queue_reusing_completed_tasks(
    live_server: str, database_url: str, project: Path, tmp_path: Path
) -> None:
    from vivace.results.resume import resume_flow_run, retry_deployment_run

    deployment = deploy(database_url, project, "flaky")
    run = start_run(database_url, deployment, marker=str(tmp_path / "marker"))
    worker = make_worker(live_server)
    worker.run_once()
    failed = run_record(database_url, run.id)
    assert failed.state_type.value == "FAILED" and failed.run_count == 1

    with pytest.raises(ResumeError, match="retry it through its work queue"):
        resume_flow_run(run.id)
    retried = CliRunner().invoke(cli, ["flow-run", "retry", str(run.id)])
    assert retried.exit_code == 0, retried.output
    assert "back in work queue 'default': a worker runs attempt 2" in retried.output
    rescheduled = run_record(database_url, run.id)
    assert (rescheduled.state_type.value, rescheduled.state_name) == ("SCHEDULED", "AwaitingRetry")
    worker.run_once()

    after = run_record(database_url, run.id)
    assert after.state_type.value == "COMPLETED", after.state_message
    assert after.run_count == 2
    names = [s.name for s in read_flow_run_states(database_url, run.id)]
    assert names.count("Claimed") == 2 and "Retrying" in names
    logs, _ = read_logs(database_url, flow_run_id=run.id, limit=100)
    # step(1) ran once: the second attempt reused its persisted result.
    assert [log.message for log in logs].count("step 1 runs") == 1
    with pytest.raises(ResumeError, match="COMPLETED"):
        retry_deployment_run(run.id)
