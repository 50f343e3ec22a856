"""What happens when a flow runs.

A flow run moves PENDING ─► RUNNING ─► COMPLETED | FAILED (also [TimedOut]), with the same
retry loop as a task (``SCHEDULED [AwaitingRetry]`` ─► ``RUNNING [Retrying]``), CRASHED on an
interrupt or exit, and FAILED before it ever runs when its parameters do not validate.

Around the user's function the engine: creates the flow run, validates parameters, starts a fresh
copy of the flow's task runner, sets the run context so tasks know their flow run, waits for every
still-unfinished task future when the function returns, records the final state and flushes the
writer, so everything the run did is in the database when the call returns.

Each run records its flow's entrypoint and which parameters were stored only as their repr, so
that a failed run can be resumed (:mod:`vivace.results.resume`): ``resume=<FlowRunRecord>`` makes
the engine claim that run (PENDING ``Resuming``; refused if another resume got it first) and
continue it (same id, state history and run count) instead of creating one. In every later
attempt, resumed or retried, tasks an earlier attempt completed with a persisted result are
reused rather than run again.

A run of a deployment is created by the server, SCHEDULED, and claimed by a worker (PENDING
``Claimed``); ``python -m vivace.engine <id>`` (:mod:`vivace.deployments.execute`) runs it with
``deployed=<FlowRunRecord>``: the engine continues that row (same id, name, tags, recorded
parameters; its state history goes on from the row's ``state_seq``) instead of creating one.
While it runs, a :class:`~vivace.engine.heartbeat.RunHeartbeat` thread records that it lives and
checks whether it is being cancelled. When the run is CANCELLING the engine stops it: a sync flow
gets :class:`~vivace.engine.signals.FlowRunCancelled` raised in its (main) thread by a signal, an
async one has its task cancelled; the run then ends CANCELLED like a crash does (unfinished tasks
recorded CANCELLED, the task runner stopped without waiting, which cancels outstanding Dask and
Ray tasks). CANCELLING moved the row's ``state_seq``, so the engine continues from the
database's before it writes CANCELLED. A SIGTERM (the worker stopping the run's process because
it is being cancelled) also ends the run CANCELLED when the database says CANCELLING, CRASHED
otherwise. A cancellation request stops the run only while the user's code runs (the flow's
function, waiting for its tasks) or while it waits to retry; one that arrives during the
engine's own bookkeeping (between attempts) takes effect at the next of those, and one that
arrives once the run has its final state stops nothing.

That last case is a race the engine settles after its final flush: a request that arrived while
the final state was still buffered moved the row to CANCELLING at the same ``state_seq``, so the
final write was dropped and the row would stay CANCELLING (nothing else stops a finished
engine). The engine beats once more after flushing; if the row is CANCELLING it writes its real
final state again, past the database's ``state_seq``. It records what happened (the run had
finished, COMPLETED or otherwise, and keeps its result) rather than a CANCELLED that did not
happen; the CANCELLING row stays in the history, showing the request came too late, as the
API's answer to cancelling a run that has ended is a refusal. Plain flow calls have none of
this: no heartbeat thread, no query of their own, no cancellation.

They heartbeat all the same, so that the ``zombies`` service ends a run CRASHED when its process
dies (:mod:`vivace.store.run_health`): from the start of each attempt until the engine leaves, a
plain call, a subflow or a resumed run is in the writer's set of running flow runs
(:meth:`~vivace.store.writer.BatchWriter.watch_flow_run`), whose background thread stamps them
all every ``VIVACE_HEARTBEAT_INTERVAL`` seconds in one UPDATE: no thread and no query of the
run's own, nothing per task.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from vivace._ids import uuid7
from vivace.engine.context import FlowRunScope, RunContext, current_context, run_context
from vivace.engine.futures import VivaceFuture
from vivace.engine.inputs import (
    await_upstreams,
    find_upstreams,
    resolve_arguments,
    upstream_failure,
)
from vivace.engine.names import random_run_name
from vivace.engine.parameters import bind_parameters, given_parameters, jsonable_parameters
from vivace.engine.run_logging import (
    install_print_capture,
    log_for_run,
    retry_note,
    setup_logging,
)
from vivace.engine.runs import FlowRun, apply_state
from vivace.engine.signals import (
    FlowRunCancelled,
    install_cancel_handler,
    install_sigterm_handler,
    interrupt_main_thread,
    restore_cancel_handler,
    restore_sigterm_handler,
    run_ended,
)
from vivace.engine.states import (
    FINAL_TYPES,
    RETRYING,
    TIMED_OUT,
    Cancelled,
    Completed,
    Failed,
    State,
    StateType,
    describe_exception,
    interrupted,
    retry_scheduled,
)
from vivace.engine.task_engine import retry_delay
from vivace.engine.timeouts import call_with_timeout, timeout_error
from vivace.exceptions import FlowRunStateError, ParameterValidationError, TaskTimeoutError
from vivace.results.storage import is_remote_address

if TYPE_CHECKING:
    from vivace.engine.flows import Flow
    from vivace.engine.heartbeat import RunHeartbeat
    from vivace.runners.base import TaskRunner
    from vivace.store.records import FlowRunRecord

logger = logging.getLogger("vivace.flow_runs")


class FlowRunEngine:
    """The decisions of one flow run; ``run_flow_sync``/``run_flow_async`` drive it."""

    def __init__(
        self,
        flow: Flow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resume: FlowRunRecord | None = None,
        deployed: FlowRunRecord | None = None,
    ):
        from vivace.store.writer import get_writer

        self.flow = flow
        self.args = args
        self.kwargs = kwargs
        parent = current_context()
        setup_logging()
        if flow.log_prints:
            install_print_capture()
        self.writer = parent.writer if parent is not None else get_writer()
        parent_flow_run = None if parent is None else parent.flow_run
        parent_task_run = None if parent is None else parent.task_run
        self.writer.record_flow(flow.flow_id, flow.name, time.time())
        self.resume = resume
        # A deployment's run: its heartbeat, and the database's state_seq once it was found
        # CANCELLING (see the module docstring).
        self.heartbeat: RunHeartbeat | None = None
        self.cancel_seq: int | None = None
        self._listening = False  # whether a cancellation request stops the run now
        # Taken to change _listening, so that _cancelling's check-and-raise from the heartbeat's
        # thread (a flow run outside the main thread) is atomic.
        self._listening_lock = threading.Lock()
        self._woken = threading.Event()  # set when a cancellation request comes
        self._cancel_handler: Any = None
        self._thread_id = threading.get_ident()
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if resume is not None:
            self.run = _continued_run(flow, resume, self.writer.url)
            self.args, self.kwargs = replayed_call(flow, resume.parameters)
        elif deployed is not None:
            self.run = self._deployed_run(deployed)
            self.args, self.kwargs = replayed_call(flow, deployed.parameters)
        else:
            self.run = FlowRun(
                uuid7(),
                flow.flow_id,
                flow.name,
                random_run_name(),
                None if parent_flow_run is None else parent_flow_run.id,
                None if parent_task_run is None else parent_task_run.id,
                None,
                None,
                State(StateType.PENDING),
            )
        # A deployment's run keeps the deployment's entrypoint, not the temporary folder its
        # code was fetched into.
        self.run.entrypoint = (
            deployed.entrypoint if deployed is not None and deployed.entrypoint else None
        ) or flow.entrypoint
        self.context: RunContext | None = None
        self.runner: TaskRunner | None = None
        self.scope: FlowRunScope | None = None
        self.timed_out = False
        self._token: Any = None
        self._previous_sigterm: Any = None
        if parent is None:
            self._previous_sigterm = install_sigterm_handler()
        if self.heartbeat is not None and not flow.is_async:
            self._cancel_handler = install_cancel_handler(self._take_cancel)

    def set_state(self, state: State) -> None:
        if state.type in FINAL_TYPES:
            self._listen(False)  # the run is ending: a late cancel request stops nothing
            if self.heartbeat is not None:
                run_ended()  # and a SIGTERM neither: its records and clean-up go first
            if self.runner is not None:
                self._flush_task_records()
        apply_state(self.run, state)
        self.writer.record_flow_run(self.run)

    def _flush_task_records(self) -> None:
        """Records buffered on cluster workers reach the store before the run's final state."""
        assert self.runner is not None
        try:
            self.runner.flush_records()
        except Exception as error:
            self._log(
                logging.WARNING,
                f"could not flush the task records buffered by {self.runner!r}: "
                f"{describe_exception(error)}; they are written when the workers next flush",
            )

    def begin(self) -> bool:
        """Validate parameters, start the task runner, enter the run context.

        Returns False (the run is then FAILED) when the parameters do not validate.
        """
        flow, run = self.flow, self.run
        if self.heartbeat is not None:
            self.heartbeat.start()
        upstreams = find_upstreams((), self.args, self.kwargs, None)
        if upstreams is not None:
            # Futures and states given to a subflow: wait for them, pass on their values.
            failure = upstream_failure(upstreams)
            if failure is not None:
                self.writer.record_flow_run(run)
                self.set_state(failure)
                self._log(logging.ERROR, failure.message or "an upstream run did not complete")
                return False
            self.args, self.kwargs = resolve_arguments(self.args, self.kwargs)
        try:
            self.args, self.kwargs, parameters = bind_parameters(flow, self.args, self.kwargs)
            self._record_parameters(parameters)
        except ParameterValidationError as error:
            self._record_parameters(given_parameters(flow, self.args, self.kwargs))
            self.writer.record_flow_run(run)
            self.set_state(Failed(error))
            self._log(logging.ERROR, str(error))
            return False
        self.writer.record_flow_run(run)
        runner = flow.task_runner.duplicate()
        try:
            runner.start()
        except Exception as error:
            self.set_state(
                Failed(
                    error,
                    message=f"could not start its task runner {runner!r}: "
                    + describe_exception(error),
                )
            )
            self._log(logging.ERROR, self.run.state.message or "", error)
            return False
        self.runner = runner
        self.scope = FlowRunScope(run, self.runner, self.writer, flow.log_prints)
        self.scope.remote_cluster = is_remote_address(getattr(runner, "address", None))
        self.context = RunContext(self.scope, None, self.writer, flow.log_prints, flow.is_async)
        self.context.call_counts = {}
        self._token = run_context.set(self.context)
        if self.resume is None:
            self._log(logging.INFO, f"Beginning flow run {run.name!r} for flow {flow.name!r}")
        else:
            self._log(
                logging.INFO,
                f"Resuming flow run {run.name!r} for flow {flow.name!r} "
                f"(attempt {run.run_count + 1})",
            )
        return True

    def _record_parameters(self, parameters: dict[str, Any]) -> None:
        """Parameters as JSON; those JSON cannot hold are kept as their repr and named, so a
        resume refuses to replay them rather than pass a repr in their place."""
        run = self.run
        run.parameters = jsonable_parameters(parameters)
        opaque = [name for name, value in parameters.items() if run.parameters[name] is not value]
        run.opaque_parameters = opaque or None

    def start_attempt(self) -> None:
        if self.cancel_seq is not None:
            raise FlowRunCancelled("cancellation was requested before it started")
        retry = self.run.run_count > 0
        if retry:
            self._prepare_reuse()
        self.set_state(State(StateType.RUNNING, name=RETRYING if retry else None))
        if self.heartbeat is None:  # a deployment's run beats on its own thread
            self.writer.watch_flow_run(self.run.id)
        self.listen()

    def listen(self) -> None:
        """The user's code runs (or the run waits to retry) from here: a cancellation request
        stops it; raises FlowRunCancelled if one came while it was not listening."""
        if self.heartbeat is not None:
            # Listening first, then the check: a request either is seen here or stops it later.
            with self._listening_lock:
                self._listening = True
                if self.cancel_seq is not None:  # requested while it was not listening
                    self._listening = False
                    raise FlowRunCancelled("cancellation was requested")

    def wait_to_retry(self, delay: float) -> None:
        """Sleep before the next attempt (a cancellation request stops it)."""
        self.listen()
        self._woken.wait(delay)  # a cancellation request wakes it, whichever way it comes
        self._listen(False)

    async def await_retry(self, delay: float) -> None:
        """``wait_to_retry`` for an async flow (a cancellation request cancels the sleep)."""
        self.listen()
        await asyncio.sleep(delay)
        self._listen(False)

    def _listen(self, on: bool) -> None:
        with self._listening_lock:
            self._listening = on

    def _prepare_reuse(self) -> None:
        """Before a later attempt: number the calls afresh, and find the task runs earlier
        attempts completed with persisted results, so they are reused instead of run again."""
        from vivace.results.resume import reusable_task_runs

        if self.context is not None:
            self.context.call_counts = {}
        scope = self.scope
        if scope is None:
            return
        if self.runner is not None:
            self._flush_task_records()
        try:
            self.writer.flush(timeout=self.writer.retry_seconds + 5)
            scope.reusable = reusable_task_runs(self.writer.url, self.run.id) or None
        except Exception as error:
            scope.reusable = None
            self._log(
                logging.WARNING,
                "the results of earlier attempts cannot be looked up, so every task runs "
                f"again: {describe_exception(error)}",
            )

    def succeeded(self, value: Any) -> None:
        """The function returned: wait for its tasks, then settle the final state."""
        self.wait_for_tasks()
        if isinstance(value, VivaceFuture):
            value = value.wait()
        if isinstance(value, State):
            if value.type is StateType.COMPLETED:
                state = Completed(value.data)
            else:
                state = State(
                    StateType.FAILED,
                    message=f"the flow returned a run that ended {value.name}: {value.message}",
                    data=value.result(raise_on_failure=False),
                )
        else:
            state = Completed(value)
        if state.type is StateType.COMPLETED:
            self._persist(state.data)
        self.set_state(state)

    def _persist(self, value: Any) -> None:
        """Write the flow's result to result storage if it persists results (a failed write is
        a warning: the run still completed)."""
        results = self.flow.results
        scope = self.scope
        if results is None or not (
            results.always or (scope is not None and scope.persist_by_default)
        ):
            return
        from vivace.results.persistence import write_result

        try:
            self.run.result_ref = write_result(
                value, results.storage, results.serializer, self.run.id.hex
            )
        except Exception as error:
            self._log(logging.WARNING, f"result not persisted: {describe_exception(error)}")

    def failed(self, error: Exception) -> float | None:
        """Record the failure; return the delay before the next attempt, or None if final."""
        flow, run = self.flow, self.run
        self.timed_out = isinstance(error, TaskTimeoutError)
        if not self.timed_out:
            self.wait_for_tasks()
        self._listen(False)  # the engine's bookkeeping: a cancel waits for the retry's sleep
        if run.run_count <= flow.retries:
            delay = retry_delay(flow.retry_delay_seconds, run.run_count, None)
            reason = describe_exception(error)
            self.set_state(retry_scheduled(run.run_count, flow.retries + 1, reason))
            self._log(logging.WARNING, retry_note(run.state, delay))
            return delay
        self.set_state(Failed(error, name=TIMED_OUT if self.timed_out else None))
        self._log(logging.ERROR, f"Finished in state {self.run.state!r}", error)
        return None

    def crashed(self, error: BaseException) -> None:
        self._listen(False)
        state = interrupted(error, "flow run")
        if self.heartbeat is not None:
            state = self._cancelled_if_cancelling(state, error)
        self.timed_out = True  # do not wait for tasks on the way out
        self._end_unfinished_tasks(state)
        self.set_state(state)
        self._log(logging.ERROR, state.message or "crashed")

    def _end_unfinished_tasks(self, flow_state: State) -> None:
        """Tasks still running when the flow crashes go down with it: record them so.

        (If the process lives on and such a task does finish, its later state wins.)
        """
        scope = self.scope
        if scope is None:
            return
        message = f"its flow run ended {flow_state.name} while it ran"
        for future in list(scope.pending):
            run = future.task_run
            if not future.done() and run.state.type not in FINAL_TYPES:
                apply_state(run, State(flow_state.type, message=message))
                self.writer.record_task_run(run)

    def wait_for_tasks(self) -> None:
        scope = self.scope
        if scope is not None:
            while scope.pending:
                for future in list(scope.pending):
                    future.wait()

    def finish(self) -> None:
        """Leave the run, then stop the runner and flush every record (``leave`` + ``close``)."""
        self.leave()
        self.close()

    def leave(self) -> None:
        """Leave the run context (on the thread and event loop that entered it)."""
        if self._token is not None:
            run_context.reset(self._token)
            self._token = None
        restore_sigterm_handler(self._previous_sigterm)
        if self.heartbeat is None:
            self.writer.unwatch_flow_run(self.run.id)
        else:
            self._listen(False)
            if self.heartbeat.stop():
                # Only once no beat can send the signal any more: its default action kills.
                restore_cancel_handler(self._cancel_handler)
                self._cancel_handler = None
        state = self.run.state
        if state.type is not StateType.CRASHED:
            self._log(logging.INFO, f"Finished in state {state!r}")

    def close(self) -> None:
        """Stop the runner and flush the run's records; blocking, so async code runs it off-loop."""
        try:
            if self.runner is not None:
                # A timed-out or crashed flow does not wait for tasks still running.
                self.runner.stop(wait=not self.timed_out)
        finally:
            flushed = self.writer.flush(timeout=self.writer.retry_seconds + 5)
            if flushed and self.heartbeat is not None:
                flushed = self._final_state_landed()
            if not flushed:
                logging.getLogger("vivace.store.writer").warning(
                    "flow run %r: its records are not all written yet; the writer keeps trying",
                    self.run.name,
                )

    def _final_state_landed(self) -> bool:
        """A deployment's run, flushed: if a cancellation request moved the row to CANCELLING
        while the final state was buffered (so that write was dropped), write the final state
        again past the database's ``state_seq`` (see the module docstring). Returns whether
        the records are written."""
        state = self.run.state
        if state.type not in FINAL_TYPES:
            return True
        found = self._beat("check that its final state was recorded")
        if found is None or found[0] is not StateType.CANCELLING:
            return True
        self._log(
            logging.INFO,
            f"Cancellation requested after the flow run had ended {state.name}: it stays "
            f"{state.name}",
        )
        self.run.state_seq = max(self.run.state_seq, found[1])
        apply_state(self.run, state)  # the same state, at the next seq
        self.writer.record_flow_run(self.run)
        return self.writer.flush(timeout=self.writer.retry_seconds + 5)

    def outcome(self, return_state: bool) -> Any:
        state = self.run.state
        return state if return_state else state.result()

    # -- deployment runs ---------------------------------------------------------------------------

    def _deployed_run(self, record: FlowRunRecord) -> FlowRun:
        """The run object of a deployment's flow run, continuing its row from the database's
        ``state_seq`` (read by a first heartbeat, which also starts the cancel checks)."""
        from vivace.engine.heartbeat import RunHeartbeat
        from vivace.settings import get_settings

        self.heartbeat = RunHeartbeat(
            self.writer.url, record.id, get_settings().heartbeat_interval, self._cancelling
        )
        found = self.heartbeat.beat()
        if found is None:
            raise FlowRunStateError(f"flow run {str(record.id)!r} not found in the run history")
        state_type, seq = found
        if state_type is StateType.CANCELLING:
            self.cancel_seq = seq
        state = State(
            record.state_type,
            record.state_name,
            record.state_message,
            timestamp=record.state_timestamp.timestamp(),
        )
        return _recorded_run(self.flow, record, state, seq)

    def watch_task(self) -> None:
        """An async run: a cancellation request cancels the current asyncio task (call it from
        inside that task)."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()

    def _cancelling(self, seq: int) -> None:
        """The heartbeat found the run CANCELLING (on the heartbeat's thread): stop the run."""
        self.cancel_seq = seq
        self._log(logging.INFO, "Cancellation requested: stopping the flow run")
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(self._cancel_task)
        elif self._cancel_handler is not None:
            interrupt_main_thread()  # the handler checks, in that thread, that it still runs
        else:
            # Not in the main thread: raise it in the run's thread at its next bytecode (a call
            # blocked in C, such as a sleep, returns first). Checked and sent under the lock the
            # run's thread takes to stop listening, so it is only sent while the run listens.
            with self._listening_lock:
                if self._listening:
                    self._listening = False
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self._thread_id), ctypes.py_object(FlowRunCancelled)
                    )
        self._woken.set()

    def _take_cancel(self) -> bool:
        """In the run's thread, when the cancel signal arrives: stop the run if it is running.

        No lock: this runs in the thread that changes ``_listening`` (a signal handler between
        two of its bytecodes, or a callback of its event loop), so it is atomic as it is, and
        a handler taking the lock could interrupt that very thread holding it."""
        if not self._listening:
            return False
        self._listening = False
        return True

    def _cancel_task(self) -> None:
        if self._task is not None and self._take_cancel():
            self._task.cancel()

    def _cancelled_if_cancelling(self, state: State, error: BaseException) -> State:
        """The final state of a deployment's run that was stopped: CANCELLED when the database
        says it is being cancelled (then continuing from the database's ``state_seq``, which
        CANCELLING moved past the engine's, so that this write lands), else ``state``."""
        found = self._beat("read whether the run is being cancelled")
        if found is not None and found[0] is StateType.CANCELLING:
            self.cancel_seq = found[1]
        elif found is not None or self.cancel_seq is None:
            return state
        assert self.cancel_seq is not None
        self.run.state_seq = max(self.run.state_seq, self.cancel_seq)
        if state.type is StateType.CANCELLED:
            return state
        return Cancelled(f"the flow run was cancelled (stopped by {describe_exception(error)})")

    def _beat(self, doing: str) -> tuple[StateType, int] | None:
        """A deployment's run: a heartbeat now, answering the run's state type and ``state_seq``
        in the database; None if the run is not there or the heartbeat failed (a warning says
        it cannot do ``doing``)."""
        assert self.heartbeat is not None
        try:
            return self.heartbeat.beat()
        except Exception as error:
            self._log(logging.WARNING, f"cannot {doing}: {describe_exception(error)}")
            return None

    def _log(self, level: int, message: str, error: BaseException | None = None) -> None:
        log_for_run(
            logger,
            level,
            message,
            flow_run_id=self.run.id,
            task_run_id=None,
            writer=self.writer,
            label=f"Flow run {self.run.name!r}",
            error=error,
        )


def replayed_call(
    flow: Flow[Any, Any], parameters: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) of a call that binds to ``parameters``, the recorded parameters.

    Not ``**parameters``: ``*args`` and ``**kwargs`` are recorded under their own names (a list,
    a dict) and positional-only parameters cannot be passed by name. Positional parameters go
    by position while every one of them was recorded; from the first one missing (the flow
    changed since), by name, so that binding names what is wrong.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    by_position = True
    for name, parameter in flow.signature.parameters.items():
        if name not in parameters:
            by_position = False
            continue
        value = parameters[name]
        if parameter.kind is parameter.VAR_POSITIONAL:
            if by_position:
                args.extend(value)
            else:
                kwargs[name] = value
        elif parameter.kind is parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif by_position and parameter.kind in (
            parameter.POSITIONAL_ONLY,
            parameter.POSITIONAL_OR_KEYWORD,
        ):
            args.append(value)
        else:
            kwargs[name] = value
    return tuple(args), kwargs


def _continued_run(flow: Flow[Any, Any], record: FlowRunRecord, url: str) -> FlowRun:
    """The run object of a recorded flow run, claimed for this resume (PENDING ``Resuming``, or
    ResumeError if another resume claimed it first) and ready to continue its history."""
    from vivace.results.resume import claim_for_resume

    current, seq = claim_for_resume(url, record)
    return _recorded_run(flow, record, current, seq)


def _recorded_run(flow: Flow[Any, Any], record: FlowRunRecord, state: State, seq: int) -> FlowRun:
    """The run object of the recorded flow run ``record``, in ``state`` at ``state_seq`` ``seq``,
    to continue its row (its id, name, parameters, creation and start times, run count)."""
    run = FlowRun(
        record.id,
        flow.flow_id,
        flow.name,
        record.name,
        record.parent_flow_run_id,
        record.parent_task_run_id,
        record.tags or None,
        dict(record.parameters),
        state,
    )
    run.created = record.created.timestamp()
    run.run_count = record.run_count
    run.start_time = None if record.start_time is None else record.start_time.timestamp()
    run.state_seq = seq
    return run


def run_flow_sync(
    flow: Flow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    resume: FlowRunRecord | None = None,
    deployed: FlowRunRecord | None = None,
) -> Any:
    engine = FlowRunEngine(flow, args, kwargs, resume, deployed)
    try:
        if engine.begin():
            while True:
                engine.start_attempt()
                try:
                    if flow.timeout_seconds is None:
                        value = flow.fn(*engine.args, **engine.kwargs)
                    else:
                        value = call_with_timeout(
                            flow.fn,
                            engine.args,
                            engine.kwargs,
                            flow.timeout_seconds,
                            timeout_error("flow", engine.run.name, flow.timeout_seconds),
                        )
                except Exception as error:
                    delay = engine.failed(error)
                    if delay is None:
                        break
                    if delay > 0:
                        engine.wait_to_retry(delay)
                else:
                    engine.succeeded(value)
                    break
    except BaseException as error:
        engine.crashed(error)
        raise
    finally:
        engine.finish()
    return engine.outcome(return_state)


async def run_flow_async(
    flow: Flow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    resume: FlowRunRecord | None = None,
    deployed: FlowRunRecord | None = None,
) -> Any:
    await await_upstreams(find_upstreams((), args, kwargs, None))  # not on the loop's thread
    engine = FlowRunEngine(flow, args, kwargs, resume, deployed)
    if deployed is not None:
        engine.watch_task()
    try:
        if engine.begin():
            while True:
                engine.start_attempt()
                try:
                    value = await _await_flow(flow, engine)
                except Exception as error:
                    if not isinstance(error, TaskTimeoutError):
                        # Wait off the loop: the flow's own async tasks may need this loop.
                        await asyncio.to_thread(engine.wait_for_tasks)
                    delay = engine.failed(error)
                    if delay is None:
                        break
                    if delay > 0:
                        await engine.await_retry(delay)
                else:
                    await asyncio.to_thread(engine.wait_for_tasks)
                    engine.succeeded(value)
                    break
    except BaseException as error:
        engine.crashed(error)
        raise
    finally:
        engine.leave()
        await asyncio.to_thread(engine.close)
    return engine.outcome(return_state)


async def _await_flow(flow: Flow[Any, Any], engine: FlowRunEngine) -> Any:
    seconds = flow.timeout_seconds
    if seconds is None:
        return await flow.fn(*engine.args, **engine.kwargs)
    try:
        async with asyncio.timeout(seconds) as scope:
            return await flow.fn(*engine.args, **engine.kwargs)
    except TimeoutError:
        if scope.expired():
            raise timeout_error("flow", engine.run.name, seconds) from None
        raise
