"""Cancelling a flow run that was not created from a deployment (a plain ``@flow`` call, or a
subflow) is refused, in the store, through the API (409) and from the CLI: nothing would ever
notice its CANCELLING, and the run's own final write would then be dropped.

On SQLite and PostgreSQL, with the flows running in a thread of the test, held inside their
function until the test lets them go.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner

from tests.workers.helpers import wait_for
from vivace import flow
from vivace.cli import cli
from vivace.exceptions import FlowRunStateError
from vivace.store.queries import read_flow_run, read_flow_run_states, read_flow_runs
from vivace.store.run_control import request_cancellation

release = threading.Event()


@flow
def child() -> int:
    release.wait(60)
    return 1


@flow
def parent() -> int:
    return child()


@contextmanager
def running_parent(url: str) -> Iterator[tuple[Any, Any]]:
    """``parent`` running in a thread, inside ``child``; yields both runs as recorded."""
    release.clear()
    thread = threading.Thread(target=parent, name="test-parent-flow")
    thread.start()
    try:
        runs = wait_for(lambda: running_runs(url), "both flows to run")
        yield runs
    finally:
        release.set()
        thread.join(timeout=60)


def running_runs(url: str) -> tuple[Any, Any] | None:
    found = {}
    for name in ("parent", "child"):
        runs, _ = read_flow_runs(url, flow_name=name)
        if len(runs) != 1 or runs[0].state_type.value != "RUNNING":
            return None
        found[name] = runs[0]
    return found["parent"], found["child"]


def refusal(run: Any) -> str:
    return (
        f"flow run {run.name!r} ({run.id}) was not created from a deployment, so nothing can "
        "stop it from here; stop the process running it"
    )


def assert_completed_without_cancelling(url: str, *runs: Any) -> None:
    for run in runs:
        assert read_flow_run(url, run.id).state_type.value == "COMPLETED"
        assert [s.type.value for s in read_flow_run_states(url, run.id)] == [
            "PENDING",
            "RUNNING",
            "COMPLETED",
        ]


def test_the_store_refuses_to_cancel_a_plain_flow_run_or_a_subflow(database_url: str) -> None:
    with running_parent(database_url) as (top, sub):
        for run in (top, sub):
            with pytest.raises(FlowRunStateError) as refused:
                request_cancellation(database_url, run.id)
            assert str(refused.value) == refusal(run)

    assert_completed_without_cancelling(database_url, top, sub)
    with pytest.raises(FlowRunStateError, match="already ended Completed"):
        request_cancellation(database_url, top.id)


def test_the_api_answers_409_and_the_cli_a_one_line_error(
    database_url: str, live_server: str
) -> None:
    with running_parent(database_url) as (top, sub):
        request = urllib.request.Request(
            f"{live_server}/api/flow-runs/{sub.id}/cancel", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        with answer.value as error:
            assert (error.code, json.loads(error.read())) == (409, {"detail": refusal(sub)})
        for via in ([], ["--api-url", live_server]):
            result = CliRunner().invoke(cli, ["flow-run", "cancel", str(top.id), *via])
            assert (result.exit_code, result.output) == (1, f"Error: {refusal(top)}\n")

    assert_completed_without_cancelling(database_url, top, sub)
