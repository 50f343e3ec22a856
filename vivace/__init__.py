"""vivace: Python workflows whose orchestration costs almost nothing per task.

Importing vivace is cheap: the database layer, pydantic validation, Dask and Ray are loaded only
when a flow first runs or a runner is used.
"""

from __future__ import annotations

from vivace.concurrency_limits import concurrency
from vivace.deployments.runs import run_deployment
from vivace.engine.flows import Flow, flow
from vivace.engine.futures import VivaceFuture, as_completed, unmapped, wait
from vivace.engine.run_logging import get_run_logger
from vivace.engine.states import State, StateType
from vivace.engine.tasks import Task, task
from vivace.results.resume import resume_flow_run
from vivace.schedules import Cron, Interval, RRule

__version__ = "0.1.0"

__all__ = [
    "Cron",
    "Flow",
    "Interval",
    "RRule",
    "State",
    "StateType",
    "Task",
    "VivaceFuture",
    "__version__",
    "as_completed",
    "concurrency",
    "flow",
    "get_run_logger",
    "resume_flow_run",
    "run_deployment",
    "task",
    "unmapped",
    "wait",
]
