"""Creating runs of a deployment from Python: ``vivace.run_deployment`` and ``create_run``."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

import vivace
from vivace.deployments.runs import create_run, parse_duration
from vivace.engine.states import StateType
from vivace.exceptions import ConfigurationError, DeploymentNotFoundError, ParameterValidationError
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import DeploymentRecord
from vivace.store.queries import read_flow_runs
from vivace.store.records import FlowRunRecord
from vivace.store.run_control import transition_flow_run


def _runs(url: str, deployment: DeploymentRecord) -> list[FlowRunRecord]:
    return read_flow_runs(url, deployment_id=deployment.id, limit=100)[0]


def test_run_deployment_creates_a_scheduled_run(
    database_url: str, deployment: DeploymentRecord
) -> None:
    before = dt.datetime.now(dt.UTC)

    run = vivace.run_deployment("nightly", parameters={"day": 3})

    assert run.state_type is StateType.SCHEDULED
    assert run.parameters == {"day": 3}
    assert (run.deployment_id, run.deployment_version) == (deployment.id, 1)
    assert (run.flow_name, run.work_queue_name, run.tags) == ("etl", "default", ("etl",))
    assert run.infrastructure_type == "process"
    assert run.expected_start_time is not None and run.expected_start_time >= before
    assert [r.id for r in _runs(database_url, deployment)] == [run.id]


def test_a_run_by_deployment_id_with_its_own_tags(
    database_url: str, deployment: DeploymentRecord
) -> None:
    run = vivace.run_deployment(deployment.id, {"day": 1}, tags=["manual"])

    assert run.tags == ("manual",)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        pytest.param({"day": "x"}, r"'day': 'x' is not of type 'integer'", id="wrong-type"),
        pytest.param({}, r"'day' is a required property", id="missing"),
        pytest.param({"day": 1, "hour": 2}, r"'hour' was unexpected", id="unknown"),
    ],
)
def test_bad_parameters_create_no_run(
    database_url: str, deployment: DeploymentRecord, parameters: dict[str, int], message: str
) -> None:
    with pytest.raises(ParameterValidationError, match=message):
        vivace.run_deployment("nightly", parameters=parameters)

    assert _runs(database_url, deployment) == []


def test_an_unknown_deployment_is_not_found(database_url: str) -> None:
    with pytest.raises(DeploymentNotFoundError, match="no deployment named 'nope'"):
        vivace.run_deployment("nope")


def test_an_idempotency_key_makes_one_run(database_url: str, deployment: DeploymentRecord) -> None:
    first, created = create_run(database_url, "nightly", {"day": 1}, idempotency_key="req-1")
    again, created_again = create_run(database_url, "nightly", {"day": 1}, idempotency_key="req-1")
    other = vivace.run_deployment("nightly", {"day": 1}, idempotency_key="req-2")

    assert (created, created_again) == (True, False)
    assert again.id == first.id != other.id
    assert len(_runs(database_url, deployment)) == 2


@pytest.mark.parametrize(
    "start_in", [pytest.param(600, id="seconds"), pytest.param(dt.timedelta(minutes=10), id="td")]
)
def test_start_in_sets_the_expected_start_time(
    database_url: str, deployment: DeploymentRecord, start_in: float | dt.timedelta
) -> None:
    run = vivace.run_deployment("nightly", {"day": 1}, start_in=start_in)

    assert run.expected_start_time is not None
    delay = (run.expected_start_time - run.created).total_seconds()
    assert 595 <= delay <= 605


def test_run_deployment_waits_until_the_run_ends(
    database_url: str, deployment: DeploymentRecord
) -> None:
    finished = threading.Event()

    def finish_the_run() -> None:
        while not (runs := _runs(database_url, deployment)):
            time.sleep(0.01)
        with transaction(get_engine(database_url)) as conn:
            transition_flow_run(
                conn,
                runs[0].id,
                StateType.COMPLETED,
                "Completed",
                "done elsewhere",
                allowed_from=(StateType.SCHEDULED,),
            )
        finished.set()

    worker = threading.Thread(target=finish_the_run, daemon=True)
    worker.start()
    run = vivace.run_deployment("nightly", {"day": 1}, timeout=60)
    worker.join(timeout=10)

    assert finished.is_set()
    assert (run.state_type, run.state_message) == (StateType.COMPLETED, "done elsewhere")


def test_run_deployment_returns_the_waiting_run_after_the_timeout(
    database_url: str, deployment: DeploymentRecord
) -> None:
    run = vivace.run_deployment("nightly", {"day": 1}, timeout=0.2)

    assert run.state_type is StateType.SCHEDULED


def test_bad_arguments_are_refused(database_url: str, deployment: DeploymentRecord) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be"):
        vivace.run_deployment("nightly", {"day": 1}, timeout=-1)
    with pytest.raises(ConfigurationError, match="start_in must be"):
        vivace.run_deployment("nightly", {"day": 1}, start_in=-5)
    with pytest.raises(ConfigurationError, match="idempotency_key must be"):
        vivace.run_deployment("nightly", {"day": 1}, idempotency_key="")
    with pytest.raises(ConfigurationError, match="is 256 characters; expected at most 255"):
        vivace.run_deployment("nightly", {"day": 1}, idempotency_key="k" * 256)
    with pytest.raises(ConfigurationError, match="tags must be a list of non-empty texts"):
        vivace.run_deployment("nightly", {"day": 1}, tags=["ok", ""])
    with pytest.raises(ParameterValidationError, match="must be a JSON object"):
        vivace.run_deployment("nightly", [1])  # type: ignore[arg-type]
    assert _runs(database_url, deployment) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("45", 45)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "-5", "5m-", "nan"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ConfigurationError, match="is not valid"):
        parse_duration(text)


def test_run_deployment_through_the_server(
    database_url: str,
    deployment: DeploymentRecord,
    live_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vivace.settings import reset_settings

    monkeypatch.setenv("VIVACE_API_URL", live_server)
    reset_settings()

    run = vivace.run_deployment("nightly", {"day": 2}, timeout=0.1, idempotency_key="api-1")
    again = vivace.run_deployment("nightly", {"day": 2}, idempotency_key="api-1", start_in=60)
    with pytest.raises(ParameterValidationError, match="'day'"):
        vivace.run_deployment("nightly", {"day": "x"})

    assert (run.state_type, run.parameters, run.deployment_id) == (
        StateType.SCHEDULED,
        {"day": 2},
        deployment.id,
    )
    assert again.id == run.id
    assert [r.id for r in _runs(database_url, deployment)] == [run.id]
