"""Flow-run states record when they were written.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

``flow_run_states`` gains ``recorded`` (when the row was written, indexed): a state can land
long after it was entered, when its writer waited out a database outage, and the notification
service reads new states by this time instead of the state's own. Rows written before this
revision keep NULL there, and the service reads those by their state's time, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vivace.store.types import Timestamp

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable and without a default: a plain ALTER TABLE on both backends, which leaves the
    # rows there are as they are (no rewrite of a long history).
    op.add_column("flow_run_states", sa.Column("recorded", Timestamp, nullable=True))
    op.create_index("ix_flow_run_states_recorded", "flow_run_states", ["recorded"])


def downgrade() -> None:
    op.drop_index("ix_flow_run_states_recorded", "flow_run_states")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a copy of the table.
    with op.batch_alter_table("flow_run_states", recreate="never") as batch:
        batch.drop_column("recorded")
