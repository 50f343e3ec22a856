"""One background event loop per process, shared by every async task that sync code runs.

Async tasks called from sync code (a sync flow, a worker thread) run here instead of getting a
fresh ``asyncio.run`` loop each: loop start-up is paid once, and async clients that cache
connections per loop keep working across tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's shared event loop, started on first use (again after a fork)."""
    global _loop, _thread, _pid
    if _loop is not None and _pid == os.getpid():
        return _loop
    with _lock:
        if _loop is None or _pid != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="vivace-event-loop", daemon=True
            )
            thread.start()
            _loop, _thread, _pid = loop, thread, os.getpid()
    assert _loop is not None
    return _loop


class Interrupted:
    """A KeyboardInterrupt or SystemExit raised by a coroutine on the shared loop, as a value."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _contain(coroutine: Coroutine[Any, Any, T]) -> T | Interrupted:
    # asyncio re-raises these two out of run_forever(), which would end the shared loop's thread
    # and leave every later async task of the process waiting forever. They leave as a value
    # instead, and the thread waiting for the result raises them.
    try:
        return await coroutine
    except (KeyboardInterrupt, SystemExit) as error:
        return Interrupted(error)


def submit(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T | Interrupted]:
    """Schedule ``coroutine`` on the shared loop; an interrupt comes back as ``Interrupted``."""
    return asyncio.run_coroutine_threadsafe(_contain(coroutine), background_loop())


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the shared loop and block the calling thread until it returns."""
    background_loop()
    if threading.current_thread() is _thread:
        # Blocking the shared loop on itself would deadlock: run this one on a private loop.
        return _run_on_private_loop(coroutine)
    value = submit(coroutine).result()
    if isinstance(value, Interrupted):
        raise value.error
    return value


def _run_on_private_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, name="vivace-nested-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
