"""``/api/deployments`` and ``POST /api/flow-runs/{id}/cancel``, on SQLite and PostgreSQL:
listing and reading deployments, their versions and runs, deleting one, creating runs (201,
idempotency keys, parameters refused with 422 and no run made, 404), cancelling runs in each
state, the admin key these need, and ``VivaceClient`` doing the same against a real server.

Deployments are saved with the store's ``save_deployment`` directly: their storage records point
at a folder that nothing here fetches.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest

from vivace.client import VivaceClient
from vivace.engine.states import StateType
from vivace.exceptions import (
    ConfigurationError,
    DeploymentNotFoundError,
    FlowRunStateError,
    ParameterValidationError,
)
from vivace.store import deployments as store
from vivace.store import queries
from vivace.store.api_keys import create_api_key
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import DeploymentRecord, DeploymentSpec, save_deployment
from vivace.store.run_control import transition_flow_run

SCHEMA = {
    "type": "object",
    "title": "Parameters of flow 'etl'",
    "properties": {
        "day": {"type": "string", "title": "Day"},
        "rows": {"type": "integer", "title": "Rows", "default": 10},
    },
    "required": ["day"],
    "additionalProperties": False,
}


def deploy(url: str, name: str = "nightly", flow_name: str = "etl", **changes: Any) -> Any:
    spec = {
        "name": name,
        "flow_name": flow_name,
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/vivace/deployments/nightly/0001"},
        "parameter_schema": SCHEMA,
        "parameters": {"rows": 20},
        "tags": ("prod",),
        "description": "loads the day's rows",
        **changes,
    }
    return save_deployment(url, DeploymentSpec(**spec))


def runs_of(url: str, deployment: DeploymentRecord) -> list[Any]:
    runs, _ = queries.read_flow_runs(url, deployment_id=deployment.id, limit=100)
    return runs


def move(url: str, run_id: str, state: StateType, source: StateType) -> None:
    """Put a run in ``state`` as a worker or engine would (from ``source``)."""
    with transaction(get_engine(url)) as conn:
        seq = transition_flow_run(
            conn, uuid.UUID(run_id), state, state.value.title(), None, allowed_from=(source,)
        )
    assert seq is not None


# -- reading ------------------------------------------------------------------------------------


def test_deployments_are_listed_by_name_with_filters_and_pages(api: Any, database_url: str) -> None:
    deploy(database_url, "nightly")
    deploy(database_url, "hourly", flow_name="ingest")
    deploy(database_url, "Nightly-backfill")
    deploy(database_url, "nightly", description="redeployed")

    page = api.get("/api/deployments").json()
    assert [item["name"] for item in page["items"]] == ["Nightly-backfill", "hourly", "nightly"]
    assert page["next_offset"] is None
    nightly = page["items"][2]
    assert nightly["version"] == 2 and nightly["description"] == "redeployed"
    assert nightly["flow_name"] == "etl" and nightly["work_queue_name"] == "default"
    assert nightly["infrastructure_type"] == "process" and nightly["tags"] == ["prod"]
    assert nightly["storage"] == "/srv/vivace/deployments/nightly/0001"
    assert nightly["storage_record"] == {"url": "/srv/vivace/deployments/nightly/0001"}

    by_flow = api.get("/api/deployments", params={"flow": "ingest"}).json()
    assert [item["name"] for item in by_flow["items"]] == ["hourly"]
    like = api.get("/api/deployments", params={"name_like": "NIGHT"}).json()
    assert [item["name"] for item in like["items"]] == ["Nightly-backfill", "nightly"]
    first = api.get("/api/deployments", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = api.get("/api/deployments", params={"limit": 2, "offset": 2}).json()
    assert [item["name"] for item in rest["items"]] == ["nightly"] and rest["next_offset"] is None

    refused = api.get("/api/deployments", params={"offset": -1})
    assert refused.status_code == 422 and "'offset'" in refused.json()["detail"]


def test_a_deployment_reads_in_full_by_name_or_id_with_its_run_counts(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url, "team/nightly", infrastructure={"type": "docker", "image": "x"})
    for parameters in ({"day": "mon"}, {"day": "tue"}):
        made = api.post("/api/deployments/team/nightly/runs", json={"parameters": parameters})
        assert made.status_code == 201, made.text

    by_name = api.get("/api/deployments/team/nightly")
    by_id = api.get(f"/api/deployments/{record.id}")
    assert by_name.status_code == by_id.status_code == 200
    detail = by_name.json()
    assert detail == by_id.json()
    assert detail["id"] == str(record.id) and detail["entrypoint"] == "flows/etl.py:etl"
    assert detail["parameter_schema"] == SCHEMA and detail["parameters"] == {"rows": 20}
    assert detail["infrastructure"] == {"type": "docker", "image": "x"}
    assert detail["infrastructure_type"] == "docker"
    assert detail["run_count"] == 2 and detail["run_counts"]["SCHEDULED"] == 2

    missing = api.get("/api/deployments/nope")
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]


def test_a_deployments_secrets_are_not_shown(api: Any, database_url: str) -> None:
    storage = {"url": "smb://me:hunter2@files.example.com/share/nightly/0001"}
    infrastructure = {"type": "process", "env": {"API_TOKEN": "s3cret", "MODE": "after-dark"}}
    record = deploy(database_url, storage=storage, infrastructure=infrastructure)

    answers = [
        api.get("/api/deployments"),
        api.get("/api/deployments/nightly"),
        api.get(f"/api/deployments/{record.id}/versions"),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    for secret in ("hunter2", "s3cret", "after-dark"):
        assert not any(secret in answer.text for answer in answers)
    detail = answers[1].json()
    shown_url = "smb://me:**********@files.example.com/share/nightly/0001"
    assert detail["storage"] == shown_url and detail["storage_record"] == {"url": shown_url}
    assert detail["infrastructure"] == {
        "type": "process",
        "env": {"API_TOKEN": "**********", "MODE": "**********"},
    }
    stored = store.read_deployment(database_url, record.id)  # what a worker reads
    assert stored is not None and stored.storage == storage
    assert stored.infrastructure == infrastructure


def test_versions_are_listed_newest_first(api: Any, database_url: str) -> None:
    record = deploy(database_url, entrypoint="flows/etl.py:etl")
    deploy(database_url, entrypoint="flows/etl2.py:etl", work_queue_name="big")

    versions = api.get(f"/api/deployments/{record.id}/versions").json()
    assert [(v["version"], v["entrypoint"], v["work_queue_name"]) for v in versions] == [
        (2, "flows/etl2.py:etl", "big"),
        (1, "flows/etl.py:etl", "default"),
    ]
    assert api.get("/api/deployments/nope/versions").status_code == 404


def test_a_deployments_runs_are_a_keyset_page_of_its_runs_only(api: Any, database_url: str) -> None:
    deploy(database_url, "nightly")
    deploy(database_url, "other")
    made = [
        api.post("/api/deployments/nightly/runs", json={"parameters": {"day": day}}).json()
        for day in ("mon", "tue", "wed")
    ]
    other = api.post("/api/deployments/other/runs", json={"parameters": {"day": "thu"}})
    assert other.status_code == 201, other.text
    move(database_url, made[0]["id"], StateType.CANCELLED, StateType.SCHEDULED)

    first = api.get("/api/deployments/nightly/flow-runs", params={"limit": 2}).json()
    rest = api.get(
        "/api/deployments/nightly/flow-runs", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    listed = [run["id"] for run in first["items"] + rest["items"]]
    assert listed == [run["id"] for run in reversed(made)]  # newest first
    assert rest["next_cursor"] is None
    scheduled = api.get("/api/deployments/nightly/flow-runs", params={"state": "SCHEDULED"})
    assert {run["id"] for run in scheduled.json()["items"]} == {made[1]["id"], made[2]["id"]}
    assert api.get("/api/deployments/nope/flow-runs").status_code == 404


def test_a_flow_run_says_which_deployment_and_queue_it_came_from(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url, work_queue_name="etl-queue")
    created = api.post("/api/deployments/nightly/runs", json={"parameters": {"day": "mon"}})

    run = api.get(f"/api/flow-runs/{created.json()['id']}").json()
    assert run["deployment_id"] == str(record.id) and run["deployment_version"] == 1
    assert run["work_queue_name"] == "etl-queue" and run["expected_start_time"] is not None
    (listed,) = api.get("/api/flow-runs").json()["items"]
    assert listed["deployment_id"] == str(record.id)


def test_deleting_a_deployment_cancels_its_waiting_runs_and_keeps_the_history(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url)
    waiting = api.post("/api/deployments/nightly/runs", json={"parameters": {"day": "a"}}).json()
    running = api.post("/api/deployments/nightly/runs", json={"parameters": {"day": "b"}}).json()
    move(database_url, running["id"], StateType.RUNNING, StateType.SCHEDULED)

    deleted = api.delete("/api/deployments/nightly")
    assert deleted.status_code == 200 and deleted.json()["id"] == str(record.id)
    assert api.get("/api/deployments/nightly").status_code == 404
    assert api.delete("/api/deployments/nightly").status_code == 404
    states = {run.id: run.state_type for run in runs_of(database_url, record)}
    assert states == {
        uuid.UUID(waiting["id"]): StateType.CANCELLED,
        uuid.UUID(running["id"]): StateType.RUNNING,
    }


# -- creating runs ------------------------------------------------------------------------------


def test_a_run_is_created_scheduled_with_the_deployments_defaults(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url, work_queue_name="etl-queue")
    before = time.time()

    created = api.post(
        "/api/deployments/nightly/runs",
        json={"parameters": {"day": "mon"}, "start_in_seconds": 600, "name": "by-hand"},
    )

    assert created.status_code == 201
    run = created.json()
    assert run["state_type"] == "SCHEDULED" and run["state_name"] == "Scheduled"
    assert run["name"] == "by-hand" and run["flow_name"] == "etl" and run["tags"] == ["prod"]
    assert run["parameters"] == {"day": "mon", "rows": 20}
    assert run["deployment_id"] == str(record.id) and run["deployment_version"] == 1
    assert run["work_queue_name"] == "etl-queue"
    due = dt.datetime.fromisoformat(run["expected_start_time"]).timestamp()
    assert before + 600 <= due <= time.time() + 600
    (stored,) = runs_of(database_url, record)
    assert str(stored.id) == run["id"] and stored.parameters == {"day": "mon", "rows": 20}


def test_a_run_can_be_due_at_a_given_time_with_its_own_tags(api: Any, database_url: str) -> None:
    deploy(database_url)
    start_at = "2031-05-01T08:30:00+02:00"

    run = api.post(
        "/api/deployments/nightly/runs",
        json={"parameters": {"day": "mon", "rows": 1}, "start_at": start_at, "tags": ["manual"]},
    ).json()

    assert dt.datetime.fromisoformat(run["expected_start_time"]) == dt.datetime.fromisoformat(
        start_at
    )
    assert run["tags"] == ["manual"] and run["parameters"] == {"day": "mon", "rows": 1}


@pytest.mark.parametrize(
    ("how", "request_options"),
    [
        pytest.param("header", {"headers": {"Idempotency-Key": "retry-1"}}, id="header"),
        pytest.param("body", {"json": {"idempotency_key": "retry-1"}}, id="body"),
    ],
)
def test_a_retry_with_the_same_idempotency_key_gets_the_same_run(
    api: Any, database_url: str, how: str, request_options: dict[str, Any]
) -> None:
    record = deploy(database_url, parameter_schema={"type": "object", "properties": {}})

    first = api.post("/api/deployments/nightly/runs", **request_options)
    again = api.post("/api/deployments/nightly/runs", **request_options)
    other = api.post("/api/deployments/nightly/runs", headers={"Idempotency-Key": "retry-2"})

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert len(runs_of(database_url, record)) == 2


def test_a_retry_after_a_stricter_redeploy_still_gets_its_first_run(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url, parameter_schema={"type": "object", "properties": {}})
    first = api.post("/api/deployments/nightly/runs", headers={"Idempotency-Key": "k"})
    deploy(database_url)  # version 2 requires "day"

    again = api.post("/api/deployments/nightly/runs", headers={"Idempotency-Key": "k"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(runs_of(database_url, record)) == 1


def test_different_idempotency_keys_in_header_and_body_are_refused(
    api: Any, database_url: str
) -> None:
    record = deploy(database_url)
    refused = api.post(
        "/api/deployments/nightly/runs",
        headers={"Idempotency-Key": "a"},
        json={"parameters": {"day": "mon"}, "idempotency_key": "b"},
    )
    assert refused.status_code == 422 and "Idempotency-Key" in refused.json()["detail"]
    assert runs_of(database_url, record) == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({"parameters": {"day": 5}}, "'day': 5 is not of type 'string'", id="type"),
        pytest.param({"parameters": {}}, "'day' is a required property", id="missing"),
        pytest.param({"parameters": {"day": "x", "rows": "many"}}, "'rows'", id="default-type"),
        pytest.param({"parameters": {"day": "x", "dya": "x"}}, "'dya'", id="unknown"),
        pytest.param({"parameters": ["x"]}, "'parameters'", id="not-an-object"),
        pytest.param({"start_in_seconds": -1}, "'start_in_seconds'", id="start-in"),
        pytest.param({"start_at": "2031-05-01T08:30:00"}, "'start_at'", id="naive-start"),
        pytest.param(
            {"start_at": "2031-05-01T08:30:00Z", "start_in_seconds": 5},
            "both start_at and start_in_seconds",
            id="both-starts",
        ),
        pytest.param({"name": "a\x00b"}, "'name'", id="nul-name"),
        pytest.param({"color": "red"}, "'color'", id="unknown-field"),
    ],
)
def test_a_bad_request_is_refused_with_422_naming_the_field_and_no_run_made(
    api: Any, database_url: str, body: dict[str, Any], named: str
) -> None:
    record = deploy(database_url)
    refused = api.post("/api/deployments/nightly/runs", json=body)
    assert refused.status_code == 422
    assert named in refused.json()["detail"]
    assert runs_of(database_url, record) == []


def test_a_run_of_an_unknown_deployment_is_404(api: Any, database_url: str) -> None:
    refused = api.post("/api/deployments/nope/runs", json={"parameters": {"day": "mon"}})
    assert refused.status_code == 404 and "'nope'" in refused.json()["detail"]
    assert queries.read_flow_runs(database_url)[0] == []


# -- cancelling ---------------------------------------------------------------------------------


def test_cancelling_a_run_depends_on_how_far_it_got(api: Any, database_url: str) -> None:
    deploy(database_url)
    waiting, running, done = (
        api.post("/api/deployments/nightly/runs", json={"parameters": {"day": day}}).json()["id"]
        for day in ("a", "b", "c")
    )
    move(database_url, running, StateType.RUNNING, StateType.SCHEDULED)
    move(database_url, done, StateType.COMPLETED, StateType.SCHEDULED)

    cancelled = api.post(f"/api/flow-runs/{waiting}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state_type"] == "CANCELLED"
    cancelling = api.post(f"/api/flow-runs/{running}/cancel")
    assert cancelling.status_code == 200 and cancelling.json()["state_type"] == "CANCELLING"
    again = api.post(f"/api/flow-runs/{running}/cancel")
    assert again.status_code == 200 and again.json()["state_type"] == "CANCELLING"
    ended = api.post(f"/api/flow-runs/{done}/cancel")
    assert ended.status_code == 409 and "already ended" in ended.json()["detail"]

    states = [state.type for state in queries.read_flow_run_states(database_url, running)]
    assert states == [StateType.SCHEDULED, StateType.RUNNING, StateType.CANCELLING]
    assert queries.read_flow_run(database_url, done).state_type is StateType.COMPLETED


def test_cancel_answers_404_for_an_unknown_run_and_422_for_a_malformed_id(api: Any) -> None:
    unknown = uuid.uuid4()
    missing = api.post(f"/api/flow-runs/{unknown}/cancel")
    assert missing.status_code == 404 and str(unknown) in missing.json()["detail"]
    malformed = api.post("/api/flow-runs/not-an-id/cancel")
    assert malformed.status_code == 422 and "not a valid id" in malformed.json()["detail"]


def test_the_issues_spelling_of_the_cancel_path_works_too(api: Any, database_url: str) -> None:
    deploy(database_url)
    run = api.post("/api/deployments/nightly/runs", json={"parameters": {"day": "a"}}).json()

    cancelled = api.post(f"/api/flow_runs/{run['id']}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["state_type"] == "CANCELLED"
    paths = api.get("/api/openapi.json").json()["paths"]
    assert "/api/flow-runs/{flow_run_id}/cancel" in paths
    assert "/api/flow_runs/{flow_run_id}/cancel" not in paths


# -- access -------------------------------------------------------------------------------------


def test_changes_need_an_admin_key_and_reads_a_read_key(api: Any, database_url: str) -> None:
    _, read_key = create_api_key(database_url, "dashboard", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")
    deploy(database_url)
    reader = {"Authorization": f"Bearer {read_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    body = {"parameters": {"day": "mon"}}

    assert api.post("/api/deployments/nightly/runs", json=body).status_code == 401
    refused = api.post("/api/deployments/nightly/runs", json=body, headers=reader)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert api.get("/api/deployments/nightly", headers=reader).status_code == 200
    run = api.post("/api/deployments/nightly/runs", json=body, headers=admin)
    assert run.status_code == 201
    run_id = run.json()["id"]
    assert api.post(f"/api/flow-runs/{run_id}/cancel", headers=reader).status_code == 403
    assert api.post(f"/api/flow_runs/{run_id}/cancel", headers=reader).status_code == 403
    assert api.delete("/api/deployments/nightly", headers=reader).status_code == 403
    assert api.post(f"/api/flow-runs/{run_id}/cancel", headers=admin).status_code == 200
    assert api.delete("/api/deployments/nightly", headers=admin).status_code == 200


# -- the client ---------------------------------------------------------------------------------


def test_the_client_reads_deployments_creates_runs_and_cancels_them(
    live_server: str, database_url: str
) -> None:
    record = deploy(database_url, "team/nightly")
    client = VivaceClient(live_server)

    (listed,) = client.read_deployments(name_like="night")
    assert listed == record
    assert client.read_deployment("team/nightly") == record
    assert client.read_deployment(record.id) == record
    assert client.read_deployment("nope") is None

    run, created = client.create_deployment_run(
        "team/nightly", parameters={"day": "mon"}, idempotency_key="k", tags=["manual"]
    )
    again, created_again = client.create_deployment_run(
        record.id, parameters={"day": "mon"}, idempotency_key="k"
    )
    assert (created, created_again) == (True, False) and again.id == run.id
    assert run == queries.read_flow_run(database_url, run.id)
    assert run.deployment_id == record.id and run.tags == ("manual",)
    with pytest.raises(ParameterValidationError, match="'day': 5 is not of type 'string'"):
        client.create_deployment_run("team/nightly", parameters={"day": 5})
    with pytest.raises(ConfigurationError, match="'tags'") as refused:
        client.create_deployment_run("team/nightly", parameters={"day": "mon"}, tags=[""])
    assert type(refused.value) is ConfigurationError  # a 422 that is not about the parameters
    with pytest.raises(DeploymentNotFoundError, match="'nope'"):
        client.create_deployment_run("nope")

    assert client.cancel_flow_run(run.id).state_type is StateType.CANCELLED
    done, _ = client.create_deployment_run(record.name, parameters={"day": "tue"})
    move(database_url, str(done.id), StateType.COMPLETED, StateType.SCHEDULED)
    with pytest.raises(FlowRunStateError, match="already ended"):
        client.cancel_flow_run(done.id)
    with pytest.raises(FlowRunStateError, match="not found"):
        client.cancel_flow_run(uuid.uuid4())
    assert len(runs_of(database_url, record)) == 2
