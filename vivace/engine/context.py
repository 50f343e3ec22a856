"""The run context: which flow run and task run the current code belongs to.

One ``ContextVar`` holds a small immutable :class:`RunContext`. It is set when a flow or task starts
and reset when it ends; worker threads set it explicitly for the run they execute.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivace.engine.futures import VivaceFuture
    from vivace.engine.runs import FlowRun, TaskRun
    from vivace.runners.base import TaskRunner
    from vivace.store.writer import BatchWriter


class FlowRunScope:
    """What every task of one flow run shares: its runner, its writer, its unfinished futures."""

    __slots__ = (
        "_name_counters",
        "flow_run",
        "log_prints",
        "pending",
        "persist_by_default",
        "remote_cluster",
        "reusable",
        "task_runner",
        "writer",
    )

    def __init__(
        self, flow_run: FlowRun, task_runner: TaskRunner, writer: BatchWriter, log_prints: bool
    ) -> None:
        from vivace.settings import get_settings

        self.flow_run = flow_run
        self.task_runner = task_runner
        self.writer = writer
        self.log_prints = log_prints
        # Futures not yet finished; each removes itself when done, so finished tasks cost nothing.
        self.pending: set[VivaceFuture] = set()
        self._name_counters: dict[str, Iterator[int]] = {}
        # VIVACE_RESULTS_PERSIST_BY_DEFAULT, read once per flow run, not per task.
        self.persist_by_default = get_settings().results_persist_by_default
        # In a later attempt of the flow run: the task runs an earlier attempt completed with a
        # persisted result, by (task_key, dynamic_key); they are reused instead of run again.
        self.reusable: dict[tuple[str, str], Any] | None = None
        # Whether the runner reaches a cluster that may be on other machines (local result
        # folders are then a trap: see vivace.results.storage.warn_if_local).
        self.remote_cluster = False

    def next_task_run_name(self, task_name: str) -> str:
        counter = self._name_counters.get(task_name)
        if counter is None:
            counter = self._name_counters.setdefault(task_name, itertools.count())
        return f"{task_name}-{next(counter)}"


class RunContext:
    """The flow run (if any) and task run (if any) that code is running in."""

    __slots__ = ("call_counts", "flow", "is_async", "log_prints", "task_run", "writer")

    def __init__(
        self,
        flow: FlowRunScope | None,
        task_run: TaskRun | None,
        writer: BatchWriter,
        log_prints: bool,
        is_async: bool = False,
    ) -> None:
        self.flow = flow
        self.task_run = task_run
        self.writer = writer
        self.log_prints = log_prints
        # Whether the function running in this context is a coroutine function: only async code
        # gets coroutines back from async tasks and flows; sync code gets them run to the end.
        self.is_async = is_async
        # A counter of the calls made from this code, per task_key: each call's dynamic key.
        # Made on the first call (most task runs call no task); a flow run's is made up front,
        # as threads may share it.
        self.call_counts: dict[str, Iterator[int]] | None = None

    @property
    def flow_run(self) -> FlowRun | None:
        return None if self.flow is None else self.flow.flow_run


run_context: ContextVar[RunContext | None] = ContextVar("vivace_run_context", default=None)


def current_context() -> RunContext | None:
    return run_context.get()


def current_flow_run_id() -> uuid.UUID | None:
    """The id of the flow run the calling code runs in, or None outside any flow."""
    ctx = run_context.get()
    if ctx is None or ctx.flow is None:
        return None
    return ctx.flow.flow_run.id


def current_task_run_id() -> uuid.UUID | None:
    """The id of the task run the calling code runs in, or None outside any task."""
    ctx = run_context.get()
    return None if ctx is None or ctx.task_run is None else ctx.task_run.id


def describe(value: Any) -> str:
    """A short repr for messages: long reprs are cut so errors stay readable."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
