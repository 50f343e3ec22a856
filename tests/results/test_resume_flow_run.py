"""Resuming a failed flow run: same run, next attempt, only the failed part runs again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vivace import flow, resume_flow_run, task
from vivace.cli import cli
from vivace.exceptions import ResumeError
from vivace.runners import SequentialTaskRunner
from vivace.store.queries import read_flow_run, read_flow_run_states, read_task_runs


def mark(workdir: str, step: str) -> None:
    with open(Path(workdir) / "executed.log", "a") as log:
        log.write(step + "\n")


def executed(workdir: Path) -> list[str]:
    return (workdir / "executed.log").read_text().split()


@task(persist_result=True)
def extract(workdir: str) -> list[int]:
    mark(workdir, "extract")
    return [1, 2, 3]


@task
def note(workdir: str) -> str:
    mark(workdir, "note")  # not persisted: runs again in every attempt
    return "noted"


@task(persist_result=True)
def transform(workdir: str, values: list[int]) -> list[int]:
    mark(workdir, "transform")
    broken = Path(workdir) / "broken"
    if broken.exists():
        if broken.read_text() == "once":
            broken.unlink()
        raise RuntimeError("transform is broken")
    return [v * 10 for v in values]


@flow(task_runner=SequentialTaskRunner())
def etl(workdir: str) -> int:
    values = extract(workdir)
    note(workdir)
    return sum(transform.submit(workdir, values).result())


@flow(task_runner=SequentialTaskRunner(), retries=1)
def etl_with_retry(workdir: str) -> int:
    values = extract(workdir)
    return sum(transform(workdir, values))


@flow(task_runner=SequentialTaskRunner())
def etl_submitted(workdir: str) -> int:
    values = extract.submit(workdir)
    return sum(transform.submit(workdir, values).result())


@flow(task_runner=SequentialTaskRunner())
def variadic(workdir: str, /, *rest: int, scale: int = 1, **extra: str) -> Any:
    if (Path(workdir) / "broken").exists():
        raise RuntimeError("variadic is broken")
    return [list(rest), scale, extra]


def _renamed_body(workdir: str) -> str:
    if (Path(workdir) / "broken").exists():
        raise RuntimeError("renamed is broken")
    return "renamed"


# Bound to another name than its function's: the entrypoint names the function.
renamed = flow(name="renamed-flow", task_runner=SequentialTaskRunner())(_renamed_body)


@flow(task_runner=SequentialTaskRunner())
def takes_an_object(thing: Any) -> None:
    raise RuntimeError("fails")


def test_a_resumed_run_reuses_completed_tasks_and_runs_the_failed_part(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl(str(tmp_path), return_state=True)
    assert failed.is_failed()
    assert executed(tmp_path) == ["extract", "note", "transform"]

    (tmp_path / "broken").unlink()  # the fix
    assert resume_flow_run(failed.run_id) == 60
    assert executed(tmp_path) == ["extract", "note", "transform", "note", "transform"]

    record = read_flow_run(database_url, failed.run_id)
    assert record is not None
    assert record.state_name == "Completed" and record.run_count == 2
    assert record.entrypoint == f"{__name__}:etl"
    states = read_flow_run_states(database_url, failed.run_id)
    assert [(s.seq, s.type.value, s.name) for s in states] == [
        (1, "PENDING", "Pending"),
        (2, "RUNNING", "Running"),
        (3, "FAILED", "Failed"),
        (4, "RUNNING", "Retrying"),
        (5, "COMPLETED", "Completed"),
    ]
    runs, _ = read_task_runs(database_url, failed.run_id)
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    assert len(by_name["extract"]) == 1  # reused, not run again
    assert [r.state_type.value for r in by_name["transform"]] == ["FAILED", "COMPLETED"]
    assert [r.dynamic_key for r in by_name["transform"]] == ["0", "0"]
    assert len(by_name["note"]) == 2


def test_a_resumed_run_that_fails_again_can_be_resumed_again(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl(str(tmp_path), return_state=True)
    again = resume_flow_run(failed.run_id, return_state=True)
    assert again.is_failed() and "transform is broken" in (again.message or "")
    (tmp_path / "broken").unlink()
    assert resume_flow_run(str(failed.run_id)) == 60
    assert executed(tmp_path).count("extract") == 1
    record = read_flow_run(database_url, failed.run_id)
    assert record is not None and record.run_count == 3


def test_a_reused_result_gone_from_storage_fails_the_downstream_run(
    database_url: str, tmp_path: Path, vivace_home: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl_submitted(str(tmp_path), return_state=True)
    (extracted,) = [
        run for run in read_task_runs(database_url, failed.run_id)[0] if run.name == "extract-0"
    ]
    (vivace_home / "storage" / extracted.result_key).unlink()
    (tmp_path / "broken").unlink()

    again = resume_flow_run(failed.run_id, return_state=True)

    # The downstream run fails, saying why; it does not crash, nor take the flow run down.
    assert again.is_failed() and "no longer in its storage" in (again.message or "")
    runs, _ = read_task_runs(database_url, failed.run_id)
    latest = max((run for run in runs if run.name.startswith("transform")), key=lambda r: r.created)
    assert (latest.state_type.value, latest.state_name) == ("FAILED", "UpstreamFailed")
    assert "no longer in its storage" in (latest.state_message or "")
    assert executed(tmp_path) == ["extract", "transform"]  # transform did not run again


def test_a_resume_replays_positional_only_star_args_and_star_star_kwargs(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    failed = variadic(str(tmp_path), 2, 3, scale=4, tag="x", return_state=True)
    assert failed.is_failed()
    (tmp_path / "broken").unlink()
    assert resume_flow_run(failed.run_id) == [[2, 3], 4, {"tag": "x"}]


def test_a_flow_bound_to_another_name_than_its_function_is_found_again(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    failed = renamed(str(tmp_path), return_state=True)
    (tmp_path / "broken").unlink()
    assert resume_flow_run(failed.run_id) == "renamed"


def test_a_flow_retry_reuses_what_the_failed_attempt_completed(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").write_text("once")
    assert etl_with_retry(str(tmp_path)) == 60
    assert executed(tmp_path) == ["extract", "transform", "transform"]


@pytest.mark.usefixtures("database_url")
def test_what_cannot_be_resumed_is_refused_with_the_reason(tmp_path: Path) -> None:
    completed = etl(str(tmp_path), return_state=True)
    with pytest.raises(ResumeError, match="only a FAILED, CRASHED or CANCELLED"):
        resume_flow_run(completed.run_id)

    opaque = takes_an_object(object(), return_state=True)
    with pytest.raises(ResumeError, match="parameter\\(s\\) 'thing' were not JSON"):
        resume_flow_run(opaque.run_id)

    @flow(task_runner=SequentialTaskRunner())
    def local_flow() -> None:
        raise RuntimeError("fails")

    local = local_flow(return_state=True)
    with pytest.raises(ResumeError, match="recorded no entrypoint"):
        resume_flow_run(local.run_id)

    with pytest.raises(ResumeError, match="not found"):
        resume_flow_run(uuid.uuid4())


SCRIPT = """
    import sys
    from pathlib import Path

    from vivace import flow, task
    from vivace.runners import SequentialTaskRunner

    WORKDIR = Path(__file__).parent

    @task(persist_result=True, result_serializer="json")
    def load() -> list[int]:
        with open(WORKDIR / "executed.log", "a") as log:
            log.write("load\\n")
        return [4, 5]

    @task
    def check(values: list[int]) -> int:
        if (WORKDIR / "broken").exists():
            raise ValueError("check failed")
        return sum(values)

    @flow(task_runner=SequentialTaskRunner())
    def script_flow(factor: int = 1) -> int:
        return check(load()) * factor

    if __name__ == "__main__":
        state = script_flow(factor=int(sys.argv[1]), return_state=True)
        print(state.run_id)
"""


def test_cli_retry_resumes_a_run_of_a_script(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "broken").write_text("")
    env = {**os.environ, "VIVACE_LOGGING_CONSOLE": "false"}
    done = subprocess.run(
        [sys.executable, str(script), "3"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=True,
    )
    run_id = done.stdout.strip().splitlines()[-1]
    (tmp_path / "broken").unlink()

    result = CliRunner().invoke(cli, ["flow-run", "retry", run_id])

    assert result.exit_code == 0, result.output
    assert f"Flow run {run_id} finished in state Completed" in result.output
    assert (tmp_path / "executed.log").read_text().split() == ["load"]
    record = read_flow_run(_url(), uuid.UUID(run_id))
    assert record is not None and record.entrypoint == f"{script.resolve()}:script_flow"
    assert record.run_count == 2 and record.parameters == {"factor": 3}

    again = CliRunner().invoke(cli, ["flow-run", "retry", run_id])
    assert again.exit_code == 1 and "only a FAILED, CRASHED or CANCELLED" in again.output
    bad = CliRunner().invoke(cli, ["flow-run", "retry", "not-an-id"])
    assert bad.exit_code == 2


def _url() -> str:
    from vivace.settings import get_settings

    return get_settings().resolved_database_url
