"""Run logs: get_run_logger() records carry the run ids; log_prints captures print()."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from vivace import flow, get_run_logger, task
from vivace.engine.context import current_task_run_id
from vivace.exceptions import MissingContextError


def test_get_run_logger_outside_a_run_raises_missing_context_error() -> None:
    with pytest.raises(MissingContextError, match=r"get_run_logger\(\).*outside of a flow or task"):
        get_run_logger()


def test_flow_and_task_logs_carry_their_run_ids(database_url: str, history: Any) -> None:
    task_ids: list[Any] = []

    @task
    def work() -> None:
        task_ids.append(current_task_run_id())
        get_run_logger().warning("from the task %s", "work")

    @flow
    def pipeline() -> None:
        get_run_logger().info("from the flow")
        work()

    state = pipeline(return_state=True)
    logs = {log.message: log for log in history.logs(state.run_id)}
    flow_log, task_log = logs["from the flow"], logs["from the task work"]
    assert (flow_log.flow_run_id, flow_log.task_run_id) == (state.run_id, None)
    assert (task_log.flow_run_id, task_log.task_run_id) == (state.run_id, task_ids[0])
    assert (flow_log.level, task_log.level) == (logging.INFO, logging.WARNING)
    assert flow_log.name == "vivace.flow_runs" and task_log.name == "vivace.task_runs"


def test_a_standalone_task_logs_with_its_task_run_id_only(history: Any) -> None:
    @task
    def alone() -> None:
        get_run_logger().info("standalone")

    alone()
    (log,) = [log for log in history.logs() if log.message == "standalone"]
    (run,) = history.task_runs()
    assert (log.flow_run_id, log.task_run_id) == (None, run.id)


def test_the_engine_logs_the_flow_run_and_failures_with_tracebacks(history: Any) -> None:
    @task
    def explode() -> None:
        raise ValueError("kaboom")

    @flow
    def pipeline() -> None:
        explode(return_state=True)

    state = pipeline(return_state=True)
    messages = [log.message for log in history.logs(state.run_id)]
    assert any(m.startswith("Beginning flow run") for m in messages)
    assert any(m.startswith("Finished in state Completed") for m in messages)
    (failure,) = [m for m in messages if "kaboom" in m]
    assert "Traceback" in failure and "in explode" in failure


def test_log_prints_captures_print_in_the_flow_and_its_tasks(
    database_url: str, history: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @task
    def shout(word: str) -> None:
        print("task says", word)

    @flow(log_prints=True)
    def pipeline() -> None:
        print("flow says", "hi", sep="-")
        shout("hello")

    state = pipeline(return_state=True)
    logs = {log.message: log for log in history.logs(state.run_id)}
    assert logs["flow says-hi"].task_run_id is None
    (task_run,) = history.task_runs(state.run_id)
    assert logs["task says hello"].task_run_id == task_run.id
    assert logs["task says hello"].level == logging.INFO
    assert "says" not in capsys.readouterr().out


def test_without_log_prints_print_goes_to_stdout_only(
    history: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow
    def pipeline() -> None:
        print("plain print")

    state = pipeline(return_state=True)
    assert "plain print" in capsys.readouterr().out
    assert not any("plain print" in log.message for log in history.logs(state.run_id))


def test_a_task_can_turn_log_prints_on_in_a_flow_without_it(
    history: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @task(log_prints=True)
    def chatty() -> None:
        print("captured by the task's setting")

    @flow
    def pipeline() -> None:
        print("not captured")
        chatty()

    state = pipeline(return_state=True)
    messages = [log.message for log in history.logs(state.run_id)]
    assert "captured by the task's setting" in messages
    assert "not captured" not in messages
    assert "not captured" in capsys.readouterr().out


def test_a_task_can_turn_log_prints_off_in_a_flow_with_it(
    history: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @task(log_prints=False)
    def quiet() -> None:
        print("to stdout")

    @flow(log_prints=True)
    def pipeline() -> None:
        quiet()

    state = pipeline(return_state=True)
    assert "to stdout" in capsys.readouterr().out
    assert not any("to stdout" in log.message for log in history.logs(state.run_id))


def test_print_to_another_file_is_not_captured(
    history: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @flow(log_prints=True)
    def pipeline() -> None:
        print("to stderr", file=sys.stderr)

    state = pipeline(return_state=True)
    assert "to stderr" in capsys.readouterr().err
    assert not any("to stderr" in log.message for log in history.logs(state.run_id))


def test_print_outside_any_run_is_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    @flow(log_prints=True)
    def pipeline() -> None:
        pass

    pipeline()
    print("after the flow", end="!\n")
    assert capsys.readouterr().out == "after the flow!\n"


def test_log_prints_in_submitted_tasks(history: Any) -> None:
    @task
    def shout(i: int) -> Any:
        print(f"task {i}")
        return current_task_run_id()

    @flow(log_prints=True)
    def pipeline() -> list[Any]:
        return [f.result() for f in shout.map(range(3))]

    state = pipeline(return_state=True)
    ids = state.result()
    logs = {log.message: log.task_run_id for log in history.logs(state.run_id)}
    assert [logs[f"task {i}"] for i in range(3)] == ids


def test_run_logs_go_to_the_console(tmp_path: Any) -> None:
    import os
    import subprocess

    script = (
        "from vivace import flow, get_run_logger\n"
        "@flow(name='loud')\n"
        "def loud():\n"
        "    get_run_logger().warning('to the console')\n"
        "loud()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
    env["VIVACE_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Beginning flow run" in result.stderr
    assert "WARNING" in result.stderr and "to the console" in result.stderr
    assert result.stdout == ""
