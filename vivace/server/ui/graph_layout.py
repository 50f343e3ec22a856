"""A layered drawing of a flow run's task graph: columns by dependency depth, left to right.

A node's column is the length of the longest dependency path leading to it, so every edge points
rightwards and a chain of tasks reads as a line. Within a column, nodes are ordered by the mean
row of their upstream nodes (one barycenter sweep, which untangles most edges), then by start
time. The work is linear in nodes plus edges; mapped tasks arrive from ``read_task_graph`` as one
group node each, so even a 10,000-task run is a few boxes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from collections.abc import Sequence

from vivace.server.graph import GraphEdge, GraphNode

NODE_WIDTH = 168
NODE_HEIGHT = 40
COLUMN_GAP = 64
ROW_GAP = 14
MARGIN = 12
LABEL_CHARS = 22


@dataclasses.dataclass(frozen=True)
class PlacedNode:
    """A node's box at ``(x, y)`` (top left), with the label cut to fit."""

    node: GraphNode
    x: float
    y: float
    label: str
    state: str  # the state that colours the box: the node's, or a group's most pressing one


@dataclasses.dataclass(frozen=True)
class PlacedEdge:
    """An edge as an SVG path, and where its count label goes (if it merges several)."""

    edge: GraphEdge
    path: str
    label_x: float
    label_y: float


@dataclasses.dataclass(frozen=True)
class GraphLayout:
    """Placed nodes and edges in a ``width`` by ``height`` viewBox."""

    width: int
    height: int
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


# A group's box takes the colour of the first of these states any of its runs is in.
_PRESSING = (
    "CRASHED",
    "FAILED",
    "RUNNING",
    "CANCELLING",
    "PAUSED",
    "PENDING",
    "SCHEDULED",
    "CANCELLED",
    "COMPLETED",
)


def depths(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> dict[str, int]:
    """Each node's column: the longest path to it from a node with no upstream (Kahn's order).

    Nodes on a cycle (which a task graph cannot have, but stored data could) go one column past
    the deepest other node rather than being lost.
    """
    ids = [node.id for node in nodes]
    downstream: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(ids, 0)
    for edge in edges:
        if edge.source in waiting and edge.target in waiting and edge.source != edge.target:
            downstream[edge.source].append(edge.target)
            waiting[edge.target] += 1
    depth = dict.fromkeys(ids, 0)
    ready = deque(node_id for node_id in ids if waiting[node_id] == 0)
    placed = set()
    while ready:
        node_id = ready.popleft()
        placed.add(node_id)
        for target in downstream[node_id]:
            depth[target] = max(depth[target], depth[node_id] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    if len(placed) < len(ids):
        beyond = max((depth[node_id] for node_id in placed), default=-1) + 1
        for node_id in ids:
            if node_id not in placed:
                depth[node_id] = beyond
    return depth


def layout_graph(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> GraphLayout:
    """Place ``nodes`` (in start order, as ``read_task_graph`` gives them) and route ``edges``."""
    column_of = depths(nodes, edges)
    columns: dict[int, list[GraphNode]] = defaultdict(list)
    for node in nodes:  # start order is kept within a column as the tie-breaker
        columns[column_of[node.id]].append(node)
    upstream: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        upstream[edge.target].append(edge.source)

    row_of: dict[str, int] = {}
    for column in sorted(columns):
        members = columns[column]
        if column > 0:
            members.sort(key=lambda node: _barycenter(upstream[node.id], row_of))
        for row, node in enumerate(members):
            row_of[node.id] = row

    position: dict[str, tuple[float, float]] = {}
    placed = []
    for column, members in sorted(columns.items()):
        x = MARGIN + column * (NODE_WIDTH + COLUMN_GAP)
        for row, node in enumerate(members):
            y = MARGIN + row * (NODE_HEIGHT + ROW_GAP)
            position[node.id] = (x, y)
            placed.append(PlacedNode(node, x, y, _short(node.label), _colour_state(node)))
    placed_edges = [
        _route(edge, position)
        for edge in edges
        if edge.source in position and edge.target in position
    ]
    width = MARGIN * 2 + max(len(columns), 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    tallest = max((len(members) for members in columns.values()), default=1)
    height = MARGIN * 2 + tallest * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return GraphLayout(int(width), int(height), placed, placed_edges)


def _barycenter(sources: list[str], row_of: dict[str, int]) -> float:
    rows = [row_of[source] for source in sources if source in row_of]
    return sum(rows) / len(rows) if rows else float("inf")


def _route(edge: GraphEdge, position: dict[str, tuple[float, float]]) -> PlacedEdge:
    """A horizontal S-curve from the right side of the source to the left side of the target."""
    source_x, source_y = position[edge.source]
    target_x, target_y = position[edge.target]
    x1, y1 = source_x + NODE_WIDTH, source_y + NODE_HEIGHT / 2
    x2, y2 = target_x, target_y + NODE_HEIGHT / 2
    bend = max(abs(x2 - x1) / 2, 24)
    path = (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )
    return PlacedEdge(edge, path, round((x1 + x2) / 2, 1), round((y1 + y2) / 2 - 4, 1))


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _colour_state(node: GraphNode) -> str:
    for state in _PRESSING:
        if node.states.get(state):
            return state
    return next(iter(node.states), "PENDING")
