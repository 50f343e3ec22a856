"""The UI's geometry and input handling, without a server: charts, Gantt rows, graph layout,
query parsing, and the text filters templates use."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from starlette.datastructures import QueryParams

from vivace.engine.states import StateType
from vivace.server.graph import GraphEdge, GraphNode
from vivace.server.ui.charts import Bucket, nice_ceiling, stacked_bars, state_timeline
from vivace.server.ui.gantt import gantt_chart
from vivace.server.ui.graph_layout import NODE_HEIGHT, depths, layout_graph
from vivace.server.ui.params import PageQuery
from vivace.server.ui.rendering import duration_text, relative_time, utc_iso
from vivace.server.ui.routing import PageError
from vivace.store.records import StateRecord

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def node(
    node_id: str,
    start: float | None,
    end: float | None,
    states: dict[str, int] | None = None,
    grouped: bool = False,
) -> GraphNode:
    states = states or {"COMPLETED": 1}
    return GraphNode(
        id=node_id,
        label=node_id,
        task_key=f"tests.{node_id}",
        count=sum(states.values()),
        states=states,
        start_time=None if start is None else at(start),
        end_time=None if end is None else at(end),
        grouped=grouped,
    )


# -- charts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (140, 200), (501, 1000)],
)
def test_nice_ceiling_rounds_up_to_1_2_5(value: float, expected: int) -> None:
    assert nice_ceiling(value) == expected


def test_stacked_bars_stack_states_bottom_up_within_the_plot() -> None:
    buckets = [
        Bucket(at(0), at(3600), {StateType.COMPLETED: 6, StateType.FAILED: 2}),
        Bucket(at(3600), at(7200), {}),
        Bucket(at(7200), at(10800), {StateType.RUNNING: 10}),
    ]
    chart = stacked_bars(buckets, label_format="%H:%M", width=400, height=200)

    assert chart.total == 18
    assert [tick.label for tick in chart.y_ticks] == ["0", "5", "10"]
    first, empty, last = chart.bars
    assert [segment.state for segment in first.segments] == ["COMPLETED", "FAILED"]
    assert empty.segments == []
    # 10 runs reach the top of the plot exactly; 8 runs are 80 % of its height.
    assert last.segments[0].y == pytest.approx(10)
    plot_height = chart.plot_bottom - 10
    assert sum(s.height for s in first.segments) == pytest.approx(plot_height * 0.8)
    # Segments touch: each starts where the one below ends.
    completed, failed = first.segments
    assert failed.y + failed.height == pytest.approx(completed.y)
    assert first.x < empty.x < last.x
    assert [tick.label for tick in chart.x_ticks] == ["12:00", "13:00", "14:00"]


def test_state_timeline_spans_fill_the_width_in_order() -> None:
    states = [
        StateRecord(1, StateType.PENDING, "Pending", at(0), None),
        StateRecord(2, StateType.RUNNING, "Running", at(0.001), None),
        StateRecord(3, StateType.COMPLETED, "Completed", at(10), None),
    ]
    spans = state_timeline(states, now=at(60), width=1000)

    assert [span.name for span in spans] == ["Pending", "Running", "Completed"]
    assert spans[0].width >= 3  # a millisecond is still visible
    assert spans[1].width > 900  # ten seconds take nearly everything
    assert spans[1].seconds == pytest.approx(9.999)
    assert spans[-1].x + spans[-1].width == pytest.approx(1000)
    for left, right in itertools.pairwise(spans):
        assert left.x + left.width == pytest.approx(right.x, abs=0.02)


def test_state_timeline_of_a_running_run_reaches_now() -> None:
    states = [
        StateRecord(1, StateType.PENDING, "Pending", at(0), None),
        StateRecord(2, StateType.RUNNING, "Running", at(1), None),
    ]
    spans = state_timeline(states, now=at(4), width=960)

    assert spans[-1].end is None
    assert spans[-1].x + spans[-1].width == pytest.approx(960, abs=0.02)
    assert spans[-1].width > spans[0].width * 2


def test_a_state_timeline_of_many_retries_still_fits_the_width() -> None:
    # Three units per state would need more than the width: spans went negative.
    states = [StateRecord(1, StateType.PENDING, "Pending", at(0), None)]  # a long first state
    states += [
        StateRecord(seq, StateType.RUNNING if seq % 2 else StateType.SCHEDULED, "s", at(seq), None)
        for seq in range(900, 1900)
    ]
    states.append(StateRecord(1900, StateType.FAILED, "Failed", at(1900), None))

    spans = state_timeline(states, now=at(2000), width=960)

    assert len(spans) == 1002
    assert all(span.width > 0 for span in spans)
    assert spans[-1].x + spans[-1].width == pytest.approx(960, abs=0.02)
    for left, right in itertools.pairwise(spans):
        assert left.x + left.width == pytest.approx(right.x, abs=0.02)


# -- Gantt --------------------------------------------------------------------------------------


def test_gantt_orders_rows_by_start_and_splits_a_group_by_state() -> None:
    nodes = [
        node("late", 5, 10),
        node("mapped", 0, 5, {"COMPLETED": 90, "FAILED": 10}, grouped=True),
        node("waiting", None, None, {"PENDING": 1}),
    ]
    gantt = gantt_chart(nodes, now=at(20), width=1000)

    assert [row.node.id for row in gantt.rows] == ["mapped", "late", "waiting"]
    mapped, late, waiting = gantt.rows
    assert [s.state for s in mapped.slices] == ["COMPLETED", "FAILED"]
    assert mapped.slices[0].width == pytest.approx(mapped.slices[1].width * 9)
    # The axis runs from the first start to the last end: "late" ends at the right edge.
    plot_right = gantt.width - 8
    assert late.slices[-1].x + late.slices[-1].width == pytest.approx(plot_right)
    assert waiting.slices == []
    assert not mapped.running
    assert gantt.hidden_rows == 0


def test_gantt_draws_unfinished_rows_to_now_and_caps_rows() -> None:
    nodes = [node(f"t{index}", index, index + 1) for index in range(10)]
    nodes.append(node("still-going", 2, None, {"RUNNING": 1}))
    gantt = gantt_chart(nodes, now=at(100), max_rows=5)

    assert len(gantt.rows) == 5
    assert gantt.hidden_rows == 6
    running = next(row for row in gantt.rows if row.node.id == "still-going")
    assert running.running
    assert running.seconds is None


# -- graph layout -------------------------------------------------------------------------------


def edge(source: str, target: str, kind: str = "data", count: int = 1) -> GraphEdge:
    return GraphEdge(source=source, target=target, kind=kind, count=count)


def test_depth_is_the_longest_path_from_a_source() -> None:
    nodes = [node(name, 0, 1) for name in "abcde"]
    edges = [edge("a", "b"), edge("b", "c"), edge("a", "c"), edge("c", "d"), edge("a", "d")]
    assert depths(nodes, edges) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}


def test_nodes_on_a_cycle_still_get_a_column() -> None:
    nodes = [node(name, 0, 1) for name in "abc"]
    edges = [edge("a", "b"), edge("b", "c"), edge("c", "b")]
    found = depths(nodes, edges)
    assert found["a"] == 0
    assert found["b"] == found["c"] == 1


def test_layout_places_columns_left_to_right_without_overlaps() -> None:
    nodes = [node("extract", 0, 1), node("square", 1, 2, {"COMPLETED": 500}, grouped=True)]
    nodes += [node("load", 2, 3), node("audit", 2, 3)]
    edges = [
        edge("extract", "square", count=500),
        edge("square", "load", count=500),
        edge("extract", "audit", kind="wait_for"),
    ]
    layout = layout_graph(nodes, edges)

    where = {placed.node.id: (placed.x, placed.y) for placed in layout.nodes}
    assert where["extract"][0] < where["square"][0] < where["load"][0]
    assert where["audit"][0] == where["square"][0]
    boxes = sorted(where.values())
    for (x1, y1), (x2, y2) in itertools.pairwise(boxes):
        assert x1 != x2 or abs(y1 - y2) >= NODE_HEIGHT
    assert all(0 <= x <= layout.width and 0 <= y <= layout.height for x, y in where.values())
    assert {placed.edge.kind for placed in layout.edges} == {"data", "wait_for"}
    assert all(placed.path.startswith("M") for placed in layout.edges)


def test_layout_colours_a_group_by_its_most_pressing_state() -> None:
    group = node("mapped", 0, 1, {"COMPLETED": 98, "FAILED": 1, "RUNNING": 1}, grouped=True)
    (placed,) = layout_graph([group], []).nodes
    assert placed.state == "FAILED"


def test_layout_cuts_long_labels() -> None:
    (placed,) = layout_graph([node("a" * 60, 0, 1)], []).nodes
    assert len(placed.label) <= 22
    assert placed.label.endswith("…")


# -- query parameters ---------------------------------------------------------------------------


def query(text: str) -> PageQuery:
    return PageQuery(QueryParams(text))


def test_query_reads_states_times_levels_and_treats_empty_as_absent() -> None:
    q = query(
        "state=failed&state=CRASHED&state=failed&started_after=2024-05-01T12:00&level=warning"
    )
    assert q.states() == [StateType.FAILED, StateType.CRASHED]
    assert q.time("started_after") == T0
    assert q.time("started_before") is None
    assert q.level() == 30
    assert query("name=&state=").states() is None
    assert query("name=").text("name") is None
    assert query("level=15").level() == 15
    assert query("t=2024-05-01T14:00:00%2B02:00").time("t") == T0


@pytest.mark.parametrize(
    ("text", "read", "message"),
    [
        pytest.param(
            "state=DONE", lambda q: q.states(), "state 'DONE' is not a state type", id="state"
        ),
        pytest.param(
            "after=noon", lambda q: q.time("after"), "after 'noon' is not a time", id="time"
        ),
        pytest.param(
            "level=LOUD", lambda q: q.level(), "level 'LOUD' is not a log level", id="level"
        ),
        pytest.param(
            "sort=best",
            lambda q: q.choice("sort", ("a", "b"), "a"),
            "sort 'best' is not one of a, b",
            id="choice",
        ),
        pytest.param(
            "name=" + "x" * 300, lambda q: q.text("name"), "expected at most 255", id="too-long"
        ),
    ],
)
def test_bad_query_values_are_400s_that_name_the_field(text: str, read, message: str) -> None:
    with pytest.raises(PageError, match=message) as caught:
        read(query(text))
    assert caught.value.status_code == 400


# -- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "—"),
        (0.0000042, "4 µs"),
        (0.42, "420 ms"),
        (3.14159, "3.14 s"),
        (185, "3 min 05 s"),
        (7260, "2 h 01 min"),
        (dt.timedelta(days=2, hours=3), "2 d 03 h"),
    ],
)
def test_durations_read_naturally(seconds: float | dt.timedelta | None, expected: str) -> None:
    assert duration_text(seconds) == expected


def test_times_are_exact_utc_or_relative() -> None:
    local = dt.datetime(2024, 5, 1, 14, 0, 0, 250_000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert utc_iso(local) == "2024-05-01T12:00:00.250Z"
    assert relative_time(at(0), now=at(190)) == "3 min ago"
    assert relative_time(at(7200), now=at(0)) == "in 2 h"
    assert relative_time(at(0), now=at(0.5)) == "now"
    assert relative_time(None) == "—"


def test_every_template_compiles_and_the_static_files_ship_beside_them() -> None:
    from vivace.server.ui import rendering, router

    templates = sorted(rendering.TEMPLATES_DIR.rglob("*.html"))
    assert len(templates) >= 15
    for path in templates:
        rendering._ENVIRONMENT.get_template(str(path.relative_to(rendering.TEMPLATES_DIR)))
    assert {path.name for path in router.STATIC_DIR.iterdir()} >= {
        "vivace.css",
        "vivace.js",
        "favicon.svg",
    }


def test_a_live_page_follows_its_lines_or_skips_ahead_of_a_long_log() -> None:
    from vivace.server.ui.live import live_settings
    from vivace.store.queries import LogPage

    def settings(logs: LogPage) -> dict[str, str]:
        return live_settings(
            root="", live_url="/l", sections_url="/s", key="k", logs=logs, final=False
        )

    short = settings(LogPage(records=[], next_cursor=None, resume_cursor="after-last-line"))
    assert short["log-cursor"] == "after-last-line" and short["log-after"] == ""
    long = settings(LogPage(records=[], next_cursor="page-2", resume_cursor="after-line-500"))
    assert long["log-cursor"] == ""
    assert dt.datetime.fromisoformat(long["log-after"]) <= dt.datetime.now(dt.UTC)
