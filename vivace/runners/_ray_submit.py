"""How :class:`~vivace.runners.ray.RayTaskRunner` hands its Ray tasks to Ray: through Ray's own
submission code, with Ray's per-call preamble paid once per flow run.

Every ``.remote()`` call first resolves the task's options again (defaults, runtime env,
placement-group context, the function's export), about 25 us of the driver's time, a third of
what submitting a task costs it, and only then builds *invocation*: Ray's closure that checks and
flattens the arguments and hands the task to the core worker. Ray applies the function's
``__ray_invocation_decorator__`` to that closure on every call; :func:`keep_invocation` is ours.
A :class:`Submitter` sends its first task with ``.remote()``, keeps the closure Ray built for it,
and calls that closure for the next tasks: Ray itself still checks, builds and sends every one.

What the preamble resolves does not change within a flow run, with these exceptions:

- Ray traces tasks (each call opens a span) or has a task-launch hook: every task goes through
  ``.remote()``. Checked when the flow run sends its first task: tracing or a hook set up later
  in the flow run is not seen.
- Ray Client: ``.remote()`` goes to the client, which builds no closure; every task goes through
  ``.remote()``.
- Ray was shut down or started again since the closure was kept: the closure is dropped and the
  next task goes through ``.remote()`` (which, as Ray's own auto-init does, starts a Ray if none
  runs), then its closure is kept.
- The placement-group context (a flow run inside a Ray task of a placement group that captures
  its child tasks) is the one the first send saw, on whichever thread sent it.

Runs with placement options go through ``.options(...).remote()`` (see the runner).

Ray is imported only inside the methods, which run once the runner has found it installed.
"""

from __future__ import annotations

import threading
from typing import Any

# The thread's learning Submitter puts a list here while its .remote() call runs.
_learning = threading.local()


def keep_invocation(invocation: Any) -> Any:
    """Ray's invocation decorator for vivace's remote functions: hands the closure to the
    Submitter learning on this thread, if any, and leaves it as it is."""
    slot = getattr(_learning, "slot", None)
    if slot is not None and not slot:
        slot.append(invocation)
    return invocation


class Submitter:
    """Sends the Ray tasks of one remote function (with its default options) for one flow run."""

    __slots__ = ("_always_remote", "_core_worker", "_invocation", "_remote_function", "_worker")

    def __init__(self, remote_function: Any) -> None:
        self._remote_function = remote_function
        self._invocation: Any = None
        self._worker: Any = None
        self._core_worker: Any = None  # the core worker the kept closure was built with
        self._always_remote = False  # .remote() every time (see the module documentation)

    def remote(self, *args: Any) -> Any:
        """``remote_function.remote(*args)``: the task's object ref (a list of them for several
        returns)."""
        invocation = self._invocation
        if invocation is not None:
            worker = self._worker
            if worker.connected and getattr(worker, "core_worker", None) is self._core_worker:
                return invocation(args, {})
            self._invocation = None  # Ray went away, or was started again: learn again
        if self._always_remote:
            return self._remote_function.remote(*args)
        return self._learn(args)

    def _learn(self, args: tuple[Any, ...]) -> Any:
        import ray

        if not _may_keep():
            self._always_remote = True
            return self._remote_function.remote(*args)
        worker = ray._private.worker.global_worker
        slot: list[Any] = []
        _learning.slot = slot
        try:
            refs = self._remote_function.remote(*args)
        finally:
            _learning.slot = None
        if not slot:  # Ray Client: the call went to the client, which builds no closure
            self._always_remote = True
            return refs
        self._worker = worker
        self._core_worker = getattr(worker, "core_worker", None)
        self._invocation = slot[0]
        return refs


def _may_keep() -> bool:
    """Whether Ray does nothing per ``.remote()`` call that the kept closure would skip: no
    tracing, no task-launch hook. A Ray whose private names differ (not the version vivace
    pins) means no."""
    try:
        from ray import remote_function
        from ray.util.tracing.tracing_helper import _is_tracing_enabled
    except ImportError:  # pragma: no cover - depends on the Ray version installed
        return False
    if getattr(remote_function, "_task_launch_hook", True) is not None:
        return False
    return not _is_tracing_enabled()
