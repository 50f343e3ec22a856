"""API keys, blocks, and the writers' health rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp, UUIDType

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("last_used", Timestamp, nullable=True),
        sa.Column("revoked", Timestamp, nullable=True),
    )
    op.create_table(
        "blocks",
        sa.Column("id", UUIDType, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("block_type", sa.String(512), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_table(
        "writer_stats",
        sa.Column("writer_id", UUIDType, primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queue_depth", sa.Integer, nullable=False),
        sa.Column("last_flush_seconds", sa.Float, nullable=False),
        sa.Column("records_written", sa.BigInteger, nullable=False),
        sa.Column("flushes", sa.BigInteger, nullable=False),
        sa.Column("started", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
    )
    op.create_index("ix_writer_stats_updated", "writer_stats", ["updated"])


def downgrade() -> None:
    op.drop_index("ix_writer_stats_updated", "writer_stats")
    op.drop_table("writer_stats")
    op.drop_table("blocks")
    op.drop_table("api_keys")
