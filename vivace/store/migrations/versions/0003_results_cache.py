"""Results, caching and resume: result references, call identities, entrypoints, the cache index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp, UUIDType

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _result_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("result_storage", sa.String(1024), nullable=True),
        sa.Column("result_key", sa.String(255), nullable=True),
        sa.Column("result_serializer", sa.String(255), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("entrypoint", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("opaque_parameters", JSONType, nullable=True))
        for column in _result_columns():
            batch.add_column(column)
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("dynamic_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("cache_key", sa.String(255), nullable=True))
        for column in _result_columns():
            batch.add_column(column)
    op.create_table(
        "task_cache",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("task_key", sa.String(512), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("task_run_id", UUIDType, nullable=True),
        sa.Column("result_storage", sa.String(1024), nullable=False),
        sa.Column("result_key", sa.String(255), nullable=False),
        sa.Column("result_serializer", sa.String(255), nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("expires", Timestamp, nullable=True),
    )
    op.create_index("ix_task_cache_task_name", "task_cache", ["task_name"])


def downgrade() -> None:
    op.drop_index("ix_task_cache_task_name", "task_cache")
    op.drop_table("task_cache")
    with op.batch_alter_table("task_runs") as batch:
        for name in ("result_serializer", "result_key", "result_storage", "cache_key"):
            batch.drop_column(name)
        batch.drop_column("dynamic_key")
    with op.batch_alter_table("flow_runs") as batch:
        for name in ("result_serializer", "result_key", "result_storage", "opaque_parameters"):
            batch.drop_column(name)
        batch.drop_column("entrypoint")
