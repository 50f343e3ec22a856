"""The task graph (vivace.server.graph): edges from task_inputs, grouping of mapped tasks, limits.

Crafted rows test ``build_task_graph`` alone; real flows test ``read_task_graph`` and the
``/graph`` endpoint on every backend.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from vivace import flow, task, unmapped
from vivace.exceptions import ConfigurationError
from vivace.server.graph import (
    GraphEdge,
    GraphNode,
    TaskGraph,
    build_task_graph,
    read_task_graph,
)
from vivace.store import schema
from vivace.store.database import ensure_schema, get_engine, transaction
from vivace.store.writer import get_writer

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(
    name: str,
    *,
    key: str | None = None,
    state: str = "COMPLETED",
    start: float | None = 0.0,
    end: float | None = 1.0,
    inputs: dict[str, list[str]] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": uuid.UUID(run_id) if run_id else uuid.uuid4(),
        "task_key": key or f"tasks.{name.rsplit('-', 1)[0]}",
        "name": name,
        "state_type": state,
        "start_time": None if start is None else T0 + dt.timedelta(seconds=start),
        "end_time": None if end is None else T0 + dt.timedelta(seconds=end),
        "task_inputs": inputs,
    }


def ids(*rows: dict[str, Any]) -> list[str]:
    return [str(r["id"]) for r in rows]


# -- crafted rows -------------------------------------------------------------------------------


def test_data_and_wait_for_edges_between_single_runs() -> None:
    extract = row("extract-0", start=0)
    transform = row("transform-0", start=1, inputs={"data": ids(extract)})
    load = row("load-0", start=2, inputs={"rows": ids(transform), "__wait_for__": ids(extract)})

    graph = build_task_graph([load, extract, transform])

    assert [node.label for node in graph.nodes] == ["extract-0", "transform-0", "load-0"]
    assert not any(node.grouped for node in graph.nodes)
    e, t, lo = ids(extract, transform, load)
    assert sorted(graph.edges, key=lambda edge: (edge.source, edge.target)) == sorted(
        [
            GraphEdge(e, t, "data", 1),
            GraphEdge(t, lo, "data", 1),
            GraphEdge(e, lo, "wait_for", 1),
        ],
        key=lambda edge: (edge.source, edge.target),
    )
    assert graph.task_run_count == 3
    assert graph.truncated is False


def test_a_node_holds_the_run_itself() -> None:
    run = row("fetch-0", state="FAILED", start=3, end=5)

    (node,) = build_task_graph([run]).nodes

    assert node == GraphNode(
        id=str(run["id"]),
        label="fetch-0",
        task_key="tasks.fetch",
        count=1,
        states={"FAILED": 1},
        start_time=T0 + dt.timedelta(seconds=3),
        end_time=T0 + dt.timedelta(seconds=5),
        grouped=False,
    )


def test_tasks_with_more_runs_than_group_over_become_one_node_with_merged_edges() -> None:
    source = row("split-0", start=0)
    mapped = [
        row(
            f"square-{i}",
            state="FAILED" if i == 3 else "COMPLETED",
            start=1 + i,
            end=None if i == 4 else 2 + i,
            inputs={"x": ids(source)},
        )
        for i in range(5)
    ]
    total = row("reduce-0", start=10, inputs={"values": ids(*mapped)})

    graph = build_task_graph([source, *mapped, total], group_over=4)

    assert [node.id for node in graph.nodes] == [
        str(source["id"]),
        "group:tasks.square",
        str(total["id"]),
    ]
    group = graph.nodes[1]
    assert group == GraphNode(
        id="group:tasks.square",
        label="square",
        task_key="tasks.square",
        count=5,
        states={"COMPLETED": 4, "FAILED": 1},
        start_time=T0 + dt.timedelta(seconds=1),
        end_time=T0 + dt.timedelta(seconds=5),  # the latest end of those that ended
        grouped=True,
    )
    assert sorted(graph.edges, key=lambda edge: edge.target) == sorted(
        [
            GraphEdge(str(source["id"]), "group:tasks.square", "data", 5),
            GraphEdge("group:tasks.square", str(total["id"]), "data", 5),
        ],
        key=lambda edge: edge.target,
    )


def test_exactly_group_over_runs_stay_single_nodes() -> None:
    runs = [row(f"square-{i}", start=i) for i in range(3)]

    graph = build_task_graph(runs, group_over=3)

    assert [node.grouped for node in graph.nodes] == [False, False, False]


def test_dependencies_inside_a_group_and_outside_the_flow_run_are_left_out() -> None:
    outside = str(uuid.uuid4())
    chain = [row("step-0", start=0, inputs={"x": [outside]})]
    for i in range(1, 4):
        chain.append(row(f"step-{i}", start=i, inputs={"x": ids(chain[-1])}))

    grouped = build_task_graph(chain, group_over=2)
    single = build_task_graph(chain, group_over=10)

    assert [node.id for node in grouped.nodes] == ["group:tasks.step"]
    assert grouped.edges == []
    assert len(single.edges) == 3  # step-i -> step-i+1; the outside upstream has no node


def test_an_upstream_listed_twice_by_one_run_counts_once() -> None:
    upstream = row("a-0", start=0)
    downstream = row("b-0", start=1, inputs={"x": ids(upstream), "y": ids(upstream, upstream)})

    graph = build_task_graph([upstream, downstream])

    assert graph.edges == [GraphEdge(str(upstream["id"]), str(downstream["id"]), "data", 1)]


def test_max_nodes_keeps_the_earliest_started_and_drops_their_edges() -> None:
    first = row("a-0", start=0)
    second = row("b-0", start=1, inputs={"x": ids(first)})
    not_started = row("c-0", start=None, end=None, state="PENDING", inputs={"x": ids(second)})

    graph = build_task_graph([not_started, second, first], max_nodes=2)

    assert graph.truncated is True
    assert [node.label for node in graph.nodes] == ["a-0", "b-0"]
    assert graph.edges == [GraphEdge(str(first["id"]), str(second["id"]), "data", 1)]
    assert graph.task_run_count == 3


def test_rows_without_inputs_or_with_odd_inputs_have_no_edges() -> None:
    graph = build_task_graph(
        [row("a-0", inputs=None), row("b-0", inputs={}), row("c-0", inputs={"x": "not-a-list"})]
    )

    assert len(graph.nodes) == 3
    assert graph.edges == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"group_over": -1}, "group_over -1", id="negative-group-over"),
        pytest.param({"max_nodes": 0}, "max_nodes 0", id="zero-max-nodes"),
        pytest.param({"max_nodes": True}, "max_nodes True", id="bool-max-nodes"),
    ],
)
def test_bad_arguments_are_refused_before_reading(
    arguments: dict[str, Any], message: str, tmp_path: Any
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        read_task_graph(f"sqlite:///{tmp_path / 'never-created.db'}", uuid.uuid4(), **arguments)
    assert not (tmp_path / "never-created.db").exists()


def test_a_malformed_flow_run_id_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="flow run id 'nope'"):
        read_task_graph(f"sqlite:///{tmp_path / 'x.db'}", "nope")


# -- the same rows read from the database -------------------------------------------------------


def _scenarios() -> list[Any]:
    split_run = row("split-0", start=0)
    mapped = [
        row(
            f"square-{i}",
            start=1 + i,
            state="FAILED" if i == 2 else "COMPLETED",
            inputs={"x": ids(split_run), "__wait_for__": ids(split_run)},
        )
        for i in range(6)
    ]
    reduce_run = row("reduce-0", start=10, inputs={"values": ids(*mapped, *mapped)})
    chain = [row("step-0", start=0, inputs={"x": [str(uuid.uuid4()), "not-an-id"]})]
    for i in range(1, 5):
        chain.append(row(f"step-{i}", start=i, inputs={"x": ids(chain[-1]), "y": ids(chain[0])}))
    pending = row("late-0", start=None, end=None, state="PENDING", inputs={"x": ids(reduce_run)})
    odd = [row("a-0", inputs=None), row("b-0", inputs={"x": "not-a-list"}), row("c-0", inputs={})]
    return [
        pytest.param([split_run, *mapped, reduce_run], {"group_over": 4}, id="mapped-grouped"),
        pytest.param([split_run, *mapped, reduce_run], {}, id="mapped-single"),
        pytest.param(
            [split_run, *mapped, reduce_run, pending], {"max_nodes": 3}, id="max-nodes-singles"
        ),
        pytest.param(
            [split_run, *mapped, reduce_run, pending],
            {"group_over": 4, "max_nodes": 2},
            id="max-nodes-groups",
        ),
        pytest.param(chain, {"group_over": 3}, id="chain-grouped"),
        pytest.param(chain, {}, id="chain-single"),
        pytest.param(chain, {"group_over": 0}, id="everything-grouped"),
        pytest.param(odd, {}, id="odd-inputs"),
    ]


def _sorted_edges(graph: TaskGraph) -> list[GraphEdge]:
    return sorted(graph.edges, key=lambda edge: (edge.source, edge.target, edge.kind))


@pytest.mark.parametrize(("rows", "arguments"), _scenarios())
def test_the_database_builds_the_graph_that_build_task_graph_builds(
    database_url: str, rows: list[dict[str, Any]], arguments: dict[str, int]
) -> None:
    flow_run_id = uuid.uuid4()
    engine = get_engine(database_url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(
            schema.task_runs.insert(),
            [
                {
                    **values,
                    "flow_run_id": flow_run_id,
                    "state_name": values["state_type"].title(),
                    "state_timestamp": T0,
                    "created": T0,
                }
                for values in rows
            ],
        )

    expected = build_task_graph(rows, **arguments)
    graph = read_task_graph(database_url, flow_run_id, **arguments)

    assert graph.nodes == expected.nodes
    assert _sorted_edges(graph) == _sorted_edges(expected)
    assert (graph.task_run_count, graph.truncated) == (expected.task_run_count, expected.truncated)


# -- real flows ---------------------------------------------------------------------------------


@task
def split() -> int:
    return 2


@task
def scale(x: int, factor: int) -> int:
    return x * factor


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def announce() -> str:
    return "done"


@flow
def mapped_flow(n: int) -> str:
    factor = split.submit()
    scaled = scale.map(range(n), unmapped(factor))
    summed = total.submit(scaled)
    return announce.submit(wait_for=[summed]).result()


def run_mapped_flow(n: int) -> uuid.UUID:
    state = mapped_flow(n, return_state=True)
    get_writer().flush()
    run_id: uuid.UUID = state.run_id
    return run_id


def _graph_shape(graph: TaskGraph) -> tuple[list[tuple[str, int, bool]], set[tuple[str, ...]]]:
    labels = {node.id: node.label for node in graph.nodes}
    nodes = [(node.label, node.count, node.grouped) for node in graph.nodes]
    edges = {
        (labels[edge.source], labels[edge.target], edge.kind, str(edge.count))
        for edge in graph.edges
    }
    return nodes, edges


def test_a_real_mapped_flow(database_url: str) -> None:
    flow_run_id = run_mapped_flow(30)

    graph = read_task_graph(database_url, flow_run_id)

    nodes, edges = _graph_shape(graph)
    assert nodes == [
        ("split-0", 1, False),
        ("scale", 30, True),
        ("total-0", 1, False),
        ("announce-0", 1, False),
    ]
    assert edges == {
        ("split-0", "scale", "data", "30"),
        ("scale", "total-0", "data", "30"),
        ("total-0", "announce-0", "wait_for", "1"),
    }
    assert graph.task_run_count == 33
    assert graph.nodes[1].states == {"COMPLETED": 30}


def test_ten_thousand_mapped_runs_make_a_handful_of_nodes(database_url: str) -> None:
    flow_run_id = run_mapped_flow(10_000)

    graph = read_task_graph(database_url, flow_run_id)

    assert graph.task_run_count == 10_003
    assert len(graph.nodes) == 4
    assert len(graph.edges) == 3
    assert graph.truncated is False


def test_an_unknown_flow_run_has_an_empty_graph(database_url: str) -> None:
    graph = read_task_graph(database_url, uuid.uuid4())

    assert graph == TaskGraph(nodes=[], edges=[], task_run_count=0, truncated=False)


def test_graph_endpoint(api: Any) -> None:
    flow_run_id = run_mapped_flow(5)

    grouped = api.get(f"/api/flow-runs/{flow_run_id}/graph", params={"group_over": 4}).json()
    single = api.get(f"/api/flow-runs/{flow_run_id}/graph").json()
    truncated = api.get(f"/api/flow-runs/{flow_run_id}/graph", params={"max_nodes": 2}).json()

    assert [node["id"] for node in grouped["nodes"]][1] == "group:test_api_graph.scale"
    assert grouped["nodes"][1]["states"] == {"COMPLETED": 5}
    assert {edge["kind"] for edge in grouped["edges"]} == {"data", "wait_for"}
    assert len(single["nodes"]) == 8 and single["task_run_count"] == 8
    assert (len(truncated["nodes"]), truncated["truncated"]) == (2, True)


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        pytest.param("", 404, "not found", id="unknown-run"),
        pytest.param("?group_over=-1", 422, "group_over", id="negative-group-over"),
        pytest.param("?max_nodes=0", 422, "max_nodes", id="zero-max-nodes"),
    ],
)
def test_graph_endpoint_errors(api: Any, query: str, status: int, detail: str) -> None:
    response = api.get(f"/api/flow-runs/{uuid.uuid4()}/graph{query}")

    assert response.status_code == status
    assert detail in response.json()["detail"]
