"""The run a path names, or a 404 that says which id is unknown."""

from __future__ import annotations

import uuid

from fastapi import HTTPException

from vivace.store import queries
from vivace.store.records import FlowRunRecord, TaskRunRecord


def flow_run_or_404(database_url: str, flow_run_id: uuid.UUID) -> FlowRunRecord:
    """The flow run, or HTTP 404 ``flow run <id> not found``."""
    run = queries.read_flow_run(database_url, flow_run_id)
    if run is None:
        raise HTTPException(404, f"flow run {flow_run_id} not found")
    return run


def task_run_or_404(database_url: str, task_run_id: uuid.UUID) -> TaskRunRecord:
    """The task run, or HTTP 404 ``task run <id> not found``."""
    run = queries.read_task_run(database_url, task_run_id)
    if run is None:
        raise HTTPException(404, f"task run {task_run_id} not found")
    return run
