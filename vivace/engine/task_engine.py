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

Results and caching cost only the tasks that ask for them (``task.results`` is resolved when the
task is decorated):

    PENDING ── cache policy, key found in the cache index ──► COMPLETED [Cached]  (never runs)
    COMPLETED: the value is persisted first when the task persists results; a cache entry is
               written only once that succeeded. A failed write is a warning, never a failure.

Concurrency limits cost only tagged tasks (``task.tags`` is None for the others, and nothing
else is looked at): a run whose tags have limits (:mod:`vivace.concurrency_limits`) waits
PENDING for one slot of each before it enters RUNNING, gives them back while it waits to retry,
and when it ends.

A flow run's later attempt (``resume_flow_run``, or a flow retry) does not even create a run for a
call that an earlier attempt completed with a persisted result: ``Task._prepare`` finds it by its
dynamic key (for a task that persists, its index and a digest of its arguments) and hands back
:func:`reused_call`, whose future is already final. When that result is gone from its storage
(or, for a direct call, cannot be loaded), the call runs again as a new run instead, with a
warning on the flow run. When a submitted one turns out unloadable later, in its downstream,
the call is recorded FAILED [ResultLost] (it never runs), so that the next resume runs it.
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
    CACHED,
    RESULT_LOST,
    RETRYING,
    TIMED_OUT,
    UPSTREAM_FAILED,
    Completed,
    Failed,
    State,
    StateType,
    describe_exception,
    interrupted,
    retry_scheduled,
)
from vivace.engine.timeouts import call_with_timeout, timeout_error
from vivace.exceptions import ResultError, TaskTimeoutError, UpstreamTaskError

if TYPE_CHECKING:
    from vivace.engine.futures import VivaceFuture
    from vivace.engine.tasks import Task
    from vivace.results.options import ResultOptions
    from vivace.results.resume import TaskRunRecordLike
    from vivace.store.writer import BatchWriter

logger = logging.getLogger("vivace.task_runs")


class TaskCall:
    """Everything needed to execute one task run, wherever it executes."""

    __slots__ = (
        "args",
        "kwargs",
        "log_prints",
        "pending_deferred",
        "reused",
        "run",
        "scope",
        "task",
        "upstreams",
        "writer",
    )

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
        # The final state of a call completed in an earlier attempt: nothing to run.
        self.reused: State | None = None
        # The run's PENDING state (its number and the state), while not recorded yet: its runner
        # records it (TaskRunner.defers_pending).
        self.pending_deferred: tuple[int, State] | None = None


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

    def begin(self, enter: bool = True) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Check the upstreams and enter RUNNING; return the resolved arguments.

        Returns None when the run is over without running: an upstream did not complete (FAILED
        [UpstreamFailed]), a cache hit (COMPLETED [Cached]), or its tags' concurrency limits
        cannot be used (FAILED). A tagged run first waits for its tags' slots (``take_slots``);
        ``enter=False`` stops before that, for the async driver, which awaits them itself.
        """
        call = self.call
        args, kwargs = call.args, call.kwargs
        if call.upstreams is not None:
            failure = upstream_failure(call.upstreams)
            if failure is not None:
                self.set_state(failure)
                self._log_failure(failure, None)
                return None
            try:
                args, kwargs = resolve_arguments(args, kwargs)
            except ResultError as error:
                # An upstream reused from an earlier attempt whose persisted value is gone:
                # this run fails (it does not crash the flow), saying which value and where.
                message = f"an upstream's persisted result cannot be loaded: {error}"
                upstream_error = UpstreamTaskError(message)
                upstream_error.__cause__ = error
                failure = Failed(upstream_error, name=UPSTREAM_FAILED, message=message)
                self.set_state(failure)
                self._log_failure(failure, None)
                return None
        call.args = call.kwargs = None  # type: ignore[assignment]  # drop inputs: memory
        results = self.task.results
        if (
            results is not None
            and results.cache is not None
            and self._cache_hit(results, args, kwargs)
        ):
            return None
        if not enter:
            return args, kwargs
        if self.task.tags is not None and not self.take_slots():
            return None
        self.set_state(State(StateType.RUNNING))
        return args, kwargs

    def enter(self) -> None:
        """Enter RUNNING (after ``begin(enter=False)`` and the slots)."""
        self.set_state(State(StateType.RUNNING))

    def take_slots(self) -> bool:
        """Wait (the run stays PENDING, or AwaitingRetry) for one slot of each of the run's tags'
        concurrency limits; False when they cannot be used: the run is then FAILED."""
        from vivace.concurrency_limits import take_task_slots

        try:
            take_task_slots(self.writer.url, self.run, self._log_info)
        except Exception as error:
            self._slots_failed(error)
            return False
        return True

    async def take_slots_async(self) -> bool:
        """``take_slots`` for an async task: the event loop goes on meanwhile."""
        from vivace.concurrency_limits import take_task_slots_async

        try:
            await take_task_slots_async(self.writer.url, self.run, self._log_info)
        except Exception as error:
            self._slots_failed(error)
            return False
        return True

    def give_back_slots(self) -> None:
        from vivace.concurrency_limits import give_back_task_slots

        give_back_task_slots(self.run)

    def _slots_failed(self, error: Exception) -> None:
        failure = Failed(
            error, message=f"its concurrency slots cannot be taken: {describe_exception(error)}"
        )
        self.set_state(failure)
        self._log_failure(failure, error)

    def succeeded(self, value: Any) -> None:
        if self.task.results is not None:  # a plain task pays this attribute read only
            results = _persisting(self.call)
            if results is not None:
                self._persist(results, value)
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
        future's — does. A tagged run gives its concurrency slots back here, once final.
        """
        if self.task.tags is not None:
            self.give_back_slots()
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
        if self.task.tags is not None:
            self.give_back_slots()
        self._log(logging.ERROR, state.message or "crashed", None)
        self.writer.flush(timeout=self.writer.retry_seconds + 5)

    def _cache_hit(self, results: ResultOptions, args: tuple[Any, ...], kwargs: Any) -> bool:
        """Compute the call's cache key; on a hit, end the run COMPLETED [Cached].

        An input that cannot be hashed, or a cache index that cannot be read, is a warning: the
        task then runs (without caching when there is no key).
        """
        from vivace.cache_policies import CacheContext, cache_key
        from vivace.results.hashing import UnhashableInputError

        run, scope = self.run, self.call.scope
        context = CacheContext(self.task, run, None if scope is None else scope.flow_run.id)
        try:
            key = cache_key(results.cache, context, results.parameters(args, kwargs))
        except UnhashableInputError as error:
            self._log(logging.WARNING, f"not cached: no cache key can be made: {error}", None)
            return False
        except Exception as error:
            self._log(
                logging.WARNING,
                f"not cached: the cache policy {results.cache!r} raised "
                f"{describe_exception(error)}",
                error,
            )
            return False
        if key is None:
            return False
        run.cache_key = key
        if results.refresh:
            return False
        from vivace.results import cache_index
        from vivace.results.persistence import read_result

        try:
            found = cache_index.lookup(self.writer.url, key)
            if found is None:
                return False
            ref, source_run_id = found
            value = read_result(ref)
        except Exception as error:
            self._log(
                logging.WARNING,
                f"cache entry {key[:16]}... not used, running the task: "
                f"{describe_exception(error)}",
                None,
            )
            return False
        run.result_ref = ref
        self.set_state(
            Completed(value, name=CACHED, message=f"cached result of task run {source_run_id}")
        )
        return True

    def _persist(self, results: ResultOptions, value: Any) -> None:
        """Write the value to result storage; on success record its reference (and cache entry)."""
        from vivace.results import cache_index
        from vivace.results.persistence import storage_key, write_result

        run = self.run
        key = run.id.hex if run.cache_key is None else storage_key(run.cache_key)
        try:
            ref = write_result(value, results.storage, results.serializer, key)
        except Exception as error:
            self._log(
                logging.WARNING,
                f"result not persisted (a resumed flow run will run this task again"
                f"{', and it is not cached' if run.cache_key is not None else ''}): "
                f"{describe_exception(error)}",
                None,
            )
            return
        run.result_ref = ref
        if run.cache_key is not None:
            task = self.task
            self.writer.record_cache_entry(
                cache_index.entry(
                    run.cache_key, task.task_key, task.name, run.id, ref, results.expiration
                )
            )

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

    def _log_info(self, message: str) -> None:
        self._log(logging.INFO, message, None)

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


def _persist_by_default() -> bool:
    """VIVACE_RESULTS_PERSIST_BY_DEFAULT for a task called outside flows (a flow run reads it
    once, into its scope)."""
    from vivace.settings import get_settings

    return get_settings().results_persist_by_default


def _persisting(call: TaskCall) -> ResultOptions | None:
    """The call's result options if its result is written to result storage when it succeeds,
    else None (``succeeded`` writes it; the async driver then runs that off the loop)."""
    results = call.task.results
    if results is None:
        return None
    scope = call.scope
    if results.always or (scope.persist_by_default if scope is not None else _persist_by_default()):
        return results
    return None


def nested_dynamic_key(parent: TaskRun, index: int) -> str:
    """The dynamic key of a call made inside a task run: its parent's identity, then its index.

    Calls made by tasks running at the same time are counted per parent, so the keys do not
    depend on which of them ran first.
    """
    import hashlib

    digest = hashlib.sha256(f"{parent.task_key}\0{parent.dynamic_key}".encode()).hexdigest()
    return f"{digest[:12]}/{index}"


def reused_call(
    task: Task[Any, Any], reused: TaskRunRecordLike, scope: FlowRunScope, writer: BatchWriter
) -> TaskCall | None:
    """A call an earlier attempt of the flow run completed with a persisted result.

    No new run is made: the call stands for the earlier run, and its state loads the persisted
    value on the first ``result()``. None (after a warning on the flow run) when a cheap check
    of its storage finds the value gone: the call then runs again, so that a resume never keeps
    reusing a result nobody can load.
    """
    from vivace.results.persistence import missing_result
    from vivace.results.states import PersistedState

    lost = missing_result(reused.ref)
    if lost is not None:
        log_rerun(task, reused, scope, writer, lost)
        return None
    state = PersistedState(
        reused.ref, reused.state_name, reused.state_message, reused.timestamp, reused.id
    )
    run = TaskRun(reused.id, task.task_key, reused.name, scope.flow_run.id, None, None, None, state)
    run.dynamic_key = reused.dynamic_key
    run.result_ref = reused.ref
    call = TaskCall(task, run, (), {}, None, scope, writer, False)
    call.reused = state
    log_for_run(
        logger,
        logging.INFO,
        f"Task run {reused.name!r} completed in an earlier attempt; reusing its persisted result",
        flow_run_id=scope.flow_run.id,
        task_run_id=reused.id,
        writer=writer,
        label=f"Task run {reused.name!r}",
        error=None,
    )
    return call


def log_rerun(
    task: Task[Any, Any],
    reused: TaskRun | TaskRunRecordLike,
    scope: FlowRunScope,
    writer: BatchWriter,
    reason: str,
) -> None:
    """Warn on the flow run that a call an earlier attempt completed runs again, and why."""
    flow_run = scope.flow_run
    log_for_run(
        logger,
        logging.WARNING,
        f"Task {task.name!r}: task run {reused.name!r} ({reused.id}) completed in an earlier "
        f"attempt, but its result cannot be reused ({reason}); running the call again",
        flow_run_id=flow_run.id,
        task_run_id=None,
        writer=writer,
        label=f"Flow run {flow_run.name!r}",
        error=None,
    )


def finished_future(call: TaskCall) -> VivaceFuture:
    """The future of a reused call: final already.

    Its value is loaded by whoever needs it first (a downstream run, ``result()``); if it cannot
    be, :func:`record_lost_result` makes sure the next resume runs the call again.
    """
    from vivace.engine.futures import VivaceFuture
    from vivace.results.states import PersistedState

    future = VivaceFuture(call.run)
    state = call.reused
    assert state is not None
    if isinstance(state, PersistedState):
        state.on_error = lambda error: record_lost_result(call, error)
    future.set_final_state(state)
    return future


def record_lost_result(call: TaskCall, error: Exception) -> None:
    """A reused call's result could not be loaded after all (it passed the cheap check, but is
    unreadable or undecodable): record this attempt's run of the call FAILED ``ResultLost``, so
    that the next resume runs the call again rather than reuse that result once more."""
    from vivace._ids import uuid7

    task, reused, scope = call.task, call.run, call.scope
    assert scope is not None
    message = (
        f"task run {reused.name!r} ({reused.id}) completed in an earlier attempt, but its "
        f"result cannot be loaded ({error}); the next resume runs this call again"
    )
    run = TaskRun(
        uuid7(),
        task.task_key,
        scope.next_task_run_name(task.name),
        scope.flow_run.id,
        None,
        task.tags,
        None,
        State(StateType.PENDING),
    )
    run.dynamic_key = reused.dynamic_key
    engine = TaskRunEngine(TaskCall(task, run, (), {}, None, scope, call.writer, False))
    engine.writer.record_task_run(run)
    engine.set_state(State(StateType.FAILED, name=RESULT_LOST, message=message))
    engine._log(logging.WARNING, f"Finished in state {run.state!r}", None)


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
                if task.tags is not None:  # a retry's delay holds no slot
                    engine.give_back_slots()
                if delay > 0:
                    time.sleep(delay)
                if task.tags is not None and not engine.take_slots():
                    break
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
        # A cache lookup and a result write are blocking I/O (database, result storage): on
        # a worker thread, so that they do not stall every other coroutine on the shared loop.
        if task.tags is not None:
            inputs = await _begin_tagged(engine)
        elif task.results is not None and task.results.cache is not None:
            inputs = await asyncio.to_thread(engine.begin)
        else:
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
                if task.tags is not None:  # a retry's delay holds no slot
                    await asyncio.to_thread(engine.give_back_slots)
                if delay > 0:
                    await asyncio.sleep(delay)
                if task.tags is not None and not await engine.take_slots_async():
                    break
                engine.retrying()
            else:
                if _persisting(call) is not None:
                    await asyncio.to_thread(engine.succeeded, value)
                else:
                    engine.succeeded(value)
                break
    except BaseException as error:
        engine.crashed(error)
        raise
    finally:
        run_context.reset(token)
    if task.tags is not None:  # a transaction: off the loop (release() then has none to give)
        await asyncio.to_thread(engine.give_back_slots)
    return engine.release()


async def _begin_tagged(engine: TaskRunEngine) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``begin`` for a tagged async task: its concurrency slots are awaited, not waited for."""
    results = engine.task.results
    if results is not None and results.cache is not None:
        inputs = await asyncio.to_thread(engine.begin, False)
    else:
        inputs = engine.begin(False)
    if inputs is None or not await engine.take_slots_async():
        return None
    engine.enter()
    return inputs


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
