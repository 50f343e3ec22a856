"""The run-history database: tables, migrations, the batched writer and the read helpers.

Imported only when the store is used; it needs SQLAlchemy, never Alembic until a migration runs.
"""

from vivace.store.queries import (
    count_flow_runs_by_state,
    count_task_runs,
    read_flow_run,
    read_flow_run_states,
    read_flow_runs,
    read_flows,
    read_logs,
    read_subflow_runs,
    read_task_run,
    read_task_run_states,
    read_task_runs,
)
from vivace.store.records import (
    FlowRecord,
    FlowRunRecord,
    LogRecord,
    StateRecord,
    TaskRunRecord,
)

__all__ = [
    "FlowRecord",
    "FlowRunRecord",
    "LogRecord",
    "StateRecord",
    "TaskRunRecord",
    "count_flow_runs_by_state",
    "count_task_runs",
    "read_flow_run",
    "read_flow_run_states",
    "read_flow_runs",
    "read_flows",
    "read_logs",
    "read_subflow_runs",
    "read_task_run",
    "read_task_run_states",
    "read_task_runs",
]
