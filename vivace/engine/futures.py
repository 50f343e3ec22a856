"""Futures for submitted task runs, and helpers to wait on many of them.

A :class:`VivaceFuture` is the only thing that keeps a finished task's result alive: the engine
drops its own reference when the run ends, so memory follows the futures the user holds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from vivace.engine.states import FINAL_TYPES, State

if TYPE_CHECKING:
    from vivace.engine.runs import TaskRun

DoneCallback = Callable[["VivaceFuture"], None]
logger = logging.getLogger("vivace.engine.futures")

# A pool thread registers its pool here, so that a task which blocks on another task's future can
# tell the pool to lend it a thread: a bounded pool never deadlocks on tasks waiting for tasks.
blocking_handler = threading.local()


class VivaceFuture:
    """The eventual final state of a submitted task run."""

    __slots__ = ("__weakref__", "_callbacks", "_final", "_lock", "_pending", "_waiters", "task_run")

    def __init__(self, task_run: TaskRun) -> None:
        self.task_run = task_run
        self._final: State | None = None
        self._lock = threading.Lock()
        # Threads blocked in wait(), each on a held lock that set_final_state releases: far
        # cheaper than an Event (a Condition and two locks) per waited-on future.
        self._waiters: list[Any] | None = None
        self._callbacks: list[DoneCallback] | None = None
        self._pending: set[VivaceFuture] | None = None

    def track_in(self, pending: set[VivaceFuture]) -> None:
        """Stay in ``pending`` (a flow run's unfinished futures) until final."""
        with self._lock:
            if self._final is None:
                self._pending = pending
                pending.add(self)

    @property
    def task_run_id(self) -> uuid.UUID:
        return self.task_run.id

    @property
    def state(self) -> State:
        """The run's current state, read from memory (never from the database)."""
        final = self._final
        return final if final is not None else self.task_run.state

    def get_state(self) -> State:
        """Same as :attr:`state`."""
        return self.state

    def done(self) -> bool:
        return self._final is not None

    def wait(self, timeout: float | None = None) -> State:
        """Block until the run is final, or ``timeout`` seconds pass; return its state."""
        if self._final is not None:
            return self._final
        waiter = _allocate_lock()
        waiter.acquire()
        with self._lock:
            if self._final is not None:
                return self._final
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
        pool = getattr(blocking_handler, "pool", None)
        if pool is not None:
            pool.enter_blocking()
        try:
            waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        finally:
            if pool is not None:
                pool.exit_blocking()
        return self.state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The task's return value; raises its exception if it failed.

        Raises ``TimeoutError`` if the run is not final within ``timeout`` seconds.
        """
        state = self.wait(timeout)
        if state.type not in FINAL_TYPES:
            raise TimeoutError(
                f"task run {self.task_run.name!r} did not finish within {timeout} seconds "
                f"(it is {state.name})"
            )
        return state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, callback: DoneCallback) -> None:
        """Call ``callback(future)`` once the run is final (at once if it already is)."""
        with self._lock:
            if self._final is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def set_final_state(self, state: State) -> None:
        """Called by the task runner when the run has reached its final state."""
        with self._lock:
            self._final = state
            waiters, callbacks, pending = self._waiters, self._callbacks, self._pending
            self._waiters = self._callbacks = self._pending = None
        if pending is not None:
            pending.discard(self)
        if waiters:
            for waiter in waiters:
                waiter.release()
        if callbacks:
            for callback in callbacks:
                try:
                    callback(self)
                except Exception:  # one bad callback must not stop the others, or the pool
                    logger.exception("a done-callback of %r raised", self)

    async def wait_async(self) -> State:
        """Like :meth:`wait`, for async code: waits without blocking the event loop."""
        if self._final is None:
            import asyncio

            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: VivaceFuture) -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_set_if_pending, waiter)

            self.add_done_callback(wake)
            await waiter
        return self.state

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future`` in async code: the result, without blocking the event loop."""
        state = yield from self.wait_async().__await__()
        return state.result()

    def __repr__(self) -> str:
        return f"VivaceFuture(task_run={self.task_run.name!r}, state={self.state!r})"


def _set_if_pending(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


def wait(
    futures: Iterable[VivaceFuture], timeout: float | None = None
) -> tuple[set[VivaceFuture], set[VivaceFuture]]:
    """Wait for the futures to finish; return ``(done, not_done)`` after at most ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done: set[VivaceFuture] = set()
    not_done: set[VivaceFuture] = set()
    for future in futures:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        future.wait(remaining)
        (done if future.done() else not_done).add(future)
    return done, not_done


def as_completed(
    futures: Iterable[VivaceFuture], timeout: float | None = None
) -> Iterator[VivaceFuture]:
    """Yield the futures as they finish. Raises ``TimeoutError`` if ``timeout`` s pass first."""
    pending = list(dict.fromkeys(futures))
    finished: queue.SimpleQueue[VivaceFuture] = queue.SimpleQueue()
    for future in pending:
        future.add_done_callback(finished.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    pool = getattr(blocking_handler, "pool", None)
    for _ in range(len(pending)):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if pool is None:
                yield finished.get(timeout=remaining)
                continue
            pool.enter_blocking()  # a pool thread waiting on tasks: see VivaceFuture.wait
            try:
                ready = finished.get(timeout=remaining)
            finally:
                pool.exit_blocking()
            yield ready
        except queue.Empty:
            raise TimeoutError(
                f"{len(pending) - _} of {len(pending)} futures did not finish within {timeout} s"
            ) from None


class unmapped:
    """Pass a value whole to every run of ``task.map`` instead of iterating over it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"
