"""Read indexes: a flow run's log lines in order, with their level, so a level filter is cheap.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

``ix_logs_flow_run_id_timestamp`` becomes ``ix_logs_flow_run_id_timestamp_level``: the same order
(a run's lines by time), with the level as a third column. Filtering a run's lines by level
("WARNING and above") walks the run's index entries in time order either way; with the level in
the entry, a line below the level is skipped without reading its row. Measured with
``benchmarks/api_read.py`` on a run of 205,000 lines and no ERROR line, the first page of
``level=ERROR`` took 433 ms on PostgreSQL and 66 ms on SQLite before, 13 ms and 14 ms after; the
table keeps the same number of indexes, so inserting a line costs about what it did
(``benchmarks/index_write_cost.py``; figures in benchmarks/RESULTS.md).

On a large existing ``logs`` table the upgrade builds the index while holding a write lock (a few
seconds per million lines); the old index serves reads until the new one is built.
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_logs_flow_run_id_timestamp_level", "logs", ["flow_run_id", "timestamp", "level"]
    )
    op.drop_index("ix_logs_flow_run_id_timestamp", "logs")


def downgrade() -> None:
    op.create_index("ix_logs_flow_run_id_timestamp", "logs", ["flow_run_id", "timestamp"])
    op.drop_index("ix_logs_flow_run_id_timestamp_level", "logs")
