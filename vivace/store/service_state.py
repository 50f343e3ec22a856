"""What the server's services keep in the database: each one's cursor and its last loop.

One row per service (``service_state``), shared by every process that runs the services, so a
restarted service picks up where it stopped, and ``vivace server services ls`` (or the API) can
tell a service that loops from one that stopped.

Example::

    update_service_data(url, "notifications", {"read_from": 1764680000.0})
    read_service_data(url, "notifications")  # {"read_from": 1764680000.0, ...}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import sqlalchemy as sa

from vivace.store import schema
from vivace.store.database import ensure_schema, transaction
from vivace.store.queries import Bind, _engine, _reading


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceStateRecord:
    """A service's row: what it keeps (``data``) and when it was last written."""

    name: str
    data: dict[str, Any]
    updated: dt.datetime


def read_service_data(bind: Bind, name: str) -> dict[str, Any]:
    """What the service ``name`` keeps ({} if it never wrote anything)."""
    table = schema.service_state
    with _reading(_engine(bind)) as conn:
        data = conn.execute(sa.select(table.c.data).where(table.c.name == name)).scalar()
    return dict(data or {})


def update_service_data(bind: Bind, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the service's data (keys not named are kept); return the result.

    Read and written in one transaction, so two processes updating different keys of one service
    at once lose neither change.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    table = schema.service_state
    with transaction(engine) as conn:
        query = sa.select(table.c.data).where(table.c.name == name)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).first()
        data = {**(found.data if found is not None else {}), **changes}
        if found is None:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(table).values(name=name, data=data, updated=time.time()))
                return data
            except sa.exc.IntegrityError:
                # Another process inserted the row first: merge into its data instead.
                found = conn.execute(query).first()
                assert found is not None
                data = {**found.data, **changes}
        conn.execute(
            sa.update(table).where(table.c.name == name).values(data=data, updated=time.time())
        )
    return data


def read_service_states(bind: Bind) -> list[ServiceStateRecord]:
    """Every service's row, by name."""
    table = schema.service_state
    with _reading(_engine(bind)) as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.name)).all()
    return [ServiceStateRecord(row.name, dict(row.data), row.updated) for row in rows]
