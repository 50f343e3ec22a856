"""The run a page is about, or a 404 that says which id was not found."""

from __future__ import annotations

from vivace._ids import parse_id
from vivace.exceptions import ConfigurationError
from vivace.server.ui.routing import PageError
from vivace.store.queries import read_flow_run, read_task_run
from vivace.store.records import FlowRunRecord, TaskRunRecord


def find_flow_run(database_url: str, flow_run_id: str) -> FlowRunRecord:
    """The flow run with this id; a 404 if the id is malformed or no run has it."""
    run = read_flow_run(database_url, _id(flow_run_id, "flow run"))
    if run is None:
        raise PageError(404, f"flow run {flow_run_id} not found")
    return run


def find_task_run(database_url: str, task_run_id: str) -> TaskRunRecord:
    """The task run with this id; a 404 if the id is malformed or no run has it."""
    run = read_task_run(database_url, _id(task_run_id, "task run"))
    if run is None:
        raise PageError(404, f"task run {task_run_id} not found")
    return run


def _id(value: str, what: str) -> str:
    # A malformed id in a page's path is a page that does not exist, so 404 rather than 400.
    try:
        return str(parse_id(value, f"{what} id"))
    except ConfigurationError as error:
        raise PageError(404, f"{what} {value!r} not found: {error}") from None
