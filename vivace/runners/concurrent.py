"""Runs submitted tasks on a bounded pool of threads; async tasks on one shared event loop.

Dependency-aware: a task is handed to the pool only once every future it depends on is done, so
no pool thread ever blocks waiting for another task and a bounded pool cannot deadlock.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from vivace.engine.futures import VivaceFuture, blocking_handler
from vivace.engine.states import State
from vivace.engine.task_engine import cancel_task_run, run_task_async, run_task_sync
from vivace.exceptions import ConfigurationError
from vivace.runners.base import TaskRunner, WhenAllDone, track_pending

if TYPE_CHECKING:
    from vivace.engine.task_engine import TaskCall


class ConcurrentTaskRunner(TaskRunner):
    """Threads for sync tasks (``max_workers``, default ``min(32, CPUs + 4)``)."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (
            not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1
        ):
            raise ConfigurationError(
                f"ConcurrentTaskRunner: max_workers must be a whole number of 1 or more, "
                f"got {max_workers!r}"
            )
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: _WorkerThreads | None = None
        # Async runs on the shared loop, so a flow that ends early can cancel them.
        self._async_runs: set[concurrent.futures.Future[Any]] = set()

    def duplicate(self) -> ConcurrentTaskRunner:
        return ConcurrentTaskRunner(self.max_workers)

    def start(self) -> None:
        if self._pool is None:
            self._pool = _WorkerThreads(self.max_workers)

    def stop(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)
        if not wait:
            for running in list(self._async_runs):
                running.cancel()  # the engine records the run CANCELLED at its next await

    def submit(self, call: TaskCall) -> VivaceFuture:
        future = VivaceFuture(call.run)
        track_pending(call, future)
        waiting = _unfinished_upstreams(call)
        if not waiting:
            self._dispatch(call, future)
        else:
            WhenAllDone(waiting, lambda: self._dispatch_waiting(call, future))
        return future

    def _dispatch_waiting(self, call: TaskCall, future: VivaceFuture) -> None:
        """Dispatch a run whose upstreams just finished, unless its flow run ended meanwhile."""
        pool = self._pool
        if pool is None or pool.closed:  # the flow run timed out or crashed: stopped early
            future.set_final_state(cancel_task_run(call, "the flow run ended first"))
            return
        self._dispatch(call, future)

    def _dispatch(self, call: TaskCall, future: VivaceFuture) -> None:
        if call.task.is_async:
            from vivace.engine.loop import submit

            done = submit(run_task_async(call))
            self._async_runs.add(done)

            def finished(f: concurrent.futures.Future[Any]) -> None:
                self._async_runs.discard(f)
                _finish_from(f, future)

            done.add_done_callback(finished)
            return
        pool = self._pool
        if pool is None:
            raise RuntimeError("ConcurrentTaskRunner.submit() called before start()")
        pool.submit(call, future)

    def __repr__(self) -> str:
        return f"ConcurrentTaskRunner(max_workers={self.max_workers})"


def _execute(call: TaskCall, future: VivaceFuture) -> None:
    try:
        state = run_task_sync(call)
    except BaseException:
        # The engine recorded CRASHED; the interrupt reaches the flow through the future's
        # state, and this worker thread lives on to run the next task.
        state = call.run.state
    future.set_final_state(state)


def _finish_from(done: Any, future: VivaceFuture) -> None:
    # The engine records CRASHED/CANCELLED itself; the future takes the run's last state.
    value = None if done.cancelled() or done.exception() is not None else done.result()
    future.set_final_state(value if isinstance(value, State) else future.task_run.state)


class _WorkerThreads:
    """A bounded pool of threads that start as work arrives.

    Lighter than ThreadPoolExecutor (no inner future or work item per task): the task's own
    VivaceFuture is the only completion object. The queue and the count of busy threads change
    under one lock, so "idle threads" (threads minus busy ones) is exact: a thread starts exactly
    when fewer threads are idle than runs are queued, up to ``max_workers`` plus one for every
    pool thread blocked waiting on another task (so tasks waiting on tasks cannot deadlock).
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._runs: deque[tuple[TaskCall, VivaceFuture]] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._busy = 0  # threads running a run
        self._blocked = 0  # of those, threads waiting on another task's future
        self.closed = False

    def submit(self, call: TaskCall, future: VivaceFuture) -> None:
        with self._ready:
            self._runs.append((call, future))
            self._wake_or_start()

    def _wake_or_start(self) -> None:
        # Called with the lock held.
        if len(self._threads) - self._busy >= len(self._runs):
            self._ready.notify()
        elif not self.closed and len(self._threads) < self.max_workers + self._blocked:
            thread = threading.Thread(
                target=self._work, name=f"vivace-task-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def enter_blocking(self) -> None:
        """A pool thread is about to wait on another task: lend the pool a thread meanwhile."""
        with self._ready:
            self._blocked += 1
            if self._runs:
                self._wake_or_start()

    def exit_blocking(self) -> None:
        with self._ready:
            self._blocked -= 1

    def _work(self) -> None:
        blocking_handler.pool = self
        ready, runs = self._ready, self._runs
        while True:
            with ready:
                while not runs:
                    if self.closed:
                        return
                    ready.wait()
                call, future = runs.popleft()
                self._busy += 1
            try:
                _execute(call, future)
            finally:
                del call, future  # an idle worker must not keep its last run's result alive
                with ready:
                    self._busy -= 1

    def shutdown(self, wait: bool) -> None:
        """Stop the threads; ``wait`` lets queued runs finish, otherwise they are cancelled."""
        with self._ready:
            self.closed = True
            cancelled = [] if wait else list(self._runs)
            if not wait:
                self._runs.clear()
            threads = list(self._threads)
            self._ready.notify_all()
        for call, future in cancelled:
            future.set_final_state(cancel_task_run(call, "the flow run ended first"))
        if wait:
            for thread in threads:
                thread.join()


def _unfinished_upstreams(call: TaskCall) -> list[VivaceFuture]:
    if call.upstreams is None:
        return []
    return [
        upstream
        for items in call.upstreams.values()
        for upstream in items
        if isinstance(upstream, VivaceFuture) and not upstream.done()
    ]
