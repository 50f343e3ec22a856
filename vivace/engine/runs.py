"""The records of flow runs and task runs that the engine mutates and the writer snapshots.

A run object is the single place a run's current state lives in memory. :func:`apply_state` is the
only function that changes it: a pure transition with no I/O, so it can be tested by comparing
``snapshot()`` before and after. The writer reads ``snapshot()`` when it flushes, so several
transitions of one run inside a flush window become one row write.
"""

from __future__ import annotations

import uuid
from typing import Any

from vivace.engine.states import FINAL_TYPES, State, StateType

_NO_RESULT = (None, None, None)  # the result columns of a run whose result is not persisted


class TaskRun:
    """One execution of a task: identity, lineage, and current state."""

    __slots__ = (
        "cache_key",
        "created",
        "dynamic_key",
        "end_time",
        "flow_run_id",
        "id",
        "name",
        "parent_task_run_id",
        "result_ref",
        "run_count",
        "start_time",
        "state",
        "state_seq",
        "tags",
        "task_inputs",
        "task_key",
    )

    def __init__(
        self,
        id: uuid.UUID,
        task_key: str,
        name: str,
        flow_run_id: uuid.UUID | None,
        parent_task_run_id: uuid.UUID | None,
        tags: tuple[str, ...] | None,
        task_inputs: dict[str, list[str]] | None,
        state: State,
    ) -> None:
        self.id = id
        self.task_key = task_key
        self.name = name
        self.flow_run_id = flow_run_id
        self.parent_task_run_id = parent_task_run_id
        self.tags = tags
        self.task_inputs = task_inputs
        self.created = state.timestamp
        self.state = state
        state.run_id = id
        self.state_seq = 1
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.run_count = 0
        # Which call of its task this is in its flow run, the same in every attempt (an index,
        # or "<parent digest>/<index>" inside a task; then "@<digest of its arguments>" when
        # its result is persisted): how a resumed flow run finds it again.
        self.dynamic_key: int | str | None = None
        self.cache_key: str | None = None
        # (storage location, key, serializer name) once its result is persisted.
        self.result_ref: tuple[str, str, str] | None = None

    def snapshot(self) -> tuple[Any, ...]:
        """The run's row, in the column order of :data:`TASK_RUN_COLUMNS`."""
        seq = self.state_seq  # first: see apply_state
        state = self.state
        ref = self.result_ref or _NO_RESULT  # indexed, not *-unpacked: a plain tuple is faster
        return (
            self.id,
            self.flow_run_id,
            self.parent_task_run_id,
            self.task_key,
            self.name,
            state.type.value,
            state.name,
            state.timestamp,
            state.message,
            seq,
            self.start_time,
            self.end_time,
            self.run_count,
            self.tags,
            self.task_inputs,
            self.created,
            self.dynamic_key,
            self.cache_key,
            ref[0],
            ref[1],
            ref[2],
        )

    def __repr__(self) -> str:
        return f"TaskRun(name={self.name!r}, id={self.id}, state={self.state!r})"


TASK_RUN_COLUMNS = (
    "id",
    "flow_run_id",
    "parent_task_run_id",
    "task_key",
    "name",
    "state_type",
    "state_name",
    "state_timestamp",
    "state_message",
    "state_seq",
    "start_time",
    "end_time",
    "run_count",
    "tags",
    "task_inputs",
    "created",
    "dynamic_key",
    "cache_key",
    "result_storage",
    "result_key",
    "result_serializer",
)


class FlowRun:
    """One execution of a flow: identity, lineage, parameters and current state."""

    __slots__ = (
        "created",
        "end_time",
        "entrypoint",
        "flow_id",
        "flow_name",
        "id",
        "name",
        "opaque_parameters",
        "parameters",
        "parent_flow_run_id",
        "parent_task_run_id",
        "result_ref",
        "run_count",
        "start_time",
        "state",
        "state_seq",
        "tags",
    )

    def __init__(
        self,
        id: uuid.UUID,
        flow_id: uuid.UUID,
        flow_name: str,
        name: str,
        parent_flow_run_id: uuid.UUID | None,
        parent_task_run_id: uuid.UUID | None,
        tags: tuple[str, ...] | None,
        parameters: dict[str, Any] | None,
        state: State,
    ) -> None:
        self.id = id
        self.flow_id = flow_id
        self.flow_name = flow_name
        self.name = name
        self.parent_flow_run_id = parent_flow_run_id
        self.parent_task_run_id = parent_task_run_id
        self.tags = tags
        self.parameters = parameters
        self.created = state.timestamp
        self.state = state
        state.run_id = id
        self.state_seq = 1
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.run_count = 0
        # Where the flow can be loaded from again ("path/file.py:fn" or "module:fn"), to resume.
        self.entrypoint: str | None = None
        # Parameters stored only as their repr (not JSON): the run cannot be replayed.
        self.opaque_parameters: list[str] | None = None
        self.result_ref: tuple[str, str, str] | None = None

    def snapshot(self) -> tuple[Any, ...]:
        """The run's row, in the column order of :data:`FLOW_RUN_COLUMNS`."""
        seq = self.state_seq  # first: see apply_state
        state = self.state
        ref = self.result_ref or _NO_RESULT
        return (
            self.id,
            self.flow_id,
            self.flow_name,
            self.name,
            self.parent_flow_run_id,
            self.parent_task_run_id,
            state.type.value,
            state.name,
            state.timestamp,
            state.message,
            seq,
            self.start_time,
            self.end_time,
            self.run_count,
            self.tags,
            self.parameters,
            self.created,
            self.entrypoint,
            self.opaque_parameters,
            ref[0],
            ref[1],
            ref[2],
        )

    def __repr__(self) -> str:
        return f"FlowRun(name={self.name!r}, id={self.id}, state={self.state!r})"


FLOW_RUN_COLUMNS = (
    "id",
    "flow_id",
    "flow_name",
    "name",
    "parent_flow_run_id",
    "parent_task_run_id",
    "state_type",
    "state_name",
    "state_timestamp",
    "state_message",
    "state_seq",
    "start_time",
    "end_time",
    "run_count",
    "tags",
    "parameters",
    "created",
    "entrypoint",
    "opaque_parameters",
    "result_storage",
    "result_key",
    "result_serializer",
)


def apply_state(run: TaskRun | FlowRun, state: State) -> None:
    """Make ``state`` the run's current state and update its timing and attempt count.

    Entering RUNNING starts an attempt (``run_count`` + 1; ``start_time`` is the first attempt's
    start). Entering a final state sets ``end_time``. Every transition advances ``state_seq``.

    ``state_seq`` is written last, and ``snapshot()`` reads it first: the writer thread may take a
    snapshot in the middle of a transition, and this order guarantees the seq it records is never
    ahead of the fields beside it, so the next upsert (with a higher seq) always lands.
    """
    kind = state.type
    if kind is StateType.RUNNING:
        run.run_count += 1
        if run.start_time is None:
            run.start_time = state.timestamp
    elif kind in FINAL_TYPES:
        run.end_time = state.timestamp
    state.run_id = run.id
    run.state = state
    run.state_seq += 1
