"""The task runner interface: where submitted task runs execute.

A runner is small: ``start()``/``stop()`` (also as a context manager), ``submit(call)`` returning a
:class:`~vivace.engine.futures.VivaceFuture`, and ``duplicate()`` so each flow run gets a fresh
runner with the same configuration. Two optional hooks serve runners whose tasks run in other
processes: ``submit_batch(calls)`` and ``flush_records()``. The state machine lives in the engine,
not here.
"""

from __future__ import annotations

import abc
import copy
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from vivace.engine.futures import VivaceFuture
    from vivace.engine.task_engine import TaskCall


class TaskRunner(abc.ABC):
    """Executes task runs submitted by a flow run."""

    # Whether a submitted run's PENDING state is recorded by the runner rather than at submission:
    # where the run starts (its worker records it with its RUNNING state, one write instead of
    # two), or by the driver once the run has waited long to start, or ends without starting.
    defers_pending = False

    def duplicate(self) -> Self:
        """A fresh, unstarted runner with the same configuration (one per flow run)."""
        return copy.copy(self)

    def start(self) -> None:
        """Acquire what the runner needs (threads, a cluster); called when the flow run begins."""

    def stop(self, wait: bool = True) -> None:
        """Release it; with ``wait``, after every submitted run has finished."""

    @abc.abstractmethod
    def submit(self, call: TaskCall) -> VivaceFuture:
        """Start ``call`` (now, or once its upstreams are done) and return its future."""

    def submit_batch(self, calls: list[TaskCall]) -> list[VivaceFuture]:
        """Start several runs of one task as one unit of work (``task.map(batch_size=...)``).

        Each run keeps its own future. By default they are submitted one by one; runners that
        ship work to other processes run a batch as one unit there.
        """
        return [self.submit(call) for call in calls]

    def flush_records(self) -> None:
        """Write out the records that runs buffered outside this process (on cluster workers).

        The flow engine calls it before it records the flow run's final state, so a finished flow
        run never shows in the store ahead of its task runs. Runners that record through this
        process's writer have nothing to do.
        """

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop(wait=exc_type is None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def track_pending(call: TaskCall, future: VivaceFuture) -> None:
    """Let the flow run wait for ``future`` until it is done (and forget it then)."""
    scope = call.scope
    if scope is not None:
        future.track_in(scope.pending)


class WhenAllDone:
    """Calls ``action`` once, when the last of ``futures`` is done (at once if none are pending)."""

    __slots__ = ("_action", "_lock", "_remaining")

    def __init__(self, futures: Iterable[VivaceFuture], action: Callable[[], None]) -> None:
        pending = list(futures)
        self._action = action
        self._lock = threading.Lock()
        self._remaining = len(pending) + 1  # +1 until every callback is registered
        for future in pending:
            future.add_done_callback(self._one_done)
        self._one_done(None)

    def _one_done(self, _: Any) -> None:
        with self._lock:
            self._remaining -= 1
            ready = self._remaining == 0
        if ready:
            self._action()
