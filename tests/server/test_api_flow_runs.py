"""``/api/flows`` and ``/api/flow-runs``: lists, filters, keyset pages, counts, one run, states,
subflow runs and task runs, over runs recorded by real flows, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, get_args

import pytest

from vivace import flow, get_run_logger, task
from vivace._ids import uuid7
from vivace.server.api.flow_runs import MAX_TAGS
from vivace.server.api.params import RunSort
from vivace.store import queries, schema
from vivace.store.database import ensure_schema, get_engine, transaction
from vivace.store.writer import get_writer


@task
def extract(day: str) -> list[int]:
    return [1, 2, 3] if day != "empty" else []


@task
def transform(rows: list[int]) -> list[int]:
    return [row * 10 for row in rows]


@task
def explode(rows: list[int]) -> None:
    raise ValueError(f"cannot load {len(rows)} rows")


@flow
def child(rows: list[int]) -> int:
    return len(rows)


@flow
def etl(day: str = "monday") -> int:
    get_run_logger().info("loading %s", day)
    rows = transform.submit(extract.submit(day)).result()
    return child(rows)


@flow
def broken_etl() -> None:
    explode.submit(extract.submit("tuesday")).result()


@flow(name="weekly-report")
def report() -> str:
    return "ok"


@dataclasses.dataclass
class Recorded:
    etl: uuid.UUID
    child: uuid.UUID
    failed: uuid.UUID
    report: uuid.UUID


def run(flow_: Any, *args: Any) -> uuid.UUID:
    state = flow_(*args, return_state=True)
    run_id: uuid.UUID = state.run_id
    return run_id


@pytest.fixture
def recorded(api: Any) -> Recorded:
    """Four flow runs from real flows: etl (with a subflow run), a failed one and a report."""
    etl_id = run(etl, "monday")
    failed_id = run(broken_etl)
    report_id = run(report)
    get_writer().flush()
    child_id = uuid.UUID(api.get(f"/api/flow-runs/{etl_id}/subflow-runs").json()[0]["id"])
    return Recorded(etl=etl_id, child=child_id, failed=failed_id, report=report_id)


def get(api: Any, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def names(page: dict[str, Any]) -> list[str]:
    return [item["flow_name"] for item in page["items"]]


def walk(api: Any, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a keyset-paginated list, and how many pages it took."""
    items, pages, cursor = [], 0, None
    while True:
        page = get(api, path, **params, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


# -- flows --------------------------------------------------------------------------------------


def test_flows_with_their_run_counts(api: Any, recorded: Recorded) -> None:
    flows = get(api, "/api/flows")

    assert [(f["name"], f["run_count"]) for f in flows] == [
        ("broken_etl", 1),
        ("child", 1),
        ("etl", 1),
        ("weekly-report", 1),
    ]
    assert all(uuid.UUID(f["id"]) and _aware(f["created"]) for f in flows)
    assert [f["name"] for f in get(api, "/api/flows", name_like="ETL")] == ["broken_etl", "etl"]
    assert len(get(api, "/api/flows", limit=2)) == 2


def test_flows_of_an_empty_database(api: Any) -> None:
    assert get(api, "/api/flows") == []


# -- the list -----------------------------------------------------------------------------------


def test_list_holds_every_column_with_aware_times(api: Any, recorded: Recorded) -> None:
    page = get(api, "/api/flow-runs", flow="etl")

    (item,) = page["items"]
    assert page["next_cursor"] is None
    assert item["id"] == str(recorded.etl)
    assert item["parameters"] == {"day": "monday"}
    assert (item["state_type"], item["state_name"], item["run_count"]) == (
        "COMPLETED",
        "Completed",
        1,
    )
    assert item["tags"] == [] and item["parent_flow_run_id"] is None
    start, end = _aware(item["start_time"]), _aware(item["end_time"])
    assert item["duration_seconds"] == pytest.approx((end - start).total_seconds(), abs=1e-5)
    assert _aware(item["created"]) <= start and _aware(item["state_timestamp"]) == end


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"state": "FAILED"}, ["broken_etl"], id="one-state"),
        pytest.param(
            {"state": ["FAILED", "COMPLETED"], "flow": "weekly-report"},
            ["weekly-report"],
            id="states-and-flow",
        ),
        pytest.param({"name_like": "zz-no-such-name"}, [], id="name-like-nothing"),
        pytest.param({"flow": "child"}, ["child"], id="subflow-runs-are-listed-too"),
    ],
)
def test_list_filters(
    api: Any, recorded: Recorded, params: dict[str, Any], expected: list[str]
) -> None:
    assert names(get(api, "/api/flow-runs", **params)) == expected


def test_name_like_matches_part_of_the_run_name(api: Any, recorded: Recorded) -> None:
    report_run = get(api, f"/api/flow-runs/{recorded.report}")
    part = report_run["name"][2:6].upper()

    found = get(api, "/api/flow-runs", name_like=part)["items"]

    assert str(recorded.report) in [item["id"] for item in found]


def test_started_after_and_before_bound_the_start_time_inclusively(
    api: Any, database_url: str
) -> None:
    t0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    early, middle, late = (
        _insert_flow_run(database_url, [], start=t0 + dt.timedelta(minutes=m)) for m in (0, 10, 20)
    )
    bound = (t0 + dt.timedelta(minutes=10)).astimezone(dt.timezone(dt.timedelta(hours=2)))

    after = [i["id"] for i in get(api, "/api/flow-runs", started_after=bound.isoformat())["items"]]
    before = get(api, "/api/flow-runs", started_before=bound.isoformat())["items"]

    assert after == [str(late), str(middle)]
    assert [i["id"] for i in before] == [str(middle), str(early)]


def test_tags_filter_keeps_runs_with_every_tag(api: Any, database_url: str) -> None:
    runs = {tags: _insert_flow_run(database_url, list(tags)) for tags in [("a",), ("a", "b"), ()]}

    only_a = {i["id"] for i in get(api, "/api/flow-runs", tag="a")["items"]}
    a_and_b = {i["id"] for i in get(api, "/api/flow-runs", tag=["a", "b"])["items"]}

    assert only_a == {str(runs[("a",)]), str(runs[("a", "b")])}
    assert a_and_b == {str(runs[("a", "b")])}


def test_tags_are_limited_so_the_query_stays_within_what_sqlite_takes(api: Any) -> None:
    # Each tag is one condition; SQLite refused ~1,000 with "Expression tree is too large".
    most = get(api, "/api/flow-runs", tag=[f"t{i}" for i in range(MAX_TAGS)])
    too_many = api.get("/api/flow-runs", params={"tag": [f"t{i}" for i in range(1100)]})
    counts = api.get("/api/flow-runs/counts", params={"tag": [f"t{i}" for i in range(1100)]})

    assert most["items"] == []
    assert too_many.status_code == counts.status_code == 422
    assert too_many.json()["detail"].startswith("query parameter 'tag' = ['t0', ")
    assert f"at most {MAX_TAGS} items" in too_many.json()["detail"]


def test_the_api_sorts_are_the_stores() -> None:
    assert get_args(RunSort) == queries.RUN_SORTS


@pytest.mark.parametrize("sort", get_args(RunSort))
def test_walking_every_page_gives_every_run_once_in_order(
    api: Any, recorded: Recorded, sort: str
) -> None:
    one_page = get(api, "/api/flow-runs", sort=sort, limit=1000)["items"]

    walked, pages = walk(api, "/api/flow-runs", sort=sort, limit=1)

    assert [item["id"] for item in walked] == [item["id"] for item in one_page]
    assert len(walked) == pages == 4


def test_counts_by_state_with_filters(api: Any, recorded: Recorded) -> None:
    every = get(api, "/api/flow-runs/counts")
    etl_only = get(api, "/api/flow-runs/counts", name_like="", flow="broken_etl")

    assert every["COMPLETED"] == 3 and every["FAILED"] == 1
    assert sum(every.values()) == 4 and "PAUSED" in every
    assert {k: v for k, v in etl_only.items() if v} == {"FAILED": 1}


# -- one run ------------------------------------------------------------------------------------


def test_one_run_with_its_task_run_counts(api: Any, recorded: Recorded) -> None:
    failed = get(api, f"/api/flow-runs/{recorded.failed}")
    etl_run = get(api, f"/api/flow-runs/{recorded.etl}")

    assert failed["state_type"] == "FAILED" and "cannot load 3 rows" in failed["state_message"]
    assert failed["task_run_count"] == 2
    assert {k: v for k, v in failed["task_run_counts"].items() if v} == {
        "COMPLETED": 1,
        "FAILED": 1,
    }
    assert etl_run["task_run_count"] == 2 and etl_run["task_run_counts"]["COMPLETED"] == 2


def test_a_subflow_run_knows_its_parents(api: Any, recorded: Recorded) -> None:
    sub = get(api, f"/api/flow-runs/{recorded.child}")

    assert sub["parent_flow_run_id"] == str(recorded.etl)
    assert sub["parent_task_run_id"] is None or uuid.UUID(sub["parent_task_run_id"])
    assert sub["parameters"] == {"rows": [10, 20, 30]}
    assert [s["id"] for s in get(api, f"/api/flow-runs/{recorded.etl}/subflow-runs")] == [
        str(recorded.child)
    ]
    assert get(api, f"/api/flow-runs/{recorded.report}/subflow-runs") == []


def test_states_oldest_first(api: Any, recorded: Recorded) -> None:
    states = get(api, f"/api/flow-runs/{recorded.failed}/states")

    assert [s["seq"] for s in states] == list(range(1, len(states) + 1))
    assert [s["type"] for s in states][-2:] == ["RUNNING", "FAILED"]
    assert all(_aware(s["timestamp"]) for s in states)


# -- its task runs ------------------------------------------------------------------------------


def test_task_runs_of_a_flow_run(api: Any, recorded: Recorded) -> None:
    page = get(api, f"/api/flow-runs/{recorded.failed}/task-runs")

    assert [t["name"] for t in page["items"]] == ["extract-0", "explode-0"]
    explode_run = page["items"][1]
    assert explode_run["task_inputs"] == {"rows": [page["items"][0]["id"]]}
    assert explode_run["state_type"] == "FAILED"
    assert explode_run["task_key"].endswith("explode")


def test_task_runs_filters_and_pages(api: Any, recorded: Recorded) -> None:
    path = f"/api/flow-runs/{recorded.failed}/task-runs"

    failed = get(api, path, state="FAILED")["items"]
    by_name = get(api, path, name_like="XTRA")["items"]
    walked, pages = walk(api, path, limit=1, sort="name_desc")

    assert [t["name"] for t in failed] == ["explode-0"]
    assert [t["name"] for t in by_name] == ["extract-0"]
    assert ([t["name"] for t in walked], pages) == (["extract-0", "explode-0"], 2)


# -- bad requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        pytest.param("/api/flow-runs?limit=0", "'limit'", id="limit-0"),
        pytest.param("/api/flow-runs?limit=1001", "'limit'", id="limit-1001"),
        pytest.param("/api/flow-runs?limit=ten", "'limit'", id="limit-not-a-number"),
        pytest.param("/api/flow-runs?state=DONE", "'COMPLETED'", id="unknown-state"),
        pytest.param("/api/flow-runs/counts?state=done", "'state'", id="counts-unknown-state"),
        pytest.param("/api/flow-runs?sort=fastest", "'start_time_desc'", id="unknown-sort"),
        pytest.param("/api/flow-runs?cursor=abc", "cursor 'abc'", id="garbage-cursor"),
        pytest.param(
            "/api/flow-runs?started_after=2026-01-01T00:00:00", "timezone", id="naive-time"
        ),
        pytest.param("/api/flow-runs?started_before=yesterday", "'started_before'", id="not-time"),
        pytest.param("/api/flow-runs?name_like=a%00b", "NUL", id="nul-character"),
        pytest.param("/api/flow-runs/not-an-id", "flow run id 'not-an-id'", id="malformed-id"),
        pytest.param("/api/flow-runs/123/states", "flow run id '123'", id="malformed-id-states"),
        pytest.param("/api/flows?limit=-5", "'limit'", id="flows-limit"),
    ],
)
def test_bad_input_is_a_clear_422(api: Any, path: str, detail: str) -> None:
    response = api.get(path)

    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    "suffix", ["", "/states", "/subflow-runs", "/task-runs", "/graph", "/logs", "/logs/download"]
)
def test_an_unknown_flow_run_is_404(api: Any, suffix: str) -> None:
    missing = uuid.UUID(int=7)

    response = api.get(f"/api/flow-runs/{missing}{suffix}")

    assert response.status_code == 404
    assert response.json() == {"detail": f"flow run {missing} not found"}


def test_a_cursor_of_another_list_is_refused(api: Any, recorded: Recorded) -> None:
    runs_cursor = get(api, "/api/flow-runs", limit=1)["next_cursor"]
    tasks_path = f"/api/flow-runs/{recorded.failed}/task-runs"
    tasks_cursor = get(api, tasks_path, limit=1)["next_cursor"]

    on_tasks = api.get(tasks_path, params={"cursor": runs_cursor, "sort": "start_time_desc"})
    other_sort = api.get("/api/flow-runs", params={"cursor": runs_cursor, "sort": "name_asc"})
    on_logs = api.get(f"/api/flow-runs/{recorded.failed}/logs", params={"cursor": tasks_cursor})

    for response in (on_tasks, other_sort, on_logs):
        assert response.status_code == 422, response.text
        assert "is not a cursor of this list" in response.json()["detail"]


# -- helpers ------------------------------------------------------------------------------------


def _aware(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text!r} has no timezone"
    return value


def _insert_flow_run(url: str, tags: list[str], start: dt.datetime | None = None) -> uuid.UUID:
    now = start or dt.datetime.now(dt.UTC)
    row = {
        "id": uuid7(),
        "flow_id": uuid7(),
        "flow_name": "tagged",
        "name": "tagged-run",
        "parent_flow_run_id": None,
        "parent_task_run_id": None,
        "state_type": "COMPLETED",
        "state_name": "Completed",
        "state_timestamp": now,
        "state_message": None,
        "state_seq": 1,
        "start_time": now,
        "end_time": now,
        "run_count": 1,
        "tags": tags,
        "parameters": {},
        "created": now,
    }
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(schema.flow_runs.insert(), [row])
    run_id: uuid.UUID = row["id"]
    return run_id
