"""Schedules and the server's services: scheduler, concurrency leases, notifications.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

New tables ``deployment_schedules``, ``concurrency_limits``, ``concurrency_leases``,
``notification_policies``, ``notification_deliveries`` and ``service_state``; deployments (and
their versions) gain ``skip_late_after`` and ``concurrency_limit``; flow runs gain the schedule
that made them, unique with the scheduled time, the interval of their heartbeats, and indexes
for the services and for deployment concurrency limits; flow-run states gain an index on their
time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp, UUIDType

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_DEPLOYMENT_COLUMNS = (("skip_late_after", sa.Float), ("concurrency_limit", sa.Integer))


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("schedule_id", UUIDType, nullable=True))
        batch.add_column(sa.Column("heartbeat_interval", sa.Float, nullable=True))
    op.create_index(
        "ux_flow_runs_schedule_expected_start",
        "flow_runs",
        ["schedule_id", "expected_start_time"],
        unique=True,
    )
    op.create_index(
        "ix_flow_runs_state_type_expected_start", "flow_runs", ["state_type", "expected_start_time"]
    )
    op.create_index("ix_flow_runs_deployment_state", "flow_runs", ["deployment_id", "state_type"])
    op.create_index("ix_flow_run_states_timestamp", "flow_run_states", ["timestamp"])
    for table in ("deployments", "deployment_versions"):
        with op.batch_alter_table(table) as batch:
            for name, kind in _DEPLOYMENT_COLUMNS:
                batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "deployment_schedules",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("deployment_id", UUIDType, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("schedule", JSONType, nullable=False),
        sa.Column("parameters", JSONType, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("filled_until", Timestamp, nullable=True),
        sa.Column("due_at", Timestamp, nullable=True),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_index(
        "ix_deployment_schedules_deployment_id",
        "deployment_schedules",
        ["deployment_id", "position"],
    )
    op.create_index("ix_deployment_schedules_due_at", "deployment_schedules", ["due_at"])
    op.create_table(
        "concurrency_limits",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("limit", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_table(
        "concurrency_leases",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("limit_name", sa.String(255), nullable=False),
        sa.Column("occupy", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired", Timestamp, nullable=False),
        sa.Column("expires", Timestamp, nullable=False),
    )
    op.create_index(
        "ix_concurrency_leases_limit_name", "concurrency_leases", ["limit_name", "expires"]
    )
    op.create_index("ix_concurrency_leases_expires", "concurrency_leases", ["expires"])
    op.create_table(
        "notification_policies",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("states", JSONType, nullable=False),
        sa.Column("flow_names", JSONType, nullable=True),
        sa.Column("tags", JSONType, nullable=True),
        sa.Column("deployment_names", JSONType, nullable=True),
        sa.Column("block_name", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("policy_id", UUIDType, nullable=False),
        sa.Column("flow_run_id", UUIDType, nullable=False),
        sa.Column("state_seq", sa.Integer, nullable=False),
        sa.Column("state_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("delivered", Timestamp, nullable=True),
    )
    op.create_index(
        "ux_notification_deliveries_policy_run_state",
        "notification_deliveries",
        ["policy_id", "flow_run_id", "state_seq"],
        unique=True,
    )
    op.create_index(
        "ix_notification_deliveries_status_next",
        "notification_deliveries",
        ["status", "next_attempt"],
    )
    op.create_index("ix_notification_deliveries_created", "notification_deliveries", ["created"])
    op.create_table(
        "service_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "service_state",
        "notification_deliveries",
        "notification_policies",
        "concurrency_leases",
        "concurrency_limits",
        "deployment_schedules",
    ):
        op.drop_table(table)
    for table in ("deployment_versions", "deployments"):
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(_DEPLOYMENT_COLUMNS):
                batch.drop_column(name)
    op.drop_index("ix_flow_run_states_timestamp", "flow_run_states")
    op.drop_index("ix_flow_runs_deployment_state", "flow_runs")
    op.drop_index("ix_flow_runs_state_type_expected_start", "flow_runs")
    op.drop_index("ux_flow_runs_schedule_expected_start", "flow_runs")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("heartbeat_interval")
        batch.drop_column("schedule_id")
