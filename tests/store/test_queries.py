"""The read helpers, on every backend: filters, sorts, keyset pages, counts and bad arguments.

Rows are inserted with plain SQLAlchemy Core, independent of the batched writer.
"""

from __future__ import annotations

import datetime as dt
import heapq
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError
from vivace.store import queries, schema
from vivace.store.database import ensure_schema, get_engine, transaction
from vivace.store.records import FlowRunRecord, StateRecord

UTC = dt.UTC
# Sub-microsecond digits on purpose: SQLite keeps them, and the cursor must too.
T0 = 1_700_000_000.1234567
FLOW_ID = uuid.UUID("0190f6f1-0000-7000-8000-000000000001")


def insert(url: str, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(table.insert(), rows)


def flow_run(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid7(),
        "flow_id": FLOW_ID,
        "flow_name": "etl",
        "name": "run",
        "parent_flow_run_id": None,
        "parent_task_run_id": None,
        "state_type": "COMPLETED",
        "state_name": "Completed",
        "state_timestamp": T0 + 2,
        "state_message": None,
        "state_seq": 3,
        "start_time": T0,
        "end_time": T0 + 2,
        "run_count": 1,
        "tags": [],
        "parameters": {},
        "created": T0,
    }
    row.update(values)
    return row


def task_run(flow_run_id: uuid.UUID, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid7(),
        "flow_run_id": flow_run_id,
        "parent_task_run_id": None,
        "task_key": "module.task",
        "name": "task-0",
        "state_type": "COMPLETED",
        "state_name": "Completed",
        "state_timestamp": T0 + 1,
        "state_message": None,
        "state_seq": 3,
        "start_time": T0,
        "end_time": T0 + 1,
        "run_count": 1,
        "tags": [],
        "task_inputs": {},
        "created": T0,
    }
    row.update(values)
    return row


def log(flow_run_id: uuid.UUID | None, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid7(),
        "flow_run_id": flow_run_id,
        "task_run_id": None,
        "name": "vivace.flow_runs",
        "level": 20,
        "message": "hello",
        "timestamp": T0,
    }
    row.update(values)
    return row


def ids(records: list[Any]) -> list[uuid.UUID]:
    return [record.id for record in records]


# -- single records -----------------------------------------------------------------------------


def test_read_flow_run_decodes_every_field(database_url: str) -> None:
    parent = uuid7()
    row = flow_run(
        name="brave-fox",
        parent_flow_run_id=parent,
        state_type="FAILED",
        state_name="TimedOut",
        state_message="ran past 5s",
        tags=["nightly", "etl"],
        parameters={"day": "2024-01-01", "n": 3},
    )
    insert(database_url, schema.flow_runs, [row])

    record = queries.read_flow_run(database_url, str(row["id"]))

    assert record is not None
    assert record == FlowRunRecord(
        id=row["id"],
        flow_id=FLOW_ID,
        flow_name="etl",
        name="brave-fox",
        parent_flow_run_id=parent,
        parent_task_run_id=None,
        state_type=StateType.FAILED,
        state_name="TimedOut",
        state_timestamp=record.state_timestamp,
        state_message="ran past 5s",
        start_time=record.start_time,
        end_time=record.end_time,
        run_count=1,
        tags=("nightly", "etl"),
        parameters={"day": "2024-01-01", "n": 3},
        created=record.created,
    )
    assert record.start_time is not None
    assert record.start_time.tzinfo is not None
    assert record.start_time.timestamp() == pytest.approx(T0, abs=1e-6)
    assert record.duration == dt.timedelta(seconds=2)


def test_read_flow_run_of_unknown_id_is_none(database_url: str) -> None:
    assert queries.read_flow_run(database_url, uuid7()) is None


def test_a_new_database_reads_as_empty(database_url: str) -> None:
    assert queries.read_flow_runs(database_url) == ([], None)
    assert queries.read_flows(database_url) == []


def test_read_flows_orders_by_name(database_url: str) -> None:
    rows = [{"id": uuid7(), "name": name, "created": T0} for name in ("zeta", "alpha", "mid")]
    insert(database_url, schema.flows, rows)

    flows = queries.read_flows(database_url)

    assert [flow.name for flow in flows] == ["alpha", "mid", "zeta"]
    assert [flow.name for flow in queries.read_flows(database_url, name_like="ET")] == ["zeta"]


def test_read_flow_run_states_in_order(database_url: str) -> None:
    run_id = uuid7()
    states: list[dict[str, Any]] = [
        {"seq": 3, "type": "COMPLETED", "name": "Completed", "message": None},
        {"seq": 1, "type": "PENDING", "name": "Pending", "message": "waiting"},
    ]
    rows = [{"flow_run_id": run_id, "timestamp": T0 + s["seq"], **s} for s in states]
    rows.append({**rows[0], "flow_run_id": uuid7()})  # another run's state
    insert(database_url, schema.flow_run_states, rows)

    history = queries.read_flow_run_states(database_url, run_id)

    assert [(s.seq, s.type, s.name, s.message) for s in history] == [
        (1, StateType.PENDING, "Pending", "waiting"),
        (3, StateType.COMPLETED, "Completed", None),
    ]
    assert isinstance(history[0], StateRecord)
    assert history[0].timestamp.timestamp() == pytest.approx(T0 + 1, abs=1e-6)


def test_read_subflow_runs(database_url: str) -> None:
    parent = flow_run()
    children = [flow_run(parent_flow_run_id=parent["id"], created=T0 + i) for i in range(3)]
    insert(database_url, schema.flow_runs, [parent, flow_run(), *reversed(children)])

    subflows = queries.read_subflow_runs(database_url, parent["id"])

    assert ids(subflows) == [child["id"] for child in children]


# -- flow run filters ---------------------------------------------------------------------------


@pytest.fixture
def runs(database_url: str) -> dict[str, dict[str, Any]]:
    """Five flow runs that differ in flow, state, name, tags and start time."""
    rows = {
        "a": flow_run(name="Nightly_100%", tags=["etl", "nightly"], start_time=T0),
        "b": flow_run(name="nightly-big", tags=["etl"], state_type="FAILED", start_time=T0 + 10),
        "c": flow_run(flow_name="report", name="weekly", tags=["nightly", "report"]),
        "d": flow_run(name="adhoc", state_type="RUNNING", end_time=None, start_time=T0 + 20),
        "e": flow_run(name="later", state_type="SCHEDULED", start_time=None, tags=None),
    }
    insert(database_url, schema.flow_runs, list(rows.values()))
    return rows


def _select(url: str, **filters: Any) -> set[uuid.UUID]:
    records, cursor = queries.read_flow_runs(url, limit=1000, **filters)
    assert cursor is None
    return set(ids(records))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({}, "abcde", id="no-filter"),
        pytest.param({"flow_name": "report"}, "c", id="flow-name"),
        pytest.param({"state_types": ["FAILED", StateType.RUNNING]}, "bd", id="state-types"),
        pytest.param({"state_types": ["failed"]}, "b", id="state-type-any-case"),
        pytest.param({"name_like": "NIGHTLY"}, "ab", id="name-ignoring-case"),
        pytest.param({"name_like": "_100%"}, "a", id="name-wildcards-are-literal"),
        pytest.param({"name_like": "y_1"}, "a", id="underscore-is-literal"),
        pytest.param({"tags": ["nightly"]}, "ac", id="one-tag"),
        pytest.param({"tags": ["etl", "nightly"]}, "a", id="all-tags"),
        pytest.param({"tags": "report"}, "c", id="tag-as-string"),
        pytest.param({"tags": ["nope"]}, "", id="unknown-tag"),
        pytest.param({"tags": []}, "abcde", id="no-tags-no-filter"),
        pytest.param({"started_after": T0 + 10}, "bd", id="started-after-inclusive"),
        pytest.param({"started_before": T0 + 10}, "abc", id="started-before-inclusive"),
        pytest.param(
            {"started_before": dt.datetime.fromtimestamp(T0 + 15, UTC)},
            "abc",
            id="started-before-datetime",
        ),
        pytest.param(
            {"flow_name": "etl", "tags": ["etl"], "state_types": ["COMPLETED"]}, "a", id="combined"
        ),
    ],
)
def test_read_flow_runs_filters(
    database_url: str, runs: dict[str, dict[str, Any]], filters: dict[str, Any], expected: str
) -> None:
    assert _select(database_url, **filters) == {runs[key]["id"] for key in expected}


def test_count_flow_runs_by_state(database_url: str, runs: dict[str, dict[str, Any]]) -> None:
    counts = queries.count_flow_runs_by_state(database_url)
    assert counts == {
        **dict.fromkeys(StateType, 0),
        StateType.COMPLETED: 2,
        StateType.FAILED: 1,
        StateType.RUNNING: 1,
        StateType.SCHEDULED: 1,
    }

    nightly = queries.count_flow_runs_by_state(database_url, tags=["nightly"], flow_name="etl")
    assert {state: n for state, n in nightly.items() if n} == {StateType.COMPLETED: 1}


# -- sorting and keyset pages -------------------------------------------------------------------


@pytest.fixture
def many_runs(database_url: str) -> list[dict[str, Any]]:
    """Thirteen runs with tied and missing start and end times, tied names and created times."""
    starts = [0, 0, 0, 1, 1, 2, None, None, None, 3, 3, 3, 4]
    rows = [
        flow_run(
            name=["alpha", "beta", "gamma"][i % 3],
            start_time=None if start is None else T0 + start / 1000,
            end_time=None if i % 4 == 0 else T0 + (i % 3) / 1000,
            created=T0 + (i // 2) / 1000,
        )
        for i, start in enumerate(starts)
    ]
    insert(database_url, schema.flow_runs, rows)
    return rows


def _expected_order(rows: list[dict[str, Any]], sort: str) -> list[uuid.UUID]:
    column, _, direction = sort.rpartition("_")

    def key(row: dict[str, Any]) -> tuple[bool, Any, bytes]:
        value = row[column]
        # A missing time counts as later than any other.
        return (value is None, 0 if value is None else value, row["id"].bytes)

    ordered = sorted(rows, key=key, reverse=direction == "desc")
    return [row["id"] for row in ordered]


@pytest.mark.parametrize("sort", queries.RUN_SORTS)
@pytest.mark.parametrize("limit", [1, 4, 13])
def test_pages_give_every_run_once_in_sort_order(
    database_url: str, many_runs: list[dict[str, Any]], sort: str, limit: int
) -> None:
    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(len(many_runs) + 1):
        page, cursor = queries.read_flow_runs(database_url, sort=sort, limit=limit, cursor=cursor)
        assert len(page) <= limit
        seen.extend(ids(page))
        if cursor is None:
            break

    assert seen == _expected_order(many_runs, sort)


def test_pages_keep_filters(database_url: str, many_runs: list[dict[str, Any]]) -> None:
    first, cursor = queries.read_flow_runs(database_url, name_like="alpha", limit=2)
    second, cursor = queries.read_flow_runs(database_url, name_like="alpha", limit=2, cursor=cursor)
    rest, cursor = queries.read_flow_runs(database_url, name_like="alpha", limit=2, cursor=cursor)

    alphas = [row for row in many_runs if row["name"] == "alpha"]
    assert ids(first + second + rest) == _expected_order(alphas, "start_time_desc")
    assert cursor is None


@pytest.fixture
def runs_in_states(database_url: str) -> list[dict[str, Any]]:
    """Runs in four states, with start times tied within and across states, and missing."""
    starts = [0, 0, 0, 1, 1, 2, None, None, None, 3, 3, 3, 4, 5, None, 5, 6, 0, None, 7, 2]
    states = ["COMPLETED", "FAILED", "CRASHED", "RUNNING"]
    rows = [
        flow_run(
            state_type=states[i % 5 % 4],
            start_time=None if start is None else T0 + start / 1000,
            name="odd" if i % 2 else "even",
        )
        for i, start in enumerate(starts)
    ]
    insert(database_url, schema.flow_runs, rows)
    return rows


def _walk(url: str, limit: int, **filters: Any) -> list[tuple[list[uuid.UUID], str | None]]:
    """Every page of the list, as its ids and its next cursor."""
    pages: list[tuple[list[uuid.UUID], str | None]] = []
    cursor = None
    for _ in range(100):
        page, cursor = queries.read_flow_runs(url, limit=limit, cursor=cursor, **filters)
        pages.append((ids(page), cursor))
        if cursor is None:
            return pages
    raise AssertionError("the pages do not end")


@pytest.mark.parametrize("sort", ["start_time_desc", "start_time_asc"])
@pytest.mark.parametrize("limit", [1, 2, 5, 50])
@pytest.mark.parametrize(
    ("states", "filters"),
    [
        pytest.param(["COMPLETED", "FAILED"], {}, id="two-states"),
        pytest.param(["FAILED", "CRASHED", StateType.RUNNING], {}, id="three-states"),
        pytest.param(["CRASHED", "PAUSED"], {}, id="one-state-without-runs"),
        pytest.param(["FAILED", "failed", "COMPLETED"], {}, id="repeated-state"),
        pytest.param(["COMPLETED", "CRASHED"], {"name_like": "odd"}, id="with-another-filter"),
    ],
)
def test_pages_in_several_states_merge_the_pages_of_each_state(
    database_url: str,
    runs_in_states: list[dict[str, Any]],
    sort: str,
    limit: int,
    states: list[Any],
    filters: dict[str, Any],
) -> None:
    # Several states by start time are read one state at a time and merged (see read_flow_runs):
    # the pages must be those of the one query with every state, cursors included.
    def key(record: FlowRunRecord) -> tuple[bool, float, bytes]:
        start = record.start_time
        return (start is None, 0.0 if start is None else start.timestamp(), record.id.bytes)

    walks = []
    for state in dict.fromkeys(StateType(str(state).upper()) for state in states):
        records, cursor = queries.read_flow_runs(
            database_url, state_types=[state], sort=sort, limit=1000, **filters
        )
        assert cursor is None
        walks.append(records)
    expected = ids(list(heapq.merge(*walks, key=key, reverse=sort.endswith("desc"))))
    # The cursor after each run, from the list of every run (not split by state).
    cursor_after = {page_ids[0]: cursor for page_ids, cursor in _walk(database_url, 1, sort=sort)}

    pages = _walk(database_url, limit, state_types=states, sort=sort, **filters)

    assert [run_id for page_ids, _ in pages for run_id in page_ids] == expected
    assert [len(page_ids) for page_ids, _ in pages[:-1]] == [limit] * (len(pages) - 1)
    assert [cursor for _, cursor in pages] == [
        cursor_after[page_ids[-1]] for page_ids, _ in pages[:-1]
    ] + [None]


# -- task runs ----------------------------------------------------------------------------------


def test_read_task_runs_of_a_flow_run(database_url: str) -> None:
    run_id, other_run = uuid7(), uuid7()
    upstream = uuid7()
    rows = [
        task_run(run_id, name=f"task-{i}", start_time=T0 + i, task_inputs={"x": [str(upstream)]})
        for i in range(5)
    ]
    rows[4].update(state_type="FAILED", start_time=None)
    insert(database_url, schema.task_runs, [*reversed(rows), task_run(other_run)])

    first, cursor = queries.read_task_runs(database_url, run_id, limit=3)
    rest, last_cursor = queries.read_task_runs(database_url, str(run_id), limit=3, cursor=cursor)

    assert ids(first + rest) == [row["id"] for row in rows]  # in start order, not started last
    assert last_cursor is None
    assert first[0].task_inputs == {"x": [str(upstream)]}
    assert first[0].flow_run_id == run_id
    failed, _ = queries.read_task_runs(database_url, run_id, state_types=["FAILED"])
    assert ids(failed) == [rows[4]["id"]]
    named, _ = queries.read_task_runs(database_url, run_id, name_like="K-3")
    assert ids(named) == [rows[3]["id"]]
    assert queries.count_task_runs(database_url, run_id) == 5
    assert queries.count_task_runs(database_url, run_id, state_types=["FAILED"]) == 1
    assert queries.count_task_runs(database_url) == 6


def test_read_task_run_and_its_states(database_url: str) -> None:
    row = task_run(uuid7(), name="load", tags=["io"], state_type="RUNNING", end_time=None)
    insert(database_url, schema.task_runs, [row])
    insert(
        database_url,
        schema.task_run_states,
        [
            {
                "task_run_id": row["id"],
                "seq": 1,
                "type": "PENDING",
                "name": "Pending",
                "timestamp": T0,
            },
            {
                "task_run_id": row["id"],
                "seq": 2,
                "type": "RUNNING",
                "name": "Running",
                "timestamp": T0,
            },
        ],
    )

    record = queries.read_task_run(database_url, row["id"])

    assert record is not None
    assert (record.name, record.state_type, record.tags) == ("load", StateType.RUNNING, ("io",))
    assert record.duration is None
    assert queries.read_task_run(database_url, uuid7()) is None
    states = queries.read_task_run_states(database_url, str(row["id"]))
    assert [(state.seq, state.type) for state in states] == [
        (1, StateType.PENDING),
        (2, StateType.RUNNING),
    ]


# -- logs ---------------------------------------------------------------------------------------


def test_read_logs_in_time_order_across_pages(database_url: str) -> None:
    run_id, task_id = uuid7(), uuid7()
    line_ids = sorted(uuid.uuid4() for _ in range(10))
    rows = [
        log(run_id, id=line_ids[i], message=f"line {i}", timestamp=T0 + (i // 3) / 1000)
        for i in range(10)
    ]
    rows[7].update(task_run_id=task_id, level=40)
    rows[2].update(level=30)
    insert(database_url, schema.logs, [*reversed(rows), log(uuid7(), message="elsewhere")])

    seen = []
    page, cursor = queries.read_logs(database_url, flow_run_id=run_id, limit=4)
    seen += page
    while cursor is not None:
        page, cursor = queries.read_logs(database_url, flow_run_id=run_id, limit=4, cursor=cursor)
        seen += page

    # Lines of the same time come in id order.
    assert [line.message for line in seen] == [f"line {i}" for i in range(10)]
    warnings, _ = queries.read_logs(database_url, flow_run_id=run_id, min_level="warning")
    assert [line.message for line in warnings] == ["line 2", "line 7"]
    errors, _ = queries.read_logs(database_url, flow_run_id=run_id, min_level=40)
    assert [(line.message, line.level_name) for line in errors] == [("line 7", "ERROR")]
    of_task, _ = queries.read_logs(database_url, task_run_id=task_id)
    assert [line.message for line in of_task] == ["line 7"]
    everything, _ = queries.read_logs(database_url, limit=1000)
    assert len(everything) == 11


# -- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda url: queries.read_flow_runs(url, limit=0), "limit 0", id="limit-0"),
        pytest.param(
            lambda url: queries.read_flow_runs(url, limit=1001), "from 1 to 1000", id="limit-1001"
        ),
        pytest.param(lambda url: queries.read_logs(url, limit=True), "limit True", id="limit-bool"),
        pytest.param(
            lambda url: queries.read_flow_runs(url, sort="newest"), "sort 'newest'", id="sort"
        ),
        pytest.param(
            lambda url: queries.read_flow_runs(url, state_types=["DONE"]),
            "state type 'DONE'",
            id="state-type",
        ),
        pytest.param(
            lambda url: queries.read_flow_runs(url, state_types=[]), "state_types", id="no-states"
        ),
        pytest.param(
            lambda url: queries.read_flow_runs(url, cursor="not-a-cursor"),
            "cursor 'not-a-cursor'",
            id="cursor",
        ),
        pytest.param(
            lambda url: queries.read_flow_runs(url, started_after=dt.datetime(2024, 1, 1)),
            "started_after",
            id="naive-datetime",
        ),
        pytest.param(
            lambda url: queries.read_flow_runs(url, tags=[1]),  # type: ignore[list-item]
            "tags",
            id="tags",
        ),
        pytest.param(lambda url: queries.read_flow_run(url, "42"), "flow run id '42'", id="id"),
        pytest.param(
            lambda url: queries.read_task_runs(url, "nope"), "flow run id 'nope'", id="task-runs"
        ),
        pytest.param(
            lambda url: queries.read_logs(url, min_level="LOUD"), "log level 'LOUD'", id="level"
        ),
    ],
)
def test_bad_arguments_name_the_argument(database_url: str, call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match="expected") as raised:
        call(database_url)
    assert message in str(raised.value)


def test_cursor_of_another_sort_is_rejected(
    database_url: str, many_runs: list[dict[str, Any]]
) -> None:
    _, cursor = queries.read_flow_runs(database_url, sort="created_desc", limit=2)
    assert cursor is not None

    with pytest.raises(ConfigurationError, match="same sort"):
        queries.read_flow_runs(database_url, sort="created_asc", cursor=cursor)
    with pytest.raises(ConfigurationError, match="cursor"):
        queries.read_logs(database_url, cursor=cursor)


def test_arguments_are_checked_before_the_database_is_touched(vivace_home: Any) -> None:
    url = f"sqlite:///{vivace_home / 'untouched.db'}"

    with pytest.raises(ConfigurationError):
        queries.read_flow_runs(url, limit=0)

    assert not (vivace_home / "untouched.db").exists()
