"""Alembic environment for vivace's migrations.

``vivace.store.database`` runs them on a connection it already holds (inside its migration lock and
transaction) and passes it in ``config.attributes["connection"]``. Run by hand, for instance to
autogenerate a new revision, the environment connects to the database of the current settings.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from vivace.settings import get_settings
from vivace.store.database import get_engine
from vivace.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("vivace's migrations need a database connection; --sql mode is unsupported")

_given: sa.Connection | None = context.config.attributes.get("connection")
if _given is not None:
    _run(_given)
else:
    with get_engine(get_settings().resolved_database_url).begin() as _connection:
        _run(_connection)
