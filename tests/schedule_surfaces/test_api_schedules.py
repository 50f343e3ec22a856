"""The API's schedules, on SQLite and PostgreSQL: deployments listed and read with their schedules
and run settings, ``GET /api/deployments/{deployment}/schedules``, ``POST
/api/deployment-schedules/{id}/pause|resume`` (admin key), and ``VivaceClient`` doing the same
against a real server.

Deployments are saved with the store's ``save_deployment`` directly: nothing here runs them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from vivace import Cron, Interval, RRule
from vivace.client import VivaceClient
from vivace.exceptions import DeploymentNotFoundError, ScheduleNotFoundError
from vivace.store.api_keys import create_api_key
from vivace.store.deployments import DeploymentSpec, save_deployment
from vivace.store.schedules import read_deployment_schedules, run_scheduler_loop

SCHEMA = {
    "type": "object",
    "properties": {"day": {"type": "integer"}, "label": {"type": "string", "default": "daily"}},
    "required": ["day"],
}
SCHEDULES = (
    Cron("0 9 * * 1-5", "Europe/Lisbon"),
    Interval(dt.timedelta(minutes=15), parameters={"label": "quarter"}),
    RRule("FREQ=WEEKLY;BYDAY=MO,WE", active=False),
)


def deploy(url: str, name: str = "team/nightly", **changes: Any) -> Any:
    spec = {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/vivace/deployments/nightly/0001"},
        "parameter_schema": SCHEMA,
        "parameters": {"day": 1},
        "schedules": SCHEDULES,
        "skip_late_after": 600.0,
        "concurrency_limit": 2,
        **changes,
    }
    return save_deployment(url, DeploymentSpec(**spec))


def times(items: list[str]) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(item) for item in items]


def test_a_deployment_reads_with_its_schedules_and_run_settings(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url)
    before = dt.datetime.now(dt.UTC)

    body = api.get("/api/deployments/team/nightly").json()
    listed = api.get("/api/deployments").json()["items"]
    alone = api.get("/api/deployments/team/nightly/schedules")

    assert (body["skip_late_after"], body["concurrency_limit"]) == (600.0, 2)
    schedules = body["schedules"]
    assert [item["position"] for item in schedules] == [0, 1, 2]
    assert [item["definition"] for item in schedules] == [
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Lisbon", "day_or": True},
        {"interval": 900.0, "anchor": None, "timezone": None},
        {"rrule": "FREQ=WEEKLY;BYDAY=MO,WE", "timezone": None},
    ]
    assert [item["description"] for item in schedules] == [
        "cron 0 9 * * 1-5 in Europe/Lisbon",
        "every 15m in UTC",
        "rrule FREQ=WEEKLY;BYDAY=MO,WE in UTC",
    ]
    assert [item["active"] for item in schedules] == [True, True, False]
    assert [item["parameters"] for item in schedules] == [None, {"label": "quarter"}, None]
    assert all(item["deployment_id"] == str(record.id) for item in schedules)
    quarter = times(schedules[1]["next_times"])
    assert len(quarter) == 3 and quarter == sorted(quarter) and quarter[0] > before
    assert all(moment.minute % 15 == 0 and moment.second == 0 for moment in quarter)
    assert quarter[1] - quarter[0] == dt.timedelta(minutes=15)
    assert schedules[2]["next_times"] == []  # paused
    assert [item["filled_until"] for item in schedules] == [None, None, None]
    assert listed[0]["schedules"] == schedules and listed[0]["concurrency_limit"] == 2
    assert alone.status_code == 200 and alone.json() == schedules
    versions = api.get("/api/deployments/team/nightly/versions").json()
    assert versions[0]["skip_late_after"] == 600.0 and "schedules" not in versions[0]


def test_the_schedules_of_an_unknown_deployment_are_a_404(api: Any, database_url: str) -> None:
    deploy(database_url)

    missing = api.get("/api/deployments/weekly/schedules")

    assert missing.status_code == 404
    assert missing.json()["detail"] == "deployment 'weekly' not found (neither a name nor an id)"


def test_pause_and_resume_need_an_admin_key(api: Any, database_url: str) -> None:
    deploy(database_url)
    assert run_scheduler_loop(database_url, max_runs=2) == 4  # the two active schedules
    _, read_key = create_api_key(database_url, "dashboard", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")
    reader = {"Authorization": f"Bearer {read_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    quarter = api.get("/api/deployments/team/nightly/schedules", headers=reader).json()[1]
    path = f"/api/deployment-schedules/{quarter['id']}"

    refused = api.post(f"{path}/pause", headers=reader)
    paused = api.post(f"{path}/pause", headers=admin)
    read = api.get(path, headers=reader)
    refused_resume = api.post(f"{path}/resume", headers=reader)
    resumed = api.post(f"{path}/resume", headers=admin)

    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert paused.status_code == 200
    body = paused.json()
    assert (body["active"], body["removed_run_count"], body["next_times"]) == (False, 2, [])
    assert read.status_code == 200 and read.json()["active"] is False
    assert refused_resume.status_code == 403
    assert resumed.status_code == 200
    assert resumed.json()["active"] is True and len(resumed.json()["next_times"]) == 3
    runs = api.get("/api/deployments/team/nightly/flow-runs", headers=reader).json()["items"]
    lisbon = api.get("/api/deployments/team/nightly/schedules", headers=reader).json()[0]
    # The Lisbon cron's two runs: the quarter's waiting runs went with the pause.
    assert [run["schedule_id"] for run in runs] == [lisbon["id"], lisbon["id"]]
    assert all("auto-scheduled" in run["tags"] for run in runs)


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_an_unknown_or_malformed_schedule_id(api: Any, database_url: str, action: str) -> None:
    unknown = uuid.UUID("0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b")

    missing = api.post(f"/api/deployment-schedules/{unknown}/{action}")
    malformed = api.post(f"/api/deployment-schedules/nope/{action}")

    assert missing.status_code == 404
    assert missing.json()["detail"] == f"deployment schedule {unknown} not found"
    assert malformed.status_code == 422
    assert api.get(f"/api/deployment-schedules/{unknown}").status_code == 404


def test_the_client_reads_pauses_and_resumes_schedules(database_url: str, live_server: str) -> None:
    record = deploy(database_url)
    run_scheduler_loop(database_url, max_runs=2)
    client = VivaceClient(live_server)

    stored = read_deployment_schedules(database_url, record.id)
    read = client.read_deployment_schedules("team/nightly")
    by_id = client.read_deployment_schedules(record.id)
    paused, removed = client.pause_deployment_schedule(read[0].id)
    again, removed_again = client.pause_deployment_schedule(read[0].id)
    resumed = client.resume_deployment_schedule(str(read[0].id))

    assert read == by_id == stored != []
    assert read[1].schedule == SCHEDULES[1] and read[1].parameters == {"label": "quarter"}
    assert (paused.active, removed, again.active, removed_again) == (False, 2, False, 0)
    assert resumed == read_deployment_schedules(database_url, record.id)[0]
    assert resumed.active and resumed.due_at is not None
    deployment = client.read_deployment("team/nightly")
    assert deployment is not None
    assert (deployment.skip_late_after, deployment.concurrency_limit) == (600.0, 2)
    with pytest.raises(ScheduleNotFoundError, match="not found"):
        client.pause_deployment_schedule(uuid.UUID("0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b"))
    with pytest.raises(DeploymentNotFoundError, match="'weekly' not found"):
        client.read_deployment_schedules("weekly")
