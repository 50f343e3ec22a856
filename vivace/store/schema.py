"""The run-history tables.

There are no foreign-key constraints on purpose: rows arrive in batches from many processes (the
flow's own process and every Dask or Ray worker), so a task run may be committed a moment before the
flow run it belongs to. Relations are kept by ids and indexes instead.

State history tables are keyed by ``(run id, seq)``, where ``seq`` counts the run's transitions:
compact, ordered by run, and idempotent when a journal is replayed twice.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from vivace.store.types import JSONType, Timestamp, UUIDType

metadata = sa.MetaData()

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created", Timestamp, nullable=False),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("flow_id", UUIDType, nullable=False),
    sa.Column("flow_name", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("parent_flow_run_id", UUIDType, nullable=True),
    sa.Column("parent_task_run_id", UUIDType, nullable=True),
    sa.Column("state_type", sa.String(16), nullable=False),
    sa.Column("state_name", sa.String(64), nullable=False),
    sa.Column("state_timestamp", Timestamp, nullable=False),
    sa.Column("state_message", sa.Text, nullable=True),
    # seq of the current state: an upsert carrying an older state never overwrites a newer one,
    # whichever process's batch lands last.
    sa.Column("state_seq", sa.Integer, nullable=False, default=0),
    sa.Column("start_time", Timestamp, nullable=True),
    sa.Column("end_time", Timestamp, nullable=True),
    sa.Column("run_count", sa.Integer, nullable=False, default=0),
    sa.Column("tags", JSONType, nullable=True),
    sa.Column("parameters", JSONType, nullable=True),
    sa.Column("created", Timestamp, nullable=False),
    # Revision 0003 (results, caching, resume): where the flow comes from ("path/file.py:fn" or
    # "module:fn"), the names of parameters stored only as their repr (so the run cannot be
    # replayed), and the reference to its persisted result (never the bytes).
    sa.Column("entrypoint", sa.String(1024), nullable=True),
    sa.Column("opaque_parameters", JSONType, nullable=True),
    sa.Column("result_storage", sa.String(1024), nullable=True),
    sa.Column("result_key", sa.String(255), nullable=True),
    sa.Column("result_serializer", sa.String(255), nullable=True),
    # Revision 0005 (deployments and workers), set only on runs created from a deployment: which
    # deployment and version, the work queue, when the run should start, the client's
    # idempotency key, the infrastructure type it needs, the worker that claimed it and what
    # that worker launched (a pid, a container id, a job name), and the engine's heartbeat.
    # The writer's upsert never names these columns, so the engine's writes leave them alone.
    sa.Column("deployment_id", UUIDType, nullable=True),
    sa.Column("deployment_version", sa.Integer, nullable=True),
    sa.Column("work_queue_name", sa.String(255), nullable=True),
    sa.Column("expected_start_time", Timestamp, nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("infrastructure_type", sa.String(32), nullable=True),
    sa.Column("worker_id", UUIDType, nullable=True),
    sa.Column("infrastructure_id", sa.String(255), nullable=True),
    sa.Column("heartbeat", Timestamp, nullable=True),
    # Revision 0006 (schedules and services): the deployment schedule that made the run (None for
    # runs made on demand); a run is unique per schedule and scheduled time.
    sa.Column("schedule_id", UUIDType, nullable=True),
    # The seconds between the heartbeats of the process running it, stamped with each heartbeat:
    # the zombies service judges each run by its own interval, not by the server's.
    sa.Column("heartbeat_interval", sa.Float, nullable=True),
    sa.Index("ix_flow_runs_flow_id_start_time", "flow_id", "start_time"),
    sa.Index("ix_flow_runs_state_type_start_time", "state_type", "start_time"),
    sa.Index("ix_flow_runs_start_time", "start_time"),
    sa.Index("ix_flow_runs_created", "created"),
    sa.Index("ix_flow_runs_parent_flow_run_id", "parent_flow_run_id"),
    # What a worker's claim reads: a queue's scheduled runs in start order.
    sa.Index(
        "ix_flow_runs_queue_state_expected_start",
        "work_queue_name",
        "state_type",
        "expected_start_time",
    ),
    sa.Index("ix_flow_runs_deployment_id_created", "deployment_id", "created"),
    # A client's retry of "create a run" with the same key finds the run it already made.
    sa.Index(
        "ux_flow_runs_deployment_idempotency_key",
        "deployment_id",
        "idempotency_key",
        unique=True,
    ),
    # The scheduler's idempotency: two loops (or a loop racing a redeploy) never make the same run
    # twice; and "this schedule's runs that have not started" for a schedule that changed.
    sa.Index(
        "ux_flow_runs_schedule_expected_start",
        "schedule_id",
        "expected_start_time",
        unique=True,
    ),
    # What the late-run and zombie services read: runs in one state, oldest first.
    sa.Index("ix_flow_runs_state_type_expected_start", "state_type", "expected_start_time"),
    # A deployment's runs in one state: what its concurrency limit counts at each claim, without
    # reading the deployment's finished history.
    sa.Index("ix_flow_runs_deployment_state", "deployment_id", "state_type"),
    sa.Index(
        "ix_flow_runs_tags",
        "tags",
        postgresql_using="gin",
        postgresql_ops={"tags": "jsonb_path_ops"},
    ).ddl_if(dialect="postgresql"),
)

flow_run_states = sa.Table(
    "flow_run_states",
    metadata,
    sa.Column("flow_run_id", UUIDType, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    # When the row was written (revision 0007): a state can land long after it was entered (a
    # writer that waited out a database outage); the notification service reads by this time.
    # The writer stamps its batches, other inserts get this default, and a row inserted without
    # it gets the database's time (0007). NULL: older than anything the service reads.
    sa.Column("recorded", Timestamp, nullable=True, default=time.time),
    sa.Index("ix_flow_run_states_recorded", "recorded"),
    # Small rows under a composite key: on SQLite one B-tree instead of a table plus an index.
    sqlite_with_rowid=False,
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("flow_run_id", UUIDType, nullable=True),
    sa.Column("parent_task_run_id", UUIDType, nullable=True),
    sa.Column("task_key", sa.String(512), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("state_type", sa.String(16), nullable=False),
    sa.Column("state_name", sa.String(64), nullable=False),
    sa.Column("state_timestamp", Timestamp, nullable=False),
    sa.Column("state_message", sa.Text, nullable=True),
    # seq of the current state: an upsert carrying an older state never overwrites a newer one,
    # whichever process's batch lands last.
    sa.Column("state_seq", sa.Integer, nullable=False, default=0),
    sa.Column("start_time", Timestamp, nullable=True),
    sa.Column("end_time", Timestamp, nullable=True),
    sa.Column("run_count", sa.Integer, nullable=False, default=0),
    sa.Column("tags", JSONType, nullable=True),
    # {"parameter name": ["<upstream task run id>", ...], "__wait_for__": [...]}
    sa.Column("task_inputs", JSONType, nullable=True),
    sa.Column("created", Timestamp, nullable=False),
    # Revision 0003: the call's identity inside its flow run, stable across attempts (its index
    # among the calls of its task_key; "<parent digest>/<index>" when called inside a task; a
    # task that persists its result adds "@<digest of its arguments>", so a resume reuses a
    # result only for the same arguments), the cache key it used, and the reference to its
    # persisted result.
    sa.Column("dynamic_key", sa.String(255), nullable=True),
    sa.Column("cache_key", sa.String(255), nullable=True),
    sa.Column("result_storage", sa.String(1024), nullable=True),
    sa.Column("result_key", sa.String(255), nullable=True),
    sa.Column("result_serializer", sa.String(255), nullable=True),
    # Few indexes on the table written once per task: a run's tasks in order, and time ranges.
    sa.Index("ix_task_runs_flow_run_id_start_time", "flow_run_id", "start_time"),
    sa.Index("ix_task_runs_start_time", "start_time"),
)

task_run_states = sa.Table(
    "task_run_states",
    metadata,
    sa.Column("task_run_id", UUIDType, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    # Small rows under a composite key: on SQLite one B-tree instead of a table plus an index.
    sqlite_with_rowid=False,
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("flow_run_id", UUIDType, nullable=True),
    sa.Column("task_run_id", UUIDType, nullable=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    # A run's lines in time order; the level rides along so that a level filter skips lines
    # without reading their rows (revision 0004).
    sa.Index("ix_logs_flow_run_id_timestamp_level", "flow_run_id", "timestamp", "level"),
    sa.Index("ix_logs_task_run_id_timestamp", "task_run_id", "timestamp"),
)

# -- server, blocks and writer health (revision 0002) ---------------------------------------------

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    # "read" or "admin".
    sa.Column("role", sa.String(16), nullable=False),
    # Only a hash of the key is kept; the key itself is shown once, when it is created.
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    # The key's first characters, so a listing can say which key is which.
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("last_used", Timestamp, nullable=True),
    sa.Column("revoked", Timestamp, nullable=True),
)

blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    # Where the Block subclass lives ("module:QualName"), so Block.load can rebuild it.
    sa.Column("block_type", sa.String(512), nullable=False),
    # Field values; secret fields hold Fernet tokens, never plain text.
    sa.Column("data", JSONType, nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
)

writer_stats = sa.Table(
    "writer_stats",
    metadata,
    # One row per background writer (one per process that records runs), refreshed every few
    # seconds by the writer itself: the server's /metrics reads writer health from here.
    sa.Column("writer_id", UUIDType, primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queue_depth", sa.Integer, nullable=False),
    sa.Column("last_flush_seconds", sa.Float, nullable=False),
    sa.Column("records_written", sa.BigInteger, nullable=False),
    sa.Column("flushes", sa.BigInteger, nullable=False),
    sa.Column("started", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
    sa.Index("ix_writer_stats_updated", "updated"),
)

# -- results and caching (revision 0003) -----------------------------------------------------------

task_cache = sa.Table(
    "task_cache",
    metadata,
    # The cache index: a cache key, and where the value it stands for was persisted. The value
    # itself lives in result storage, so every process and cluster worker can read it.
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("task_key", sa.String(512), nullable=False),
    sa.Column("task_name", sa.String(255), nullable=False),
    # The task run whose result this is.
    sa.Column("task_run_id", UUIDType, nullable=True),
    sa.Column("result_storage", sa.String(1024), nullable=False),
    sa.Column("result_key", sa.String(255), nullable=False),
    sa.Column("result_serializer", sa.String(255), nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    # None: never expires.
    sa.Column("expires", Timestamp, nullable=True),
    sa.Index("ix_task_cache_task_name", "task_name"),
)


# -- deployments, work queues and workers (revision 0005) ------------------------------------------


# What a deployment version says, in both the deployment's row (its latest version, what lists and
# new runs read) and each version's row (what a run created from that version reads).
def _deployment_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("flow_name", sa.String(255), nullable=False),
        # "path/in/project.py:function" relative to the project folder, or "module:function".
        sa.Column("entrypoint", sa.String(1024), nullable=False),
        # Where the project's code is: {"url": "<folder or fsspec URL>"} or
        # {"block": "<filesystem block name>", "path": "<folder inside it>"}.
        sa.Column("storage", JSONType, nullable=False),
        # JSON Schema of the flow's parameters, checked when a run is created.
        sa.Column("parameter_schema", JSONType, nullable=False),
        # Default parameters of the deployment's runs (a run's own override them).
        sa.Column("parameters", JSONType, nullable=False),
        # {"type": "process" | "docker" | "kubernetes" | "ecs", ...fields of that type}.
        sa.Column("infrastructure", JSONType, nullable=False),
        sa.Column("work_queue_name", sa.String(255), nullable=False),
        sa.Column("tags", JSONType, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        # Revision 0006: scheduled runs late by more than this many seconds are skipped, not
        # started (a backlog after an outage does not stampede); None: never skipped.
        sa.Column("skip_late_after", sa.Float, nullable=True),
        # At most this many of the deployment's runs claimed and not yet over; None: no limit.
        sa.Column("concurrency_limit", sa.Integer, nullable=True),
    ]


deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("version", sa.Integer, nullable=False),
    *_deployment_columns(),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
)

deployment_versions = sa.Table(
    "deployment_versions",
    metadata,
    sa.Column("deployment_id", UUIDType, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    *_deployment_columns(),
    sa.Column("created", Timestamp, nullable=False),
)

work_queues = sa.Table(
    "work_queues",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    # Lower goes first: a worker polling several queues claims from the lowest number first.
    sa.Column("priority", sa.Integer, nullable=False),
    # At most this many of the queue's runs claimed and not yet over; None: no limit.
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("last_polled", Timestamp, nullable=True),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("queues", JSONType, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", Timestamp, nullable=False),
    sa.Column("heartbeat", Timestamp, nullable=False),
)


# -- schedules and the server's services (revision 0006) -----------------------------------------

deployment_schedules = sa.Table(
    "deployment_schedules",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("deployment_id", UUIDType, nullable=False),
    # Its place among the deployment's schedules, as deployed.
    sa.Column("position", sa.Integer, nullable=False),
    # {"cron": "0 9 * * 1-5", "timezone": "Europe/Lisbon"} | {"interval": seconds, "anchor":
    # ISO time, "timezone": ...} | {"rrule": "FREQ=...", "timezone": ...}: vivace.schedules.
    sa.Column("schedule", JSONType, nullable=False),
    # Parameters of this schedule's runs, over the deployment's defaults.
    sa.Column("parameters", JSONType, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    # The latest scheduled time a run was created for (None: none yet).
    sa.Column("filled_until", Timestamp, nullable=True),
    # When the scheduler must next look at this schedule (None while paused): a loop reads only
    # the schedules due, so its cost follows what is due, not how many schedules exist.
    sa.Column("due_at", Timestamp, nullable=True),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
    sa.Index("ix_deployment_schedules_deployment_id", "deployment_id", "position"),
    sa.Index("ix_deployment_schedules_due_at", "due_at"),
)

concurrency_limits = sa.Table(
    "concurrency_limits",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    # "tag:<tag>" for a task tag's limit, any other name for `vivace.concurrency(name)`.
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("limit", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
)

concurrency_leases = sa.Table(
    "concurrency_leases",
    metadata,
    # One holder's slots of one limit; its holder renews ``expires`` while it lives, so the slots
    # of a holder that died come back when the lease runs out.
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("limit_name", sa.String(255), nullable=False),
    sa.Column("occupy", sa.Integer, nullable=False),
    # Who holds it: "host:pid" and, for a task's slot, the task run id.
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("acquired", Timestamp, nullable=False),
    sa.Column("expires", Timestamp, nullable=False),
    sa.Index("ix_concurrency_leases_limit_name", "limit_name", "expires"),
    sa.Index("ix_concurrency_leases_expires", "expires"),
)

notification_policies = sa.Table(
    "notification_policies",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    # State names that trigger it ("Failed", "Crashed", "Late", "Completed", ...).
    sa.Column("states", JSONType, nullable=False),
    # Filters, each None for "any": flow names, run tags (any of), deployment names.
    sa.Column("flow_names", JSONType, nullable=True),
    sa.Column("tags", JSONType, nullable=True),
    sa.Column("deployment_names", JSONType, nullable=True),
    # The webhook block the notification is sent with.
    sa.Column("block_name", sa.String(255), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
)

notification_deliveries = sa.Table(
    "notification_deliveries",
    metadata,
    sa.Column("id", UUIDType, primary_key=True),
    sa.Column("policy_id", UUIDType, nullable=False),
    sa.Column("flow_run_id", UUIDType, nullable=False),
    # The state (its seq in the run's history) the notification is about.
    sa.Column("state_seq", sa.Integer, nullable=False),
    sa.Column("state_name", sa.String(64), nullable=False),
    # "pending", "delivered" or "failed" (gave up after its retries).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created", Timestamp, nullable=False),
    sa.Column("delivered", Timestamp, nullable=True),
    # One notification per policy and state entered, however often the service sees it.
    sa.Index(
        "ux_notification_deliveries_policy_run_state",
        "policy_id",
        "flow_run_id",
        "state_seq",
        unique=True,
    ),
    sa.Index("ix_notification_deliveries_status_next", "status", "next_attempt"),
    sa.Index("ix_notification_deliveries_created", "created"),
)

service_state = sa.Table(
    "service_state",
    metadata,
    # What each server service keeps between loops and across restarts (a cursor, its last loop's
    # time and outcome), shared by every process that runs the services.
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("updated", Timestamp, nullable=False),
)
