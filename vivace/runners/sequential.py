"""Runs each submitted task at once, on the flow's own thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vivace.engine.futures import VivaceFuture
from vivace.engine.task_engine import run_task_blocking
from vivace.runners.base import TaskRunner

if TYPE_CHECKING:
    from vivace.engine.task_engine import TaskCall


class SequentialTaskRunner(TaskRunner):
    """``.submit()`` runs the task to completion before returning its (finished) future."""

    def submit(self, call: TaskCall) -> VivaceFuture:
        future = VivaceFuture(call.run)
        future.set_final_state(run_task_blocking(call))
        return future
