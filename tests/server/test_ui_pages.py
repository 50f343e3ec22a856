"""The UI's pages and live endpoints over HTTP, on SQLite and PostgreSQL: what each page shows,
that it escapes what runs recorded, its 400 and 404 pages, the live endpoints a running flow's
page polls, and signing in."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from vivace import flow, get_run_logger, task
from vivace.store.queries import read_flow_runs, read_task_runs
from vivace.store.writer import get_writer

TIMES = "\N{MULTIPLICATION SIGN}"  # the sign before a group's count in the UI
HOSTILE = "<script>alert('x')</script>"


@task
def double(x: int) -> int:
    return 2 * x


@task
def add(values: list[int]) -> int:
    get_run_logger().warning("adding %d values: %s", len(values), HOSTILE)
    return sum(values)


@task
def fail_loudly() -> None:
    raise ValueError("it broke")


@flow(name="ui-pages-child")
def child_flow() -> int:
    return double(21)


@flow(name="ui-pages-etl")
def etl(n: int = 25, note: str = HOSTILE) -> int:
    get_run_logger().info("starting with %d", n)
    total = add.submit(double.map(range(n)))
    child_flow()
    return total.result()


@flow(name="ui-pages-broken")
def broken() -> None:
    fail_loudly()


def record_runs() -> tuple[Any, Any]:
    etl()
    with pytest.raises(ValueError, match="it broke"):
        broken()
    get_writer().flush()
    url = get_writer().url
    (run,) = read_flow_runs(url, flow_name="ui-pages-etl")[0]
    (failed,) = read_flow_runs(url, flow_name="ui-pages-broken")[0]
    return run, failed


def error_message(html: str) -> str:
    found = re.search(r'<p class="error-message">(.*?)</p>', html, re.S)
    assert found, f"no error message in {html[:300]!r}"
    return found.group(1)


def test_every_page_shows_the_recorded_runs_escaped(api: Any, database_url: str) -> None:
    run, failed = record_runs()
    tasks, _ = read_task_runs(database_url, run.id, limit=100)
    total = next(task for task in tasks if task.name.startswith("add"))

    for path, expected in [
        ("/", ["ui-pages-broken", "Needing attention", "Task throughput"]),
        ("/?window=7d", ["Last 7 days"]),
        ("/flows", ["ui-pages-etl", "ui-pages-broken", "ui-pages-child"]),
        ("/flow-runs", [run.name, failed.name]),
        (
            f"/flow-runs/{run.id}",
            [run.name, "Subflows", "Dependencies", f"double {TIMES}25", "add-0"],
        ),
        (f"/task-runs/{total.id}", [total.name, "double-0", "double-24", "adding 25 values"]),
        ("/signin", ["API key"]),
    ]:
        response = api.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        for text in expected:
            assert text in response.text, (path, text)
        assert HOSTILE not in response.text, f"{path} shows a recorded value unescaped"

    page = api.get(f"/flow-runs/{run.id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page  # parameter and log line
    assert 'data-final="true"' in page  # a finished run's page does not poll


def test_the_flow_runs_list_filters_and_pages(api: Any, database_url: str) -> None:
    run, failed = record_runs()
    for _ in range(3):
        etl(n=1)
    get_writer().flush()

    only_failed = api.get("/flow-runs", params={"state": "failed"}).text
    assert failed.name in only_failed and run.name not in only_failed

    by_flow = api.get("/flow-runs", params={"flow": "ui-pages-broken"}).text
    assert failed.name in by_flow and run.name not in by_flow

    by_name = api.get("/flow-runs", params={"name": run.name[2:8]}).text
    assert run.name in by_name

    later = api.get("/flow-runs", params={"started_after": "2999-01-01T00:00"}).text
    assert "No flow run matches" in later


@flow(name="ui-pages-tiny")
def tiny() -> None:
    """A flow run with nothing in it, to fill the list quickly."""


def test_next_page_links_walk_every_run_once_and_keep_the_filters(api: Any) -> None:
    from vivace.server.ui.flow_runs import PAGE_SIZE

    for _ in range(PAGE_SIZE + 5):
        tiny()
    etl(n=1)
    get_writer().flush()

    seen: list[str] = []
    path = "/flow-runs?flow=ui-pages-tiny&sort=created_asc"
    pages = 0
    while path:
        page = api.get(path).text
        pages += 1
        seen += re.findall(r'class="run-link" href="/flow-runs/([0-9a-f-]+)"', page)
        found = re.search(r'class="next-page" rel="next" href="([^"]+)"', page)
        path = found.group(1).replace("&amp;", "&") if found else ""
        if path:
            assert "flow=ui-pages-tiny" in path and "sort=created_asc" in path
    assert pages == 2
    assert len(seen) == len(set(seen)) == PAGE_SIZE + 5


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        pytest.param(
            "/flow-runs?state=DONE", 400, "state &#39;DONE&#39; is not a state type", id="state"
        ),
        pytest.param(
            "/flow-runs?started_before=noon",
            400,
            "started_before &#39;noon&#39; is not a time",
            id="time",
        ),
        pytest.param(
            "/flow-runs?started_after=2024-02-01&started_before=2024-01-01",
            400,
            "started_after is later than started_before",
            id="range",
        ),
        pytest.param("/flow-runs?cursor=bogus", 400, "is not a cursor of this list", id="cursor"),
        pytest.param("/flow-runs?sort=best", 400, "sort &#39;best&#39; is not one of", id="sort"),
        pytest.param("/?window=1y", 400, "window &#39;1y&#39; is not one of 24h, 7d", id="window"),
        pytest.param(
            "/flow-runs?started_after=0001-01-01T00:00%2B01:00",
            400,
            "is out of range; expected a time between the years 1 and 9999",
            id="time-before-year-1-in-utc",
        ),
        pytest.param(
            "/flow-runs?started_before=9999-12-31T23:59:59-05:00",
            400,
            "is out of range; expected a time between the years 1 and 9999",
            id="time-after-year-9999-in-utc",
        ),
        pytest.param("/flow-runs?name=a%00b", 400, "name holds a NUL character", id="nul-name"),
        pytest.param("/flow-runs?flow=%00", 400, "flow holds a NUL character", id="nul-flow"),
        pytest.param("/flows?name=%00", 400, "name holds a NUL character", id="nul-flows"),
        pytest.param(f"/flow-runs/{uuid.UUID(int=7)}", 404, "not found", id="unknown-run"),
        pytest.param("/flow-runs/not-an-id", 404, "is not a valid id", id="malformed-run"),
        pytest.param(f"/task-runs/{uuid.UUID(int=7)}", 404, "not found", id="unknown-task"),
    ],
)
def test_bad_input_is_an_html_page_that_says_why(
    api: Any, path: str, status: int, message: str
) -> None:
    response = api.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert message in error_message(response.text)


def test_bad_filters_on_a_run_page_are_400_pages(api: Any) -> None:
    run, _ = record_runs()
    for query, message in [
        ("level=LOUD", "level &#39;LOUD&#39; is not a log level"),
        ("task_state=nope", "task_state &#39;nope&#39; is not a state type"),
        ("task_cursor=zz", "is not a cursor of this list"),
        ("log_cursor=zz", "is not a cursor of this list"),
        ("level=%C2%B2", "is not a log level"),  # "²" is a digit that int() refuses
        ("level=99999999999999999999", "expected a number from 0 to 2147483647"),
        ("level=" + "9" * 5000, "is not a log level"),  # more digits than int() reads
        ("task_name=%00", "task_name holds a NUL character"),
    ]:
        response = api.get(f"/flow-runs/{run.id}?{query}")
        assert response.status_code == 400, query
        assert message in error_message(response.text)
    for query in ["level=%C2%B2", "level=99999999999999999999", "after=0001-01-01T00:00%2B01:00"]:
        live = api.get(f"/ui/flow-runs/{run.id}/live?{query}")
        assert live.status_code == 400, query
        assert live.json()["detail"]


def test_live_endpoint_returns_only_lines_after_the_cursor(api: Any) -> None:
    run, _ = record_runs()
    first = api.get(f"/ui/flow-runs/{run.id}/live").json()
    assert first["state_type"] == "COMPLETED" and first["final"] is True
    messages = [line["message"] for line in first["logs"]]
    assert "starting with 25" in messages
    assert any(HOSTILE in message for message in messages)  # raw text: the script sets textContent
    assert first["log_cursor"]

    again = api.get(
        f"/ui/flow-runs/{run.id}/live", params={"log_cursor": first["log_cursor"]}
    ).json()
    assert again["logs"] == []
    assert again["log_cursor"] == first["log_cursor"]
    assert again["change_key"] == first["change_key"]

    # Before its first line, a tail can start from a time (a page too long to catch up through).
    from_the_future = api.get(f"/ui/flow-runs/{run.id}/live", params={"after": "2999-01-01"})
    assert from_the_future.json()["logs"] == [] and from_the_future.json()["log_cursor"] is None
    from_the_past = api.get(f"/ui/flow-runs/{run.id}/live", params={"after": "2000-01-01"})
    assert len(from_the_past.json()["logs"]) == len(first["logs"])

    warnings_only = api.get(f"/ui/flow-runs/{run.id}/live", params={"level": "WARNING"}).json()
    assert [line["level_name"] for line in warnings_only["logs"]] == ["WARNING"]

    sections = api.get(f"/ui/flow-runs/{run.id}/sections").json()
    assert set(sections["sections"]) == {"summary", "timeline", "subflows", "tasks"}
    assert f"double {TIMES}25" in sections["sections"]["tasks"]
    assert sections["change_key"] == first["change_key"]

    missing = api.get(f"/ui/flow-runs/{uuid.UUID(int=1)}/live")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"flow run {uuid.UUID(int=1)} not found"}
    bad = api.get(f"/ui/flow-runs/{run.id}/live", params={"log_cursor": "zz"})
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


def test_signin_sets_a_strict_httponly_cookie_and_signout_clears_it(
    api: Any, database_url: str
) -> None:
    from vivace.store.api_keys import create_api_key

    _, key = create_api_key(database_url, "ui-pages", "read")

    redirected = api.get("/flow-runs?state=FAILED", follow_redirects=False)
    assert redirected.status_code == 303
    assert redirected.headers["location"] == "/signin?next=%2Fflow-runs%3Fstate%3DFAILED"

    wrong = api.post("/signin", data={"key": "vvc_wrong", "next": "/flow-runs"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    empty = api.post("/signin", data={"key": " ", "next": "/"})
    assert empty.status_code == 400

    signed_in = api.post(
        "/signin", data={"key": key, "next": "/flow-runs?state=FAILED"}, follow_redirects=False
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/flow-runs?state=FAILED"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"vivace_api_key={key};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert api.get("/flow-runs").status_code == 200  # the client keeps the cookie

    for hostile_next in [
        "//evil.example/",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
    ]:
        elsewhere = api.post(
            "/signin", data={"key": key, "next": hostile_next}, follow_redirects=False
        )
        assert elsewhere.headers["location"] == "/", hostile_next

    signed_out = api.get("/signout", follow_redirects=False)
    assert signed_out.status_code == 303
    assert 'vivace_api_key="";' in signed_out.headers["set-cookie"] or (
        "Max-Age=0" in signed_out.headers["set-cookie"]
    )
    api.cookies.clear()
    assert api.get("/", follow_redirects=False).status_code == 303
