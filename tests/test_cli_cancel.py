"""``vivace flow-run cancel ID``: in the database, and through a live server (``--api-url`` or
``VIVACE_API_URL``, with the admin key the server wants), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.workers.helpers import stored_deployment
from vivace.cli import cli
from vivace.engine.states import StateType
from vivace.settings import reset_settings
from vivace.store import queries
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import create_deployment_run
from vivace.store.run_control import transition_flow_run

ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def new_run(url: str, state: StateType = StateType.SCHEDULED) -> Any:
    """A run of a deployment, moved from SCHEDULED to ``state`` as a worker would."""
    run, _ = create_deployment_run(url, stored_deployment(url), parameters={})
    if state is not StateType.SCHEDULED:
        with transaction(get_engine(url)) as conn:
            transition_flow_run(
                conn, run.id, state, state.value.title(), None, allowed_from=[StateType.SCHEDULED]
            )
    return run


def state_of(url: str, run: Any) -> StateType:
    return queries.read_flow_run(url, run.id).state_type


def test_a_run_not_started_is_cancelled_at_once(database_url: str) -> None:
    run = new_run(database_url)

    result = vivace("flow-run", "cancel", str(run.id))

    assert result.exit_code == 0, result.output
    assert result.output == f"Flow run {run.name!r} ({run.id}) is cancelled.\n"
    assert state_of(database_url, run) is StateType.CANCELLED


def test_a_running_run_is_asked_to_stop(database_url: str) -> None:
    run = new_run(database_url, StateType.RUNNING)

    result = vivace("flow-run", "cancel", str(run.id))

    assert result.exit_code == 0, result.output
    assert "is CANCELLING: its worker or engine stops it" in result.output
    assert state_of(database_url, run) is StateType.CANCELLING


@pytest.mark.parametrize(
    ("run_id", "exit_code", "message"),
    [
        pytest.param("ended", 1, "already ended Completed (COMPLETED)", id="ended"),
        pytest.param(str(uuid.UUID(int=7)), 1, "not found", id="unknown"),
        pytest.param("not-an-id", 2, "flow run id 'not-an-id' is not a valid id", id="malformed"),
    ],
)
def test_what_cannot_be_cancelled_is_one_line_error(
    database_url: str, run_id: str, exit_code: int, message: str
) -> None:
    if run_id == "ended":
        run_id = str(new_run(database_url, StateType.COMPLETED).id)

    result = vivace("flow-run", "cancel", run_id)

    assert result.exit_code == exit_code
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.splitlines()) == 1


@pytest.fixture
def keyed_server(
    database_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """A live server that accepts the keys ``ADMIN_KEY`` (admin) and ``READ_KEY`` (read)."""
    monkeypatch.setenv("VIVACE_API_KEYS", f"admin:{ADMIN_KEY},read:{READ_KEY}")
    reset_settings()
    url: str = request.getfixturevalue("live_server")
    monkeypatch.delenv("VIVACE_API_KEYS")
    reset_settings()
    return url


def test_cancel_through_the_server_needs_its_admin_key(
    database_url: str, keyed_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = new_run(database_url, StateType.RUNNING)
    monkeypatch.setenv("VIVACE_API_KEY", READ_KEY)
    reset_settings()

    refused = vivace("flow-run", "cancel", str(running.id), "--api-url", keyed_server)

    assert refused.exit_code == 2 and "role admin" in refused.output
    assert state_of(database_url, running) is StateType.RUNNING

    monkeypatch.setenv("VIVACE_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("VIVACE_API_URL", keyed_server)
    reset_settings()
    result = vivace("flow-run", "cancel", str(running.id))

    assert result.exit_code == 0, result.output
    assert "is CANCELLING" in result.output
    assert state_of(database_url, running) is StateType.CANCELLING
    again = vivace("flow-run", "cancel", str(uuid.UUID(int=7)))
    assert again.exit_code == 1 and "not found" in again.output


def test_cancel_through_the_server_says_what_the_database_would(
    database_url: str, live_server: str
) -> None:
    waiting = new_run(database_url)
    ended = new_run(database_url, StateType.COMPLETED)

    cancelled = vivace("flow-run", "cancel", str(waiting.id), "--api-url", live_server)
    refused = vivace("flow-run", "cancel", str(ended.id), "--api-url", live_server)
    direct = vivace("flow-run", "cancel", str(ended.id))

    assert cancelled.exit_code == 0
    assert cancelled.output == f"Flow run {waiting.name!r} ({waiting.id}) is cancelled.\n"
    assert state_of(database_url, waiting) is StateType.CANCELLED
    assert (refused.exit_code, refused.output) == (1, direct.output)
