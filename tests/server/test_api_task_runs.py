"""``/api/task-runs/{id}``: one task run with its upstream runs, and its state history, over
task runs of real flows, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from vivace import flow, task
from vivace._ids import uuid7
from vivace.store import schema
from vivace.store.database import ensure_schema, get_engine, transaction
from vivace.store.writer import get_writer


@task
def numbers() -> list[int]:
    return [1, 2]


@task
def gate() -> None:
    return None


@task
def combine(left: list[int], right: list[int]) -> int:
    return sum(left) + sum(right)


@flow
def combining() -> int:
    first, second, ready = numbers.submit(), numbers.submit(), gate.submit()
    return combine.submit(first, second, wait_for=[ready]).result()


def task_runs_by_name(api: Any) -> dict[str, dict[str, Any]]:
    state = combining(return_state=True)
    get_writer().flush()
    page = api.get(f"/api/flow-runs/{state.run_id}/task-runs").json()
    return {item["name"]: item for item in page["items"]}


def test_a_task_run_with_its_upstreams(api: Any) -> None:
    runs = task_runs_by_name(api)
    combined = runs["combine-0"]

    response = api.get(f"/api/task-runs/{combined['id']}")

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in combined} == combined
    assert body["task_inputs"] == {
        "left": [runs["numbers-0"]["id"]],
        "right": [runs["numbers-1"]["id"]],
        "__wait_for__": [runs["gate-0"]["id"]],
    }
    assert body["upstreams"] == [
        {
            "parameter": "left",
            "kind": "data",
            "task_run_id": runs["numbers-0"]["id"],
            "name": "numbers-0",
            "state_type": "COMPLETED",
        },
        {
            "parameter": "right",
            "kind": "data",
            "task_run_id": runs["numbers-1"]["id"],
            "name": "numbers-1",
            "state_type": "COMPLETED",
        },
        {
            "parameter": "__wait_for__",
            "kind": "wait_for",
            "task_run_id": runs["gate-0"]["id"],
            "name": "gate-0",
            "state_type": "COMPLETED",
        },
    ]
    assert body["duration_seconds"] is not None and body["duration_seconds"] >= 0


@task
def ones(i: int) -> int:
    return 1


@flow
def wide_reduce(n: int) -> int:
    return combine.submit(ones.map(range(n)), []).result()


def test_a_reduce_over_more_than_1000_upstreams_lists_the_first_1000(api: Any) -> None:
    state = wide_reduce(1500, return_state=True)
    get_writer().flush()
    page = api.get(f"/api/flow-runs/{state.run_id}/task-runs", params={"name_like": "combine"})
    (reduce_run,) = page.json()["items"]

    body = api.get(f"/api/task-runs/{reduce_run['id']}").json()

    assert [upstream["name"] for upstream in body["upstreams"]] == [
        f"ones-{i}" for i in range(1000)
    ]
    assert (body["upstream_count"], body["upstreams_truncated"]) == (1500, True)
    assert len(body["task_inputs"]["left"]) == 1500


def test_an_upstream_missing_from_the_history_has_no_name(api: Any, database_url: str) -> None:
    missing = uuid.UUID(int=99)
    task_run_id = _insert_task_run(database_url, {"x": [str(missing)]})

    body = api.get(f"/api/task-runs/{task_run_id}").json()

    assert body["upstreams"] == [
        {
            "parameter": "x",
            "kind": "data",
            "task_run_id": str(missing),
            "name": None,
            "state_type": None,
        }
    ]


def test_task_inputs_that_are_not_ids_are_left_out_of_the_upstreams(
    api: Any, database_url: str
) -> None:
    missing = uuid.UUID(int=98)
    task_run_id = _insert_task_run(database_url, {"x": ["not-an-id", str(missing)]})

    response = api.get(f"/api/task-runs/{task_run_id}")

    assert response.status_code == 200, response.text
    assert [upstream["task_run_id"] for upstream in response.json()["upstreams"]] == [str(missing)]


def test_a_task_runs_states_oldest_first(api: Any) -> None:
    runs = task_runs_by_name(api)

    states = api.get(f"/api/task-runs/{runs['gate-0']['id']}/states").json()

    assert [state["type"] for state in states] == ["PENDING", "RUNNING", "COMPLETED"]
    assert [state["seq"] for state in states] == [1, 2, 3]


@pytest.mark.parametrize("suffix", ["", "/states", "/logs"])
def test_unknown_and_malformed_task_run_ids(api: Any, suffix: str) -> None:
    missing = uuid.UUID(int=5)

    unknown = api.get(f"/api/task-runs/{missing}{suffix}")
    malformed = api.get(f"/api/task-runs/x1{suffix}")

    assert (unknown.status_code, unknown.json()) == (
        404,
        {"detail": f"task run {missing} not found"},
    )
    assert malformed.status_code == 422
    assert malformed.json()["detail"].startswith("task run id 'x1' is not a valid id")


def _insert_task_run(url: str, task_inputs: dict[str, list[str]]) -> uuid.UUID:
    run_id = uuid7()
    row = {
        "id": run_id,
        "flow_run_id": uuid7(),
        "parent_task_run_id": None,
        "task_key": "tests.orphan",
        "name": "orphan-0",
        "state_type": "PENDING",
        "state_name": "Pending",
        "state_timestamp": 1_700_000_000.0,
        "state_message": None,
        "state_seq": 1,
        "start_time": None,
        "end_time": None,
        "run_count": 0,
        "tags": [],
        "task_inputs": task_inputs,
        "created": 1_700_000_000.0,
    }
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(schema.task_runs.insert(), [row])
    return run_id
