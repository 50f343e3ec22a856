"""Resuming a failed flow run: same run, next attempt, only the failed part runs again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vivace import flow, resume_flow_run, task
from vivace.cli import cli
from vivace.exceptions import ResumeError
from vivace.results.resume import claim_for_resume, resumable_record
from vivace.runners import SequentialTaskRunner
from vivace.store.queries import read_flow_run, read_flow_run_states, read_logs, read_task_runs


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


@task(persist_result=True)
def square(workdir: str, x: int) -> int:
    mark(workdir, f"square{x}")
    return x * x


@flow(task_runner=SequentialTaskRunner())
def squares_in_file_order(workdir: str) -> list[int]:
    """Calls in an order that changes between attempts, as threads or as_completed make it."""
    order = json.loads((Path(workdir) / "order").read_text())
    futures = [square.submit(workdir, x) for x in order]
    if (Path(workdir) / "broken").exists():
        raise RuntimeError("squares is broken")
    return [future.result() for future in futures]


class NoStableEncoding:
    """An argument with no stable hash (like an open connection)."""


@task(persist_result=True)
def uses_a_handle(workdir: str, handle: NoStableEncoding) -> str:
    mark(workdir, "uses_a_handle")
    return "handled"


@flow(task_runner=SequentialTaskRunner())
def with_a_handle(workdir: str) -> str:
    value = uses_a_handle(workdir, NoStableEncoding())
    if (Path(workdir) / "broken").exists():
        raise RuntimeError("with_a_handle is broken")
    return value


STARTED = threading.Event()
RELEASE = threading.Event()


@task
def block_until_released(workdir: str) -> str:
    if (Path(workdir) / "broken").exists():
        raise RuntimeError("blocking is broken")
    STARTED.set()
    assert RELEASE.wait(30)
    return "released"


@flow(task_runner=SequentialTaskRunner())
def blocking(workdir: str) -> str:
    return block_until_released(workdir)


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
        (4, "PENDING", "Resuming"),
        (5, "RUNNING", "Retrying"),
        (6, "COMPLETED", "Completed"),
    ]
    runs, _ = read_task_runs(database_url, failed.run_id)
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    assert len(by_name["extract"]) == 1  # reused, not run again
    assert [r.state_type.value for r in by_name["transform"]] == ["FAILED", "COMPLETED"]
    # A task that persists: its position, then a digest of its arguments (the same both times).
    keys = [r.dynamic_key for r in by_name["transform"]]
    assert keys[0] == keys[1] and keys[0].startswith("0@") and len(keys[0]) == len("0@") + 16
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


@pytest.mark.parametrize(
    "flow_fn",
    [pytest.param(etl, id="called"), pytest.param(etl_submitted, id="submitted")],
)
def test_a_reused_result_gone_from_storage_is_made_again(
    database_url: str, tmp_path: Path, vivace_home: Path, flow_fn: Any
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = flow_fn(str(tmp_path), return_state=True)
    (extracted,) = [
        run for run in read_task_runs(database_url, failed.run_id)[0] if run.name == "extract-0"
    ]
    (vivace_home / "storage" / extracted.result_key).unlink()
    (tmp_path / "broken").unlink()

    assert resume_flow_run(failed.run_id) == 60

    # Exactly that task ran again (not reused), with a warning on the flow run saying why.
    assert executed(tmp_path).count("extract") == 2
    assert executed(tmp_path).count("transform") == 2
    runs, _ = read_task_runs(database_url, failed.run_id)
    extracts = [run for run in runs if run.task_key.endswith(".extract")]
    assert [r.state_type.value for r in extracts] == ["COMPLETED", "COMPLETED"]
    assert extracts[0].dynamic_key == extracts[1].dynamic_key
    assert (vivace_home / "storage" / extracts[1].result_key).exists()  # persisted again
    logs, _ = read_logs(database_url, flow_run_id=failed.run_id, min_level="WARNING")
    (warning,) = [line for line in logs if "running the call again" in line.message]
    assert warning.task_run_id is None
    assert "'extract'" in warning.message and str(extracted.id) in warning.message
    assert extracted.result_key in warning.message and "no longer in its storage" in (
        warning.message
    )
    assert str(vivace_home / "storage") in warning.message

    # Not stuck: the next attempt has nothing left to redo for it.
    record = read_flow_run(database_url, failed.run_id)
    assert record is not None and record.state_name == "Completed"


def test_a_reused_result_that_cannot_be_decoded_is_made_again_by_a_direct_call(
    database_url: str, tmp_path: Path, vivace_home: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl(str(tmp_path), return_state=True)
    (extracted,) = [
        run for run in read_task_runs(database_url, failed.run_id)[0] if run.name == "extract-0"
    ]
    (vivace_home / "storage" / extracted.result_key).write_bytes(b"not a pickle")
    (tmp_path / "broken").unlink()

    assert resume_flow_run(failed.run_id) == 60

    assert executed(tmp_path).count("extract") == 2
    logs, _ = read_logs(database_url, flow_run_id=failed.run_id, min_level="WARNING")
    assert any(
        "running the call again" in line.message and "cannot be decoded" in line.message
        for line in logs
    )


def test_a_submitted_reused_result_that_cannot_be_decoded_is_made_by_the_next_resume(
    database_url: str, tmp_path: Path, vivace_home: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl_submitted(str(tmp_path), return_state=True)
    (extracted,) = [
        run for run in read_task_runs(database_url, failed.run_id)[0] if run.name == "extract-0"
    ]
    (vivace_home / "storage" / extracted.result_key).write_bytes(b"not a pickle")
    (tmp_path / "broken").unlink()

    # The file is there, so the call is reused; its downstream finds it cannot be decoded.
    again = resume_flow_run(failed.run_id, return_state=True)
    assert again.is_failed() and "cannot be decoded" in (again.message or "")
    runs, _ = read_task_runs(database_url, failed.run_id)
    lost = [run for run in runs if run.state_name == "ResultLost"]
    assert len(lost) == 1 and lost[0].dynamic_key == extracted.dynamic_key
    assert str(extracted.id) in (lost[0].state_message or "")

    # The next resume does not reuse it again: the call runs, and the run completes.
    assert resume_flow_run(failed.run_id) == 60
    assert executed(tmp_path) == ["extract", "transform", "extract", "transform"]


def test_reuse_needs_the_same_arguments_when_calls_come_in_another_order(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "order").write_text("[1, 2, 3]")
    (tmp_path / "broken").touch()
    failed = squares_in_file_order(str(tmp_path), return_state=True)
    assert failed.is_failed()

    # The next attempt calls square in another order: by position alone, square(3) would be
    # handed square(2)'s result. Only the call whose position and arguments both match is reused.
    (tmp_path / "order").write_text("[1, 3, 2]")
    (tmp_path / "broken").unlink()
    assert resume_flow_run(failed.run_id) == [1, 9, 4]
    assert sorted(executed(tmp_path)) == ["square1", "square2", "square2", "square3", "square3"]


def test_arguments_with_no_stable_encoding_are_matched_by_position_only(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    failed = with_a_handle(str(tmp_path), return_state=True)
    (tmp_path / "broken").unlink()

    assert resume_flow_run(failed.run_id) == "handled"

    assert executed(tmp_path) == ["uses_a_handle"]  # reused
    runs, _ = read_task_runs(database_url, failed.run_id)
    assert [run.dynamic_key for run in runs] == ["0"]


def test_a_run_being_resumed_cannot_be_resumed_again(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    failed = blocking(str(tmp_path), return_state=True)
    (tmp_path / "broken").unlink()
    STARTED.clear()
    RELEASE.clear()
    outcome: list[Any] = []
    first = threading.Thread(target=lambda: outcome.append(resume_flow_run(failed.run_id)))
    first.start()
    try:
        assert STARTED.wait(30)
        with pytest.raises(ResumeError, match="it is still going, or another resume of it is"):
            resume_flow_run(failed.run_id)
    finally:
        RELEASE.set()
        first.join(30)
    assert outcome == ["released"]
    record = read_flow_run(database_url, failed.run_id)
    assert record is not None and record.run_count == 2 and record.state_name == "Completed"


def test_of_two_resumes_that_read_the_run_failed_only_one_claims_it(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken").write_text("always")
    failed = etl(str(tmp_path), return_state=True)
    # Both read the run FAILED before either wrote anything: the race a plain check leaves.
    first = resumable_record(database_url, failed.run_id)
    second = resumable_record(database_url, failed.run_id)

    state, seq = claim_for_resume(database_url, first)
    with pytest.raises(ResumeError, match="claimed by another resume since it was read"):
        claim_for_resume(database_url, second)

    assert (state.type.value, state.name, seq) == ("PENDING", "Resuming", 4)
    record = read_flow_run(database_url, failed.run_id)
    assert record is not None and (record.state_name, record.run_count) == ("Resuming", 1)
    assert [s.name for s in read_flow_run_states(database_url, failed.run_id)][-1] == "Resuming"


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
