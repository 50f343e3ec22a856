"""The API's response bodies, as pydantic models: they make /api/openapi.json exact.

Each model mirrors a store record (``vivace.store.records``) and is built from one with
``from_record``. Ids are UUID strings, times ISO 8601 with their timezone (UTC), state types
their upper-case names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from vivace.engine.states import StateType
from vivace.server import graph
from vivace.server.api.params import Name
from vivace.store import queries
from vivace.store.deployments import DeploymentRecord
from vivace.store.records import (
    FlowRecord,
    FlowRunRecord,
    LogRecord,
    StateRecord,
    TaskRunRecord,
)
from vivace.store.schedules import ScheduleRecord
from vivace.store.work_queues import WorkerRecord, WorkQueueRecord

MAX_START_IN_SECONDS = 10 * 365 * 86_400  # ten years: far enough, and still a valid time
MAX_INT = 2**31 - 1  # priorities and limits are stored as 32-bit integers

# -- errors -------------------------------------------------------------------------------------


class ErrorMessage(BaseModel):
    """Every error response: what was wrong, in one sentence."""

    detail: str = Field(examples=["flow run 0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b not found"])


def error_responses(
    *status_codes: int, not_found: str = "No such run."
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer with these error codes (``not_found``: what
    its 404 means)."""
    meaning = {
        403: "The API key sent has the role read; this needs one with the role admin.",
        404: not_found,
        409: "The run is already over: it ended in another way than cancelled.",
        422: "A parameter is malformed or out of range; the message names it.",
        503: "The run-history database cannot be reached.",
    }
    return {code: {"model": ErrorMessage, "description": meaning[code]} for code in status_codes}


# -- health -------------------------------------------------------------------------------------


class Health(BaseModel):
    """The server answers and its database does too."""

    status: Literal["ok"]
    version: str
    database: Literal["ok"]


# -- flows --------------------------------------------------------------------------------------


class Flow(BaseModel):
    """A flow: the name its runs are grouped under."""

    id: uuid.UUID
    name: str
    created: dt.datetime
    run_count: int = Field(description="How many runs of this flow the history holds.")

    @classmethod
    def from_record(cls, record: FlowRecord, run_count: int) -> Flow:
        return cls(id=record.id, name=record.name, created=record.created, run_count=run_count)


# -- flow runs ----------------------------------------------------------------------------------


class FlowRun(BaseModel):
    """One run of a flow, with its current state and timing."""

    id: uuid.UUID
    flow_id: uuid.UUID
    flow_name: str
    name: str
    parent_flow_run_id: uuid.UUID | None = Field(description="Set for a subflow run.")
    parent_task_run_id: uuid.UUID | None
    state_type: StateType
    state_name: str
    state_timestamp: dt.datetime
    state_message: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    duration_seconds: float | None = Field(description="End minus start; null until both.")
    run_count: int
    tags: list[str]
    parameters: dict[str, Any]
    created: dt.datetime
    entrypoint: str | None = Field(
        default=None, description='Where the flow loads from: "path/file.py:fn" or "module:fn".'
    )
    opaque_parameters: list[str] | None = Field(
        default=None, description="Parameters stored only as their repr (not replayable)."
    )
    result_storage: str | None = Field(
        default=None, description="Where the persisted result lives; null if not persisted."
    )
    result_key: str | None = None
    result_serializer: str | None = None
    deployment_id: uuid.UUID | None = Field(
        default=None, description="The deployment the run was created from; null if none."
    )
    deployment_version: int | None = Field(
        default=None, description="The deployment's version the run was created from."
    )
    work_queue_name: str | None = Field(
        default=None, description="The work queue a deployment run waits in for a worker."
    )
    expected_start_time: dt.datetime | None = Field(
        default=None, description="When a deployment run is due to start."
    )
    idempotency_key: str | None = Field(
        default=None, description="The key the request that created the run gave, if any."
    )
    infrastructure_type: str | None = Field(
        default=None, description="What a deployment run starts on: process, docker..."
    )
    worker_id: uuid.UUID | None = Field(default=None, description="The worker that claimed it.")
    infrastructure_id: str | None = Field(
        default=None, description="What its worker launched: a pid, a container, a job."
    )
    heartbeat: dt.datetime | None = Field(
        default=None, description="When its engine last said it is alive."
    )
    heartbeat_interval: float | None = Field(
        default=None,
        description="Seconds between its heartbeats, as its process beats: what the zombies "
        "service judges its silence by.",
    )
    schedule_id: uuid.UUID | None = Field(
        default=None, description="The deployment schedule that created it; null if none."
    )

    @classmethod
    def from_record(cls, record: FlowRunRecord) -> FlowRun:
        return cls(**_fields(record), duration_seconds=_seconds(record.duration))


class FlowRunDetail(FlowRun):
    """A flow run and how many task runs it has, in all and per state type."""

    task_run_count: int
    task_run_counts: dict[StateType, int] = Field(
        description="Task runs per state type; every state type is a key."
    )


class FlowRunPage(BaseModel):
    """A page of flow runs; pass ``next_cursor`` as ``cursor`` for the next one."""

    items: list[FlowRun]
    next_cursor: str | None = Field(description="null on the last page.")


# -- states -------------------------------------------------------------------------------------


class State(BaseModel):
    """One entry of a run's state history; ``seq`` numbers the run's transitions from 1."""

    seq: int
    type: StateType
    name: str
    timestamp: dt.datetime
    message: str | None

    @classmethod
    def from_record(cls, record: StateRecord) -> State:
        return cls(**_fields(record))


# -- task runs ----------------------------------------------------------------------------------


class TaskRun(BaseModel):
    """One run of a task, with its current state, timing and upstream task run ids."""

    id: uuid.UUID
    flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    task_key: str
    name: str
    state_type: StateType
    state_name: str
    state_timestamp: dt.datetime
    state_message: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    duration_seconds: float | None = Field(description="End minus start; null until both.")
    run_count: int
    tags: list[str]
    task_inputs: dict[str, list[str]] = Field(
        description=(
            'Upstream task run ids per parameter; "__wait_for__" lists those given as wait_for.'
        )
    )
    created: dt.datetime
    dynamic_key: str | None = Field(
        default=None, description="The call's identity in its flow run, the same every attempt."
    )
    cache_key: str | None = None
    result_storage: str | None = Field(
        default=None, description="Where the persisted result lives; null if not persisted."
    )
    result_key: str | None = None
    result_serializer: str | None = None

    @classmethod
    def from_record(cls, record: TaskRunRecord) -> TaskRun:
        return cls(**_fields(record), duration_seconds=_seconds(record.duration))


class UpstreamInput(BaseModel):
    """A task run this one took an input from (``data``) or waited for (``wait_for``)."""

    parameter: str
    kind: Literal["data", "wait_for"]
    task_run_id: uuid.UUID
    name: str | None = Field(description="null if the upstream run is not in the history.")
    state_type: StateType | None


class TaskRunDetail(TaskRun):
    """A task run and its upstream runs, with their names and states.

    ``upstreams`` lists the first 1,000 (parameter, upstream run) pairs in ``task_inputs`` order;
    a reduce over more mapped runs has ``upstreams_truncated`` set, and ``task_inputs`` still
    holds every upstream id.
    """

    upstreams: list[UpstreamInput] = Field(
        description="The first 1,000 upstreams, in task_inputs order, with names and states."
    )
    upstream_count: int = Field(description="How many upstreams task_inputs lists in all.")
    upstreams_truncated: bool = Field(description="upstreams lists fewer than upstream_count.")


class TaskRunPage(BaseModel):
    """A page of task runs; pass ``next_cursor`` as ``cursor`` for the next one."""

    items: list[TaskRun]
    next_cursor: str | None = Field(description="null on the last page.")


# -- logs ---------------------------------------------------------------------------------------


class Log(BaseModel):
    """One log line of a flow run or task run."""

    id: uuid.UUID
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    name: str = Field(description="The logger's name.")
    level: int
    level_name: str = Field(examples=["INFO"])
    message: str
    timestamp: dt.datetime

    @classmethod
    def from_record(cls, record: LogRecord) -> Log:
        return cls(**_fields(record), level_name=record.level_name)


class LogPage(BaseModel):
    """A page of log lines, oldest first.

    ``next_cursor`` is null on the last page. ``resume_cursor`` is for a live tail: poll with
    ``cursor=resume_cursor`` and get only the lines recorded after this page.
    """

    items: list[Log]
    next_cursor: str | None = Field(description="null on the last page.")
    resume_cursor: str | None = Field(
        description="Poll with this cursor to get only newer lines (null before any line)."
    )

    @classmethod
    def from_page(cls, page: queries.LogPage) -> LogPage:
        return cls(
            items=[Log.from_record(record) for record in page.records],
            next_cursor=page.next_cursor,
            resume_cursor=page.resume_cursor,
        )


# -- graph --------------------------------------------------------------------------------------


class TaskGraphNode(BaseModel):
    """A task run, or all runs of one task (``grouped``, id ``group:<task_key>``)."""

    id: str
    label: str
    task_key: str
    count: int
    states: dict[StateType, int] = Field(description="The node's runs per state type.")
    start_time: dt.datetime | None = Field(description="The earliest start of the node's runs.")
    end_time: dt.datetime | None = Field(description="The latest end of the node's runs.")
    grouped: bool

    @classmethod
    def from_node(cls, node: graph.GraphNode) -> TaskGraphNode:
        return cls(**_fields(node))


class TaskGraphEdge(BaseModel):
    """``target`` took input from (``data``) or waited for (``wait_for``) ``source``."""

    source: str
    target: str
    kind: Literal["data", "wait_for"]
    count: int = Field(description="How many run-to-run dependencies this edge stands for.")

    @classmethod
    def from_edge(cls, edge: graph.GraphEdge) -> TaskGraphEdge:
        return cls(**_fields(edge))


class TaskGraph(BaseModel):
    """The flow run's task dependency graph, mapped tasks grouped."""

    nodes: list[TaskGraphNode]
    edges: list[TaskGraphEdge]
    task_run_count: int
    truncated: bool = Field(description="Nodes were dropped to stay under max_nodes.")

    @classmethod
    def from_graph(cls, task_graph: graph.TaskGraph) -> TaskGraph:
        return cls(
            nodes=[TaskGraphNode.from_node(node) for node in task_graph.nodes],
            edges=[TaskGraphEdge.from_edge(edge) for edge in task_graph.edges],
            task_run_count=task_graph.task_run_count,
            truncated=task_graph.truncated,
        )


# -- deployments --------------------------------------------------------------------------------


class Deployment(BaseModel):
    """A deployment at its latest version: the flow it runs, where its code is, its parameters'
    schema and defaults, the infrastructure its runs start on and the work queue they wait in."""

    id: uuid.UUID
    name: str
    flow_name: str
    version: int = Field(description="1 for the first deploy, one more for each redeploy.")
    entrypoint: str = Field(description='"path/in/project.py:function" or "module:function".')
    work_queue_name: str
    infrastructure_type: str = Field(examples=["process"])
    tags: list[str]
    description: str | None
    storage: str = Field(
        description="Where the code is, in words: a URL (its password hidden) or a block's name."
    )
    storage_record: dict[str, Any] = Field(
        description='{"url": ...}, {"block": NAME, "path": ...} or, for a git repository, '
        '{"block": NAME, "path": "", "commit": ID}; a URL\'s password shows as **********.'
    )
    parameter_schema: dict[str, Any] = Field(description="JSON Schema of the flow's parameters.")
    parameters: dict[str, Any] = Field(description="Default parameters of the runs.")
    infrastructure: dict[str, Any] = Field(
        description='{"type": ..., ...its settings}; the values of its "env" show as **********: '
        "only the variables' names are shown."
    )
    skip_late_after: float | None = Field(
        default=None,
        description="A run not started this many seconds after its scheduled time is skipped, "
        "not started; null: never skipped.",
    )
    concurrency_limit: int | None = Field(
        default=None,
        description="At most this many of its runs claimed and not over; null: no limit.",
    )
    created: dt.datetime = Field(description="When this version was deployed.")
    updated: dt.datetime = Field(description="When the deployment last changed.")

    @classmethod
    def from_record(cls, record: DeploymentRecord) -> Deployment:
        from vivace.deployments.storage import (
            describe_storage,
            shown_infrastructure,
            shown_storage,
        )

        values = _fields(record)
        values["storage_record"] = shown_storage(values.pop("storage"))
        values["infrastructure"] = shown_infrastructure(record.infrastructure)
        return cls(
            **values,
            infrastructure_type=record.infrastructure_type,
            storage=describe_storage(record.storage),
        )


class DeploymentSchedule(BaseModel):
    """One of a deployment's schedules: when the server's scheduler creates its runs."""

    id: uuid.UUID
    deployment_id: uuid.UUID
    position: int = Field(description="Its place in the deployment's list of schedules.")
    definition: dict[str, Any] = Field(
        description='{"cron": "0 9 * * 1-5", "timezone": "Europe/Lisbon", "day_or": true}, '
        '{"interval": seconds, "anchor": ISO time or null, "timezone": ...} or {"rrule": '
        '"FREQ=...", "timezone": ...}; a null timezone is UTC.',
        examples=[{"cron": "0 9 * * 1-5", "timezone": "Europe/Lisbon", "day_or": True}],
    )
    description: str = Field(examples=["cron 0 9 * * 1-5 in Europe/Lisbon"])
    active: bool = Field(description="A paused schedule (false) creates no runs.")
    parameters: dict[str, Any] | None = Field(
        description="Its runs' parameters over the deployment's defaults; null: the defaults."
    )
    filled_until: dt.datetime | None = Field(
        description="The latest scheduled time a run was created for; null: none yet."
    )
    due_at: dt.datetime | None = Field(
        description="When the scheduler next looks at it; null while paused or when it has "
        "no more times."
    )
    next_times: list[dt.datetime] = Field(
        description="The next times it wants a run (empty while paused)."
    )
    created: dt.datetime
    updated: dt.datetime

    @classmethod
    def from_record(
        cls, record: ScheduleRecord, now: dt.datetime | None = None
    ) -> DeploymentSchedule:
        from vivace.deployments.schedule_info import upcoming_times

        return cls(
            id=record.id,
            deployment_id=record.deployment_id,
            position=record.position,
            definition=record.schedule.to_dict(),
            description=record.schedule.describe(),
            active=record.active,
            parameters=record.parameters,
            filled_until=record.filled_until,
            due_at=record.due_at,
            next_times=upcoming_times(record.schedule, now=now) if record.active else [],
            created=record.created,
            updated=record.updated,
        )


class PausedSchedule(DeploymentSchedule):
    """A schedule just paused, and how many of its runs that had not started were removed."""

    removed_run_count: int


class ScheduledDeployment(Deployment):
    """A deployment at its latest version, with its schedules (by position)."""

    schedules: list[DeploymentSchedule]


class DeploymentDetail(ScheduledDeployment):
    """A deployment, its schedules, and how many runs it has, in all and per state type."""

    run_count: int
    run_counts: dict[StateType, int] = Field(
        description="Runs per state type; every state type is a key."
    )


class DeletedDeployment(Deployment):
    """A deleted deployment as it was, and how many of its runs not started yet were cancelled."""

    cancelled_run_count: int


class DeploymentPage(BaseModel):
    """A page of deployments by name; pass ``next_offset`` as ``offset`` for the next one."""

    items: list[ScheduledDeployment]
    next_offset: int | None = Field(description="null on the last page.")


class DeploymentRunRequest(BaseModel):
    """What to create a run of a deployment with; everything is optional."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] | None = Field(
        default=None, description="The run's parameters; the deployment's defaults fill the rest."
    )
    start_at: AwareDatetime | None = Field(
        default=None, description="When the run should start (ISO 8601 with a timezone)."
    )
    start_in_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_START_IN_SECONDS,
        description="Start this many seconds from now (not with start_at).",
    )
    tags: list[Name] | None = Field(
        default=None, max_length=50, description="The run's tags (default: the deployment's)."
    )
    name: Name | None = Field(default=None, description="The run's name (default: random).")
    idempotency_key: Name | None = Field(
        default=None,
        description="A retry with the same key gets the run the first request made.",
    )


# -- work queues and workers --------------------------------------------------------------------


class WorkQueue(BaseModel):
    """A work queue: where a deployment's runs wait for a worker, and what it hands out."""

    id: uuid.UUID
    name: str
    priority: int = Field(description="Lower is served first by a worker polling several queues.")
    concurrency_limit: int | None = Field(
        description="At most this many of its runs claimed and not over; null: no limit."
    )
    paused: bool = Field(description="A paused queue hands out no run.")
    created: dt.datetime
    last_polled: dt.datetime | None = Field(description="When a worker last asked it for runs.")
    active_runs: int = Field(description="Runs claimed and not over (what the limit counts).")
    scheduled_runs: int = Field(description="Runs waiting to be claimed.")

    @classmethod
    def from_record(cls, record: WorkQueueRecord, active: int, scheduled: int) -> WorkQueue:
        return cls(**_fields(record), active_runs=active, scheduled_runs=scheduled)


class WorkQueueUpdate(BaseModel):
    """The work queue settings to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(default=None, ge=-MAX_INT, le=MAX_INT)
    concurrency_limit: int | None = Field(
        default=None, ge=0, le=MAX_INT, description="null removes the limit."
    )
    paused: bool | None = None


class Worker(BaseModel):
    """A worker that is running (or stopped without saying so: see ``heartbeat``)."""

    id: uuid.UUID
    name: str
    type: str = Field(description="The infrastructure it starts runs on.", examples=["process"])
    queues: list[str]
    hostname: str
    pid: int
    started: dt.datetime
    heartbeat: dt.datetime = Field(description="When it last said it is alive.")

    @classmethod
    def from_record(cls, record: WorkerRecord) -> Worker:
        return cls(**_fields(record))


# -- helpers ------------------------------------------------------------------------------------


def _fields(record: Any) -> dict[str, Any]:
    """A slotted dataclass's fields by name (``dataclasses.asdict`` would deep-copy them)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _seconds(duration: dt.timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()
