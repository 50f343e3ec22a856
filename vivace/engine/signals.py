"""SIGTERM during a flow run: end it as CRASHED, with its records written, instead of vanishing.

Python's default SIGTERM action kills the process at once, so a flow stopped by ``kill``, a
container stop or a Kubernetes pod eviction would leave its runs RUNNING forever. While a top-level
flow runs in the main thread and nobody else has set a SIGTERM handler, vivace turns SIGTERM into
``SystemExit(143)``: the engine records CRASHED, flushes the writer, and the process exits with the
usual status.
"""

from __future__ import annotations

import signal
import threading
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
