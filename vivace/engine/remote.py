"""Task runs in other processes: what travels to a worker, what runs there, what comes back.

Runner-independent: the Dask runner uses it, and a Ray runner can (the driver's side, futures and
lazily fetched results, is :mod:`vivace.engine.remote_driver`). The runner only moves these
objects; the worker runs each task through the same state machine as every other runner
(:func:`~vivace.engine.task_engine.run_task_blocking`), so retries and timeouts happen on the
worker, and the worker process records states and logs straight to the database through its own
batched writer.

Driver → worker
    A :class:`RemoteCall` per task run: a copy of its :class:`~vivace.engine.runs.TaskRun` (taken
    when the call is pickled, at submission), its arguments, its upstreams, ``log_prints``, the flow
    run it belongs to, and a :class:`TaskSpec`: the task and the settings its records need
    (database URL, ``VIVACE_HOME``, the writer's settings), pickled with cloudpickle once per task
    per flow run and unpickled once per worker process, so each run carries bytes, not a fresh
    pickling of the task.

    Upstreams: a future of the same runner becomes a placeholder, and the runner passes the
    cluster's own future (``distributed.Future``, ``ray.ObjectRef``) next to the call, so the
    cluster moves the data worker to worker and orders the runs; the driver never fetches it. A
    finished future of another runner travels as its final state; so does a finished future whose
    value is not needed (``wait_for``) or that did not complete.

Worker → driver
    COMPLETED → the task's return value itself. It stays on the worker; a downstream gets it from
    there, and the driver learns that the run completed from the *type* of the result, which the
    cluster reports without sending the value (``RemoteCompleted`` fetches it on first use).
    Any other final state → a small :class:`RemoteFailure`: type, name, message and the exception
    pickled with its traceback. A downstream handed one sees a failed upstream and ends FAILED
    [UpstreamFailed] without running, as with any runner.

On the worker
    :func:`run_remote` (:func:`run_remote_batch` for a batch) unpickles the spec once per process
    (cached by its token), makes the flow's settings the process's settings (cached; the
    environment is not read again per task), takes that process's writer (``get_writer()``) and
    runs the task to its final state. :func:`flush_process_records` writes out what the writer
    buffered: the Dask runner calls it on every worker before the flow run records its final
    state; on Ray each worker calls it soon after its runs end (see :mod:`vivace.runners.ray`).

Pickling
    A task that cannot be pickled fails its runs at submission; so does an argument
    (``remote_driver.unsent_error`` names it: "task 'load' got an argument it cannot pickle:
    <socket> (argument 'conn')"). A result that cannot be pickled fails its attempt on the worker
    (retries apply). An exception that cannot be pickled travels as an UnpicklableError with its
    type, message and traceback text. Tracebacks survive the trip through tblib (a dependency of
    distributed); where tblib is missing, the worker's formatted traceback is added to the
    exception as a note, so it still shows at ``future.result()``.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import pickle
import threading
import traceback
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from vivace._ids import id_from_bytes
from vivace.engine.context import FlowRunScope, describe
from vivace.engine.futures import VivaceFuture
from vivace.engine.inputs import WAIT_FOR_KEY
from vivace.engine.run_logging import install_print_capture
from vivace.engine.runs import FlowRun, TaskRun
from vivace.engine.states import (
    Completed,
    State,
    StateType,
    describe_exception,
)
from vivace.engine.task_engine import TaskCall, run_task_blocking
from vivace.exceptions import UnpicklableError

if TYPE_CHECKING:
    from vivace.engine.tasks import Task
    from vivace.store.writer import BatchWriter

try:  # installed with distributed; it makes tracebacks picklable
    from tblib import pickling_support as _tblib
except ImportError:  # pragma: no cover - depends on the extras installed
    _tblib = None

logger = logging.getLogger("vivace.task_runs")

# Return values that always pickle: no need to check them.
_PLAIN = frozenset({int, float, complex, bool, str, bytes, type(None)})


# -- what travels --------------------------------------------------------------------------------


class TaskSpec:
    """A task and the settings its runs need, pickled once; workers cache it by ``token``."""

    __slots__ = ("blob", "token")

    def __init__(self, token: str, blob: bytes) -> None:
        self.token = token
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskSpec, (self.token, self.blob))


class RemoteSetup:
    """What the runs of one flow run on a cluster share: the settings and the pickled tasks.

    Made when the runner starts, on the driver, from the driver's settings.
    """

    def __init__(self) -> None:
        from vivace.settings import get_settings

        settings = get_settings()
        env = settings.model_dump()
        env["database_url"] = settings.resolved_database_url  # the same file, whatever the home
        self.env = env
        self.database_url: str = env["database_url"]
        self._specs: dict[int, tuple[Task[Any, Any], TaskSpec]] = {}
        self._lock = threading.Lock()

    def spec_for(self, task: Task[Any, Any]) -> TaskSpec:
        """The task's spec; raises UnpicklableError if the task cannot be pickled."""
        entry = self._specs.get(id(task))
        if entry is not None:
            return entry[1]
        try:
            # Compressed: smaller, and free of the text b"__main__" (a task defined in a script),
            # which would make distributed pickle every graph carrying it a second, slower way.
            blob = zlib.compress(cloudpickle.dumps((task, self.env), protocol=5), 1)
        except Exception as error:
            raise UnpicklableError(
                f"task {task.name!r} cannot be pickled to run in another process: "
                f"{describe_exception(error)}"
            ) from None
        spec = TaskSpec(uuid.uuid4().hex, blob)
        with self._lock:  # the task stays referenced, so its id is not reused meanwhile
            entry = self._specs.setdefault(id(task), (task, spec))
        return entry[1]


def flow_info(call: TaskCall) -> tuple[Any, ...] | None:
    """The flow run a call belongs to, as the worker needs it (ids as bytes, and names)."""
    scope = call.scope
    if scope is None:
        return None
    run = scope.flow_run
    return (run.id.bytes, run.flow_id.bytes, run.flow_name, run.name, scope.log_prints)


class RemoteCall:
    """One task run as it travels to a worker."""

    __slots__ = (
        "args",
        "flow",
        "kwargs",
        "log_prints",
        "record_pending",
        "refs",
        "run",
        "spec",
        "upstreams",
    )

    def __init__(
        self,
        spec: TaskSpec,
        run: TaskRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        upstreams: dict[str, list[Any]] | None,
        refs: list[tuple[Any, ...]] | None,
        log_prints: bool,
        flow: tuple[Any, ...] | None,
        record_pending: bool = False,
    ) -> None:
        self.spec = spec
        self.run = run
        self.args = args
        self.kwargs = kwargs
        self.upstreams = upstreams
        self.refs = refs  # (run id, run name, index of a cluster future or a State, batch item)
        self.log_prints = log_prints
        self.flow = flow
        self.record_pending = record_pending  # the worker records PENDING (defers_pending)

    def __reduce__(self) -> tuple[Any, ...]:
        # Ids travel as bytes and the state type as its value: a worker unpickles them several
        # times faster than UUID and enum objects, on every run.
        run = self.run
        state = run.state
        flow_run_id, parent_id = run.flow_run_id, run.parent_task_run_id
        fields = (
            run.id.bytes,
            run.task_key,
            run.name,
            None if flow_run_id is None else flow_run_id.bytes,
            None if parent_id is None else parent_id.bytes,
            run.tags,
            run.task_inputs,
            run.created,
            run.state_seq,
            run.run_count,
            run.start_time,
            run.end_time,
            state.type.value,
            state.name,
            state.message,
            state.timestamp,
            run.dynamic_key,
        )
        return (
            _remote_call,
            (
                self.spec,
                fields,
                self.args,
                self.kwargs,
                self.upstreams,
                self.refs,
                self.log_prints,
                self.flow,
                self.record_pending,
            ),
        )


def _remote_call(
    spec: TaskSpec,
    fields: tuple[Any, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    upstreams: dict[str, list[Any]] | None,
    refs: list[tuple[Any, ...]] | None,
    log_prints: bool,
    flow: tuple[Any, ...] | None,
    record_pending: bool,
) -> RemoteCall:
    (
        id_,
        task_key,
        name,
        flow_run_id,
        parent_task_run_id,
        tags,
        task_inputs,
        created,
        seq,
        run_count,
        start_time,
        end_time,
        type_,
        state_name,
        message,
        timestamp,
        dynamic_key,
    ) = fields
    state = State(_STATE_TYPES[type_], state_name, message, timestamp=timestamp)
    run = TaskRun(
        id_from_bytes(id_),
        task_key,
        name,
        None if flow_run_id is None else id_from_bytes(flow_run_id),
        None if parent_task_run_id is None else id_from_bytes(parent_task_run_id),
        tags,
        task_inputs,
        state,
    )
    run.created = created
    run.state_seq = seq
    run.run_count = run_count
    run.start_time = start_time
    run.end_time = end_time
    run.dynamic_key = dynamic_key
    return RemoteCall(spec, run, args, kwargs, upstreams, refs, log_prints, flow, record_pending)


_STATE_TYPES = {state_type.value: state_type for state_type in StateType}


class _Slot:
    """Stands in for an upstream future inside a call's arguments, until the worker swaps it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self.index,))


# Given an upstream future of the calling runner, the cluster's handle on its result and the item
# index inside a batch result (None for a run of its own); None if the runner has no handle.
Native = Callable[[VivaceFuture], "tuple[Any, int | None] | None"]


class Handover:
    """Builds the RemoteCalls of one cluster task, collecting the cluster futures they need.

    ``remote`` lists each cluster future once; the runner passes them next to the call(s), and
    the worker receives their results in that order.
    """

    def __init__(self, native: Native) -> None:
        self.native = native
        self.remote: list[Any] = []
        self._positions: dict[int, int] = {}

    def call(self, call: TaskCall, spec: TaskSpec, flow: tuple[Any, ...] | None) -> RemoteCall:
        upstreams = call.upstreams
        if upstreams is None:
            return RemoteCall(
                spec,
                call.run,
                call.args,
                call.kwargs,
                None,
                None,
                call.log_prints,
                flow,
                call.pending_deferred is not None,
            )
        # Upstreams whose values the run needs (those in its arguments, not only in wait_for).
        valued = {
            id(item)
            for key, items in upstreams.items()
            if key != WAIT_FOR_KEY
            for item in items
            if isinstance(item, VivaceFuture)
        }
        refs: list[tuple[Any, ...]] = []
        slots: dict[int, _Slot] = {}
        for items in upstreams.values():
            for item in items:
                if isinstance(item, VivaceFuture) and id(item) not in slots:
                    slots[id(item)] = _Slot(len(refs))
                    refs.append(self._ref(item, id(item) in valued))
        args, kwargs = call.args, call.kwargs
        if valued:
            args = _replace(args, lambda f: slots[id(f)])
            kwargs = _replace(kwargs, lambda f: slots[id(f)])
        travelling = {
            key: [slots[id(i)] if isinstance(i, VivaceFuture) else i for i in items]
            for key, items in upstreams.items()
        }
        return RemoteCall(
            spec,
            call.run,
            args,
            kwargs,
            travelling,
            refs,
            call.log_prints,
            flow,
            call.pending_deferred is not None,
        )

    def _ref(self, future: VivaceFuture, valued: bool) -> tuple[Any, ...]:
        run = future.task_run
        if future.done():
            state = future.state
            if state.type is not StateType.COMPLETED or not valued:
                return (run.id, run.name, _bare(state), None)
        native = self.native(future)
        if native is None:
            if not future.done():
                raise RuntimeError(
                    f"upstream {run.name!r} is not finished and has no cluster future; the runner "
                    "must wait for it before sending its downstream"
                )
            completed = Completed(future.state.data)  # the value, fetched if need be
            completed.run_id = run.id
            return (run.id, run.name, completed, None)
        remote, item = native
        position = self._positions.get(id(remote))
        if position is None:
            position = self._positions[id(remote)] = len(self.remote)
            self.remote.append(remote)
        return (run.id, run.name, position, item)


def _bare(state: State) -> State:
    """The state without its value or exception (all a downstream needs of a wait_for upstream)."""
    bare = State(state.type, state.name, state.message, timestamp=state.timestamp)
    bare.run_id = state.run_id
    return bare


def _replace(value: Any, swap: Callable[[Any], Any]) -> Any:
    """``value`` with every VivaceFuture inside built-in containers replaced by ``swap(future)``."""
    return _swap_leaves(value, _is_future, swap)


def _restore(value: Any, stubs: list[VivaceFuture]) -> Any:
    """``value`` with every placeholder inside built-in containers replaced by its stub future."""
    return _swap_leaves(value, _is_slot, lambda slot: stubs[slot.index])


def _is_future(value: Any) -> bool:
    return isinstance(value, VivaceFuture)


def _is_slot(value: Any) -> bool:
    return type(value) is _Slot


def _swap_leaves(value: Any, is_leaf: Callable[[Any], bool], swap: Callable[[Any], Any]) -> Any:
    """``value`` with each leaf inside built-in containers swapped; unchanged parts kept as is."""
    if is_leaf(value):
        return swap(value)
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        items = [_swap_leaves(item, is_leaf, swap) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return kind(items)
        return value
    if kind is dict:
        swapped = {key: _swap_leaves(item, is_leaf, swap) for key, item in value.items()}
        if any(swapped[key] is not item for key, item in value.items()):
            return swapped
        return value
    return value


# -- what comes back -----------------------------------------------------------------------------


class RemoteFailure:
    """A run that did not complete, as it travels back from the worker."""

    __slots__ = ("error", "message", "name", "timestamp", "type")

    def __init__(
        self,
        type: StateType,
        name: str,
        message: str | None,
        timestamp: float,
        error: bytes | None,
    ) -> None:
        self.type = type
        self.name = name
        self.message = message
        self.timestamp = timestamp
        self.error = error  # the exception, pickled with its traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFailure, (self.type, self.name, self.message, self.timestamp, self.error))

    @classmethod
    def from_state(cls, state: State, task_name: str) -> RemoteFailure:
        data = state.data
        error = pack_error(data, task_name) if isinstance(data, BaseException) else None
        return cls(state.type, state.name, state.message, state.timestamp, error)

    def to_state(self) -> State:
        if self.error is None:
            return State(self.type, self.name, self.message, timestamp=self.timestamp)
        return State(
            self.type, self.name, self.message, data=self.unpack(), timestamp=self.timestamp
        )

    def unpack(self) -> BaseException:
        assert self.error is not None
        try:
            error = pickle.loads(self.error)
        except Exception as problem:
            return UnpicklableError(
                f"the exception of this run cannot be unpickled here "
                f"({describe_exception(problem)}); on the worker it was: {self.message}"
            )
        assert isinstance(error, BaseException)
        return error


class PartialBatch(list):  # type: ignore[type-arg]
    """A batch's outcomes when some of its runs did not complete (its type tells the driver)."""

    __slots__ = ()


def pack_error(error: BaseException, task_name: str) -> bytes:
    """The exception pickled with its traceback, cause and context, ready to travel."""
    if _tblib is not None:
        _tblib.install(error)  # this exception's class (and its causes'), as distributed does
    else:
        _note_traceback(error)
    try:
        blob: bytes = cloudpickle.dumps(error, protocol=5)
        pickle.loads(blob)  # an exception can pickle yet fail to unpickle (a custom __init__)
        return blob
    except Exception as problem:
        substitute = UnpicklableError(
            f"task {task_name!r} raised {describe_exception(error)}, which cannot be pickled "
            f"to travel back from the worker ({describe_exception(problem)})"
        )
        _note_traceback(substitute, error)
        blob = cloudpickle.dumps(substitute, protocol=5)
        return blob


def _note_traceback(error: BaseException, source: BaseException | None = None) -> None:
    source = error if source is None else source
    text = "".join(traceback.format_exception(source)).rstrip()
    error.add_note(f"Traceback on the worker:\n{text}")


# -- worker side ---------------------------------------------------------------------------------


def run_remote(call: RemoteCall, *remote_values: Any) -> Any:
    """Run one task run on this worker: its value, or a RemoteFailure.

    ``remote_values`` are the results of the cluster futures the call's upstreams point at, in
    the order of :attr:`Handover.remote`.
    """
    return _run(call, remote_values)


def run_remote_batch(calls: list[RemoteCall], *remote_values: Any) -> list[Any]:
    """Run a batch of task runs one after another: a list of values, or a PartialBatch."""
    outcomes = [_run(call, remote_values) for call in calls]
    if any(type(outcome) is RemoteFailure for outcome in outcomes):
        return PartialBatch(outcomes)
    return outcomes


def _run(remote: RemoteCall, remote_values: tuple[Any, ...]) -> Any:
    task, writer = _load(remote.spec)
    args, kwargs, upstreams = remote.args, remote.kwargs, remote.upstreams
    if remote.refs:
        stubs = _stubs(remote.refs, remote_values)
        args = _restore(args, stubs)
        kwargs = _restore(kwargs, stubs)
        upstreams = {key: _restore(items, stubs) for key, items in (upstreams or {}).items()}
    if remote.log_prints:
        install_print_capture()
    if remote.record_pending:  # recorded here, in the same write as its RUNNING state
        writer.record_task_run(remote.run)
    call = TaskCall(
        task,
        remote.run,
        args,
        kwargs,
        upstreams,
        _scope(remote.flow, writer),
        writer,
        remote.log_prints,
    )
    try:
        state = run_task_blocking(call)
    except BaseException:
        # An interrupt or exit raised by the task: the engine recorded CRASHED and flushed it.
        # It goes back as the run's state; the flow re-raises it, and the worker lives on.
        state = call.run.state
    if state.type is StateType.COMPLETED:
        return state.data
    return RemoteFailure.from_state(state, task.name)


def _stubs(refs: list[tuple[Any, ...]], remote_values: tuple[Any, ...]) -> list[VivaceFuture]:
    """Finished futures standing in for the upstreams, so the engine sees them as anywhere."""
    stubs = []
    for run_id, name, source, item in refs:
        if isinstance(source, State):
            state = source
        else:
            value = remote_values[source]
            if item is not None:
                value = value[item]
            state = value.to_state() if type(value) is RemoteFailure else Completed(value)
        run = TaskRun(run_id, "", name, None, None, None, None, state)
        stub = VivaceFuture(run)
        stub.set_final_state(state)
        stubs.append(stub)
    return stubs


_specs: OrderedDict[str, tuple[Task[Any, Any], BatchWriter]] = OrderedDict()
_settings: dict[tuple[Any, ...], Any] = {}
_writers_by_url: dict[str, BatchWriter] = {}
_worker_lock = threading.Lock()
_SPEC_CACHE_SIZE = 256
_exit_flush_registered = False


def _load(spec: TaskSpec) -> tuple[Task[Any, Any], BatchWriter]:
    """The spec's task (its result checked for pickling) and this process's writer for it."""
    entry = _specs.get(spec.token)
    if entry is not None and not entry[1].closed:
        return entry
    with _worker_lock:
        task, env = pickle.loads(zlib.decompress(spec.blob))
        entry = (_checked(task), _writer_for(env))
        _specs[spec.token] = entry
        while len(_specs) > _SPEC_CACHE_SIZE:
            _specs.popitem(last=False)
    return entry


def _writer_for(env: dict[str, Any]) -> BatchWriter:
    """This process's writer for the flow's database, with the flow's settings (cached)."""
    global _exit_flush_registered
    from vivace.engine.run_logging import setup_logging
    from vivace.settings import Settings, use_settings
    from vivace.store.writer import get_writer, shutdown_writers

    key = tuple(sorted(env.items()))
    settings = _settings.get(key)
    if settings is None:
        settings = _settings[key] = Settings(**env)
    use_settings(settings)
    setup_logging()
    writer = get_writer()
    _writers_by_url[writer.url] = writer
    if not _exit_flush_registered and multiprocessing.parent_process() is not None:
        # A worker started by multiprocessing (a dask nanny's worker) ends with os._exit, which
        # skips atexit: flush the writers at the end of the process all the same.
        from multiprocessing import util

        util.Finalize(None, shutdown_writers, exitpriority=100)
        _exit_flush_registered = True
    return writer


def _checked(task: Task[Any, Any]) -> Task[Any, Any]:
    """A copy of ``task`` whose attempt fails if its result cannot be pickled to travel back."""
    checked = copy.copy(task)
    fn, name = task.fn, task.name
    if task.is_async:

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return _picklable_result(name, await fn(*args, **kwargs))

        checked.fn = call_async
    else:

        def call(*args: Any, **kwargs: Any) -> Any:
            return _picklable_result(name, fn(*args, **kwargs))

        checked.fn = call
    return checked


def _out_of_band(buffer: Any) -> None:
    """Keep large buffers (arrays) out of the trial pickling: nothing is copied."""


def _picklable_result(task_name: str, value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    try:
        pickle.dumps(value, protocol=5, buffer_callback=_out_of_band)
    except Exception:
        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=_out_of_band)
        except Exception as error:
            raise UnpicklableError(
                f"task {task_name!r} returned a value it cannot pickle: {describe(value)} "
                f"({describe_exception(error)})"
            ) from None
    return value


_scopes: OrderedDict[tuple[Any, ...], FlowRunScope] = OrderedDict()


def _scope(flow: tuple[Any, ...] | None, writer: BatchWriter) -> FlowRunScope | None:
    """A stand-in for the flow run's scope, so logs and nested tasks know their flow run.

    Tasks that a remote task submits run in place, on its worker (a SequentialTaskRunner).
    """
    if flow is None:
        return None
    key = (*flow, id(writer))
    scope = _scopes.get(key)
    if scope is None:
        from vivace.runners.sequential import SequentialTaskRunner

        flow_run_id, flow_id, flow_name, run_name, log_prints = flow
        run = FlowRun(
            id_from_bytes(flow_run_id),
            id_from_bytes(flow_id),
            flow_name,
            run_name,
            None,
            None,
            None,
            None,
            State(StateType.RUNNING),
        )
        scope = FlowRunScope(run, SequentialTaskRunner(), writer, log_prints)
        with _worker_lock:
            _scopes[key] = scope
            while len(_scopes) > 64:
                _scopes.popitem(last=False)
    return scope


def flush_process_records(database_url: str, timeout: float) -> bool:
    """Write out what this process's writer for ``database_url`` has buffered (on a worker)."""
    writer = _writers_by_url.get(database_url)
    if writer is None or writer.closed:
        return True
    return writer.flush(timeout=timeout)
