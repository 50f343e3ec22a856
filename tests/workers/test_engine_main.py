"""``python -m vivace.engine <id>``: a deployment's run executed into its own row, with no worker.

The runs that execute a flow go through a real subprocess, as a worker's infrastructure would
start it; the cases that end before the flow starts call the same entry point in-process.
"""

from __future__ import annotations

import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.workers.helpers import (
    deploy,
    engine_process,
    run_record,
    running_task,
    start_run,
    wait_for,
)
from vivace import flow
from vivace.engine.__main__ import main
from vivace.store.queries import read_flow_run_states, read_logs, read_task_runs


def states(url: str, run_id: uuid.UUID) -> list[tuple[str, str]]:
    return [(state.type.value, state.name) for state in read_flow_run_states(url, run_id)]


def leftover_code_folders(tmp_path: Path) -> list[Path]:
    """The engines' temporary code folders still there (TMPDIR is tmp_path/tmp)."""
    return list((tmp_path / "tmp").glob("vivace-run-*"))


@pytest.mark.parametrize(
    ("function", "parameters", "result_tasks"),
    [
        pytest.param("pipeline", {"n": 4}, 4, id="sync"),
        pytest.param("async_pipeline", {"n": 5}, 1, id="async"),
    ],
)
def test_a_deployment_run_is_executed_into_its_own_row(
    function: str,
    parameters: dict[str, Any],
    result_tasks: int,
    database_url: str,
    project: Path,
    tmp_path: Path,
) -> None:
    deployment = deploy(database_url, project, function)
    created = start_run(database_url, deployment, **parameters)

    with engine_process(created.id) as process:
        output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 0, output
    run = run_record(database_url, created.id)
    assert (run.id, run.name, run.flow_name) == (created.id, created.name, created.flow_name)
    assert run.parameters == parameters
    assert run.created == created.created
    assert run.entrypoint == f"flows.py:{function}"  # not the temporary folder it ran from
    assert run.deployment_id == deployment.id and run.deployment_version == 1
    assert run.heartbeat is not None and run.run_count == 1
    assert states(database_url, created.id) == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Claimed"),
        ("RUNNING", "Running"),
        ("COMPLETED", "Completed"),
    ]
    tasks, _ = read_task_runs(database_url, created.id)
    assert len(tasks) == result_tasks
    assert {task.state_type.value for task in tasks} == {"COMPLETED"}
    if function == "pipeline":
        logs, _ = read_logs(database_url, flow_run_id=created.id, limit=100)
        assert "pipeline with n=4" in [log.message for log in logs]
    assert leftover_code_folders(tmp_path) == []


def test_ids_that_name_nothing_to_run_are_refused(
    database_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow
    def plain() -> None:
        pass

    plain()
    from vivace.store.queries import read_flow_runs

    (plain_run,), _ = read_flow_runs(database_url, flow_name="plain")

    assert main(["not-an-id"]) == 2
    assert "not a valid id" in capsys.readouterr().err
    assert main([str(uuid.uuid4())]) == 2
    assert "not found in the run history" in capsys.readouterr().err
    assert main([str(plain_run.id)]) == 2
    assert "is not a run of a deployment" in capsys.readouterr().err
    assert main([]) == 2
    assert "usage: python -m vivace.engine FLOW_RUN_ID" in capsys.readouterr().err


def test_a_run_that_ended_or_is_being_cancelled_is_not_run(
    database_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vivace.store.run_control import request_cancellation
    from vivace.store.work_queues import claim_flow_runs, register_worker

    deployment = deploy(database_url, project, "pipeline")
    cancelled = start_run(database_url, deployment)
    request_cancellation(database_url, cancelled.id)  # SCHEDULED: cancelled at once
    assert main([str(cancelled.id)]) == 1
    assert "already ended Cancelled" in capsys.readouterr().err

    cancelling = start_run(database_url, deployment)
    worker = register_worker(database_url, "w", "process", ["default"])
    claim_flow_runs(database_url, worker_id=worker.id, queues=["default"], limit=1)
    request_cancellation(database_url, cancelling.id)  # claimed: CANCELLING
    assert main([str(cancelling.id)]) == 1
    assert "ends CANCELLED without running" in capsys.readouterr().err
    assert states(database_url, cancelling.id)[-2:] == [
        ("CANCELLING", "Cancelling"),
        ("CANCELLED", "Cancelled"),
    ]
    assert read_task_runs(database_url, cancelling.id)[0] == []


def test_a_run_another_worker_claimed_is_refused(
    database_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vivace.store.work_queues import claim_flow_runs, register_worker

    deployment = deploy(database_url, project, "pipeline")
    run = start_run(database_url, deployment)
    worker = register_worker(database_url, "w", "process", ["default"])
    claim_flow_runs(database_url, worker_id=worker.id, queues=["default"], limit=1)

    assert main([str(run.id)]) == 1

    assert "a flow run is run by one engine only" in capsys.readouterr().err
    assert run_record(database_url, run.id).state_name == "Claimed"


def test_code_that_cannot_be_fetched_fails_the_run(
    database_url: str, project: Path, vivace_home: Path
) -> None:
    deployment = deploy(database_url, project, "pipeline")
    run = start_run(database_url, deployment)
    shutil.rmtree(vivace_home / "deployments")

    assert main([str(run.id)]) == 1

    after = run_record(database_url, run.id)
    assert after.state_type.value == "FAILED"
    assert after.state_message.startswith("the flow run could not start: the deployment's code")
    assert "cannot be fetched" in after.state_message
    logs, _ = read_logs(database_url, flow_run_id=run.id)
    assert [log.message for log in logs] == [after.state_message]


def test_an_entrypoint_that_cannot_be_imported_fails_the_run(
    database_url: str, project: Path
) -> None:
    deployment = deploy(database_url, project, "pipeline", entrypoint="flows.py:gone")
    run = start_run(database_url, deployment)

    assert main([str(run.id)]) == 1

    after = run_record(database_url, run.id)
    assert after.state_type.value == "FAILED"
    assert "cannot be imported from its entrypoint 'flows.py:gone'" in after.state_message
    assert "AttributeError" in after.state_message


def test_parameters_that_no_longer_bind_fail_the_run(database_url: str, project: Path) -> None:
    from vivace.store.deployments import create_deployment_run

    deployment = deploy(database_url, project, "pipeline")
    run, _ = create_deployment_run(database_url, deployment, parameters={"n": "many"})

    assert main([str(run.id)]) == 1

    after = run_record(database_url, run.id)
    assert after.state_type.value == "FAILED"
    assert "'n'" in after.state_message and "many" in after.state_message
    assert [state[0] for state in states(database_url, run.id)] == [
        "SCHEDULED",
        "PENDING",
        "FAILED",
    ]


@pytest.mark.parametrize("function", ["sleepy", "async_sleepy"])
def test_the_engine_stops_itself_when_its_heartbeat_finds_it_cancelling(
    function: str, database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    deployment = deploy(database_url, project, function)
    run = start_run(database_url, deployment, seconds=120)
    with engine_process(run.id) as process:
        if function == "sleepy":  # the flow waits for a task sleeping in a worker thread
            wait_for(lambda: running_task(database_url, run.id), "the task to run")
        else:
            wait_for(
                lambda: run_record(database_url, run.id).state_type.value == "RUNNING",
                "the flow to run",
            )

        request_cancellation(database_url, run.id)
        output = process.communicate(timeout=30)[0].decode()

    assert process.returncode == 1, output
    after = run_record(database_url, run.id)
    assert after.state_type.value == "CANCELLED", after.state_message
    assert states(database_url, run.id)[-3:] == [
        ("RUNNING", "Running"),
        ("CANCELLING", "Cancelling"),
        ("CANCELLED", "Cancelled"),
    ]
    tasks, _ = read_task_runs(database_url, run.id)
    assert {task.state_type.value for task in tasks} <= {"CANCELLED"}


@pytest.mark.parametrize(
    ("cancel", "final"), [(True, "CANCELLED"), (False, "CRASHED")], ids=["cancelling", "not"]
)
def test_a_sigterm_ends_the_run_cancelled_only_when_it_is_being_cancelled(
    cancel: bool, final: str, database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    deployment = deploy(database_url, project, "sleepy")
    run = start_run(database_url, deployment, seconds=120)
    # A slow heartbeat: the engine learns of the cancellation from the database on its way out.
    with engine_process(run.id, VIVACE_HEARTBEAT_INTERVAL="600") as process:
        wait_for(lambda: running_task(database_url, run.id), "the task to run")
        if cancel:
            request_cancellation(database_url, run.id)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()

    assert process.returncode == 143, output
    after = run_record(database_url, run.id)
    assert after.state_type.value == final
    assert "SystemExit: 143" in after.state_message


def test_cancelling_a_run_cancels_its_outstanding_dask_tasks(project: Path) -> None:
    # What the Dask runner does when the engine stops it: one backend is enough (the default
    # SQLite file of the test's VIVACE_HOME, which the engine's process inherits).
    from vivace.settings import get_settings
    from vivace.store.run_control import request_cancellation

    database_url = get_settings().resolved_database_url
    deployment = deploy(database_url, project, "dask_sleepy")
    run = start_run(database_url, deployment, seconds=120)
    with engine_process(run.id) as process:
        wait_for(lambda: running_task(database_url, run.id), "the first task to run", 90)
        request_cancellation(database_url, run.id)
        output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 1, output
    assert run_record(database_url, run.id).state_type.value == "CANCELLED"
    tasks, _ = read_task_runs(database_url, run.id)
    assert [task.state_type.value for task in tasks] == ["CANCELLED", "CANCELLED"]


@pytest.mark.parametrize(
    ("cancel", "final", "message"),
    [
        pytest.param(
            False,
            "CRASHED",
            "the flow run's process was stopped before its flow started: SystemExit: 143",
            id="not-cancelling",
        ),
        pytest.param(
            True,
            "CANCELLED",
            "cancelled: its process was stopped (SystemExit: 143)",
            id="cancelling",
        ),
    ],
)
def test_a_sigterm_before_the_flow_starts_ends_the_run_and_removes_its_code(
    cancel: bool, final: str, message: str, database_url: str, project: Path, tmp_path: Path
) -> None:
    from vivace.store.run_control import request_cancellation

    deployment = deploy(database_url, project, "pipeline")
    run = start_run(database_url, deployment)
    marker = tmp_path / "importing"
    # Its flow's module sleeps while it is imported, the code fetched into its temporary folder.
    with engine_process(run.id, VIVACE_TEST_IMPORT_MARKER=str(marker)) as process:
        wait_for(marker.exists, "the engine to import the flow")
        assert len(leftover_code_folders(tmp_path)) == 1
        if cancel:
            assert request_cancellation(database_url, run.id).state_type.value == "CANCELLING"
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()

    assert process.returncode == 143, output
    after = run_record(database_url, run.id)
    assert (after.state_type.value, after.state_message) == (final, message)
    assert leftover_code_folders(tmp_path) == []


def test_a_cancel_that_arrives_as_the_run_ends_leaves_the_run_as_it_ended(
    database_url: str, project: Path
) -> None:
    # The flow cancels its own run as its last act; its engine's heartbeat is slow, so the
    # engine writes COMPLETED at the seq the CANCELLING took, and that write is dropped.
    deployment = deploy(database_url, project, "cancelled_as_it_ends")
    run = start_run(database_url, deployment)

    with engine_process(run.id, VIVACE_HEARTBEAT_INTERVAL="600") as process:
        output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 0, output
    after = run_record(database_url, run.id)
    assert after.state_type.value == "COMPLETED", after.state_message
    assert states(database_url, run.id)[-3:] == [
        ("RUNNING", "Running"),
        ("CANCELLING", "Cancelling"),
        ("COMPLETED", "Completed"),
    ]
    logs, _ = read_logs(database_url, flow_run_id=run.id, limit=100)
    assert "Cancellation requested after the flow run had ended Completed: it stays Completed" in [
        log.message for log in logs
    ]


def test_a_run_waiting_to_retry_is_stopped_by_its_engine_when_cancelled(
    database_url: str, project: Path
) -> None:
    from vivace.store.run_control import request_cancellation
    from vivace.store.work_queues import claim_flow_runs, register_worker

    deployment = deploy(database_url, project, "retries_slowly")
    run = start_run(database_url, deployment)
    with engine_process(run.id) as process:
        wait_for(
            lambda: run_record(database_url, run.id).state_name == "AwaitingRetry",
            "the first attempt to fail",
        )
        worker = register_worker(database_url, "w", "process", ["default"])
        assert claim_flow_runs(database_url, worker_id=worker.id, queues=["default"], limit=1) == []
        # Its engine holds it: CANCELLING, not CANCELLED under the engine's feet.
        assert request_cancellation(database_url, run.id).state_type.value == "CANCELLING"
        output = process.communicate(timeout=30)[0].decode()

    assert process.returncode == 1, output
    assert run_record(database_url, run.id).state_type.value == "CANCELLED"
    assert states(database_url, run.id)[-3:] == [
        ("SCHEDULED", "AwaitingRetry"),
        ("CANCELLING", "Cancelling"),
        ("CANCELLED", "Cancelled"),
    ]


def test_a_run_outside_the_main_thread_is_stopped_by_its_heartbeat(
    database_url: str, project: Path
) -> None:
    # No signal can reach a thread other than the main one: the heartbeat raises the
    # cancellation in the run's thread instead.
    import threading

    from vivace.deployments.execute import execute_flow_run
    from vivace.store.run_control import request_cancellation

    deployment = deploy(database_url, project, "naps")
    run = start_run(database_url, deployment, seconds=60)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(execute_flow_run(run.id)))
    thread.start()
    try:
        wait_for(
            lambda: run_record(database_url, run.id).state_type.value == "RUNNING",
            "the flow to run",
        )
        request_cancellation(database_url, run.id)
    finally:
        thread.join(timeout=30)

    assert codes == [1]
    after = run_record(database_url, run.id)
    assert after.state_type.value == "CANCELLED", after.state_message


def test_an_engine_killed_while_it_imports_the_flow_leaves_a_run_the_zombies_service_ends(
    database_url: str, project: Path, tmp_path: Path
) -> None:
    from vivace.store.run_health import crash_zombie_runs

    deployment = deploy(database_url, project, "pipeline")
    run = start_run(database_url, deployment)
    marker = tmp_path / "importing"
    # Its flow's module sleeps while it is imported: the engine beats all the same.
    with engine_process(
        run.id, VIVACE_TEST_IMPORT_MARKER=str(marker), VIVACE_HEARTBEAT_INTERVAL="0.2"
    ) as process:
        wait_for(marker.exists, "the engine to import the flow")
        first = run_record(database_url, run.id).heartbeat
        wait_for(
            lambda: run_record(database_url, run.id).heartbeat > first,
            "a heartbeat while the flow is imported",
        )
        process.kill()  # SIGKILL: nothing of the engine's runs any more
        process.communicate(timeout=30)

    assert run_record(database_url, run.id).state_type.value == "PENDING"
    # Three silent intervals of 0.2 s later, the zombies service's query ends it.
    wait_for(lambda: crash_zombie_runs(database_url, 3, 0.2) == [run.id], "the run to end")
    after = run_record(database_url, run.id)
    assert after.state_type.value == "CRASHED"
    assert "before its flow started" in after.state_message
