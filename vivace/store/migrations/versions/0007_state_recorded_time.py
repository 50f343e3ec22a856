"""Flow-run states record when they were written.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

``flow_run_states`` gains ``recorded``: when the row was written, indexed. A state can land long
after it was entered, when its writer waited out a database outage, and the notification
service reads new states by this time instead of the state's own, whose index (0006) it no
longer needs.

- Rows the notification service may still read (entered since its cursor, or in its 5-minute
  look-back) get their state's time as ``recorded``; older rows stay NULL, never read again.
- A row inserted without the column (by a process still running an older vivace) gets the
  database's time: a column default on PostgreSQL, a trigger on SQLite (whose ALTER TABLE
  cannot add a column with a non-constant default).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from vivace.store.types import JSONType, Timestamp

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

LOOKBACK_SECONDS = 300.0  # the notification service's look-back (services/notifications.py)
_SQLITE_TRIGGER = "flow_run_states_recorded"
_SQLITE_NOW = "(julianday('now') - 2440587.5) * 86400.0"  # Unix seconds, as the column holds


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Nullable: a plain ALTER TABLE on both backends, no rewrite of a long history.
    op.add_column("flow_run_states", sa.Column("recorded", Timestamp, nullable=True))
    states = sa.table(
        "flow_run_states",
        sa.column("recorded", Timestamp),
        sa.column("timestamp", Timestamp),
    )
    op.execute(
        sa.update(states)
        .where(states.c.timestamp >= _oldest_still_read())
        .values(recorded=states.c.timestamp)
    )
    op.create_index("ix_flow_run_states_recorded", "flow_run_states", ["recorded"])
    op.drop_index("ix_flow_run_states_timestamp", "flow_run_states")
    if postgres:
        op.execute("ALTER TABLE flow_run_states ALTER COLUMN recorded SET DEFAULT now()")
    else:
        op.execute(
            f"CREATE TRIGGER {_SQLITE_TRIGGER} AFTER INSERT ON flow_run_states "
            "WHEN NEW.recorded IS NULL BEGIN "
            f"UPDATE flow_run_states SET recorded = {_SQLITE_NOW} "
            "WHERE flow_run_id = NEW.flow_run_id AND seq = NEW.seq; END"
        )


def _oldest_still_read() -> float:
    """The notification service reads states from its cursor, or its look-back, on."""
    service_state = sa.table("service_state", sa.column("name"), sa.column("data", JSONType))
    data = (
        op.get_bind()
        .execute(sa.select(service_state.c.data).where(service_state.c.name == "notifications"))
        .scalar()
    )
    oldest = time.time() - LOOKBACK_SECONDS
    cursor = (data or {}).get("read_from")
    if isinstance(cursor, int | float):
        oldest = min(oldest, float(cursor))
    return oldest


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE flow_run_states ALTER COLUMN recorded DROP DEFAULT")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {_SQLITE_TRIGGER}")
    op.create_index("ix_flow_run_states_timestamp", "flow_run_states", ["timestamp"])
    op.drop_index("ix_flow_run_states_recorded", "flow_run_states")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a copy of the table.
    with op.batch_alter_table("flow_run_states", recreate="never") as batch:
        batch.drop_column("recorded")
