"""Deployments in the database: their versions, and the flow runs created from them.

A deployment is a flow the server can run on demand: where its code is (``storage``), which
function to call (``entrypoint``), the JSON Schema of its parameters and their defaults, the
infrastructure to start it on, and the work queue its runs wait in. Saving a deployment under a
name that exists makes the next *version*: the ``deployments`` row always holds the latest one,
``deployment_versions`` keeps each, and a run records the version it was created from, so a run
created before a redeploy still starts the code it was created for.

A run of a deployment is created SCHEDULED (``expected_start_time``: when it should start) in the
deployment's work queue; a worker claims it (:mod:`vivace.store.work_queues`). An idempotency key
makes creation safe to retry: a second request with the same key returns the run the first made.

Example::

    record = save_deployment(url, DeploymentSpec(name="nightly", flow_name="etl", ...))
    run, created = create_deployment_run(url, record, parameters={"day": "2026-12-01"})
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from vivace._ids import parse_id, uuid7
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError, DeploymentNotFoundError, ParameterValidationError
from vivace.schedules import Schedule
from vivace.store import schema
from vivace.store.database import ensure_schema, transaction
from vivace.store.queries import Bind, _contains, _engine, _reading
from vivace.store.records import FlowRunRecord

SCHEDULED_NAME = "Scheduled"
FLOW_NAMESPACE = uuid.UUID("5c1d7a3e-93f4-4b0a-8f0e-2a6f1f3c9b10")
"""The namespace of flow ids (``uuid5(FLOW_NAMESPACE, flow name)``), as ``Flow.flow_id``."""


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What one version of a deployment says (what ``save_deployment`` stores)."""

    name: str
    flow_name: str
    entrypoint: str
    storage: dict[str, Any]
    parameter_schema: dict[str, Any]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    infrastructure: dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "process"})
    work_queue_name: str = "default"
    tags: tuple[str, ...] = ()
    description: str | None = None
    # Scheduled runs late by more than this many seconds are skipped, not started (None: never).
    skip_late_after: float | None = None
    # At most this many of the deployment's runs claimed and not yet over (None: no limit).
    concurrency_limit: int | None = None
    # None: the deployment keeps the schedules it has (a deploy that says nothing about them);
    # a tuple, empty included: its schedules become exactly these (vivace.store.schedules).
    schedules: tuple[Schedule, ...] | None = None

    def __post_init__(self) -> None:
        if self.schedules is None:
            return
        schedules = tuple(self.schedules)
        seen: dict[tuple[str, str], Schedule] = {}
        for schedule in schedules:
            if not isinstance(schedule, Schedule):
                raise ConfigurationError(
                    f"schedule {schedule!r} of deployment {self.name!r} is not valid; expected "
                    "vivace.schedules.Cron, Interval or RRule"
                )
            key = (schedule.definition_key(), _json_key(schedule.parameters))
            if key in seen:
                raise ConfigurationError(
                    f"deployment {self.name!r} has the schedule {schedule.describe()!r} twice "
                    "(with the same parameters); expected each schedule once"
                )
            seen[key] = schedule
        object.__setattr__(self, "schedules", schedules)


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A deployment at one version (the latest, unless read with ``read_deployment_version``)."""

    id: uuid.UUID
    name: str
    version: int
    flow_name: str
    entrypoint: str
    storage: dict[str, Any]
    parameter_schema: dict[str, Any]
    parameters: dict[str, Any]
    infrastructure: dict[str, Any]
    work_queue_name: str
    tags: tuple[str, ...]
    description: str | None
    created: dt.datetime
    updated: dt.datetime
    skip_late_after: float | None = None
    concurrency_limit: int | None = None

    @property
    def infrastructure_type(self) -> str:
        return str(self.infrastructure.get("type", "process"))


_SPEC_COLUMNS = tuple(
    field.name
    for field in dataclasses.fields(DeploymentSpec)
    if field.name not in ("name", "schedules")
)


def save_deployment(bind: Bind, spec: DeploymentSpec) -> DeploymentRecord:
    """Save ``spec`` as the next version of the deployment ``spec.name`` (version 1 if new).

    Also records the flow (so its runs group under it) and creates the work queue if it is new.
    With ``spec.schedules`` given, the deployment's schedules become those, in the same
    transaction (:func:`vivace.store.schedules.replace_deployment_schedules`); each schedule's
    parameters over the deployment's are checked against the parameter schema first. The runs
    its schedules made ahead and that have not started become runs of the new version
    (:func:`vivace.store.schedules.refresh_waiting_runs`).
    Two deploys of one name at the same moment get consecutive versions (one transaction each,
    the version read and bumped under the row's lock). When neither finds the row (the first
    deploy of the name, on PostgreSQL), the second to insert it fails on the unique name and
    tries once more, and then finds the row, and waits for its lock.
    """
    engine = _engine(bind)
    ensure_schema(engine)
    try:
        return _save_version(engine, spec)
    except sa.exc.IntegrityError:
        # Another first deploy of this name (or of its flow, or queue) inserted the row first.
        return _save_version(engine, spec)


def _save_version(engine: sa.Engine, spec: DeploymentSpec) -> DeploymentRecord:
    """One transaction of ``save_deployment``: the next version of ``spec.name``, as saved.

    The record is read inside the transaction: read after it, it could already be the version
    of another deploy that committed in between (two deploys at once would both say version 2).
    """
    from vivace.store.schedules import refresh_waiting_runs, replace_deployment_schedules
    from vivace.store.work_queues import ensure_work_queue

    _check_schedule_parameters(spec)
    now = time.time()
    values = {name: getattr(spec, name) for name in _SPEC_COLUMNS}
    values["tags"] = list(spec.tags) or None
    table = schema.deployments
    with transaction(engine) as conn:
        _record_flow(conn, spec.flow_name, now)
        ensure_work_queue(conn, spec.work_queue_name)
        query = sa.select(table.c.id, table.c.version).where(table.c.name == spec.name)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).first()
        if found is None:
            deployment_id, version = uuid7(), 1
            _insert_deployment(conn, deployment_id, spec.name, now, values)
        else:
            deployment_id, version = found.id, found.version + 1
            conn.execute(
                sa.update(table)
                .where(table.c.id == deployment_id)
                .values(version=version, updated=now, **values)
            )
        conn.execute(
            sa.insert(schema.deployment_versions).values(
                deployment_id=deployment_id, version=version, created=now, **values
            )
        )
        if spec.schedules is not None:
            replace_deployment_schedules(conn, deployment_id, spec.schedules, now)
        if version > 1:
            refresh_waiting_runs(
                conn,
                deployment_id,
                version,
                parameters=spec.parameters,
                tags=spec.tags,
                work_queue_name=spec.work_queue_name,
                infrastructure_type=str(spec.infrastructure.get("type", "process")),
            )
        row = conn.execute(sa.select(table).where(table.c.id == deployment_id)).one()
    return _deployment(dict(row._mapping))


def _check_schedule_parameters(spec: DeploymentSpec) -> None:
    """Raise ParameterValidationError if a schedule's runs would get parameters that do not
    match the flow: the scheduler creates them later, with nobody to tell."""
    from vivace.deployments.parameters import schema_problems

    for schedule in spec.schedules or ():
        problems = schema_problems(
            spec.parameter_schema, {**spec.parameters, **(schedule.parameters or {})}
        )
        if problems:
            raise ParameterValidationError(
                f"the runs of schedule {schedule.describe()!r} of deployment {spec.name!r} would "
                f"get parameters that do not match its flow {spec.flow_name!r}: "
                f"{'; '.join(problems)}; expected the schedule's parameters (over the "
                "deployment's) to give each required parameter with its type"
            )


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _insert_deployment(
    conn: sa.Connection, deployment_id: uuid.UUID, name: str, now: float, values: dict[str, Any]
) -> None:
    """The ``deployments`` row of a name's first version."""
    conn.execute(
        sa.insert(schema.deployments).values(
            id=deployment_id, name=name, version=1, created=now, updated=now, **values
        )
    )


def read_deployment(bind: Bind, name_or_id: str | uuid.UUID) -> DeploymentRecord | None:
    """The deployment (latest version) with this name or id, or None."""
    table = schema.deployments
    condition = _by_name_or_id(table, name_or_id)
    with _reading(_engine(bind)) as conn:
        row = conn.execute(sa.select(table).where(condition)).first()
    return None if row is None else _deployment(dict(row._mapping))


def require_deployment(bind: Bind, name_or_id: str | uuid.UUID) -> DeploymentRecord:
    """``read_deployment``, raising DeploymentNotFoundError (naming what was asked) on None."""
    record = read_deployment(bind, name_or_id)
    if record is None:
        raise DeploymentNotFoundError(
            f"no deployment named {str(name_or_id)!r}; `vivace deployment ls` lists them"
        )
    return record


def read_deployment_version(
    bind: Bind, deployment_id: uuid.UUID, version: int
) -> DeploymentRecord | None:
    """The deployment as it was at ``version`` (None if the deployment or version is gone)."""
    query = _versions_of(deployment_id).where(schema.deployment_versions.c.version == version)
    with _reading(_engine(bind)) as conn:
        row = conn.execute(query).first()
    return None if row is None else _deployment(dict(row._mapping))


def read_deployment_versions(
    bind: Bind, deployment_id: uuid.UUID, *, limit: int = 200
) -> list[DeploymentRecord]:
    """The deployment's versions still kept, newest first (each as ``read_deployment_version``
    gives it)."""
    versions = schema.deployment_versions
    query = _versions_of(deployment_id).order_by(versions.c.version.desc()).limit(limit)
    with _reading(_engine(bind)) as conn:
        return [_deployment(dict(row._mapping)) for row in conn.execute(query)]


def _versions_of(deployment_id: uuid.UUID) -> sa.Select[Any]:
    """The deployment's kept versions, each as the columns of a DeploymentRecord."""
    deployments, versions = schema.deployments, schema.deployment_versions
    return (
        sa.select(
            deployments.c.id,
            deployments.c.name,
            versions.c.version,
            *[versions.c[name] for name in _SPEC_COLUMNS],
            versions.c.created,
            deployments.c.updated,
        )
        .join(versions, versions.c.deployment_id == deployments.c.id)
        .where(deployments.c.id == deployment_id)
    )


def read_deployments(
    bind: Bind,
    *,
    flow_name: str | None = None,
    name_like: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[DeploymentRecord]:
    """Deployments by name (latest versions), optionally of one flow, or only those whose name
    contains ``name_like`` (any case)."""
    table = schema.deployments
    query = sa.select(table).order_by(table.c.name).limit(limit).offset(offset)
    if flow_name is not None:
        query = query.where(table.c.flow_name == flow_name)
    if name_like is not None:
        query = query.where(_contains(table.c.name, name_like, "name_like"))
    with _reading(_engine(bind)) as conn:
        return [_deployment(dict(row._mapping)) for row in conn.execute(query)]


def delete_deployment(bind: Bind, name_or_id: str | uuid.UUID) -> tuple[DeploymentRecord, int]:
    """Delete the deployment, its versions and its schedules; its runs that have not started are
    CANCELLED, except its schedules' runs, which go with their schedules (as when a schedule is
    removed). Return the deployment as it was and how many runs were cancelled.

    The history of runs that started stays (they keep the deployment's id). Raises
    DeploymentNotFoundError when there is no such deployment.
    """
    from vivace.store.run_control import transition_flow_run
    from vivace.store.schedules import drop_deployment_schedules

    engine = _engine(bind)
    record = require_deployment(engine, name_or_id)
    runs = schema.flow_runs
    cancelled = 0
    with transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            # The deployment's row, then its schedules: the order a redeploy locks them in.
            table = schema.deployments
            conn.execute(sa.select(table.c.id).where(table.c.id == record.id).with_for_update())
        # Under the schedules' locks: a scheduler loop filling them has committed.
        drop_deployment_schedules(conn, record.id)
        waiting = conn.execute(
            sa.select(runs.c.id).where(
                runs.c.deployment_id == record.id,
                runs.c.state_type == StateType.SCHEDULED.value,
                # SCHEDULED with a heartbeat: an engine holds it between retries; it goes on.
                runs.c.heartbeat.is_(None),
            )
        ).scalars()
        for run_id in list(waiting):
            seq = transition_flow_run(
                conn,
                run_id,
                StateType.CANCELLED,
                "Cancelled",
                f"its deployment {record.name!r} was deleted before it started",
                allowed_from=(StateType.SCHEDULED,),
                where=runs.c.heartbeat.is_(None),
            )
            cancelled += seq is not None
        conn.execute(
            sa.delete(schema.deployment_versions).where(
                schema.deployment_versions.c.deployment_id == record.id
            )
        )
        conn.execute(sa.delete(schema.deployments).where(schema.deployments.c.id == record.id))
    return record, cancelled


def create_deployment_run(
    bind: Bind,
    deployment: DeploymentRecord,
    *,
    parameters: dict[str, Any],
    expected_start_time: float | None = None,
    idempotency_key: str | None = None,
    tags: tuple[str, ...] | None = None,
    name: str | None = None,
) -> tuple[FlowRunRecord, bool]:
    """Create a SCHEDULED run of ``deployment`` (at its version); return it and whether it is new.

    ``parameters`` are the run's full parameters, already checked against the deployment's schema
    (:func:`vivace.deployments.parameters.run_parameters`). ``expected_start_time`` (Unix seconds)
    defaults to now. With an ``idempotency_key`` that an earlier call of this deployment used, no
    run is created: that call's run is returned, with ``False``.
    """
    from vivace.engine.names import random_run_name

    engine = _engine(bind)
    ensure_schema(engine)
    if idempotency_key is not None:
        existing = read_run_by_idempotency_key(engine, deployment.id, idempotency_key)
        if existing is not None:
            return existing, False
    now = time.time()
    run_id = uuid7()
    run, state = deployment_run_rows(
        run_id=run_id,
        deployment_id=deployment.id,
        deployment_version=deployment.version,
        flow_name=deployment.flow_name,
        work_queue_name=deployment.work_queue_name,
        infrastructure_type=deployment.infrastructure_type,
        parameters=parameters,
        tags=deployment.tags if tags is None else tags,
        expected_start_time=now if expected_start_time is None else expected_start_time,
        now=now,
        name=name or random_run_name(),
        idempotency_key=idempotency_key,
    )
    try:
        with transaction(engine) as conn:
            _record_flow(conn, deployment.flow_name, now)
            conn.execute(sa.insert(schema.flow_runs).values(run))
            conn.execute(sa.insert(schema.flow_run_states).values(state))
    except sa.exc.IntegrityError:
        # Another request with the same idempotency key inserted first.
        if idempotency_key is None:
            raise
        existing = read_run_by_idempotency_key(engine, deployment.id, idempotency_key)
        if existing is None:
            raise
        return existing, False
    from vivace.store.queries import read_flow_run

    record = read_flow_run(engine, run_id)
    assert record is not None
    return record, True


def deployment_run_rows(
    *,
    run_id: uuid.UUID,
    deployment_id: uuid.UUID,
    deployment_version: int,
    flow_name: str,
    work_queue_name: str,
    infrastructure_type: str,
    parameters: dict[str, Any],
    tags: Sequence[str],
    expected_start_time: float,
    now: float,
    name: str,
    idempotency_key: str | None = None,
    schedule_id: uuid.UUID | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``flow_runs`` row of a new SCHEDULED run of a deployment, and its first
    ``flow_run_states`` row: what ``create_deployment_run`` and the scheduler insert."""
    run = {
        "id": run_id,
        "flow_id": _flow_id(flow_name),
        "flow_name": flow_name,
        "name": name,
        "state_type": StateType.SCHEDULED.value,
        "state_name": SCHEDULED_NAME,
        "state_timestamp": now,
        "state_message": None,
        "state_seq": 1,
        "run_count": 0,
        "tags": list(tags) or None,
        "parameters": parameters,
        "created": now,
        "deployment_id": deployment_id,
        "deployment_version": deployment_version,
        "work_queue_name": work_queue_name,
        "expected_start_time": expected_start_time,
        "idempotency_key": idempotency_key,
        "infrastructure_type": infrastructure_type,
        "schedule_id": schedule_id,
    }
    state = {
        "flow_run_id": run_id,
        "seq": 1,
        "type": StateType.SCHEDULED.value,
        "name": SCHEDULED_NAME,
        "timestamp": now,
        "message": None,
    }
    return run, state


@functools.lru_cache(maxsize=1024)
def _flow_id(flow_name: str) -> uuid.UUID:
    return uuid.uuid5(FLOW_NAMESPACE, flow_name)


def read_run_by_idempotency_key(
    bind: Bind, deployment_id: uuid.UUID, key: str
) -> FlowRunRecord | None:
    """The run an earlier request with this idempotency key made, or None. Callers look it up
    before checking parameters, so a retry gets its run even if the schema changed since."""
    engine = _engine(bind)
    from vivace.store.queries import read_flow_run

    runs = schema.flow_runs
    with _reading(engine) as conn:
        run_id = conn.execute(
            sa.select(runs.c.id).where(
                runs.c.deployment_id == deployment_id, runs.c.idempotency_key == key
            )
        ).scalar()
    return None if run_id is None else read_flow_run(engine, run_id)


def _record_flow(conn: sa.Connection, flow_name: str, now: float) -> None:
    """The flows row of ``flow_name``, inserted unless it exists."""
    flows = schema.flows
    exists = conn.execute(sa.select(flows.c.id).where(flows.c.name == flow_name)).first()
    if exists is None:
        conn.execute(
            sa.insert(flows).values(
                id=uuid.uuid5(FLOW_NAMESPACE, flow_name), name=flow_name, created=now
            )
        )


def _by_name_or_id(table: sa.Table, name_or_id: str | uuid.UUID) -> sa.ColumnElement[bool]:
    if isinstance(name_or_id, uuid.UUID):
        return table.c.id == name_or_id
    try:
        return sa.or_(table.c.name == name_or_id, table.c.id == parse_id(name_or_id))
    except ConfigurationError:  # not an id: a name
        return table.c.name == name_or_id


def _deployment(values: dict[str, Any]) -> DeploymentRecord:
    values["tags"] = tuple(values["tags"] or ())
    values["parameters"] = values["parameters"] or {}
    return DeploymentRecord(**values)
