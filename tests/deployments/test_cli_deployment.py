"""``vivace deployment ls | inspect | delete | run`` through click's CliRunner."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vivace.cli import cli
from vivace.deployments.deploy import load_entrypoint
from vivace.deployments.runs import create_run
from vivace.engine.states import StateType
from vivace.store.deployments import DeploymentRecord, read_deployment
from vivace.store.queries import read_flow_run, read_flow_runs
from vivace.store.records import FlowRunRecord


def vivace(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def runs_of(url: str, deployment: DeploymentRecord) -> list[FlowRunRecord]:
    return read_flow_runs(url, deployment_id=deployment.id, limit=100)[0]


def test_ls(database_url: str, project: Path) -> None:
    assert vivace("deployment", "ls").output == "No deployments.\n"
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")
    etl.deploy("b-nightly", work_queue="night")
    etl.deploy("b-nightly")
    load_entrypoint(f"{project}/flows/etl.py:renamed").deploy("a-renamed")

    result = vivace("deployment", "ls")
    only_etl = vivace("deployment", "ls", "--flow", "etl")

    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:6]] for line in result.output.splitlines()]
    assert [row for row in rows if row] == [
        ["a-renamed", "renamed-flow", "1", "default", "process"],
        ["b-nightly", "etl", "2", "default", "process"],
    ]
    assert "a-renamed" not in only_etl.output and "b-nightly" in only_etl.output


def test_inspect(database_url: str, deployment: DeploymentRecord, project: Path) -> None:
    load_entrypoint(f"{project}/flows/etl.py:etl").deploy("nightly", parameters={"day": 2})
    run, _ = create_run(database_url, "nightly", {"day": 5})

    result = vivace("deployment", "inspect", "nightly")

    assert result.exit_code == 0, result.output
    out = result.output
    assert "Deployment 'nightly'" in out and str(deployment.id) in out
    assert "flows/etl.py:etl" in out and '"type": "process"' in out
    assert "│ day       │ integer │          │ 2 (deployment) │" in out
    assert '│ label     │ string  │          │ "daily"        │' in out
    versions = out[out.index("Versions") : out.index("Latest runs")]
    assert [line.split("│")[1].strip() for line in versions.splitlines() if "│" in line] == [
        "2",
        "1",
    ]
    assert str(run.id) in out and run.name in out and "Scheduled" in out


def test_inspect_an_unknown_deployment(database_url: str) -> None:
    result = vivace("deployment", "inspect", "nope")

    assert result.exit_code == 1
    assert result.output == (
        "Error: no deployment named 'nope'; `vivace deployment ls` lists them\n"
    )


def test_delete_cancels_the_runs_not_started(
    database_url: str, deployment: DeploymentRecord
) -> None:
    waiting = [create_run(database_url, "nightly", {"day": n})[0] for n in range(2)]

    refused = vivace("deployment", "delete", "nightly", input="n\n")
    assert refused.exit_code == 1 and read_deployment(database_url, "nightly") is not None
    result = vivace("deployment", "delete", "nightly", "--yes")

    assert result.exit_code == 0, result.output
    assert result.output == "Deleted deployment 'nightly'; cancelled 2 scheduled run(s) of it.\n"
    assert read_deployment(database_url, "nightly") is None
    for run in waiting:
        after = read_flow_run(database_url, run.id)
        assert after is not None and after.state_type is StateType.CANCELLED
    assert vivace("deployment", "delete", "nightly", "--yes").exit_code == 1


def test_run(database_url: str, deployment: DeploymentRecord) -> None:
    result = vivace(
        "deployment", "run", "nightly", "--param", "day=4", "-p", "label=2.0", "--tag", "manual"
    )

    assert result.exit_code == 0, result.output
    [run] = runs_of(database_url, deployment)
    assert (run.parameters, run.tags, run.state_type) == (
        {"day": 4, "label": "2.0"},  # label is a str: the text as typed
        ("manual",),
        StateType.SCHEDULED,
    )
    assert result.output == (
        f"Created flow run {run.name!r} ({run.id}) of deployment 'nightly' (version 1), to start "
        "now from work queue 'default'.\n"
        f"Follow it with: vivace flow-run watch {run.id}\n"
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--param", "day"], 2, "is not NAME=VALUE", id="not-a-pair"),
        pytest.param(["--param", "day=x"], 2, "'day': 'x' is not of type 'integer'", id="type"),
        pytest.param([], 2, "'day' is a required property", id="missing"),
        pytest.param(["-p", "day=1", "--start-in", "soon"], 2, "--start-in: duration", id="in"),
        pytest.param(["-p", "day=1", "--start-at", "noon"], 2, "not an ISO time", id="at"),
        pytest.param(
            ["-p", "day=1", "--start-in", "1m", "--start-at", "2030-01-01"], 2, "not both", id="b"
        ),
    ],
)
def test_run_with_bad_input_creates_no_run(
    database_url: str, deployment: DeploymentRecord, args: list[str], code: int, message: str
) -> None:
    result = vivace("deployment", "run", "nightly", *args)

    assert result.exit_code == code, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1
    assert runs_of(database_url, deployment) == []


def test_run_an_unknown_deployment(database_url: str) -> None:
    result = vivace("deployment", "run", "nope", "-p", "day=1")

    assert result.exit_code == 1
    assert "no deployment named 'nope'" in result.output


def test_run_later(database_url: str, deployment: DeploymentRecord) -> None:
    in_ten = vivace("deployment", "run", "nightly", "-p", "day=1", "--start-in", "10m")
    at = vivace(
        "deployment", "run", "nightly", "-p", "day=2", "--start-at", "2030-01-02T03:04+00:00"
    )

    assert in_ten.exit_code == 0 and at.exit_code == 0, in_ten.output + at.output
    later, fixed = sorted(runs_of(database_url, deployment), key=lambda r: r.parameters["day"])
    assert later.expected_start_time is not None and fixed.expected_start_time is not None
    assert 595 <= (later.expected_start_time - later.created).total_seconds() <= 605
    assert fixed.expected_start_time == dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)
    assert "to start now" not in in_ten.output


def test_run_with_an_idempotency_key(database_url: str, deployment: DeploymentRecord) -> None:
    first = vivace("deployment", "run", "nightly", "-p", "day=1", "--idempotency-key", "k1")
    second = vivace("deployment", "run", "nightly", "-p", "day=1", "--idempotency-key", "k1")

    assert first.exit_code == 0 and second.exit_code == 0
    [run] = runs_of(database_url, deployment)
    assert f"Flow run {run.name!r} ({run.id}) was already created with idempotency key 'k1'" in (
        second.output
    )
