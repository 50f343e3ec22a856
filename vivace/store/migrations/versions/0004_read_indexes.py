"""Read indexes: a flow run's log lines in order, with their level, so a level filter is cheap.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

``ix_logs_flow_run_id_timestamp`` becomes ``ix_logs_flow_run_id_timestamp_level``: the same order
(a run's lines by time), with the level as a third column. Filtering a run's lines by level
("WARNING and above") walks the run's index entries in time order either way; with the level in
the entry, a line below the level is skipped without reading its row. On a run of 205,000 lines
(``benchmarks/api_read.py``, 1,000,000 task runs), the first page of ``level=WARNING`` or
``level=ERROR`` took 36 ms (p50) / 101 ms (p95) on SQLite and 34 / 64 ms on PostgreSQL before,
13 / 21 ms and 5 / 13 ms after. The table keeps the same number of indexes, so inserting a line
costs what it did, within 2% (``benchmarks/index_write_cost.py``; figures in
benchmarks/RESULTS.md).

On an existing ``logs`` table the upgrade builds the new index while holding the write lock
(about a second per million lines here: 1.9 s on SQLite, 1.2 s on PostgreSQL for 2,000,000);
reads go on, on the old index, until it is built.
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
