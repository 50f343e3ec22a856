"""The run-history tables: flows, flow and task runs with their state history, and logs.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

No foreign keys, on purpose (see ``vivace/store/schema.py``): batches from different processes may
commit a child row before its parent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp, UUIDType

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _state_history_table(name: str, run_id: str) -> None:
    op.create_table(
        name,
        sa.Column(run_id, UUIDType, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("timestamp", Timestamp, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        # Small rows under a composite key: on SQLite one B-tree instead of a table plus index.
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created", Timestamp, nullable=False),
    )

    op.create_table(
        "flow_runs",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("flow_id", UUIDType, nullable=False),
        sa.Column("flow_name", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("parent_flow_run_id", UUIDType, nullable=True),
        sa.Column("parent_task_run_id", UUIDType, nullable=True),
        sa.Column("state_type", sa.String(16), nullable=False),
        sa.Column("state_name", sa.String(64), nullable=False),
        sa.Column("state_timestamp", Timestamp, nullable=False),
        sa.Column("state_message", sa.Text, nullable=True),
        sa.Column("state_seq", sa.Integer, nullable=False),
        sa.Column("start_time", Timestamp, nullable=True),
        sa.Column("end_time", Timestamp, nullable=True),
        sa.Column("run_count", sa.Integer, nullable=False),
        sa.Column("tags", JSONType, nullable=True),
        sa.Column("parameters", JSONType, nullable=True),
        sa.Column("created", Timestamp, nullable=False),
    )
    op.create_index("ix_flow_runs_flow_id_start_time", "flow_runs", ["flow_id", "start_time"])
    op.create_index("ix_flow_runs_state_type_start_time", "flow_runs", ["state_type", "start_time"])
    op.create_index("ix_flow_runs_start_time", "flow_runs", ["start_time"])
    op.create_index("ix_flow_runs_created", "flow_runs", ["created"])
    op.create_index("ix_flow_runs_parent_flow_run_id", "flow_runs", ["parent_flow_run_id"])
    if op.get_bind().dialect.name == "postgresql":
        # The tags filter (``tags @> [...]``); SQLite has no index for containment in JSON.
        op.create_index(
            "ix_flow_runs_tags",
            "flow_runs",
            ["tags"],
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        )

    _state_history_table("flow_run_states", "flow_run_id")

    op.create_table(
        "task_runs",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("flow_run_id", UUIDType, nullable=True),
        sa.Column("parent_task_run_id", UUIDType, nullable=True),
        sa.Column("task_key", sa.String(512), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state_type", sa.String(16), nullable=False),
        sa.Column("state_name", sa.String(64), nullable=False),
        sa.Column("state_timestamp", Timestamp, nullable=False),
        sa.Column("state_message", sa.Text, nullable=True),
        sa.Column("state_seq", sa.Integer, nullable=False),
        sa.Column("start_time", Timestamp, nullable=True),
        sa.Column("end_time", Timestamp, nullable=True),
        sa.Column("run_count", sa.Integer, nullable=False),
        sa.Column("tags", JSONType, nullable=True),
        sa.Column("task_inputs", JSONType, nullable=True),
        sa.Column("created", Timestamp, nullable=False),
    )
    # Few indexes on the table written once per task: a run's tasks in order, and time ranges.
    op.create_index(
        "ix_task_runs_flow_run_id_start_time", "task_runs", ["flow_run_id", "start_time"]
    )
    op.create_index("ix_task_runs_start_time", "task_runs", ["start_time"])

    _state_history_table("task_run_states", "task_run_id")

    op.create_table(
        "logs",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("flow_run_id", UUIDType, nullable=True),
        sa.Column("task_run_id", UUIDType, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("timestamp", Timestamp, nullable=False),
    )
    op.create_index("ix_logs_flow_run_id_timestamp", "logs", ["flow_run_id", "timestamp"])
    op.create_index("ix_logs_task_run_id_timestamp", "logs", ["task_run_id", "timestamp"])


def downgrade() -> None:
    for table in ("logs", "task_run_states", "task_runs", "flow_run_states", "flow_runs", "flows"):
        op.drop_table(table)  # dropping a table drops its indexes
