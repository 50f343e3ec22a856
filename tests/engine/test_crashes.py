"""Crashes: KeyboardInterrupt, SystemExit and other BaseExceptions mark runs CRASHED, on record.

The in-process tests catch the interrupt with pytest.raises; the subprocess tests let it end a
real process and then read the CRASHED records from its SQLite file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vivace import flow, task


class CustomBaseException(BaseException):
    pass


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt, SystemExit, CustomBaseException],
    ids=lambda kind: kind.__name__,
)
def test_an_interrupt_in_a_task_crashes_the_task_and_flow_runs(
    interrupt: type[BaseException], database_url: str, history: Any
) -> None:
    @task
    def stop() -> None:
        raise interrupt()

    @flow
    def pipeline() -> None:
        stop()

    with pytest.raises(interrupt):
        pipeline()
    (flow_run,) = history.flow_runs("pipeline")
    (task_run,) = history.task_runs(flow_run.id)
    assert task_run.state_type == "CRASHED"
    assert interrupt.__name__ in task_run.state_message
    assert task_run.end_time is not None
    assert flow_run.state_type == "CRASHED"
    assert [s.type for s in history.flow_run_states(flow_run.id)] == [
        "PENDING",
        "RUNNING",
        "CRASHED",
    ]
    assert [s.type for s in history.task_run_states(task_run.id)] == [
        "PENDING",
        "RUNNING",
        "CRASHED",
    ]


def test_an_interrupt_in_the_flow_body_crashes_the_flow_run(history: Any) -> None:
    @flow
    def pipeline() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline()
    (flow_run,) = history.flow_runs("pipeline")
    assert flow_run.state_type == "CRASHED"
    assert "KeyboardInterrupt" in flow_run.state_message


def test_a_crashed_subflow_crashes_its_parent(history: Any) -> None:
    @flow
    def child() -> None:
        raise SystemExit(2)

    @flow
    def parent() -> None:
        child()

    with pytest.raises(SystemExit):
        parent()
    assert {run.flow_name: run.state_type for run in history.flow_runs()} == {
        "parent": "CRASHED",
        "child": "CRASHED",
    }


def test_an_interrupt_is_not_retried(history: Any) -> None:
    attempts: list[int] = []

    @task(retries=3)
    def stop() -> None:
        attempts.append(1)
        raise KeyboardInterrupt

    @flow(retries=2)
    def pipeline() -> None:
        stop()

    with pytest.raises(KeyboardInterrupt):
        pipeline()
    assert attempts == [1]
    (flow_run,) = history.flow_runs("pipeline")
    assert flow_run.run_count == 1


def test_an_async_task_interrupt_crashes_and_the_shared_loop_survives(history: Any) -> None:
    @task
    async def stop() -> None:
        raise KeyboardInterrupt

    @task
    async def fine() -> str:
        return "loop alive"

    @flow
    def pipeline() -> None:
        stop()

    with pytest.raises(KeyboardInterrupt):
        pipeline()
    assert history.task_runs()[0].state_type == "CRASHED"

    @flow
    def after() -> str:
        return fine()

    assert after() == "loop alive"


SCRIPT_HEADER = """
import os, signal, sys
from vivace import flow, task
"""

SCRIPTS = {
    "sys-exit-in-task": (
        """
@task
def stop():
    sys.exit(3)

@flow(name="dies")
def dies():
    stop()

dies()
""",
        3,
    ),
    "keyboard-interrupt-in-flow": (
        """
@task
def fine():
    return 1

@flow(name="dies")
def dies():
    fine()
    raise KeyboardInterrupt

dies()
""",
        -signal.SIGINT,  # Python ends itself with SIGINT on an unhandled KeyboardInterrupt
    ),
    "sigterm-in-task": (
        """
import time

@task
def stop():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

@flow(name="dies")
def dies():
    stop()

dies()
""",
        143,
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_process_that_dies_in_a_flow_leaves_crashed_records(name: str, tmp_path: Path) -> None:
    body, exit_code = SCRIPTS[name]
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_HEADER + textwrap.dedent(body))
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")},
        "VIVACE_HOME": str(home),
        "VIVACE_LOGGING_CONSOLE": "false",
    }
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == exit_code, result.stderr
    with sqlite3.connect(home / "vivace.db") as conn:
        flow_runs = conn.execute("SELECT state_type, state_message FROM flow_runs").fetchall()
        task_runs = conn.execute("SELECT name, state_type FROM task_runs").fetchall()
    assert len(flow_runs) == 1 and flow_runs[0][0] == "CRASHED", flow_runs
    assert task_runs, "the task run was not recorded"
    if name == "keyboard-interrupt-in-flow":
        assert task_runs == [("fine-0", "COMPLETED")]
    else:
        assert task_runs == [("stop-0", "CRASHED")]
