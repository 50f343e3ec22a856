"""Resuming a failed flow run: run it again as a new attempt, reusing what already completed.

``resume_flow_run(id)`` (``vivace flow-run retry ID``) reloads the flow from the run's recorded
entrypoint, replays its recorded parameters, and runs it again under the same flow run id:
``run_count`` + 1, the state history continues. Every task call is identified by its *dynamic
key*: its index among its flow run's calls of the same task (``<parent digest>/<index>`` inside a
task) and, for a task that persists its result, a digest of its arguments (``<index>@<digest>``,
see :func:`keyed_by_inputs`). A call whose earlier run COMPLETED with a persisted result is not
run again, its future loads that result, unless a cheap check finds the value gone from its
storage: then it runs again, with a warning. Everything else (failed calls, calls whose result
was not persisted, subflows) runs again. The same reuse applies to a flow's own retries
(``@flow(retries=...)``).

What cannot be replayed is refused with a :class:`~vivace.exceptions.ResumeError`: a run that
is not over or that completed, a flow that cannot be imported again (defined inside a function,
or in a file that moved), and parameters that were not JSON: those were stored as their repr
only (``opaque_parameters``), so the run cannot be replayed faithfully. Only one resume of a run
goes at a time: :func:`claim_for_resume` moves the run from its failed state to PENDING
``Resuming`` in one conditional UPDATE, so of two resumes started together one is refused.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from vivace.engine.futures import VivaceFuture
from vivace.engine.states import RESULT_LOST, RESUMING, State, StateType
from vivace.exceptions import ResumeError

# ``import vivace`` imports this module (for resume_flow_run): what only a resume needs
# (importlib.util, pathlib, the store) is imported where it is used.
if TYPE_CHECKING:
    from pathlib import Path

    from vivace.engine.flows import Flow
    from vivace.results.persistence import ResultRef
    from vivace.store.records import FlowRunRecord

RESUMABLE_TYPES = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


class TaskRunRecordLike:
    """What a later attempt needs of a task run an earlier one completed with a persisted result."""

    __slots__ = ("dynamic_key", "id", "name", "ref", "state_message", "state_name", "timestamp")

    def __init__(
        self,
        id: uuid.UUID,
        name: str,
        dynamic_key: str,
        state_name: str,
        state_message: str | None,
        timestamp: float,
        ref: ResultRef,
    ) -> None:
        self.id = id
        self.name = name
        self.dynamic_key = dynamic_key
        self.state_name = state_name
        self.state_message = state_message
        self.timestamp = timestamp
        self.ref = ref


def reusable_task_runs(
    url: str, flow_run_id: uuid.UUID
) -> dict[tuple[str, str], TaskRunRecordLike]:
    """The flow run's completed task runs with persisted results, by (task_key, dynamic_key).

    When an identity has several (a call completed in more than one attempt), the latest wins;
    none is reused when a later attempt found its result could not be loaded (FAILED
    ``ResultLost``). Whether the values are still in storage is checked when a call asks for one.
    """
    import sqlalchemy as sa

    from vivace.store import schema
    from vivace.store.database import connect, ensure_schema, get_engine

    table = schema.task_runs
    engine = get_engine(url)
    ensure_schema(engine)
    query = (
        sa.select(
            table.c.id,
            table.c.name,
            table.c.task_key,
            table.c.dynamic_key,
            table.c.state_name,
            table.c.state_message,
            table.c.state_timestamp,
            table.c.result_storage,
            table.c.result_key,
            table.c.result_serializer,
        )
        .where(
            table.c.flow_run_id == flow_run_id,
            table.c.dynamic_key.is_not(None),
            sa.or_(
                sa.and_(
                    table.c.state_type == StateType.COMPLETED.value,
                    table.c.result_key.is_not(None),
                ),
                sa.and_(
                    table.c.state_type == StateType.FAILED.value,
                    table.c.state_name == RESULT_LOST,
                ),
            ),
        )
        .order_by(table.c.state_timestamp, table.c.id)
    )
    found: dict[tuple[str, str], TaskRunRecordLike] = {}
    with connect(engine) as conn:
        for row in conn.execute(query):
            identity = (row.task_key, str(row.dynamic_key))
            if row.result_key is None:  # ResultLost: what came before is not to be reused
                found.pop(identity, None)
                continue
            found[identity] = TaskRunRecordLike(
                row.id,
                row.name,
                str(row.dynamic_key),
                row.state_name,
                row.state_message,
                row.state_timestamp.timestamp(),
                (row.result_storage, row.result_key, row.result_serializer),
            )
    return found


def keyed_by_inputs(
    dynamic_key: int | str, args: tuple[Any, ...], kwargs: dict[str, Any], has_upstreams: bool
) -> int | str:
    """The dynamic key of a call whose result is persisted: ``<key>@<digest of its arguments>``.

    A later attempt then reuses a result only for the call at the same position *with the same
    arguments*: when calls come in another order (threads, racing coroutines, submissions
    driven by ``as_completed``), a call is never handed another call's result; it runs again.
    An upstream future counts as the identity of its call (task key and dynamic key), which is
    the same in every attempt. The arguments are hashed as cache keys are
    (:mod:`vivace.results.hashing`); when one has no stable encoding (an open connection, a
    State), the key stays the position alone.
    """
    from vivace.results.hashing import stable_digest

    try:
        if has_upstreams:
            args = tuple(map(_by_identity, args))
            kwargs = {name: _by_identity(value) for name, value in kwargs.items()}
        digest = stable_digest((args, kwargs))
    except Exception:  # UnhashableInputError, or a __vivace_hash__ that raised
        return dynamic_key
    return f"{dynamic_key}@{digest[:16]}"


class _Upstream:
    """Stands for an upstream future in a call's input digest: the identity of its call."""

    __slots__ = ("dynamic_key", "task_key")

    def __init__(self, task_key: str, dynamic_key: str) -> None:
        self.task_key = task_key
        self.dynamic_key = dynamic_key

    def __vivace_hash__(self) -> tuple[str, str]:
        return (self.task_key, self.dynamic_key)


def _by_identity(value: Any) -> Any:
    """``value`` with every future inside it replaced by its call's identity (as
    :func:`vivace.engine.inputs.resolve` walks it)."""
    if isinstance(value, VivaceFuture):
        run = value.task_run
        if run.dynamic_key is None:
            raise ValueError("a future of a run without a dynamic key")
        return _Upstream(run.task_key, str(run.dynamic_key))
    if isinstance(value, State):
        # Which call a state came from is not known here: hash by position only.
        raise ValueError("a State among the arguments")
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return kind(map(_by_identity, value))
    if kind is dict:
        return {key: _by_identity(item) for key, item in value.items()}
    return value


# -- entrypoints -----------------------------------------------------------------------------------


def entrypoint_of(fn: Any) -> str | None:
    """Where a flow function can be loaded from again: ``module:qualname`` for a function of an
    importable module, ``/path/to/file.py:qualname`` for one defined in a script; None when it
    cannot be (defined inside a function, or in an interactive session)."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return None
    if module and module != "__main__" and not module.startswith("__vivace_entrypoint_"):
        return f"{module}:{qualname}"
    import inspect
    from pathlib import Path

    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if path is None or not Path(path).is_file():
        return None
    return f"{Path(path).resolve()}:{qualname}"


def load_flow(entrypoint: str, flow_name: str | None = None) -> Flow[Any, Any]:
    """The flow object an entrypoint names; raises ResumeError if it cannot be loaded.

    An entrypoint names the flow's *function* (all a flow knows of itself). When the flow is
    bound to another name (``nightly = flow(name="nightly")(_body)``) or that name holds a flow of
    another name, the module's flow of this function named ``flow_name`` is the one meant.
    """
    import importlib
    from pathlib import Path

    from vivace.engine.flows import Flow

    target, sep, qualname = entrypoint.rpartition(":")
    if not sep or not target or not qualname:
        raise ResumeError(f"entrypoint {entrypoint!r} is not 'path/file.py:name' or 'module:name'")
    try:
        if target.endswith(".py"):
            module = _module_from_file(Path(target))
        else:
            module = importlib.import_module(target)
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part)
    except ResumeError:
        raise
    except Exception as error:
        raise ResumeError(
            f"the flow at entrypoint {entrypoint!r} cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from error
    if flow_name is not None and (not isinstance(found, Flow) or found.name != flow_name):
        fn = found.fn if isinstance(found, Flow) else found
        for value in vars(module).values():
            if isinstance(value, Flow) and value.fn is fn and value.name == flow_name:
                return value
    if not isinstance(found, Flow):
        raise ResumeError(f"entrypoint {entrypoint!r} names {found!r}, which is not a flow")
    return found


def _module_from_file(path: Path) -> Any:
    import importlib.util

    if not path.is_file():
        raise ResumeError(f"the flow's file {str(path)!r} no longer exists")
    name = f"__vivace_entrypoint_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ResumeError(f"the flow's file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look it up
    parent = str(path.parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)  # its sibling modules, as when it ran as a script
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _as_when_run_as_script(module, name)
    return module


def _as_when_run_as_script(module: Any, name: str) -> None:
    """Give the script's tasks the task keys they had when it ran as ``__main__``.

    A call is found again by its task key and dynamic key: under the module name the file is
    loaded as here, none of the earlier attempt's task runs would match.
    """
    from vivace.engine.tasks import Task

    prefix = name + "."
    for value in vars(module).values():
        if isinstance(value, Task) and value.task_key.startswith(prefix):
            value.task_key = "__main__." + value.task_key[len(prefix) :]


# -- resuming --------------------------------------------------------------------------------------


def resumable_record(url: str, flow_run_id: uuid.UUID | str) -> FlowRunRecord:
    """The flow run's record, if it can be resumed; ResumeError saying why not otherwise."""
    from vivace._ids import parse_id
    from vivace.engine.states import FINAL_TYPES
    from vivace.store.queries import read_flow_run

    run_id = parse_id(flow_run_id, "flow run id") if isinstance(flow_run_id, str) else flow_run_id
    record = read_flow_run(url, run_id)
    if record is None:
        raise ResumeError(f"flow run {str(run_id)!r} not found in the run history")
    label = _label(record)
    if record.state_type not in RESUMABLE_TYPES:
        going = (
            ": it is still going, or another resume of it is"
            if record.state_type not in FINAL_TYPES
            else ""
        )
        raise ResumeError(
            f"{label} is {record.state_name} ({record.state_type.value}){going}; only a FAILED, "
            "CRASHED or CANCELLED flow run can be retried"
        )
    if record.opaque_parameters:
        names = ", ".join(repr(name) for name in record.opaque_parameters)
        raise ResumeError(
            f"{label} cannot be replayed: its parameter(s) {names} were not JSON values, so only "
            "their repr was stored; call the flow again with them instead"
        )
    if not record.entrypoint:
        raise ResumeError(
            f"{label} recorded no entrypoint (its flow was defined inside a function or in an "
            "interactive session), so it cannot be loaded again; define the flow at module level"
        )
    return record


def claim_for_resume(url: str, record: FlowRunRecord) -> tuple[State, int]:
    """Move the run to PENDING ``Resuming``, if it is still as ``record`` read it; return that
    state and its seq. ResumeError if it is not: another resume claimed it first.

    One conditional UPDATE (still in a resumable state, same run count), and the state's row in
    the history, in one transaction: two resumes of a run started together both read it FAILED,
    but only one of them gets past this. The other is refused, whichever process it runs in.
    """
    import sqlalchemy as sa

    from vivace.store import schema
    from vivace.store.database import ensure_schema, get_engine, transaction

    runs, states = schema.flow_runs, schema.flow_run_states
    state = State(StateType.PENDING, RESUMING, timestamp=time.time())
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        seq = conn.execute(
            sa.update(runs)
            .where(
                runs.c.id == record.id,
                runs.c.state_type.in_([kind.value for kind in RESUMABLE_TYPES]),
                runs.c.run_count == record.run_count,
            )
            .values(
                state_type=state.type.value,
                state_name=state.name,
                state_timestamp=state.timestamp,
                state_message=None,
                state_seq=runs.c.state_seq + 1,
                end_time=None,
            )
            .returning(runs.c.state_seq)
        ).scalar()
        if seq is not None:
            conn.execute(
                sa.insert(states).values(
                    flow_run_id=record.id,
                    seq=seq,
                    type=state.type.value,
                    name=state.name,
                    timestamp=state.timestamp,
                    message=None,
                )
            )
    if seq is None:
        raise ResumeError(
            f"{_label(record)} was claimed by another resume since it was read (it is no longer "
            f"{record.state_name} after attempt {record.run_count}); only one resume of a run "
            "goes at a time"
        )
    return state, int(seq)


def _label(record: FlowRunRecord) -> str:
    return f"flow run {record.name!r} ({record.id})"


def resume_flow_run(flow_run_id: uuid.UUID | str, return_state: bool = False) -> Any:
    """Run a failed flow run again as a new attempt of the same run; return its result.

    Tasks that completed in an earlier attempt with a persisted result are not run again: their
    results are loaded. Raises ResumeError when the run cannot be replayed (see the module), and
    the flow's exception if the new attempt fails too (``return_state=True`` returns the final
    State instead).
    """
    from vivace.engine.flow_engine import run_flow_async, run_flow_sync
    from vivace.engine.loop import run_blocking
    from vivace.settings import get_settings

    record = resumable_record(get_settings().resolved_database_url, flow_run_id)
    if record.deployment_id is not None:
        raise ResumeError(
            f"{_label(record)} is a run of a deployment: its code lives in the deployment's "
            "storage, not here; retry it through its work queue with `vivace flow-run retry "
            f"{record.id}` (or `vivace.results.resume.retry_deployment_run`), and a worker runs "
            "the next attempt"
        )
    assert record.entrypoint is not None
    flow = load_flow(record.entrypoint, record.flow_name)
    if flow.name != record.flow_name:
        flow = flow.with_options(name=record.flow_name)
    if flow.is_async:
        return run_blocking(run_flow_async(flow, (), {}, return_state, resume=record))
    return run_flow_sync(flow, (), {}, return_state, resume=record)


def retry_deployment_run(flow_run_id: uuid.UUID | str) -> FlowRunRecord:
    """Put a failed, crashed or cancelled run of a deployment back in its work queue as a new
    attempt of the same run; return it (SCHEDULED). A worker runs it like any run of the
    deployment (at the version it was created from); tasks an earlier attempt completed with a
    persisted result are reused. ResumeError when it cannot be retried (see the module)."""
    from vivace.exceptions import FlowRunStateError
    from vivace.settings import get_settings
    from vivace.store.run_control import reschedule_flow_run

    url = get_settings().resolved_database_url
    record = resumable_record(url, flow_run_id)
    if record.deployment_id is None:
        raise ResumeError(
            f"{_label(record)} is not a run of a deployment; resume it with resume_flow_run"
        )
    try:
        return reschedule_flow_run(url, record)
    except FlowRunStateError as error:
        raise ResumeError(str(error)) from None
