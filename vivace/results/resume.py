"""Resuming a failed flow run: run it again as a new attempt, reusing what already completed.

``resume_flow_run(id)`` (``vivace flow-run retry ID``) reloads the flow from the run's recorded
entrypoint, replays its recorded parameters, and runs it again under the same flow run id:
``run_count`` + 1, the state history continues. Every task call is identified by its *dynamic
key* (its index among its flow run's calls of the same task, or ``<parent digest>/<index>``
inside a task): a call whose earlier run COMPLETED with a persisted result is not run again, its
future loads that result. Everything else (failed calls, calls whose result was not persisted,
subflows) runs again. The same reuse applies to a flow's own retries (``@flow(retries=...)``).

What cannot be replayed is refused with a :class:`~vivace.exceptions.ResumeError`: a run that
is not over or that completed, a flow that cannot be imported again (defined inside a function,
or in a file that moved), and parameters that were not JSON: those were stored as their repr
only (``opaque_parameters``), so the run cannot be replayed faithfully.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

from vivace.engine.states import StateType
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

    When an identity has several (a call completed in more than one attempt), the latest wins.
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
            table.c.state_type == StateType.COMPLETED.value,
            table.c.dynamic_key.is_not(None),
            table.c.result_key.is_not(None),
        )
        .order_by(table.c.state_timestamp, table.c.id)
    )
    found: dict[tuple[str, str], TaskRunRecordLike] = {}
    with connect(engine) as conn:
        for row in conn.execute(query):
            found[(row.task_key, str(row.dynamic_key))] = TaskRunRecordLike(
                row.id,
                row.name,
                str(row.dynamic_key),
                row.state_name,
                row.state_message,
                row.state_timestamp.timestamp(),
                (row.result_storage, row.result_key, row.result_serializer),
            )
    return found


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
    from vivace.store.queries import read_flow_run

    run_id = parse_id(flow_run_id, "flow run id") if isinstance(flow_run_id, str) else flow_run_id
    record = read_flow_run(url, run_id)
    if record is None:
        raise ResumeError(f"flow run {str(run_id)!r} not found in the run history")
    label = f"flow run {record.name!r} ({record.id})"
    if record.state_type not in RESUMABLE_TYPES:
        raise ResumeError(
            f"{label} is {record.state_name} ({record.state_type.value}); only a FAILED, CRASHED "
            "or CANCELLED flow run can be retried"
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
    assert record.entrypoint is not None
    flow = load_flow(record.entrypoint, record.flow_name)
    if flow.name != record.flow_name:
        flow = flow.with_options(name=record.flow_name)
    if flow.is_async:
        return run_blocking(run_flow_async(flow, (), {}, return_state, resume=record))
    return run_flow_sync(flow, (), {}, return_state, resume=record)
