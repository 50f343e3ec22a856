"""Timeouts for sync code.

Python cannot kill a thread. A sync task or flow with ``timeout_seconds`` therefore runs its
function on a helper thread while the caller waits at most ``timeout_seconds``. At the deadline:

1. the run ends FAILED, named ``TimedOut``, and the flow goes on;
2. :class:`TimeoutInterrupt` is raised *inside* the helper thread (``PyThreadState_SetAsyncExc``),
   which stops pure-Python code at its next bytecode. Code blocked in a C call (``time.sleep``, a
   socket read, a long NumPy operation) only sees it once that call returns; until then the thread
   keeps running in the background and its return value is discarded. The interrupt is a
   ``BaseException``: ``except Exception`` in user code does not swallow it, and a task that was
   running inside a timed-out flow ends CANCELLED instead of retrying.

Async code is cancelled at the deadline instead (``asyncio.timeout``), which stops it at its next
``await``.
"""

from __future__ import annotations

import contextvars
import ctypes
import threading
from collections.abc import Callable
from typing import Any

from vivace.exceptions import TaskTimeoutError


class TimeoutInterrupt(BaseException):
    """Raised inside a timed-out run's helper thread to stop it; a signal, not an error."""


def timeout_error(kind: str, name: str, seconds: float) -> TaskTimeoutError:
    return TaskTimeoutError(f"{kind} run {name!r} exceeded its timeout of {seconds:g} seconds")


def call_with_timeout(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    seconds: float,
    error: TaskTimeoutError,
) -> Any:
    """``fn(*args, **kwargs)``, or raise ``error`` if it runs longer than ``seconds``."""
    box: list[Any] = []
    finished = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box.append((True, context.run(fn, *args, **kwargs)))
        except BaseException as raised:
            box.append((False, raised))
        finally:
            finished.set()

    thread = threading.Thread(target=target, name="vivace-timeout", daemon=True)
    thread.start()
    if not finished.wait(seconds):
        _interrupt(thread)
        raise error
    ok, value = box[0]
    if ok:
        return value
    raise value


def _interrupt(thread: threading.Thread) -> None:
    """Raise TimeoutInterrupt inside ``thread`` at its next Python bytecode."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(TimeoutInterrupt)
        )
