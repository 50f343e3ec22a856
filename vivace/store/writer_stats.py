"""Writer health rows: each background writer says every few seconds how it is doing.

The writer runs inside whatever process records runs — a flow's process, every Dask or Ray worker
— so the server cannot ask it directly. Instead each writer upserts one row of ``writer_stats``
(its queue depth, how long its last flush took, how much it has written) every
``VIVACE_WRITER_STATS_INTERVAL`` seconds, in a transaction of its own, and the server's
``/metrics`` reads the rows refreshed recently. Rows of writers gone for a day are deleted by the
writers still running, so the table stays as small as the set of live processes.

These rows are best-effort telemetry, not run records: a failed health write is skipped, never
retried or journaled, and never delays the run records behind it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid

import sqlalchemy as sa

from vivace.store import schema
from vivace.store.database import conflict_insert

STALE_AFTER_SECONDS = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class WriterHealth:
    """One writer's figures at one moment."""

    queue_depth: int
    last_flush_seconds: float
    records_written: int
    flushes: int


class HealthReporter:
    """Upserts one writer's ``writer_stats`` row; knows the writer's identity and dialect."""

    def __init__(self, dialect: str) -> None:
        self.writer_id = uuid.uuid4()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        table = schema.writer_stats
        insert = conflict_insert(dialect, table)
        changing = ("queue_depth", "last_flush_seconds", "records_written", "flushes", "updated")
        self._upsert = insert.on_conflict_do_update(
            index_elements=[table.c.writer_id],
            set_={name: insert.excluded[name] for name in changing},
        )
        self._prune = sa.delete(table).where(table.c.updated < sa.bindparam("before"))

    def report(self, conn: sa.Connection, health: WriterHealth) -> None:
        """Upsert this writer's row, and delete the rows of writers silent for a day."""
        now = time.time()
        conn.execute(
            self._upsert,
            {
                "writer_id": self.writer_id,
                "hostname": self.hostname[:255],
                "pid": self.pid,
                "queue_depth": health.queue_depth,
                "last_flush_seconds": health.last_flush_seconds,
                "records_written": health.records_written,
                "flushes": health.flushes,
                "started": self.started,
                "updated": now,
            },
        )
        conn.execute(self._prune, {"before": now - STALE_AFTER_SECONDS})

    def remove(self, conn: sa.Connection) -> None:
        """Delete this writer's row (it is closing: a stopped writer is not a stuck one)."""
        table = schema.writer_stats
        conn.execute(sa.delete(table).where(table.c.writer_id == self.writer_id))
