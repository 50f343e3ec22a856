"""SIGTERM during a flow run: end it as CRASHED, with its records written, instead of vanishing.

Python's default SIGTERM action kills the process at once, so a flow stopped by ``kill``, a
container stop or a Kubernetes pod eviction would leave its runs RUNNING forever. While a top-level
flow runs in the main thread and nobody else has set a SIGTERM handler, vivace turns SIGTERM into
``SystemExit(143)``: the engine records CRASHED, flushes the writer, and the process exits with the
usual status.

The process of a deployment's flow run (``python -m vivace.engine``) has the same rule for its
whole life, not only while the flow runs (:func:`install_process_sigterm_handler`): a SIGTERM
while it fetches the code or imports the flow also ends the run, recorded, and removes its
temporary folder. Once the run has ended (:func:`run_ended`), further SIGTERMs are ignored: the
process is only writing out its records and cleaning up, and exits by itself.

A flow run of a deployment is also stopped when it is cancelled: its heartbeat thread, on finding
the run CANCELLING, sends the main thread ``CANCEL_SIGNAL``, whose handler raises
:class:`FlowRunCancelled`, and the engine ends the run CANCELLED.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_handler() -> Any:
    """Install the handler if SIGTERM has its default action; return what to restore, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # the application handles SIGTERM itself
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return signal.SIG_DFL


def restore_sigterm_handler(previous: Any) -> None:
    if previous is not None and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
        signal.signal(signal.SIGTERM, previous)


# -- the process of a deployment's flow run -------------------------------------------------------

_ending = threading.Event()


def _exit_unless_ended(signum: int, frame: FrameType | None) -> None:
    if _ending.is_set():
        return  # the run is over: its records and temporary folder are being seen to
    _ending.set()  # one SystemExit: a second SIGTERM must not cut the first one's clean-up
    raise SystemExit(128 + signum)


def install_process_sigterm_handler() -> Any:
    """From now on, SIGTERM raises ``SystemExit(143)`` in the main thread once, until
    :func:`run_ended`; then it is ignored. Returns what to restore (None outside the main
    thread, where nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _ending.clear()
    return signal.signal(signal.SIGTERM, _exit_unless_ended)


def restore_process_sigterm_handler(previous: Any) -> None:
    if previous is not None and signal.getsignal(signal.SIGTERM) is _exit_unless_ended:
        signal.signal(signal.SIGTERM, previous)


def run_ended() -> None:
    """The process's flow run reached a final state: SIGTERM is ignored from now on (when the
    process handler is installed; else nothing changes)."""
    _ending.set()


# -- cancelling a deployment's flow run ----------------------------------------------------------


class FlowRunCancelled(BaseException):
    """Raised in a deployment's flow run when its heartbeat finds it CANCELLING, to stop it.

    A control-flow signal, not an error (a BaseException, so ``except Exception`` in the flow's
    code does not swallow it); the engine ends the run CANCELLED.
    """


CANCEL_SIGNAL = signal.SIGUSR1
"""What the heartbeat thread sends the main thread: a real signal wakes it from a sleep or a
wait (a lock, an event), where an exception set from another thread would wait for it to return."""


def install_cancel_handler(should_raise: Callable[[], bool]) -> Any:
    """Raise FlowRunCancelled in the main thread on CANCEL_SIGNAL when ``should_raise()`` says so.

    The check runs in the main thread, when the signal is handled, so a signal that arrives
    after the run stopped listening does nothing. Returns what to restore, or None when not in
    the main thread or when the application handles the signal itself (then the handler is not
    installed).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(CANCEL_SIGNAL) not in (signal.SIG_DFL, None):
        return None

    def _cancel(signum: int, frame: FrameType | None) -> None:
        if should_raise():
            raise FlowRunCancelled("cancellation was requested")

    signal.signal(CANCEL_SIGNAL, _cancel)
    return signal.SIG_DFL


def restore_cancel_handler(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(CANCEL_SIGNAL, previous)


def interrupt_main_thread() -> None:
    """Send CANCEL_SIGNAL to the main thread (from another thread of this process)."""
    signal.pthread_kill(threading.main_thread().ident or 0, CANCEL_SIGNAL)
