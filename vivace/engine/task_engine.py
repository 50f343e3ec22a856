"""What happens when a task runs: the task-run state machine, in one place.

Every task run moves through these states (named variants in brackets)::

    PENDING ──► RUNNING ──────────────────────────► COMPLETED
       │          │
       │          ├─ error, retries left ─► SCHEDULED [AwaitingRetry] ─► RUNNING [Retrying] ─► ...
       │          │
       │          └─ error, no retries left ──────► FAILED        (or FAILED [TimedOut])
       │
       └─ an upstream did not complete ──────────► FAILED [UpstreamFailed]   (never runs)

    any state ── KeyboardInterrupt, SystemExit, other BaseException ─► CRASHED
                 (the record is flushed to the database, then the exception goes on)
    any state ── asyncio cancellation ─────────────────────────────► CANCELLED

:class:`TaskRunEngine` makes every decision (which state comes next, whether and when to retry) and
records each transition on the process's batched writer. Two thin drivers, :func:`run_task_sync`
and :func:`run_task_async`, only call the function and sleep between attempts, so sync and async
tasks share one state machine.

The hot path — a task called directly in a flow — is: make a :class:`TaskRun` (PENDING), then
RUNNING, call, COMPLETED. Each transition is one tuple appended to an in-memory queue; nothing on
this path does I/O.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from vivace.engine.context import FlowRunScope, RunContext, run_context
from vivace.engine.inputs import Upstream, await_upstreams, resolve_arguments, upstream_failure
from vivace.engine.run_logging import log_for_run, retry_note
from vivace.engine.runs import TaskRun, apply_state
from vivace.engine.states import (
    RETRYING,
    TIMED_OUT,
    Completed,
    Failed,
    State,
    StateType,
    describe_exception,
    interrupted,
    retry_scheduled,
)
from vivace.engine.timeouts import call_with_timeout, timeout_error
from vivace.exceptions import TaskTimeoutError

if TYPE_CHECKING:
    from vivace.engine.tasks import Task
    from vivace.store.writer import BatchWriter

logger = logging.getLogger("vivace.task_runs")


class TaskCall:
    """Everything needed to execute one task run, wherever it executes."""

    __slots__ = ("args", "kwargs", "log_prints", "run", "scope", "task", "upstreams", "writer")

    def __init__(
        self,
        task: Task[Any, Any],
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        upstreams: dict[str, list[Upstream]] | None,
        scope: FlowRunScope | None,
        writer: BatchWriter,
        log_prints: bool,
    ) -> None:
        self.task = task
        self.run = run
        self.args = args
        self.kwargs = kwargs
        self.upstreams = upstreams
        self.scope = scope
        self.writer = writer
        self.log_prints = log_prints


class TaskRunEngine:
    """The decisions of one task run; the drivers below do the calling and the sleeping."""

    __slots__ = ("call", "run", "task", "writer")

    def __init__(self, call: TaskCall) -> None:
        self.call = call
        self.task = call.task
        self.run = call.run
        self.writer = call.writer

    def set_state(self, state: State) -> None:
        apply_state(self.run, state)
        self.writer.record_task_run(self.run)

    def begin(self) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Check the upstreams and enter RUNNING; return the resolved arguments.

        Returns None when an upstream did not complete: the run is then FAILED [UpstreamFailed].
        """
        call = self.call
        args, kwargs = call.args, call.kwargs
        if call.upstreams is not None:
            failure = upstream_failure(call.upstreams)
            if failure is not None:
                self.set_state(failure)
                self._log_failure(failure, None)
                return None
            args, kwargs = resolve_arguments(args, kwargs)
        call.args = call.kwargs = None  # type: ignore[assignment]  # drop inputs: memory
        self.set_state(State(StateType.RUNNING))
        return args, kwargs

    def succeeded(self, value: Any) -> None:
        self.set_state(Completed(value))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Task run %r finished in state Completed", self.run.name)

    def failed(self, error: Exception) -> float | None:
        """Record the failure; return the delay before the next attempt, or None if final."""
        task, run = self.task, self.run
        timed_out = isinstance(error, TaskTimeoutError)
        final = Failed(error, name=TIMED_OUT if timed_out else None)
        if run.run_count <= task.retries and self._may_retry(final):
            delay = task.retry_delay_for(run.run_count)
            self.set_state(retry_scheduled(run.run_count, task.retries + 1, final.message))
            self._log(logging.WARNING, retry_note(run.state, delay), None)
            return delay
        self.set_state(final)
        self._log_failure(final, error)
        return None

    def release(self) -> State:
        """Return the final state, leaving the run a copy of it without the result.

        The writer's queue holds the run until its next flush (longer while the database is slow),
        so the run must not keep the result alive: only the returned state — the caller's, or the
        future's — does.
        """
        run = self.run
        state = run.state
        if state.data is not None:
            bare = State(state.type, state.name, state.message, timestamp=state.timestamp)
            bare.run_id = state.run_id
            run.state = bare
        return state

    def retrying(self) -> None:
        self.set_state(State(StateType.RUNNING, name=RETRYING))

    def crashed(self, error: BaseException) -> None:
        """An interrupt or exit: record CRASHED and flush it before the exception goes on."""
        state = interrupted(error, "task run")
        self.set_state(state)
        self._log(logging.ERROR, state.message or "crashed", None)
        self.writer.flush(timeout=self.writer.retry_seconds + 5)

    def _may_retry(self, state: State) -> bool:
        condition = self.task.retry_condition_fn
        if condition is None:
            return True
        try:
            return bool(condition(self.task, self.run, state))
        except Exception as error:
            self._log(
                logging.ERROR,
                f"retry_condition_fn of task {self.task.name!r} raised "
                f"{describe_exception(error)}; not retrying",
                error,
            )
            return False

    def _log_failure(self, state: State, error: BaseException | None) -> None:
        self._log(logging.ERROR, f"Finished in state {state!r}", error)

    def _log(self, level: int, message: str, error: BaseException | None) -> None:
        scope, run = self.call.scope, self.run
        log_for_run(
            logger,
            level,
            message,
            flow_run_id=None if scope is None else scope.flow_run.id,
            task_run_id=run.id,
            writer=self.writer,
            label=f"Task run {run.name!r}",
            error=error,
        )


def _context_for(call: TaskCall) -> RunContext:
    return RunContext(call.scope, call.run, call.writer, call.log_prints, call.task.is_async)


def run_task_sync(call: TaskCall) -> State:
    """Run a sync task to its final state on the calling thread."""
    engine = TaskRunEngine(call)
    task = call.task
    token = run_context.set(_context_for(call))
    try:
        inputs = engine.begin()
        while inputs is not None:
            args, kwargs = inputs
            try:
                if task.timeout_seconds is None:
                    value = task.fn(*args, **kwargs)
                else:
                    value = call_with_timeout(
                        task.fn,
                        args,
                        kwargs,
                        task.timeout_seconds,
                        timeout_error("task", call.run.name, task.timeout_seconds),
                    )
            except Exception as error:
                delay = engine.failed(error)
                if delay is None:
                    break
                if delay > 0:
                    time.sleep(delay)
                engine.retrying()
            else:
                engine.succeeded(value)
                break
    except BaseException as error:
        engine.crashed(error)
        raise
    finally:
        run_context.reset(token)
    return engine.release()


async def run_task_async(call: TaskCall) -> State:
    """Run an async task to its final state on the running event loop."""
    await await_upstreams(call.upstreams)  # so that begin() finds them done: no blocking wait
    engine = TaskRunEngine(call)
    task = call.task
    token = run_context.set(_context_for(call))
    try:
        inputs = engine.begin()
        while inputs is not None:
            args, kwargs = inputs
            try:
                if task.timeout_seconds is None:
                    value = await task.fn(*args, **kwargs)
                else:
                    value = await _await_with_timeout(task, call.run.name, args, kwargs)
            except Exception as error:
                delay = engine.failed(error)
                if delay is None:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                engine.retrying()
            else:
                engine.succeeded(value)
                break
    except BaseException as error:
        engine.crashed(error)
        raise
    finally:
        run_context.reset(token)
    return engine.release()


async def _await_with_timeout(
    task: Task[Any, Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    seconds = task.timeout_seconds
    assert seconds is not None
    try:
        async with asyncio.timeout(seconds) as scope:
            return await task.fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise timeout_error("task", name, seconds) from None
        raise


def cancel_task_run(call: TaskCall, reason: str) -> State:
    """End a run that never started as CANCELLED (its flow run ended or timed out first)."""
    TaskRunEngine(call).set_state(State(StateType.CANCELLED, message=reason))
    return call.run.state


def run_task_blocking(call: TaskCall) -> State:
    """Run any task to its final state, blocking this thread (async ones on the shared loop)."""
    if call.task.is_async:
        from vivace.engine.loop import run_blocking

        return run_blocking(run_task_async(call))
    return run_task_sync(call)


def retry_delay(
    setting: float | list[float] | Any, attempt: int, jitter_factor: float | None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``setting`` is a number, a list (one entry per retry; the last repeats) or a callable
    ``attempt -> seconds``. A jitter factor ``j`` spreads the delay uniformly over
    ``[delay * (1 - j), delay * (1 + j)]`` (never below zero), so that many failing runs do not
    retry in lockstep.
    """
    if callable(setting):
        delay = float(setting(attempt))
    elif isinstance(setting, (list, tuple)):
        delay = float(setting[min(attempt, len(setting)) - 1]) if setting else 0.0
    else:
        delay = float(setting)
    if jitter_factor:
        delay *= random.uniform(max(0.0, 1.0 - jitter_factor), 1.0 + jitter_factor)
    return max(0.0, delay)
