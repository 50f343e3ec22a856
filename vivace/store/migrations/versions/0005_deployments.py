"""Deployments, work queues and workers: runs created from the server and started by workers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

New tables ``deployments`` (the latest version of each), ``deployment_versions`` (every version,
which a run keeps), ``work_queues`` and ``workers``; flow runs gain the columns a deployment run
needs (its deployment and version, queue, expected start, idempotency key, infrastructure type,
the worker that claimed it, what that worker launched, the engine's heartbeat), all empty on
runs made by calling a flow.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp, UUIDType

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_FLOW_RUN_COLUMNS = (
    ("deployment_id", UUIDType),
    ("deployment_version", sa.Integer),
    ("work_queue_name", sa.String(255)),
    ("expected_start_time", Timestamp),
    ("idempotency_key", sa.String(255)),
    ("infrastructure_type", sa.String(32)),
    ("worker_id", UUIDType),
    ("infrastructure_id", sa.String(255)),
    ("heartbeat", Timestamp),
)


def _deployment_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("flow_name", sa.String(255), nullable=False),
        sa.Column("entrypoint", sa.String(1024), nullable=False),
        sa.Column("storage", JSONType, nullable=False),
        sa.Column("parameter_schema", JSONType, nullable=False),
        sa.Column("parameters", JSONType, nullable=False),
        sa.Column("infrastructure", JSONType, nullable=False),
        sa.Column("work_queue_name", sa.String(255), nullable=False),
        sa.Column("tags", JSONType, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        for name, kind in _FLOW_RUN_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_index(
        "ix_flow_runs_queue_state_expected_start",
        "flow_runs",
        ["work_queue_name", "state_type", "expected_start_time"],
    )
    op.create_index("ix_flow_runs_deployment_id_created", "flow_runs", ["deployment_id", "created"])
    op.create_index(
        "ux_flow_runs_deployment_idempotency_key",
        "flow_runs",
        ["deployment_id", "idempotency_key"],
        unique=True,
    )
    op.create_table(
        "deployments",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        *_deployment_columns(),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_table(
        "deployment_versions",
        sa.Column("deployment_id", UUIDType, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        *_deployment_columns(),
        sa.Column("created", Timestamp, nullable=False),
    )
    op.create_table(
        "work_queues",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("concurrency_limit", sa.Integer, nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("last_polled", Timestamp, nullable=True),
    )
    op.create_table(
        "workers",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("queues", JSONType, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started", Timestamp, nullable=False),
        sa.Column("heartbeat", Timestamp, nullable=False),
    )


def downgrade() -> None:
    for table in ("workers", "work_queues", "deployment_versions", "deployments"):
        op.drop_table(table)
    op.drop_index("ux_flow_runs_deployment_idempotency_key", "flow_runs")
    op.drop_index("ix_flow_runs_deployment_id_created", "flow_runs")
    op.drop_index("ix_flow_runs_queue_state_expected_start", "flow_runs")
    with op.batch_alter_table("flow_runs") as batch:
        for name, _ in reversed(_FLOW_RUN_COLUMNS):
            batch.drop_column(name)
