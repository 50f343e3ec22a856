"""Runs the server's services, one daemon thread each, until stopped.

A loop that raises is logged (once per streak of failures, with its traceback) and tried again
at the next interval: a database that is down for a while stops no service for good. After each
loop the service's row in ``service_state`` records when it ran, how long it took and what it
did (or the error), which ``vivace server services ls`` shows.

Example::

    runner = ServiceRunner(url)
    runner.start()
    ...
    runner.stop()
"""

from __future__ import annotations

import logging
import threading
import time

from vivace.engine.states import describe_exception
from vivace.services import load_services
from vivace.services.base import Service
from vivace.settings import get_settings
from vivace.store.service_state import update_service_data

logger = logging.getLogger("vivace.services")

FALLBACK_INTERVAL = 60.0
"""Seconds between loops of a service whose interval cannot be read (a setting gone bad)."""


class ServiceRunner:
    """The services named (all when None) over the database at ``url``, each on its thread."""

    def __init__(self, url: str, names: tuple[str, ...] | None = None) -> None:
        self.url = url
        settings = get_settings()
        self.services = [service for service in load_services(names) if service.enabled(settings)]
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for service in self.services:
            thread = threading.Thread(
                target=self._run, args=(service,), name=f"vivace-{service.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop every loop (a loop in progress finishes); return whether all have stopped."""
        self._stopped.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def wait(self) -> None:
        """Block until ``stop()`` is called (from a signal handler or another thread)."""
        while not self._stopped.wait(1.0):
            pass

    def _run(self, service: Service) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                failing = run_loop(self.url, service, failing)
            except Exception:  # the thread must outlive anything, even a failing error report
                if not failing:
                    logger.exception("service %s: its loop could not be run", service.name)
                failing = True
            if self._stopped.wait(_interval(service)):
                return


def _interval(service: Service) -> float:
    """Seconds until ``service``'s next loop; ``FALLBACK_INTERVAL`` if they cannot be read."""
    try:
        return service.interval(get_settings())
    except Exception:
        logger.exception(
            "service %s: cannot read its interval; looping again in %g s",
            service.name,
            FALLBACK_INTERVAL,
        )
        return FALLBACK_INTERVAL


def run_loop(url: str, service: Service, failing: bool = False) -> bool:
    """One loop of ``service``, logged and recorded; return whether it failed.

    ``failing``: whether the previous loop failed (a streak of failures is logged once).
    """
    started = time.time()
    try:
        summary = service.loop(url)
    except Exception as error:
        if not failing:
            logger.exception("service %s: its loop failed; trying again", service.name)
        seconds = time.time() - started
        error_text = _describe(error)
        _record(url, service, {"last_loop": started, "seconds": seconds, "error": error_text})
        return True
    if failing:
        logger.info("service %s: looping again after failures", service.name)
    if summary:
        logger.info("service %s: %s", service.name, summary)
    seconds = time.time() - started
    _record(
        url,
        service,
        {"last_loop": started, "seconds": seconds, "error": None, "summary": summary},
    )
    return False


def _describe(error: Exception) -> str:
    """The error in one line; its type's name alone when its text cannot be had."""
    try:
        return describe_exception(error)
    except Exception:  # a __str__ that raises
        return f"{type(error).__name__} (its message could not be read)"


def _record(url: str, service: Service, outcome: dict[str, object]) -> None:
    """Write the loop's outcome under ``loop`` in the service's row; never raise (the database
    may be what failed)."""
    try:
        update_service_data(url, service.name, {"loop": outcome})
    except Exception:
        logger.debug("service %s: could not record its loop", service.name, exc_info=True)
