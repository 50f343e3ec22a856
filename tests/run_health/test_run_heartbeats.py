"""Heartbeats of every running flow run, and the zombies service ending the runs of a process
killed with SIGKILL.

A plain flow call and its subflows heartbeat through their process's writer: the row has a
heartbeat within a flush or two of entering RUNNING, it moves on every interval while the run
lives, and stops once the run ends. A flow run in a subprocess killed with SIGKILL is ended
CRASHED by the service's loop, its running task with it; one whose process lives is not.
On SQLite and PostgreSQL, with ``VIVACE_HEARTBEAT_INTERVAL`` at 0.2 s.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vivace import flow
from vivace.engine.context import current_flow_run_id
from vivace.engine.states import StateType
from vivace.services.zombies import SERVICE
from vivace.settings import get_settings, reset_settings
from vivace.store.queries import read_flow_run, read_flow_runs, read_task_runs
from vivace.store.writer import get_writer

T = TypeVar("T")
INTERVAL = 0.2

SCRIPT = """
import sys
import time

from vivace import flow, task


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow(name="long-nap")
def long_nap(seconds: float) -> float:
    return nap(seconds)


if __name__ == "__main__":
    long_nap(float(sys.argv[1]))
"""


@pytest.fixture(autouse=True)
def quick_heartbeats(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_HEARTBEAT_INTERVAL", str(INTERVAL))
    # Silent for 2 s: ten missed beats, so that a busy machine does not make a live run look
    # dead, yet a dead one is found within seconds.
    monkeypatch.setenv("VIVACE_HEARTBEAT_MISSED_LIMIT", "10")
    reset_settings()


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def heartbeat_of(run_id: uuid.UUID) -> dt.datetime | None:
    record = read_flow_run(get_settings().resolved_database_url, run_id)
    return None if record is None else record.heartbeat


def moved_on(run_id: uuid.UUID, since: dt.datetime) -> Callable[[], dt.datetime | None]:
    """A check: the run's heartbeat, once it is later than ``since``."""

    def check() -> dt.datetime | None:
        beat = heartbeat_of(run_id)
        return beat if beat is not None and beat > since else None

    return check


def test_a_plain_flow_and_its_subflow_heartbeat_while_they_run(database_url: str) -> None:
    seen: dict[str, list[dt.datetime]] = {}

    def beats(label: str) -> None:
        """Wait, inside the run, until its heartbeat has been stamped and then moved twice."""
        run_id = current_flow_run_id()
        assert run_id is not None
        first = wait_for(f"{label}'s first heartbeat", lambda: heartbeat_of(run_id))
        later = wait_for(f"{label}'s heartbeat to move on", moved_on(run_id, first))
        seen[label] = [first, later]

    @flow
    def child() -> None:
        beats("child")

    @flow
    def parent() -> uuid.UUID | None:
        beats("parent")
        child()
        return current_flow_run_id()

    parent_id = parent()
    assert parent_id is not None
    assert set(seen) == {"parent", "child"}
    writer = get_writer()
    assert writer._beating == set()  # every run left the writer's set as it ended

    # An ended run is not stamped any more: its heartbeat stays where it stopped.
    stopped = heartbeat_of(parent_id)
    writer.watch_flow_run(parent_id)  # as if its engine had forgotten to leave
    writer.flush()
    time.sleep(3 * writer.flush_interval)  # a few of the writer's loops, each trying it
    assert heartbeat_of(parent_id) == stopped
    writer.unwatch_flow_run(parent_id)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "long_nap.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


@pytest.fixture
def subprocess_run(script: Path, database_url: str, tmp_path: Path) -> Iterator[Any]:
    """``long_nap(60)`` in a subprocess (killed at the end if still alive)."""
    environment = {**os.environ, "VIVACE_DATABASE_URL": database_url}
    with (tmp_path / "long_nap.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), "60"], env=environment, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_a_flow_run_whose_process_is_killed_ends_crashed(
    database_url: str, subprocess_run: subprocess.Popen[bytes]
) -> None:
    def running() -> Any:
        found, _ = read_flow_runs(database_url, flow_name="long-nap")
        return found and found[0].state_type is StateType.RUNNING and found[0]

    run = wait_for("the subprocess's flow run to be RUNNING", running)
    beat = wait_for("its first heartbeat", lambda: heartbeat_of(run.id))

    # Alive: its heartbeat moves on, and the service leaves it alone however often it looks.
    for _ in range(3):
        beat = wait_for("its heartbeat to move on", moved_on(run.id, beat))
        assert SERVICE.loop(database_url) is None
    assert read_flow_run(database_url, run.id).state_type is StateType.RUNNING  # type: ignore[union-attr]

    subprocess_run.send_signal(signal.SIGKILL)
    subprocess_run.wait(timeout=30)

    def crashed() -> Any:
        SERVICE.loop(database_url)
        record = read_flow_run(database_url, run.id)
        return record is not None and record.state_type is StateType.CRASHED and record

    record = wait_for("the service to end the killed process's run", crashed)
    assert record.state_message is not None
    assert record.state_message.startswith("its heartbeat stopped at ")
    assert record.state_message.endswith("the process running it died or lost the database")
    (task_run,), _ = read_task_runs(database_url, run.id)
    assert (task_run.name, task_run.state_type) == ("nap-0", StateType.CRASHED)
