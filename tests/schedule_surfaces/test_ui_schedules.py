"""The schedules on the UI's deployment pages, over HTTP (no browser), on SQLite and PostgreSQL:
each schedule with its state and next times in its own zone, the run settings, a short summary
per deployment in the list, and what the schedules' parameters say escaped."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from vivace import Cron, Interval, RRule
from vivace.store.deployments import DeploymentSpec, save_deployment
from vivace.store.schedules import read_deployment_schedules

HOSTILE = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
SCHEMA = {
    "type": "object",
    "properties": {"day": {"type": "integer"}, "label": {"type": "string", "default": "daily"}},
}


def deploy(url: str, name: str, **changes: Any) -> Any:
    spec = {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/code/nightly"},
        "parameter_schema": SCHEMA,
        **changes,
    }
    return save_deployment(url, DeploymentSpec(**spec))


def section(html: str, section_id: str) -> str:
    found = re.search(rf'<section class="card" id="{section_id}">(.*?)</section>', html, re.S)
    assert found, f"no section {section_id!r}"
    return found.group(1)


def rows(html: str) -> list[list[str]]:
    """Each table row's cells, as text without tags."""
    cells = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        found = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if found:
            cells.append([" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in found])
    return cells


def test_a_deployments_page_shows_its_schedules_and_run_settings(
    api: Any, database_url: str
) -> None:
    record = deploy(
        database_url,
        "nightly",
        schedules=(
            Cron("0 9 * * 1-5", "Europe/Lisbon"),
            Interval(dt.timedelta(hours=6), parameters={"label": HOSTILE}),
            RRule("FREQ=WEEKLY;BYDAY=MO", active=False),
        ),
        skip_late_after=5400.0,
        concurrency_limit=2,
    )

    page = api.get(f"/deployments/{record.id}")

    assert page.status_code == 200
    html = page.text
    assert HOSTILE not in html and ESCAPED in html
    assert '<a href="#schedules">Schedules</a>' in html
    assert "<dt>Skip late after</dt><dd>1h30m</dd>" in html
    assert "<dt>Concurrency limit</dt><dd>2 runs at a time</dd>" in html
    cron, every, rule = rows(section(html, "schedules"))
    assert cron[:3] == ["0", "cron 0 9 * * 1-5 in Europe/Lisbon", "active"]
    assert cron[4] == "the deployment's"
    nine = re.findall(r"\d{4}-\d\d-\d\d (\d\d:\d\d) (WET|WEST) \( in \d+ \w+ \)", cron[3])
    assert len(nine) == 3 and {hour for hour, _ in nine} == {"09:00"}
    assert every[:3] == ["1", "every 6h in UTC", "active"]
    assert len(re.findall(r"\d\d:00 UTC", every[3])) == 3
    assert every[4] == f'{{"label": "{ESCAPED}"}}'.replace('"', "&#34;")
    assert rule == ["2", "rrule FREQ=WEEKLY;BYDAY=MO in UTC", "Paused", "—", "the deployment's"]
    anchors = re.findall(r'<tr id="schedule-([0-9a-f-]+)">', section(html, "schedules"))
    assert anchors == [str(one.id) for one in read_deployment_schedules(database_url, record.id)]


def test_a_deployment_without_schedules_or_settings_says_so(api: Any, database_url: str) -> None:
    record = deploy(database_url, "bare")

    html = api.get(f"/deployments/{record.id}").text

    assert "No schedules: runs are made on demand." in section(html, "schedules")
    assert '<dt>Skip late after</dt><dd><span class="muted">never</span></dd>' in html
    assert '<dt>Concurrency limit</dt><dd><span class="muted">none</span></dd>' in html


def test_the_deployments_list_sums_up_each_ones_schedules(api: Any, database_url: str) -> None:
    deploy(database_url, "bare")
    deploy(database_url, "daily", schedules=(Cron("0 9 * * *", "Europe/Lisbon"),))
    deploy(
        database_url,
        "mixed",
        schedules=(RRule("FREQ=DAILY", active=False), Cron("0 * * * *"), Cron("30 * * * *")),
    )
    deploy(database_url, "paused", schedules=(Cron("0 9 * * *", active=False),))

    html = api.get("/deployments").text

    summaries = re.findall(r'<td class="schedule-summary">(.*?)</td>', html)
    assert summaries == [
        '<span class="muted">—</span>',  # bare, then by name
        "cron 0 9 * * * in Europe/Lisbon",
        "cron 0 * * * * in UTC + 2 more (1 paused)",
        "cron 0 9 * * * in UTC (paused)",
    ]
    assert "<th>Schedule</th>" in html
