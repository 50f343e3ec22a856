"""The driver's side of task runs that execute in other processes (on a cluster).

Runner-independent, like :mod:`vivace.engine.remote` (what travels and what runs on the worker):

- :class:`RemoteFuture`: a future that also holds the runner's handle on its run;
- :class:`RemoteCompleted` and :class:`RemoteValue`: a COMPLETED state whose value stays on the
  cluster until ``result()`` asks for it, fetched at most once;
- the states the driver records itself, for runs whose worker could not: a run that could not be
  sent (:func:`unsent_error` says why), was cancelled, or whose worker died
  (:func:`worker_died`: CRASHED, or AwaitingRetry when retries remain). Because a worker may have
  recorded part of such a run already, the driver first moves the run's ``state_seq`` past
  anything that worker could have written (:func:`worker_span`), so its record wins in the store.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from vivace.engine.context import describe
from vivace.engine.futures import VivaceFuture
from vivace.engine.remote import RemoteFailure
from vivace.engine.runs import TaskRun
from vivace.engine.states import (
    AWAITING_RETRY,
    Completed,
    Crashed,
    Failed,
    State,
    StateType,
    describe_exception,
)
from vivace.engine.task_engine import TaskCall, TaskRunEngine
from vivace.exceptions import CrashedRunError, UnpicklableError, VivaceError

if TYPE_CHECKING:
    from vivace.engine.tasks import Task


class RemoteFuture(VivaceFuture):
    """A future whose run executes on a cluster; it also holds the runner's handle on the run.

    ``handle`` is the runner's business: while the run is in flight, the cluster task; once it
    has completed, the :class:`RemoteValue` its result is fetched from.
    """

    __slots__ = ("handle", "item", "owner")

    def __init__(self, task_run: TaskRun, owner: object, item: int | None = None) -> None:
        super().__init__(task_run)
        self.owner = owner
        self.item = item  # index inside a batch's result
        self.handle: Any = None


class _Unfetched:
    def __repr__(self) -> str:
        return "<not fetched>"


_UNFETCHED: Any = _Unfetched()


class RemoteValue:
    """A result that stays on the cluster until the driver asks for it; fetched at most once.

    ``ref`` is the cluster's handle (kept so downstream runs can be handed it); ``fetch(self)``
    gets the value (and may :meth:`set` other values it fetched in the same round trip). A runner
    that releases the cluster sets ``ref`` to None.
    """

    __slots__ = ("__weakref__", "_fetch", "_lock", "_value", "ref")

    def __init__(self, ref: Any, fetch: Callable[[RemoteValue], Any]) -> None:
        self.ref = ref
        self._fetch = fetch
        self._value: Any = _UNFETCHED
        self._lock = threading.Lock()

    def get(self) -> Any:
        value = self._value
        if value is _UNFETCHED:
            with self._lock:
                if self._value is _UNFETCHED:
                    self._value = self._fetch(self)
                value = self._value
        return value

    def fetched(self) -> bool:
        return self._value is not _UNFETCHED

    def set(self, value: Any) -> None:
        self._value = value


class RemoteCompleted(State):
    """COMPLETED, with the value still on the cluster: fetched on the first ``result()``.

    Reading the state (type, name, ``is_completed()``) never fetches anything.
    """

    __slots__ = ("_item", "_value")

    def __init__(self, value: RemoteValue, item: int | None, run_id: uuid.UUID) -> None:
        super().__init__(StateType.COMPLETED)
        self._value = value
        self._item = item
        self.run_id = run_id

    def result(self, raise_on_failure: bool = True) -> Any:
        value = self._value.get()
        return value if self._item is None else value[self._item]

    @property
    def data(self) -> Any:
        return self.result()


def completed_outcomes(outcomes: list[Any], run_ids: list[uuid.UUID]) -> list[State]:
    """Final states from a fetched batch result (values and RemoteFailures)."""
    states = []
    for outcome, run_id in zip(outcomes, run_ids, strict=True):
        state = outcome.to_state() if type(outcome) is RemoteFailure else Completed(outcome)
        state.run_id = run_id
        states.append(state)
    return states


# -- driver side: runs that end without reaching a worker ----------------------------------------


def worker_span(task: Task[Any, Any]) -> int:
    """How many state transitions one worker attempt may record (RUNNING, each retry's two, end).

    When the driver records a state for a run a worker may have been running (a dead worker, a
    cancelled run), it first moves ``state_seq`` past all of them, so its record wins in the
    store whatever the worker managed to write.
    """
    return 2 * (task.retries + 1)


def record_deferred_pending(call: TaskCall) -> None:
    """Record the run's PENDING state now if its runner deferred it and it is not recorded yet.

    The state recorded is the PENDING one the run was created in, whatever the run's state is
    by now (another thread may be ending it). Recording it twice (here and on a worker that
    started the run meanwhile) writes it once: the store keeps one row per run and state number.
    """
    pending = call.pending_deferred
    if pending is not None:
        call.pending_deferred = None
        seq, state = pending
        call.writer.record_task_run_state(call.run, seq, state)


def end_on_driver(call: TaskCall, state: State, error: BaseException | None = None) -> State:
    """Record a final state for a run whose worker could not (it never ran, or its worker died)."""
    record_deferred_pending(call)
    call.run.state_seq += worker_span(call.task)
    engine = TaskRunEngine(call)
    engine.set_state(state)
    level = logging.WARNING if state.type is StateType.CANCELLED else logging.ERROR
    engine._log(level, f"Finished in state {state!r}", error)
    state.run_id = call.run.id
    return state


def fail_on_driver(call: TaskCall, error: BaseException) -> State:
    return end_on_driver(call, Failed(error), error)


def cancel_on_driver(call: TaskCall, reason: str) -> State:
    return end_on_driver(call, State(StateType.CANCELLED, message=reason))


def worker_died(call: TaskCall, reason: str) -> float | None:
    """The run's worker died: CRASHED, or AwaitingRetry if retries remain (returns the delay)."""
    record_deferred_pending(call)
    run, task = call.run, call.task
    run.state_seq += worker_span(task)
    run.run_count += 1  # at least the attempt that was running
    engine = TaskRunEngine(call)
    if run.run_count <= task.retries:
        delay = task.retry_delay_for(run.run_count)
        message = f"attempt {run.run_count} of {task.retries + 1} crashed: {reason}"
        engine.set_state(State(StateType.SCHEDULED, name=AWAITING_RETRY, message=message))
        engine._log(logging.WARNING, f"{message[0].upper()}{message[1:]}; retrying", None)
        return delay
    error = CrashedRunError(reason)
    state = Crashed(error, message=f"the task run crashed: {reason}")
    engine.set_state(state)
    engine._log(logging.ERROR, f"Finished in state {state!r}", None)
    return None


def unsent_error(call: TaskCall, problem: BaseException) -> VivaceError:
    """Why ``call`` could not be sent: the task or the argument that cannot be pickled (found
    inside containers), or else ``problem`` itself.
    """
    task = call.task
    try:
        cloudpickle.dumps(task)
    except Exception as error:
        return UnpicklableError(
            f"task {task.name!r} cannot be pickled to run in another process: "
            f"{describe_exception(error)}"
        )
    names = task.parameter_names
    labelled: list[tuple[str, Any]] = [
        (names[i] if i < len(names) else f"argument {i}", value)
        for i, value in enumerate(call.args or ())
    ]
    labelled += list((call.kwargs or {}).items())
    for label, value in labelled:
        culprit = _unpicklable_part(value)
        if culprit is not _PICKLES:
            return UnpicklableError(
                f"task {task.name!r} got an argument it cannot pickle: {describe(culprit)} "
                f"(argument {label!r})"
            )
    return VivaceError(
        f"task {task.name!r}: its run could not be sent to the cluster: "
        f"{describe_exception(problem)}"
    )


_PICKLES: Any = object()


def _unpicklable_part(value: Any) -> Any:
    """The innermost part of ``value`` that cannot be pickled, or ``_PICKLES``."""
    if isinstance(value, VivaceFuture):
        if not value.done():
            return _PICKLES
        value = value.state
    if isinstance(value, State):
        value = value.data
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        for item in value:
            culprit = _unpicklable_part(item)
            if culprit is not _PICKLES:
                return culprit
    elif kind is dict:
        for key, item in value.items():
            for part in (key, item):
                culprit = _unpicklable_part(part)
                if culprit is not _PICKLES:
                    return culprit
    try:
        cloudpickle.dumps(value)
    except Exception:
        return value
    return _PICKLES
