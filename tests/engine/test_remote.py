"""The runner-independent layer for task runs in other processes, exercised in this process.

What a cluster runner ships (RemoteCall, TaskSpec) goes through a real pickle round trip, and the
worker entry (``run_remote``) runs here; the runners' own tests run it on real clusters.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from vivace import State, StateType, flow, task
from vivace.engine import remote
from vivace.engine.context import current_context
from vivace.engine.remote import (
    Handover,
    PartialBatch,
    RemoteFailure,
    RemoteSetup,
    flow_info,
    pack_error,
    run_remote,
    run_remote_batch,
)
from vivace.engine.task_engine import TaskCall
from vivace.exceptions import UnpicklableError


class ReportError(Exception):
    """Its __init__ takes two arguments: plain pickling cannot rebuild it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_report() -> None:
    raise ReportError("report 7 is broken", 7)


def _raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as error:
        return error
    raise AssertionError("did not raise")


def test_an_exception_travels_with_its_type_attributes_and_traceback() -> None:
    error = _raised(raise_report)
    error.add_note("a note")
    back = pickle.loads(pack_error(error, "report"))
    assert type(back) is ReportError and str(back) == "report 7 is broken"
    assert back.code == 7 and back.__notes__ == ["a note"]
    assert "raise_report" in [frame.name for frame in traceback.extract_tb(back.__traceback__)]


def test_without_tblib_the_traceback_travels_as_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "_tblib", None)
    error = _raised(lambda: 1 / 0)
    back = pickle.loads(pack_error(error, "divide"))
    assert type(back) is ZeroDivisionError
    (note,) = back.__notes__
    assert note.startswith("Traceback on the worker:") and "1 / 0" in note


def test_an_exception_that_cannot_be_pickled_travels_as_unpicklable_error() -> None:
    import threading

    class LockedError(Exception):
        def __init__(self) -> None:
            super().__init__("held")
            self.lock = threading.Lock()

    def fail() -> None:
        raise LockedError()

    back = pickle.loads(pack_error(_raised(fail), "locked"))
    assert isinstance(back, UnpicklableError)
    assert str(back).startswith("task 'locked' raised LockedError: held, which cannot be pickled")
    assert "in fail" in back.__notes__[0]


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def explode() -> None:
    raise ReportError("boom", 1)


def _shipped(
    call: TaskCall, setup: RemoteSetup, native: Any = lambda future: None
) -> tuple[Any, list[Any]]:
    """The call as a worker receives it, and the cluster futures it would be given."""
    handover = Handover(native)
    shipped = handover.call(call, setup.spec_for(call.task), flow_info(call))
    return pickle.loads(pickle.dumps(shipped)), handover.remote


def _prepared(task_: Any, *args: Any, **kwargs: Any) -> TaskCall:
    ctx = current_context()
    assert ctx is not None
    call: TaskCall = task_._prepare(ctx, args, kwargs, None)
    return call


def test_the_worker_entry_runs_the_task_through_the_engine(history: Any) -> None:
    @flow
    def pipeline() -> tuple[Any, Any]:
        setup = RemoteSetup()
        shipped, _ = _shipped(_prepared(add, 1, 2), setup)
        assert shipped.run.state.type is StateType.PENDING
        failed, _ = _shipped(_prepared(explode), setup)
        return run_remote(shipped), run_remote(failed)

    state = pipeline(return_state=True)
    value, failure = state.result()
    assert value == 3
    assert type(failure) is RemoteFailure
    failed = failure.to_state()
    assert (failed.type, failed.message) == (StateType.FAILED, "ReportError: boom")
    assert failed.result(raise_on_failure=False).code == 1
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert (runs["add-0"].state_type, runs["explode-0"].state_type) == ("COMPLETED", "FAILED")
    assert [s.type for s in history.task_run_states(runs["add-0"].id)] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
    ]


def test_upstreams_arrive_as_cluster_results_and_failures_stop_the_downstream(
    history: Any,
) -> None:
    """An upstream handed over as a cluster future: the worker gets its result (or failure)."""

    @flow
    def pipeline() -> tuple[Any, Any, Any]:
        setup = RemoteSetup()
        upstream = add.submit(1, 1)
        upstream.wait()
        stand_in = object()  # what the runner would pass: the cluster's future

        def native(future: Any) -> tuple[Any, int | None] | None:
            return (stand_in, None) if future is upstream else None

        shipped, remote_futures = _shipped(_prepared(add, upstream, 10), setup, native)
        assert remote_futures == [stand_in]
        completed = run_remote(shipped, 2)  # the upstream's result, as the cluster delivers it
        failure = RemoteFailure(StateType.FAILED, "Failed", "ValueError: no", 0.0, None)
        shipped, _ = _shipped(_prepared(add, upstream, 10), setup, native)
        skipped = run_remote(shipped, failure)
        batch = run_remote_batch(
            [_shipped(_prepared(add, i, 1), setup)[0] for i in range(3)]
            + [_shipped(_prepared(explode), setup)[0]]
        )
        return completed, skipped, batch

    state = pipeline(return_state=True)
    completed, skipped, batch = state.result()
    assert completed == 12
    assert type(skipped) is RemoteFailure and skipped.name == "UpstreamFailed"
    assert "ended Failed: ValueError: no" in (skipped.message or "")
    assert type(batch) is PartialBatch and batch[:3] == [1, 2, 3]
    assert type(batch[3]) is RemoteFailure
    runs = history.task_runs(state.run_id)
    skipped_run = next(r for r in runs if r.state_name == "UpstreamFailed")
    assert skipped_run.run_count == 0  # never ran


def test_a_run_travels_as_a_copy_taken_when_it_is_pickled() -> None:
    @flow
    def pipeline() -> tuple[Any, Any]:
        call = _prepared(add, 1, 2)
        shipped, _ = _shipped(call, RemoteSetup())
        return call.run, shipped.run

    original, copy = pipeline()
    assert copy is not original
    assert copy.snapshot() == original.snapshot()


def test_a_task_that_cannot_be_pickled_is_named() -> None:
    import threading

    lock = threading.Lock()

    @task
    def locked() -> bool:
        return lock.locked()

    with pytest.raises(UnpicklableError, match="task 'locked' cannot be pickled"):
        RemoteSetup().spec_for(locked)


def test_a_failure_state_round_trip_keeps_its_name_and_message() -> None:
    state = State(StateType.FAILED, name="TimedOut", message="too slow")
    back = RemoteFailure.from_state(state, "slow").to_state()
    assert (back.type, back.name, back.message) == (StateType.FAILED, "TimedOut", "too slow")
