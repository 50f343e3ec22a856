"""The deployments and work-queues pages over HTTP, on SQLite and PostgreSQL: what they show,
that they escape what was deployed, their pages of runs, their 400 and 404 pages, the link from
a flow run's page to its deployment, and the secrets they do not show."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from vivace.engine.states import StateType
from vivace.store import schema
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import (
    DeploymentSpec,
    create_deployment_run,
    delete_deployment,
    save_deployment,
)
from vivace.store.run_control import transition_flow_run
from vivace.store.work_queues import register_worker, update_work_queue

HOSTILE = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "description": f"the day {HOSTILE}"},
        "rows": {"type": "integer", "default": 10},
        "ids": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
    },
    "required": ["day"],
}


def deploy(url: str, name: str = "nightly", **changes: Any) -> Any:
    spec = {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/code/nightly"},
        "parameter_schema": SCHEMA,
        "parameters": {"rows": 20},
        "work_queue_name": "etl-queue",
        "tags": ("prod",),
        **changes,
    }
    return save_deployment(url, DeploymentSpec(**spec))


def run_links(html: str) -> list[str]:
    return re.findall(r'class="run-link" href="/flow-runs/([0-9a-f-]+)"', html)


def error_message(html: str) -> str:
    found = re.search(r'<p class="error-message">(.*?)</p>', html, re.S)
    assert found, f"no error message in {html[:300]!r}"
    return found.group(1)


def test_the_deployments_list_links_each_deployment_escaped(api: Any, database_url: str) -> None:
    hostile = deploy(database_url, HOSTILE, description=HOSTILE)
    plain = deploy(database_url, "hourly", flow_name="ingest", tags=(HOSTILE,))

    page = api.get("/deployments")

    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert HOSTILE not in html and ESCAPED in html
    assert f'href="/deployments/{hostile.id}"' in html and f'href="/deployments/{plain.id}"' in html
    assert '<a href="/deployments" aria-current="page">Deployments</a>' in html
    assert '<a href="/work-queues">Work queues</a>' in html
    only_ingest = api.get("/deployments", params={"flow": "ingest"}).text
    assert "hourly" in only_ingest and str(hostile.id) not in only_ingest
    searched = api.get("/deployments", params={"name": "HOUR"}).text
    assert "hourly" in searched and str(hostile.id) not in searched
    assert "No deployment matches" in api.get("/deployments", params={"name": "zzz"}).text


def test_the_pages_do_not_show_a_deployments_secrets(api: Any, database_url: str) -> None:
    storage = {"url": "smb://me:hunter2@files.example.com/share/nightly"}
    env = {"API_TOKEN": "s3cret"}
    record = deploy(database_url, storage=storage, infrastructure={"type": "process", "env": env})

    pages = [api.get("/deployments").text, api.get(f"/deployments/{record.id}").text]

    for html in pages:
        assert "hunter2" not in html and "smb://me:**********@files.example.com" in html
    assert "s3cret" not in pages[1] and "API_TOKEN" in pages[1]
    assert "Only the names of the <code>env</code> variables are shown" in pages[1]


def test_no_deployment_yet_says_how_to_make_one(api: Any) -> None:
    assert "vivace deploy path/to/file.py:my_flow" in api.get("/deployments").text


def test_a_deployments_page_shows_what_it_runs_its_parameters_runs_and_versions(
    api: Any, database_url: str
) -> None:
    deploy(database_url, HOSTILE, entrypoint="flows/old.py:etl")
    record = deploy(database_url, HOSTILE, description=f"loads {HOSTILE}")
    runs = [
        create_deployment_run(database_url, record, parameters={"day": d, "rows": 20})[0]
        for d in ("mon", "tue")
    ]
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn, runs[0].id, StateType.FAILED, "Failed", None, allowed_from=[StateType.SCHEDULED]
        )

    by_id = api.get(f"/deployments/{record.id}")
    by_name = api.get(f"/deployments/{HOSTILE}")

    assert by_id.status_code == by_name.status_code == 200
    html = by_id.text
    assert HOSTILE not in html and f"loads {ESCAPED}" in html
    assert "flows/etl.py:etl" in html and "/srv/code/nightly" in html and "etl-queue" in html
    assert "version 2" in html
    command = re.search(r'<pre class="command"><code>(.*?)</code></pre>', html)
    assert command is not None and command.group(1).startswith("vivace deployment run &#39;")
    assert command.group(1).endswith(" --param day=VALUE")  # rows has a default
    rows = re.findall(r"<tr>\s*<td><code>(\w+)</code></td>\s*<td>(.*?)</td>", html)
    assert rows == [("day", "string"), ("ids", "array of integer or null"), ("rows", "integer")]
    assert f"the day {ESCAPED}" in html
    assert run_links(html) == [str(runs[1].id), str(runs[0].id)]  # newest first
    assert 'class="state state-FAILED"' in html and 'class="state state-SCHEDULED"' in html
    versions = re.findall(r'<tr>\s*<td class="num">(\d+)</td>', html.split('id="versions"')[1])
    assert versions == ["2", "1"] and "flows/old.py:etl" in html

    failed_only = api.get(f"/deployments/{record.id}", params={"state": "failed"}).text
    assert run_links(failed_only) == [str(runs[0].id)]


def test_a_deployments_runs_are_paged(
    api: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vivace.server.ui.deployments.RUN_PAGE", 2)
    record = deploy(database_url)
    for day in ("mon", "tue", "wed"):
        create_deployment_run(database_url, record, parameters={"day": day})

    seen: list[str] = []
    path = f"/deployments/{record.id}"
    while path:
        html = api.get(path).text
        seen += run_links(html)
        found = re.search(r'class="next-page" rel="next" href="([^"]+)"', html)
        path = found.group(1).replace("&amp;", "&") if found else ""
    assert len(seen) == len(set(seen)) == 3


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        pytest.param("/deployments/nope", 404, "deployment &#39;nope&#39; not found", id="unknown"),
        pytest.param("/deployments/a%00b", 404, "not found", id="nul-in-name"),
        pytest.param(f"/deployments/{uuid.UUID(int=7)}", 404, "not found", id="unknown-id"),
        pytest.param("/deployments/nightly?state=DONE", 400, "is not a state type", id="state"),
        pytest.param("/deployments/nightly?cursor=bogus", 400, "is not a cursor", id="cursor"),
        pytest.param("/deployments?name=%00", 400, "name holds a NUL character", id="nul-search"),
    ],
)
def test_bad_input_is_an_html_page_that_says_why(
    api: Any, database_url: str, path: str, status: int, message: str
) -> None:
    deploy(database_url)
    response = api.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert message in error_message(response.text)


def test_the_work_queues_page_shows_queues_and_workers(api: Any, database_url: str) -> None:
    record = deploy(database_url, work_queue_name=HOSTILE)
    update_work_queue(database_url, HOSTILE, priority=1, concurrency_limit=4, paused=True)
    create_deployment_run(database_url, record, parameters={"day": "mon"})
    register_worker(database_url, f"worker {HOSTILE}", "process", [HOSTILE])
    silent = register_worker(database_url, "silent-worker", "docker", ["default"])
    with transaction(get_engine(database_url)) as conn:
        workers = schema.workers
        conn.execute(
            sa.update(workers).where(workers.c.id == silent.id).values(heartbeat=time.time() - 3600)
        )

    html = api.get("/work-queues").text

    assert HOSTILE not in html and ESCAPED in html
    queue_row = re.search(r"<tr id=\"queue-[^\"]*\">(.*?)</tr>", html, re.S)
    assert queue_row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", queue_row.group(1), re.S)
    assert cells[1:6] == ["1", "4", '<span class="state state-PAUSED">Paused</span>', "0", "1"]
    assert html.count("not answering</span>") == 1 and "silent-worker" in html
    assert '<a href="/work-queues" aria-current="page">Work queues</a>' in html


def test_nothing_queued_says_how_to_start(api: Any) -> None:
    html = api.get("/work-queues").text
    assert "No work queue yet" in html and "vivace worker start --queue default" in html


def test_a_flow_run_page_links_its_deployment_and_version(api: Any, database_url: str) -> None:
    deploy(database_url, HOSTILE)
    record = deploy(database_url, HOSTILE)
    run, _ = create_deployment_run(database_url, record, parameters={"day": "mon"})

    html = api.get(f"/flow-runs/{run.id}").text

    link = f'<a class="deployment-link" href="/deployments/{record.id}">{ESCAPED}</a>'
    assert link in html and "version 2" in html and "etl-queue" in html

    delete_deployment(database_url, record.id)
    after = api.get(f"/flow-runs/{run.id}").text
    assert "deployment-link" not in after and ">deleted</span>" in after


def test_a_flow_run_not_from_a_deployment_has_no_deployment_fact(
    api: Any, database_url: str
) -> None:
    from vivace import flow
    from vivace.store.queries import read_flow_runs
    from vivace.store.writer import get_writer

    @flow(name="ui-deployments-plain")
    def plain() -> None:
        pass

    plain()
    get_writer().flush()
    (run,), _ = read_flow_runs(database_url)
    assert "<dt>Deployment</dt>" not in api.get(f"/flow-runs/{run.id}").text
