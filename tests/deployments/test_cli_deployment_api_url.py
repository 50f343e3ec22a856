"""``vivace deployment ls | inspect | run | delete`` and ``flow-run watch`` with ``--api-url``:
the same output through a live server as straight from the database.

Each command through the server runs with ``VIVACE_DATABASE_URL`` pointing at an empty database
(``server_only``), so only the server can have answered it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.deployments.helpers import crash_first_run_soon
from vivace import flow, get_run_logger, task
from vivace.cli import cli
from vivace.deployments.deploy import load_entrypoint
from vivace.deployments.runs import create_run
from vivace.engine.states import StateType
from vivace.settings import reset_settings
from vivace.store.deployments import DeploymentRecord, read_deployment
from vivace.store.queries import read_flow_run, read_flow_runs
from vivace.store.records import FlowRunRecord
from vivace.store.writer import get_writer


@task
def add_one(n: int) -> int:
    get_run_logger().info("adding one to %d", n)
    return n + 1


@flow
def counted(n: int = 3) -> int:
    return sum(future.result() for future in add_one.map(range(n)))


def vivace(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def runs_of(url: str, deployment: DeploymentRecord) -> list[FlowRunRecord]:
    return read_flow_runs(url, deployment_id=deployment.id, limit=100)[0]


@pytest.fixture
def server_only(live_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The live server's URL; from now on the CLI's own database is an empty one."""
    monkeypatch.setenv("VIVACE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    reset_settings()
    return live_server


def test_ls_and_inspect_print_the_same(
    database_url: str,
    deployment: DeploymentRecord,
    project: Path,
    live_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    load_entrypoint(f"{project}/flows/etl.py:etl").deploy("nightly", parameters={"day": 2})
    load_entrypoint(f"{project}/flows/etl.py:renamed").deploy("other", work_queue="night")
    create_run(database_url, "nightly", {"day": 5})
    commands = [["ls"], ["ls", "--flow", "etl"], ["inspect", "nightly"]]
    direct = [vivace("deployment", *command) for command in commands]
    monkeypatch.setenv("VIVACE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        # The option wins over VIVACE_API_URL (here a server that is not there).
        monkeypatch.setenv("VIVACE_API_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/api")
        reset_settings()

        through = [vivace("deployment", *command, "--api-url", live_server) for command in commands]
        unreachable = vivace("deployment", "ls")

    for before, after in zip(direct, through, strict=True):
        assert before.exit_code == 0, before.output
        assert (after.exit_code, after.output) == (0, before.output)
    assert "other" in direct[0].output and "other" not in direct[1].output
    assert "Latest runs" in direct[2].output and "Versions" in direct[2].output
    assert unreachable.exit_code == 1
    assert unreachable.output.startswith("Error: cannot reach the vivace server at ")


def test_run_sends_the_parameters_tags_and_idempotency_key(
    database_url: str, deployment: DeploymentRecord, server_only: str
) -> None:
    args = ["-p", "day=4", "-p", "label=2.0", "--tag", "manual", "--idempotency-key", "k1"]
    first = vivace("deployment", "run", "nightly", *args, "--api-url", server_only)
    again = vivace("deployment", "run", "nightly", *args, "--api-url", server_only)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    [run] = runs_of(database_url, deployment)
    assert (run.parameters, run.tags, run.idempotency_key, run.state_type) == (
        {"day": 4, "label": "2.0"},  # label is a str: read with the schema the server gave
        ("manual",),
        "k1",
        StateType.SCHEDULED,
    )
    assert first.output == (
        f"Created flow run {run.name!r} ({run.id}) of deployment 'nightly' (version 1), to start "
        "now from work queue 'default'.\n"
        f"Follow it with: vivace flow-run watch {run.id}\n"
    )
    assert again.output.startswith(
        f"Flow run {run.name!r} ({run.id}) was already created with idempotency key 'k1'"
    )


def test_vivace_api_url_alone_goes_through_the_server(
    database_url: str,
    deployment: DeploymentRecord,
    server_only: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIVACE_API_URL", server_only)
    reset_settings()
    at = "2030-01-02T03:04+00:00"

    in_ten = vivace("deployment", "run", "nightly", "-p", "day=1", "--start-in", "10m")
    fixed = vivace("deployment", "run", "nightly", "-p", "day=2", "--start-at", at)

    assert in_ten.exit_code == 0 and fixed.exit_code == 0, in_ten.output + fixed.output
    later, exact = sorted(runs_of(database_url, deployment), key=lambda r: r.parameters["day"])
    assert later.expected_start_time is not None and exact.expected_start_time is not None
    assert 595 <= (later.expected_start_time - later.created).total_seconds() <= 605
    assert exact.expected_start_time.isoformat() == "2030-01-02T03:04:00+00:00"
    assert "to start now" not in in_ten.output and "to start now" not in fixed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--param", "day=x"], "'day': 'x' is not of type 'integer'", id="type"),
        pytest.param([], "'day' is a required property", id="missing"),
        pytest.param(["--param", "day"], "is not NAME=VALUE", id="not-a-pair"),
        pytest.param(
            ["-p", "day=1", "--tag", ""], "tags must be a list of non-empty texts", id="tag"
        ),
    ],
)
def test_run_with_a_bad_parameter_creates_no_run(
    database_url: str,
    deployment: DeploymentRecord,
    server_only: str,
    args: list[str],
    message: str,
) -> None:
    result = vivace("deployment", "run", "nightly", *args, "--api-url", server_only)

    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1
    assert runs_of(database_url, deployment) == []


@pytest.mark.parametrize(
    "command",
    [["inspect", "nope"], ["run", "nope", "-p", "day=1"], ["delete", "nope", "--yes"]],
    ids=["inspect", "run", "delete"],
)
def test_an_unknown_deployment(database_url: str, server_only: str, command: list[str]) -> None:
    result = vivace("deployment", *command, "--api-url", server_only)

    assert result.exit_code == 1
    assert result.output == (
        "Error: no deployment named 'nope'; `vivace deployment ls` lists them\n"
    )


def test_delete_through_the_server(
    database_url: str, deployment: DeploymentRecord, server_only: str
) -> None:
    waiting = [create_run(database_url, "nightly", {"day": n})[0] for n in range(2)]

    refused = vivace("deployment", "delete", "nightly", "--api-url", server_only, input="n\n")
    assert refused.exit_code == 1 and read_deployment(database_url, "nightly") is not None
    result = vivace("deployment", "delete", "nightly", "--yes", "--api-url", server_only)

    assert result.exit_code == 0, result.output
    assert result.output == "Deleted deployment 'nightly'; cancelled 2 scheduled run(s) of it.\n"
    assert read_deployment(database_url, "nightly") is None
    for run in waiting:
        after = read_flow_run(database_url, run.id)
        assert after is not None and after.state_type is StateType.CANCELLED


def test_flow_run_watch_prints_the_same(
    database_url: str, live_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_id = str(counted(3, return_state=True).run_id)
    get_writer().flush()
    direct = vivace("flow-run", "watch", run_id)
    monkeypatch.setenv("VIVACE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    reset_settings()

    through = vivace("flow-run", "watch", run_id, "--api-url", live_server)

    assert direct.exit_code == 0, direct.output
    assert (through.exit_code, through.output) == (0, direct.output)
    assert "3/3 task runs finished" in direct.output and "adding one to 2" in direct.output


def test_run_watch_follows_the_run_through_the_server(
    database_url: str, deployment: DeploymentRecord, server_only: str
) -> None:
    thread = crash_first_run_soon(database_url, deployment.id)
    result = vivace(
        "deployment", "run", "nightly", "-p", "day=1", "--watch", "--api-url", server_only
    )
    thread.join(timeout=10)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Created flow run")
    assert "process 42 exited with code 9" in result.output
    assert "0/0 task runs finished" in result.output
