"""Log endpoints: pages, level and task filters, ``after``, a live tail and the text download,
over lines logged by real flows, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from typing import Any

import pytest

from vivace import flow, get_run_logger, task
from vivace.server.api import logs as logs_routes
from vivace.store.writer import get_writer


@task
def work(i: int) -> int:
    logger = get_run_logger()
    logger.info("task %d working", i)
    if i == 1:
        logger.warning("task %d is slow", i)
    return i


@flow
def noisy(n: int) -> None:
    logger = get_run_logger()
    logger.info("starting %d tasks", n)
    for future in [work.submit(i) for i in range(n)]:
        future.result()
    logger.error("first line\nsecond line")


@dataclasses.dataclass
class Noisy:
    flow_run_id: uuid.UUID
    name: str
    lines: list[dict[str, Any]]


@pytest.fixture
def noisy_run(api: Any) -> Noisy:
    """A flow run of 3 tasks; its lines are read back through the API."""
    state = noisy(3, return_state=True)
    get_writer().flush()
    run_id: uuid.UUID = state.run_id
    lines = get(api, f"/api/flow-runs/{run_id}/logs", limit=1000)["items"]
    name = get(api, f"/api/flow-runs/{run_id}")["name"]
    return Noisy(run_id, name, lines)


def get(api: Any, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def messages(page: dict[str, Any]) -> list[str]:
    return [line["message"] for line in page["items"]]


# -- pages and filters --------------------------------------------------------------------------


def test_a_flow_runs_lines_oldest_first_with_its_task_runs(noisy_run: Noisy) -> None:
    lines = noisy_run.lines
    texts = [line["message"] for line in lines]

    assert texts[1] == "starting 3 tasks"
    assert {f"task {i} working" for i in range(3)} <= set(texts)
    assert "first line\nsecond line" in texts
    stamps = [dt.datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert stamps == sorted(stamps) and all(stamp.tzinfo for stamp in stamps)
    task_line = next(line for line in lines if line["message"] == "task 1 is slow")
    assert (task_line["level"], task_line["level_name"]) == (30, "WARNING")
    assert task_line["task_run_id"] is not None
    assert task_line["flow_run_id"] == str(noisy_run.flow_run_id)


@pytest.mark.parametrize("level", ["WARNING", "warning", "30", " Warning "])
def test_level_filter_takes_names_in_any_case_or_numbers(
    api: Any, noisy_run: Noisy, level: str
) -> None:
    page = get(api, f"/api/flow-runs/{noisy_run.flow_run_id}/logs", level=level)

    assert messages(page) == ["task 1 is slow", "first line\nsecond line"]


@pytest.mark.parametrize("level", ["LOUD", "-1", "3.5", "99999999999999"])
def test_a_bad_level_is_a_422_naming_it(api: Any, noisy_run: Noisy, level: str) -> None:
    for path in ("/logs", "/logs/download"):
        response = api.get(f"/api/flow-runs/{noisy_run.flow_run_id}{path}", params={"level": level})

        assert response.status_code == 422
        assert f"level {level!r} is not a log level" in response.json()["detail"]


def test_task_run_filter_and_task_run_logs(api: Any, noisy_run: Noisy) -> None:
    slow = next(line for line in noisy_run.lines if line["message"] == "task 1 is slow")
    task_run_id = slow["task_run_id"]

    filtered = get(api, f"/api/flow-runs/{noisy_run.flow_run_id}/logs", task_run_id=task_run_id)
    own = get(api, f"/api/task-runs/{task_run_id}/logs")
    warnings_only = get(api, f"/api/task-runs/{task_run_id}/logs", level="warning")

    assert messages(filtered) == messages(own)
    assert messages(own)[:2] == ["task 1 working", "task 1 is slow"]
    assert messages(warnings_only) == ["task 1 is slow"]


def test_walking_pages_gives_every_line_once(api: Any, noisy_run: Noisy) -> None:
    walked, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = get(api, f"/api/flow-runs/{noisy_run.flow_run_id}/logs", **params)
        walked.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [line["id"] for line in walked] == [line["id"] for line in noisy_run.lines]


def test_after_keeps_lines_stamped_strictly_later(api: Any, noisy_run: Noisy) -> None:
    # Through PostgreSQL's microseconds or SQLite's float seconds, a line at `after` is excluded.
    middle = noisy_run.lines[len(noisy_run.lines) // 2]
    after = dt.datetime.fromisoformat(middle["timestamp"]) + dt.timedelta(microseconds=1)

    page = get(api, f"/api/flow-runs/{noisy_run.flow_run_id}/logs", after=after.isoformat())

    expected = [
        line["id"]
        for line in noisy_run.lines
        if dt.datetime.fromisoformat(line["timestamp"]) > after
    ]
    assert [line["id"] for line in page["items"]] == expected
    assert 0 < len(expected) < len(noisy_run.lines)


def test_unknown_runs_are_404(api: Any) -> None:
    missing = uuid.UUID(int=3)

    response = api.get(f"/api/task-runs/{missing}/logs")

    assert (response.status_code, response.json()) == (
        404,
        {"detail": f"task run {missing} not found"},
    )


# -- live tail ----------------------------------------------------------------------------------


@task
def wait_for_go(started: threading.Event, go: threading.Event) -> None:
    get_run_logger().info("waiting")
    started.set()
    assert go.wait(30)


@flow
def slow_flow(started: threading.Event, go: threading.Event) -> None:
    logger = get_run_logger()
    logger.info("first")
    wait_for_go.submit(started, go).result()
    logger.info("second")


def test_polling_with_the_resume_cursor_returns_only_new_lines(api: Any) -> None:
    started, go = threading.Event(), threading.Event()
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(slow_flow(started, go, return_state=True))
    )
    thread.start()
    try:
        assert started.wait(30)
        get_writer().flush()
        run_id = api.get("/api/flow-runs").json()["items"][0]["id"]
        path = f"/api/flow-runs/{run_id}/logs"

        first = get(api, path)
        idle = get(api, path, cursor=first["resume_cursor"])
    finally:
        go.set()
        thread.join(30)
    get_writer().flush()
    new = get(api, path, cursor=first["resume_cursor"])
    caught_up = get(api, path, cursor=new["resume_cursor"])

    assert messages(first)[-2:] == ["first", "waiting"]
    assert first["next_cursor"] is None and first["resume_cursor"] is not None
    assert idle == {"items": [], "next_cursor": None, "resume_cursor": first["resume_cursor"]}
    assert "second" in messages(new)
    assert not set(messages(new)) & set(messages(first))
    assert caught_up["items"] == [] and caught_up["resume_cursor"] == new["resume_cursor"]


def test_nothing_new_after_a_time_gives_no_resume_cursor_yet(api: Any, noisy_run: Noisy) -> None:
    later = dt.datetime.fromisoformat(noisy_run.lines[-1]["timestamp"]) + dt.timedelta(seconds=1)

    page = get(api, f"/api/flow-runs/{noisy_run.flow_run_id}/logs", after=later.isoformat())

    assert page == {"items": [], "next_cursor": None, "resume_cursor": None}


# -- download -----------------------------------------------------------------------------------


def test_download_is_a_text_file_named_after_the_run(api: Any, noisy_run: Noisy) -> None:
    response = api.get(f"/api/flow-runs/{noisy_run.flow_run_id}/logs/download")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{noisy_run.name}.log"'
    )
    records = _records(response.text)
    assert len(records) == len(noisy_run.lines)
    for record, line in zip(records, noisy_run.lines, strict=True):
        stamp, level, logger, task_run, message = record[0].split(" ", 4)
        assert dt.datetime.fromisoformat(stamp) == dt.datetime.fromisoformat(line["timestamp"])
        assert (level, logger) == (line["level_name"], line["name"])
        assert task_run == (line["task_run_id"] or "-")
        assert (
            "\n".join([message, *(part.removeprefix("\t") for part in record[1:])])
            == (line["message"])
        )
    assert any(len(record) == 2 for record in records)  # the two-line message


def test_download_streams_page_after_page(
    api: Any, noisy_run: Noisy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_routes, "_DOWNLOAD_PAGE", 2)

    whole = api.get(f"/api/flow-runs/{noisy_run.flow_run_id}/logs/download").text
    warnings_only = api.get(
        f"/api/flow-runs/{noisy_run.flow_run_id}/logs/download", params={"level": "WARNING"}
    ).text

    assert len(_records(whole)) == len(noisy_run.lines)
    assert [record[0].split(" ", 4)[4] for record in _records(warnings_only)] == [
        "task 1 is slow",
        "first line",
    ]


def _records(text: str) -> list[list[str]]:
    """The download's records: a line starting with a time, then its tab-led continuations."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("\t"):
            records[-1].append(line)
        else:
            records.append([line])
    return records
