"""Run logging: ``get_run_logger()``, the handler that sends run logs to the store, print capture.

Run logs go to two places: the console (stderr) and, through the process's batched writer, the
``logs`` table with the flow run and task run ids they belong to.
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

from vivace.engine.context import RunContext, current_context
from vivace.engine.states import State
from vivace.exceptions import MissingContextError

FLOW_RUN_LOGGER = "vivace.flow_runs"
TASK_RUN_LOGGER = "vivace.task_runs"


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose records carry the ids of the run that made them."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = kwargs.get("extra")
        kwargs["extra"] = self.extra if not extra else {**extra, **(self.extra or {})}
        return msg, kwargs


def logger_for(ctx: RunContext) -> RunLogger:
    """The run logger of the flow run or task run that ``ctx`` describes."""
    flow_run = ctx.flow_run
    task_run = ctx.task_run
    extra = {
        "flow_run_id": None if flow_run is None else flow_run.id,
        "task_run_id": None if task_run is None else task_run.id,
        "vivace_writer": ctx.writer,
        "run_label": (
            f"Task run {task_run.name!r}"
            if task_run is not None
            else f"Flow run {flow_run.name!r}"
            if flow_run is not None
            else "vivace"
        ),
    }
    name = TASK_RUN_LOGGER if task_run is not None else FLOW_RUN_LOGGER
    return RunLogger(logging.getLogger(name), extra)


def log_for_run(
    logger: logging.Logger,
    level: int,
    message: str,
    *,
    flow_run_id: Any,
    task_run_id: Any,
    writer: Any,
    label: str,
    error: BaseException | None = None,
) -> None:
    """Log an engine message about a run: to the console and, with the run's ids, the store."""
    logger.log(
        level,
        message,
        exc_info=(type(error), error, error.__traceback__) if error is not None else None,
        extra={
            "flow_run_id": flow_run_id,
            "task_run_id": task_run_id,
            "vivace_writer": writer,
            "run_label": label,
        },
    )


def retry_note(state: State, delay: float) -> str:
    """The log line for a scheduled retry: ``Attempt 1 of 3 failed: ...; retrying in 2 s``."""
    message = state.message or "attempt failed"
    return f"{message[0].upper()}{message[1:]}; retrying in {delay:g} s"


def get_run_logger() -> RunLogger:
    """The logger of the current flow or task run; its records are stored with the run."""
    ctx = current_context()
    if ctx is None:
        raise MissingContextError(
            "get_run_logger() was called outside of a flow or task run; call it inside a "
            "function decorated with @flow or @task, or use logging.getLogger() elsewhere"
        )
    return logger_for(ctx)


class StoreHandler(logging.Handler):
    """Queues run log records on the batched writer of the run that made them."""

    def emit(self, record: logging.LogRecord) -> None:
        writer = getattr(record, "vivace_writer", None)
        if writer is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self.formatException(record.exc_info)}"
            writer.record_log(
                getattr(record, "flow_run_id", None),
                getattr(record, "task_run_id", None),
                record.name,
                record.levelno,
                message,
                record.created,
            )
        except Exception:
            self.handleError(record)

    def formatException(self, ei: Any) -> str:
        return logging.Formatter().formatException(ei)


class ConsoleFormatter(logging.Formatter):
    """``12:00:01.123 | INFO    | Task run 'load-0' - message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(label)s - %(message)s")
        self.default_time_format = "%H:%M:%S"
        self.default_msec_format = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        import time

        return time.strftime("%H:%M:%S", time.localtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        record.label = getattr(record, "run_label", record.name)
        return super().format(record)


_setup_lock = threading.Lock()
_configured = False


def setup_logging() -> None:
    """Attach vivace's console and store handlers once per process."""
    global _configured
    if _configured:
        return
    with _setup_lock:
        if _configured:
            return
        from vivace.settings import get_settings

        settings = get_settings()
        root = logging.getLogger("vivace")
        root.setLevel(settings.logging_level)
        store = StoreHandler()
        for name in (FLOW_RUN_LOGGER, TASK_RUN_LOGGER):
            logging.getLogger(name).addHandler(store)
        if settings.logging_console:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(ConsoleFormatter())
            root.addHandler(console)
            root.propagate = False  # the console handler already prints: no duplicates via root
        _configured = True


_original_print = builtins.print


def _print_to_run_log(*args: Any, **kwargs: Any) -> None:
    """``print`` that, inside a run with ``log_prints=True``, logs to the run logger instead."""
    ctx = current_context()
    file = kwargs.get("file")
    if ctx is None or not ctx.log_prints or (file is not None and file is not sys.stdout):
        _original_print(*args, **kwargs)
        return
    sep = kwargs.get("sep")
    text = (" " if sep is None else sep).join(map(str, args))
    logger_for(ctx).info(text)


def install_print_capture() -> None:
    """Route ``print`` through the run logger for runs with ``log_prints=True`` (idempotent)."""
    if builtins.print is not _print_to_run_log:
        builtins.print = _print_to_run_log
