"""``@task``: the decorator, its options, and calling, submitting and mapping a task."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from vivace._ids import uuid7
from vivace.engine.context import RunContext, current_context, run_context
from vivace.engine.futures import VivaceFuture, unmapped
from vivace.engine.inputs import find_upstreams, task_inputs_record
from vivace.engine.options import (
    NOT_SET,
    check_callable_or_none,
    check_jitter,
    check_name,
    check_retries,
    check_retry_delay,
    check_runner_options,
    check_tags,
    check_timeout,
    reject_unknown,
)
from vivace.engine.run_logging import install_print_capture
from vivace.engine.runs import TaskRun
from vivace.engine.states import State, StateType
from vivace.engine.task_engine import (
    TaskCall,
    finished_future,
    log_rerun,
    nested_dynamic_key,
    retry_delay,
    reused_call,
    run_task_async,
    run_task_blocking,
    run_task_sync,
)
from vivace.exceptions import ConfigurationError, ResultError
from vivace.results.options import task_result_options
from vivace.results.resume import keyed_by_inputs

P = ParamSpec("P")
R = TypeVar("R")

_standalone_counter = itertools.count()

TASK_OPTIONS = (
    "name",
    "retries",
    "retry_delay_seconds",
    "retry_jitter_factor",
    "retry_condition_fn",
    "timeout_seconds",
    "tags",
    "log_prints",
    "runner_options",
    "persist_result",
    "result_storage",
    "result_serializer",
    "cache_policy",
    "cache_key_fn",
    "cache_expiration",
    "refresh_cache",
)


class Task(Generic[P, R]):
    """A function whose every call is a recorded task run with retries, timeouts and logs."""

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        retries: int = 0,
        retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        tags: Iterable[str] | None = None,
        log_prints: bool | None = None,
        runner_options: dict[str, Any] | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
        cache_policy: Any = None,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: Any = None,
        refresh_cache: bool = False,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"@task expects a function, got {fn!r} ({type(fn).__name__})")
        self.fn = fn
        self.name = check_name("task", name, fn)
        what = f"task {self.name!r}"
        self.retries = check_retries(what, retries)
        self.retry_delay_seconds = check_retry_delay(what, retry_delay_seconds)
        self.retry_jitter_factor = check_jitter(what, retry_jitter_factor)
        self.retry_condition_fn = check_callable_or_none(
            what, "retry_condition_fn", retry_condition_fn
        )
        self.timeout_seconds = check_timeout(what, timeout_seconds)
        self.tags = check_tags(what, tags)
        self.log_prints = log_prints
        # Placement on Dask or Ray (resources, priority, workers, ...); other runners ignore it.
        self.runner_options = check_runner_options(what, runner_options)
        qualname = getattr(fn, "__qualname__", self.name)
        self.task_key = f"{getattr(fn, '__module__', None)}.{qualname}"
        self.is_async = inspect.iscoroutinefunction(fn)
        self.parameter_names = _positional_names(fn)
        # Result and cache options as given (for with_options), then resolved once, here: the
        # engine reads only ``results`` (None: this task never persists anything).
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.cache_policy = cache_policy
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = cache_expiration
        self.refresh_cache = refresh_cache
        self.source_digest: str | None = None  # set by TASK_SOURCE when it is the cache policy
        self.results = task_result_options(
            what,
            fn,
            self,
            persist_result,
            result_storage,
            result_serializer,
            cache_policy,
            cache_key_fn,
            cache_expiration,
            refresh_cache,
        )
        functools.update_wrapper(self, fn)

    def with_options(
        self,
        *,
        name: Any = NOT_SET,
        retries: Any = NOT_SET,
        retry_delay_seconds: Any = NOT_SET,
        retry_jitter_factor: Any = NOT_SET,
        retry_condition_fn: Any = NOT_SET,
        timeout_seconds: Any = NOT_SET,
        tags: Any = NOT_SET,
        log_prints: Any = NOT_SET,
        runner_options: Any = NOT_SET,
        persist_result: Any = NOT_SET,
        result_storage: Any = NOT_SET,
        result_serializer: Any = NOT_SET,
        cache_policy: Any = NOT_SET,
        cache_key_fn: Any = NOT_SET,
        cache_expiration: Any = NOT_SET,
        refresh_cache: Any = NOT_SET,
        **unknown: Any,
    ) -> Task[P, R]:
        """A copy of this task with the given options changed."""
        reject_unknown(f"task {self.name!r}: with_options()", unknown, TASK_OPTIONS)
        given = {
            "name": name,
            "retries": retries,
            "retry_delay_seconds": retry_delay_seconds,
            "retry_jitter_factor": retry_jitter_factor,
            "retry_condition_fn": retry_condition_fn,
            "timeout_seconds": timeout_seconds,
            "tags": tags,
            "log_prints": log_prints,
            "runner_options": runner_options,
            "persist_result": persist_result,
            "result_storage": result_storage,
            "result_serializer": result_serializer,
            "cache_policy": cache_policy,
            "cache_key_fn": cache_key_fn,
            "cache_expiration": cache_expiration,
            "refresh_cache": refresh_cache,
        }
        current = {
            "name": self.name,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn,
            "timeout_seconds": self.timeout_seconds,
            "tags": self.tags,
            "log_prints": self.log_prints,
            "runner_options": self.runner_options,
            "persist_result": self.persist_result,
            "result_storage": self.result_storage,
            "result_serializer": self.result_serializer,
            "cache_policy": self.cache_policy,
            "cache_key_fn": self.cache_key_fn,
            "cache_expiration": self.cache_expiration,
            "refresh_cache": self.refresh_cache,
        }
        options = {k: current[k] if v is NOT_SET else v for k, v in given.items()}
        return type(self)(self.fn, **options)

    def retry_delay_for(self, attempt: int) -> float:
        return retry_delay(self.retry_delay_seconds, attempt, self.retry_jitter_factor)

    # -- running ---------------------------------------------------------------------------------

    def _prepare(
        self,
        ctx: RunContext,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] | None,
        defer_pending: bool = False,
    ) -> TaskCall:
        """Create the task run (PENDING) and everything needed to execute it; in a later attempt
        of the flow run, the call an earlier attempt completed, if it did. ``defer_pending``:
        the flow's runner records the PENDING state (TaskRunner.defers_pending)."""
        scope = ctx.flow
        upstreams = self._upstreams(args, kwargs, wait_for)
        parent = ctx.task_run
        # The call's dynamic key: its index among this context's calls of the task (stable
        # across attempts of the flow run, unlike the run id). A counter per task, not a
        # get-then-set of an int, so that threads sharing the context (``asyncio.to_thread``
        # copies it) never draw the same index: ``next()`` and ``setdefault`` hold the GIL.
        counts = ctx.call_counts
        if counts is None:
            counts = ctx.call_counts = {}
        counter = counts.get(self.task_key)
        if counter is None:
            counter = counts.setdefault(self.task_key, itertools.count())
        index = next(counter)
        dynamic_key: int | str = index if parent is None else nested_dynamic_key(parent, index)
        results = self.results
        if (
            results is not None
            and scope is not None
            and (results.always or scope.persist_by_default)
        ):
            # A call whose result a later attempt may reuse: its arguments are part of its
            # identity, so that calls made in another order are never taken for one another.
            dynamic_key = keyed_by_inputs(dynamic_key, args, kwargs, upstreams is not None)
        if scope is not None and scope.reusable is not None:
            reused = scope.reusable.get((self.task_key, str(dynamic_key)))
            if reused is not None:
                call = reused_call(self, reused, scope, ctx.writer)
                if call is not None:
                    return call
        return self._new_call(ctx, args, kwargs, upstreams, dynamic_key, defer_pending)

    def _upstreams(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] | None
    ) -> dict[str, list[Any]] | None:
        """Futures and states among the call's arguments (None without any argument)."""
        if args or kwargs or wait_for:
            return find_upstreams(self.parameter_names, args, kwargs, wait_for)
        return None

    def _new_call(
        self,
        ctx: RunContext,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        upstreams: dict[str, list[Any]] | None,
        dynamic_key: int | str,
        defer_pending: bool = False,
    ) -> TaskCall:
        """A new task run for the call, recorded PENDING (by the runner: ``defer_pending``)."""
        scope = ctx.flow
        parent = ctx.task_run
        run = TaskRun(
            uuid7(),
            self.task_key,
            scope.next_task_run_name(self.name)
            if scope is not None
            else f"{self.name}-{next(_standalone_counter)}",
            None if scope is None else scope.flow_run.id,
            None if parent is None else parent.id,
            self.tags,
            None if upstreams is None else task_inputs_record(upstreams) or None,
            State(StateType.PENDING),
        )
        run.dynamic_key = dynamic_key
        if not defer_pending:
            ctx.writer.record_task_run(run)
        log_prints = ctx.log_prints if self.log_prints is None else self.log_prints
        if self.log_prints:  # the flow installs print capture only when it captures prints
            install_print_capture()
        call = TaskCall(self, run, args, kwargs, upstreams, scope, ctx.writer, log_prints)
        if defer_pending:
            call.pending_deferred = (run.state_seq, run.state)
        return call

    def _loaded_or_rerun(
        self,
        ctx: RunContext,
        call: TaskCall,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] | None,
    ) -> TaskCall:
        """A direct call's reused result, loaded now (the caller needs it at once); a new run of
        the call when it cannot be loaded, so that a lost or unreadable result is made again."""
        assert call.reused is not None and call.scope is not None
        try:
            call.reused.result()
        except ResultError as error:
            log_rerun(self, call.run, call.scope, ctx.writer, str(error))
            upstreams = self._upstreams(args, kwargs, wait_for)
            assert call.run.dynamic_key is not None
            return self._new_call(ctx, args, kwargs, upstreams, call.run.dynamic_key)
        return call

    def __call__(
        self,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run the task now and return its value (a coroutine for async tasks in async code).

        Keywords ``return_state=True`` (return the final State instead) and ``wait_for=[...]``
        are taken by vivace, not passed to the function.
        """
        return_state = bool(kwargs.pop("return_state", False))
        wait_for: Any = kwargs.pop("wait_for", None)
        ctx = current_context()
        if ctx is None:
            return self._run_standalone(args, kwargs, return_state, wait_for)  # type: ignore[no-any-return]
        call = self._prepare(ctx, args, kwargs, wait_for)
        if call.reused is not None:  # completed in an earlier attempt of this flow run
            call = self._loaded_or_rerun(ctx, call, args, kwargs, wait_for)
        if call.reused is not None:
            state = call.reused
            if self.is_async and ctx.is_async and _in_event_loop():
                return _finish_async(_ready(state), return_state)  # type: ignore[return-value]
        elif self.is_async and ctx.is_async and _in_event_loop():
            return _finish_async(run_task_async(call), return_state)  # type: ignore[return-value]
        else:
            state = run_task_blocking(call)
        return state if return_state else state.result()  # type: ignore[return-value]

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> VivaceFuture:
        """Submit a run to the flow's task runner; returns a future at once."""
        wait_for: Any = kwargs.pop("wait_for", None)
        ctx = self._flow_context(".submit()")
        assert ctx.flow is not None
        call = self._prepare(ctx, args, kwargs, wait_for, ctx.flow.task_runner.defers_pending)
        if call.reused is not None:
            return finished_future(call)
        if self.results is not None and ctx.flow.remote_cluster:
            from vivace.results.storage import warn_if_local

            warn_if_local(self, ctx.flow)
        return ctx.flow.task_runner.submit(call)

    def _flow_context(self, method: str) -> RunContext:
        ctx = current_context()
        if ctx is None or ctx.flow is None:
            raise ConfigurationError(
                f"task {self.name!r}: {method} needs a flow run to submit to; call it inside a "
                "function decorated with @flow, or call the task directly"
            )
        return ctx

    def map(self, *args: Any, **kwargs: Any) -> list[VivaceFuture]:
        """Submit one run per element of the iterable arguments (zipped); returns the futures.

        Wrap an iterable in ``unmapped(...)`` to pass it whole to every run; non-iterable
        arguments are passed to every run as they are.

        ``batch_size=K`` hands the runs to the runner K at a time, as one unit of work: the Dask
        runner runs each batch as one cluster task, so very short tasks cost less than one cluster
        task each. Every run is still its own task run, with its own state and future. Runners
        that run tasks in this process submit the runs one by one.
        """
        wait_for = kwargs.pop("wait_for", None)
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ConfigurationError(
                f"task {self.name!r}: .map() batch_size must be a whole number of 1 or more, "
                f"got {batch_size!r}"
            )
        # Futures given to map are resolved here (their values decide what is iterated): each
        # run still records them as upstreams, so the dependency graph keeps the edges.
        resolved = [v for v in (*args, *kwargs.values()) if isinstance(v, VivaceFuture)]
        if resolved:
            wait_for = [*resolved, *(wait_for or ())]
        calls = _mapped_calls(self.name, self.parameter_names, args, kwargs)
        if batch_size is None:
            return [self.submit(*a, wait_for=wait_for, **kw) for a, kw in calls]
        ctx = self._flow_context(".map()")
        assert ctx.flow is not None
        runner = ctx.flow.task_runner
        if self.results is not None and ctx.flow.remote_cluster:
            from vivace.results.storage import warn_if_local

            warn_if_local(self, ctx.flow)
        futures: list[VivaceFuture] = []
        for start in range(0, len(calls), batch_size):
            batch = [
                self._prepare(ctx, a, kw, wait_for, runner.defers_pending)
                for a, kw in calls[start : start + batch_size]
            ]
            to_run = [call for call in batch if call.reused is None]
            submitted = iter(runner.submit_batch(to_run) if to_run else ())
            futures.extend(
                next(submitted) if call.reused is None else finished_future(call) for call in batch
            )
        return futures

    def _run_standalone(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        return_state: bool,
        wait_for: Any,
    ) -> Any:
        """A task called outside any flow: a recorded task run of its own."""
        from vivace.engine.run_logging import install_print_capture, setup_logging
        from vivace.store.writer import get_writer

        setup_logging()
        writer = get_writer()
        ctx = RunContext(None, None, writer, bool(self.log_prints))
        if self.log_prints:
            install_print_capture()
        token = run_context.set(ctx)
        try:
            call = self._prepare(ctx, args, kwargs, wait_for)
        finally:
            run_context.reset(token)
        if self.is_async:  # at top level, like any coroutine function: the caller awaits it

            async def run_and_flush() -> Any:
                state = await run_task_async(call)
                await asyncio.to_thread(writer.flush)
                return state if return_state else state.result()

            return run_and_flush()
        state = run_task_sync(call)
        writer.flush()
        return state if return_state else state.result()

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


async def _ready(state: State) -> State:
    return state


async def _finish_async(coroutine: Any, return_state: bool) -> Any:
    state: State = await coroutine
    return state if return_state else state.result()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _positional_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    )


def _is_mappable(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict, unmapped)):
        return False
    return isinstance(value, Iterable)


def _mapped_calls(
    task_name: str,
    parameter_names: tuple[str, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Split map arguments into one (args, kwargs) pair per run.

    A future whose run completed with an iterable is mapped over; any other future (one that
    failed, or holds a single value) is passed whole to every run, which then fails as
    UpstreamFailed or gets its value, like any upstream.
    """
    args = tuple(map(_mappable_result, args))
    kwargs = {k: _mappable_result(v) for k, v in kwargs.items()}
    mapped: dict[Any, list[Any]] = {}
    for position, value in enumerate(args):
        if _is_mappable(value):
            mapped[position] = list(value)
    for name, value in kwargs.items():
        if _is_mappable(value):
            mapped[name] = list(value)
    if not mapped:
        raise ConfigurationError(
            f"task {task_name!r}: .map() needs at least one iterable argument to map over"
        )
    lengths = {_label(key, parameter_names): len(values) for key, values in mapped.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ConfigurationError(
            f"task {task_name!r}: .map() got iterables of different lengths ({listed}); "
            "they must be equal, or wrap the ones to pass whole in unmapped()"
        )
    count = next(iter(lengths.values()))
    static_args = [a.value if isinstance(a, unmapped) else a for a in args]
    static_kwargs = {k: v.value if isinstance(v, unmapped) else v for k, v in kwargs.items()}
    calls = []
    for i in range(count):
        run_args = tuple(
            mapped[p][i] if p in mapped else static_args[p] for p in range(len(static_args))
        )
        run_kwargs = {k: mapped[k][i] if k in mapped else v for k, v in static_kwargs.items()}
        calls.append((run_args, run_kwargs))
    return calls


def _mappable_result(value: Any) -> Any:
    if isinstance(value, VivaceFuture):
        state = value.wait()
        if state.is_completed() and _is_mappable(state.result()):
            return state.result()
    return value


def _label(key: Any, parameter_names: tuple[str, ...]) -> str:
    if isinstance(key, int):
        return parameter_names[key] if key < len(parameter_names) else f"argument {key}"
    return str(key)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., bool] | None = None,
    timeout_seconds: float | None = None,
    tags: Iterable[str] | None = None,
    log_prints: bool | None = None,
    runner_options: dict[str, Any] | None = None,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    cache_policy: Any = None,
    cache_key_fn: Callable[..., str | None] | None = None,
    cache_expiration: Any = None,
    refresh_cache: bool = False,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float | list[float] | Callable[[int], float] = 0,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., bool] | None = None,
    timeout_seconds: float | None = None,
    tags: Iterable[str] | None = None,
    log_prints: bool | None = None,
    runner_options: dict[str, Any] | None = None,
    persist_result: bool | None = None,
    result_storage: Any = None,
    result_serializer: Any = None,
    cache_policy: Any = None,
    cache_key_fn: Callable[..., str | None] | None = None,
    cache_expiration: Any = None,
    refresh_cache: bool = False,
    **unknown: Any,
) -> Any:
    """Make a function a task: ``@task`` or ``@task(retries=2, timeout_seconds=30)``.

    ``log_prints=None`` (the default) follows the flow's setting. ``runner_options`` places the
    task's runs on a cluster: ``resources``, ``priority``, ``workers``, ``allow_other_workers``
    (Dask) and ``num_cpus``, ``num_gpus``, ``memory``, ``resources`` (Ray); other runners ignore it.

    Results and caching (all off by default): ``persist_result=True`` writes each result to
    ``result_storage`` (a folder, an fsspec URL, ``"block:NAME"`` or a filesystem block; default
    ``VIVACE_LOCAL_STORAGE_PATH``) with ``result_serializer`` (``"cloudpickle"``, ``"json"``,
    ``"compressed/..."``), so a resumed flow run reuses it instead of running the task again.
    ``cache_policy`` (``INPUTS``, ``TASK_SOURCE``, ``INPUTS + TASK_SOURCE`` from
    :mod:`vivace.cache_policies`) or ``cache_key_fn(context, parameters)`` makes a call with a key
    seen before end COMPLETED ``Cached`` without running, across flow runs, processes and cluster
    workers; ``cache_expiration`` (seconds or a timedelta) bounds an entry's life and
    ``refresh_cache=True`` runs anyway and replaces the entry.
    """
    reject_unknown("@task", unknown, TASK_OPTIONS)
    options: dict[str, Any] = dict(
        name=name,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        retry_jitter_factor=retry_jitter_factor,
        retry_condition_fn=retry_condition_fn,
        timeout_seconds=timeout_seconds,
        tags=tags,
        log_prints=log_prints,
        runner_options=runner_options,
        persist_result=persist_result,
        result_storage=result_storage,
        result_serializer=result_serializer,
        cache_policy=cache_policy,
        cache_key_fn=cache_key_fn,
        cache_expiration=cache_expiration,
        refresh_cache=refresh_cache,
    )
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)
