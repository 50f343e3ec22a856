"""The task dependency graph of one flow run, small enough to draw even with 10,000 task runs.

Nodes are task runs; edges come from each task run's ``task_inputs`` (``{"param": ["<upstream
task run id>", ...], "__wait_for__": [...]}``): an upstream passed as an argument is a ``"data"``
edge, one listed in ``wait_for`` a ``"wait_for"`` edge.

A graph of every task run of a big mapped flow is unreadable and freezes browsers (P#9774), so
runs are grouped by task: every ``task_key`` with more than ``group_over`` runs becomes one node,
``"group:<task_key>"``, with the number of runs, their counts by state type, the earliest start
and the latest end. Edges between the same two nodes (of the same kind) are merged into one whose
``count`` says how many run-to-run dependencies it stands for. A dependency inside a group (a
chain of runs of the same task) would be a loop on the group node and is left out.

If grouping still leaves more than ``max_nodes`` nodes, the first ``max_nodes`` by start time are
kept (those not started yet last) and ``truncated`` is set; edges to dropped nodes go too, as do
edges to upstream runs outside this flow run. Example::

    graph = read_task_graph(url, flow_run_id)
    for edge in graph.edges:
        print(edge.source, "->", edge.target, edge.kind, edge.count)
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from vivace._ids import parse_id
from vivace.exceptions import ConfigurationError
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine

DATA = "data"
WAIT_FOR = "wait_for"
_WAIT_FOR_KEY = "__wait_for__"  # as vivace.engine.inputs writes it
_GROUP_PREFIX = "group:"
_RUN_NUMBER = re.compile(r"-\d+$")  # "square-17" -> task name "square"


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One task run, or (``grouped``) all runs of one task; ``states`` counts them by state type."""

    id: str  # the task run id, or "group:<task_key>"
    label: str  # the task run's name, or the task's name for a group
    task_key: str
    count: int
    states: dict[str, int]
    start_time: dt.datetime | None  # the earliest start of the node's runs
    end_time: dt.datetime | None  # the latest end of those that ended
    grouped: bool


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """``target`` took input from ``source``; ``count`` run-to-run dependencies merged in one."""

    source: str
    target: str
    kind: str  # "data" or "wait_for"
    count: int


@dataclass(frozen=True, slots=True)
class TaskGraph:
    """Nodes in start order, edges, how many task runs the flow run has, and whether nodes
    were dropped to stay under ``max_nodes``."""

    nodes: list[GraphNode]
    edges: list[GraphEdge]
    task_run_count: int
    truncated: bool


def read_task_graph(
    bind: sa.Engine | str,
    flow_run_id: uuid.UUID | str,
    *,
    group_over: int = 20,
    max_nodes: int = 2000,
) -> TaskGraph:
    """The dependency graph of the flow run's task runs (empty for an unknown flow run).

    ``bind`` is an engine or a database URL. One query reads only the columns the graph needs.
    """
    run_id = parse_id(flow_run_id, "flow run id")
    _check_count(group_over, "group_over", minimum=0)
    _check_count(max_nodes, "max_nodes", minimum=1)
    rows = _read_rows(bind, run_id)
    return build_task_graph(rows, group_over=group_over, max_nodes=max_nodes)


def build_task_graph(
    rows: Iterable[Mapping[str, Any]], *, group_over: int = 20, max_nodes: int = 2000
) -> TaskGraph:
    """The graph of task-run rows (``id``, ``task_key``, ``name``, ``state_type``,
    ``start_time``, ``end_time``, ``task_inputs``): the pure half of ``read_task_graph``."""
    runs = [_Run.from_row(row) for row in rows]
    runs_per_key = Counter(run.task_key for run in runs)
    grouped_keys = {key for key, count in runs_per_key.items() if count > group_over}

    node_of: dict[str, str] = {}
    builders: dict[str, _NodeBuilder] = {}
    for run in runs:
        grouped = run.task_key in grouped_keys
        node_id = _GROUP_PREFIX + run.task_key if grouped else run.id
        node_of[run.id] = node_id
        builder = builders.get(node_id)
        if builder is None:
            label = _RUN_NUMBER.sub("", run.name) if grouped else run.name
            builder = builders[node_id] = _NodeBuilder(node_id, label, run.task_key, grouped)
        builder.add(run)

    nodes = sorted((builder.build() for builder in builders.values()), key=_start_order)
    truncated = len(nodes) > max_nodes
    if truncated:
        nodes = nodes[:max_nodes]
    kept = {node.id for node in nodes}
    edges = _merged_edges(runs, node_of, kept)
    return TaskGraph(nodes=nodes, edges=edges, task_run_count=len(runs), truncated=truncated)


# -- reading ------------------------------------------------------------------------------------


def _read_rows(bind: sa.Engine | str, flow_run_id: uuid.UUID) -> list[dict[str, Any]]:
    engine = get_engine(bind) if isinstance(bind, str) else bind
    table = schema.task_runs
    query = sa.select(
        table.c.id,
        table.c.task_key,
        table.c.name,
        table.c.state_type,
        table.c.start_time,
        table.c.end_time,
        table.c.task_inputs,
    ).where(table.c.flow_run_id == flow_run_id)
    ensure_schema(engine)
    with connect(engine) as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _check_count(value: int, argument: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{argument} {value!r} is not allowed; expected a whole number of at least {minimum}"
        )


# -- building -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    id: str
    task_key: str
    name: str
    state_type: str
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    upstreams: tuple[tuple[str, str], ...]  # (upstream task run id, edge kind), no repeats

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> _Run:
        return cls(
            id=str(row["id"]),
            task_key=row["task_key"],
            name=row["name"],
            state_type=str(row["state_type"]),
            start_time=row["start_time"],
            end_time=row["end_time"],
            upstreams=_upstreams(row["task_inputs"]),
        )


def _upstreams(task_inputs: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(task_inputs, dict):
        return ()
    found: dict[tuple[str, str], None] = {}
    for parameter, ids in task_inputs.items():
        kind = WAIT_FOR if parameter == _WAIT_FOR_KEY else DATA
        if isinstance(ids, list):
            for upstream_id in ids:
                found[(str(upstream_id), kind)] = None
    return tuple(found)


class _NodeBuilder:
    """Accumulates the runs of one node."""

    __slots__ = ("end_time", "grouped", "id", "label", "start_time", "states", "task_key")

    def __init__(self, node_id: str, label: str, task_key: str, grouped: bool) -> None:
        self.id = node_id
        self.label = label
        self.task_key = task_key
        self.grouped = grouped
        self.states: Counter[str] = Counter()
        self.start_time: dt.datetime | None = None
        self.end_time: dt.datetime | None = None

    def add(self, run: _Run) -> None:
        self.states[run.state_type] += 1
        if run.start_time is not None and (
            self.start_time is None or run.start_time < self.start_time
        ):
            self.start_time = run.start_time
        if run.end_time is not None and (self.end_time is None or run.end_time > self.end_time):
            self.end_time = run.end_time

    def build(self) -> GraphNode:
        return GraphNode(
            id=self.id,
            label=self.label,
            task_key=self.task_key,
            count=sum(self.states.values()),
            states=dict(self.states),
            start_time=self.start_time,
            end_time=self.end_time,
            grouped=self.grouped,
        )


def _start_order(node: GraphNode) -> tuple[bool, float, str]:
    # Not started yet: last. Ties (and unstarted nodes) in id order, so the result is stable.
    started = node.start_time is not None
    return (not started, node.start_time.timestamp() if node.start_time else 0.0, node.id)


def _merged_edges(runs: list[_Run], node_of: dict[str, str], kept: set[str]) -> list[GraphEdge]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for run in runs:
        target = node_of[run.id]
        if target not in kept:
            continue
        for upstream_id, kind in run.upstreams:
            source = node_of.get(upstream_id)
            if source is None or source == target or source not in kept:
                continue
            counts[(source, target, kind)] += 1
    return [
        GraphEdge(source=source, target=target, kind=kind, count=count)
        for (source, target, kind), count in counts.items()
    ]
