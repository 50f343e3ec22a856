"""Geometry of a flow run's Gantt chart: one row per task run, or per group of mapped runs.

Rows come from the task graph's nodes (``vivace.server.graph``), which already stand for all runs
of a mapped task as one group node with its earliest start, latest end and counts by state. A
run of 10,000 mapped tasks is therefore a handful of rows, and a group's bar is split by state in
proportion to its counts. Rows beyond ``max_rows`` are left out and the chart says how many.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from vivace.engine.states import FINAL_TYPES
from vivace.server.graph import GraphNode
from vivace.server.ui.charts import STATE_ORDER, Tick

LABEL_WIDTH = 220
ROW_HEIGHT = 20
AXIS_HEIGHT = 22


@dataclasses.dataclass(frozen=True)
class GanttSlice:
    """One state's share of a row's bar."""

    state: str
    count: int
    x: float
    width: float


@dataclasses.dataclass(frozen=True)
class GanttRow:
    """A task run (or group) drawn at ``y``; no bar (``slices`` empty) if it has not started."""

    node: GraphNode
    y: float
    slices: list[GanttSlice]
    running: bool  # started, some run in it not final: its bar reaches "now"

    @property
    def seconds(self) -> float | None:
        node = self.node
        if node.start_time is None or node.end_time is None:
            return None
        return (node.end_time - node.start_time).total_seconds()


@dataclasses.dataclass(frozen=True)
class Gantt:
    """The chart in a ``width`` by ``height`` viewBox; ``hidden_rows`` were left out."""

    width: int
    height: int
    label_width: int
    row_height: int
    rows: list[GanttRow]
    ticks: list[Tick]
    hidden_rows: int
    start: dt.datetime | None


def gantt_chart(
    nodes: Sequence[GraphNode], now: dt.datetime, *, width: int = 960, max_rows: int = 150
) -> Gantt:
    """Rows in start order (not started last), on a time axis from the first start to the last
    end (to ``now`` while some row is still running)."""
    ordered = sorted(nodes, key=_start_key)
    shown = ordered[:max_rows]
    starts = [node.start_time for node in shown if node.start_time is not None]
    plot_left, plot_width = LABEL_WIDTH, width - LABEL_WIDTH - 8
    height = AXIS_HEIGHT + ROW_HEIGHT * len(shown) + 4
    if not starts:
        rows = [
            GanttRow(node, AXIS_HEIGHT + index * ROW_HEIGHT, [], False)
            for index, node in enumerate(shown)
        ]
        return Gantt(
            width, height, LABEL_WIDTH, ROW_HEIGHT, rows, [], len(ordered) - len(shown), None
        )
    origin = min(starts)
    ends = [_row_end(node, now) for node in shown if node.start_time is not None]
    span = max((max(ends) - origin).total_seconds(), 1e-6)
    scale = plot_width / span
    rows = []
    for index, node in enumerate(shown):
        y = AXIS_HEIGHT + index * ROW_HEIGHT
        if node.start_time is None:
            rows.append(GanttRow(node, y, [], False))
            continue
        x = plot_left + (node.start_time - origin).total_seconds() * scale
        end = _row_end(node, now)
        bar = max((end - node.start_time).total_seconds() * scale, 2.0)
        rows.append(GanttRow(node, y, _slices(node, x, bar), not _is_finished(node)))
    ticks = [
        Tick(round(plot_left + plot_width * fraction, 2), _offset(span * fraction))
        for fraction in (0, 0.25, 0.5, 0.75, 1)
    ]
    return Gantt(
        width, height, LABEL_WIDTH, ROW_HEIGHT, rows, ticks, len(ordered) - len(shown), origin
    )


def _start_key(node: GraphNode) -> tuple[bool, float, str]:
    return (node.start_time is None, node.start_time.timestamp() if node.start_time else 0, node.id)


def _is_finished(node: GraphNode) -> bool:
    """Whether every run of the node is in a final state."""
    return sum(node.states.get(state, 0) for state in _FINAL) == node.count


def _row_end(node: GraphNode, now: dt.datetime) -> dt.datetime:
    """Where the row's bar ends: its last end once every run in it is final, else now."""
    assert node.start_time is not None
    if _is_finished(node):
        return node.end_time or node.start_time
    return max(now, node.end_time or node.start_time)


_FINAL = tuple(state.value for state in FINAL_TYPES)


def _slices(node: GraphNode, x: float, width: float) -> list[GanttSlice]:
    slices = []
    for state in STATE_ORDER:
        count = node.states.get(state.value, 0)
        if not count:
            continue
        size = width * count / node.count
        slices.append(GanttSlice(state.value, count, round(x, 2), round(size, 2)))
        x += size
    return slices


def _offset(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"+{seconds:.1f} s"
    if seconds < 7200:
        return f"+{seconds / 60:.1f} min"
    return f"+{seconds / 3600:.1f} h"
