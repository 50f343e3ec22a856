"""The ``vivace`` command line, through click's CliRunner, on every database backend."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vivace._ids import uuid7
from vivace.cli import cli
from vivace.store import schema
from vivace.store.database import HEAD_REVISION, ensure_schema, get_engine, transaction

T0 = 1_700_000_000.0


def vivace(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def insert(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    engine = get_engine(url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        for table, table_rows in rows.items():
            conn.execute(schema.metadata.tables[table].insert(), table_rows)


def _run(name: str, state: str, start: float | None, **values: Any) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "flow_id": uuid7(),
        "flow_name": "etl",
        "name": name,
        "parent_flow_run_id": None,
        "parent_task_run_id": None,
        "state_type": state,
        "state_name": state.title(),
        "state_timestamp": T0,
        "state_message": None,
        "state_seq": 1,
        "start_time": start,
        "end_time": None if start is None else start + 75,
        "run_count": 1,
        "tags": ["nightly"],
        "parameters": {"day": "monday"},
        "created": T0,
        **values,
    }


@pytest.fixture
def seeded(database_url: str) -> dict[str, Any]:
    """Three flow runs; the failed one has states, two task runs and three log lines."""
    failed = _run("brave-[fox]", "FAILED", T0 + 10, state_message="ValueError: bad row")
    done = _run("calm-owl", "COMPLETED", T0, flow_name="report")
    pending = _run("eager-cat", "PENDING", None)
    tasks = [
        {
            "id": uuid7(),
            "flow_run_id": failed["id"],
            "parent_task_run_id": None,
            "task_key": "etl.load",
            "name": f"load-{i}",
            "state_type": state,
            "state_name": state.title(),
            "state_timestamp": T0,
            "state_message": None,
            "state_seq": 2,
            "start_time": T0 + 10 + i,
            "end_time": T0 + 11 + i,
            "run_count": 1,
            "tags": [],
            "task_inputs": {},
            "created": T0,
        }
        for i, state in enumerate(["COMPLETED", "FAILED"])
    ]
    states = [
        {"flow_run_id": failed["id"], "seq": seq, "type": type_, "name": type_.title(),
         "timestamp": T0 + seq, "message": message}
        for seq, type_, message in [
            (1, "PENDING", None), (2, "RUNNING", None), (3, "FAILED", "ValueError: bad row")
        ]
    ]  # fmt: skip
    logs = [
        {"id": uuid7(), "flow_run_id": failed["id"], "task_run_id": None, "name": "vivace.run",
         "level": level, "message": message, "timestamp": T0 + i}
        for i, (level, message) in enumerate(
            [(20, "starting"), (10, "row 1 looks fine"), (40, "row 2 is bad")]
        )
    ]  # fmt: skip
    insert(
        database_url,
        {
            "flow_runs": [failed, done, pending],
            "task_runs": tasks,
            "flow_run_states": states,
            "logs": logs,
        },
    )
    return {"failed": failed, "done": done, "pending": pending, "tasks": tasks}


# -- flow-run ls --------------------------------------------------------------------------------


def test_ls_lists_runs_not_started_first_then_latest(seeded: dict[str, Any]) -> None:
    result = vivace("flow-run", "ls")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("eager-cat") < out.index("brave-[fox]") < out.index("calm-owl")
    assert str(seeded["failed"]["id"]) in out
    assert "1m 15s" in out  # the duration


@pytest.mark.parametrize(
    ("args", "shown", "hidden"),
    [
        pytest.param(["--state", "failed"], ["brave-[fox]"], ["calm-owl", "eager-cat"], id="state"),
        pytest.param(
            ["--state", "FAILED", "--state", "PENDING"],
            ["brave-[fox]", "eager-cat"],
            ["calm-owl"],
            id="two-states",
        ),
        pytest.param(["--flow", "report"], ["calm-owl"], ["brave-[fox]", "eager-cat"], id="flow"),
        pytest.param(["--limit", "1"], ["eager-cat", "--limit"], ["brave-[fox]"], id="limit"),
    ],
)
def test_ls_filters(
    seeded: dict[str, Any], args: list[str], shown: list[str], hidden: list[str]
) -> None:
    result = vivace("flow-run", "ls", *args)

    assert result.exit_code == 0, result.output
    assert all(text in result.stdout for text in shown)
    assert not any(text in result.stdout for text in hidden)


def test_ls_on_an_empty_database(database_url: str) -> None:
    result = vivace("flow-run", "ls")

    assert (result.exit_code, result.stdout) == (0, "No flow runs found.\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["ls", "--state", "DONE"], "state type 'DONE'", id="unknown-state"),
        pytest.param(["ls", "--limit", "0"], "limit 0", id="limit-0"),
        pytest.param(["inspect", "not-an-id"], "flow run id 'not-an-id'", id="inspect-bad-id"),
        pytest.param(["logs", "42"], "flow run id '42'", id="logs-bad-id"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    database_url: str, args: list[str], message: str
) -> None:
    result = vivace("flow-run", *args)

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


# -- flow-run inspect ---------------------------------------------------------------------------


def test_inspect_shows_the_run_its_states_and_task_runs(seeded: dict[str, Any]) -> None:
    run_id = str(seeded["failed"]["id"])

    result = vivace("flow-run", "inspect", run_id)

    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("brave-[fox]", run_id, "ValueError: bad row", "nightly", '{"day": "monday"}'):
        assert text in out
    assert "State history" in out
    assert out.index("Pending") < out.index("Running")
    assert "Task runs (2)" in out
    assert out.index("load-0") < out.index("load-1")
    assert str(seeded["tasks"][1]["id"]) in out


def test_inspect_of_an_unknown_run_exits_1(database_url: str) -> None:
    missing = str(uuid.UUID(int=1))

    result = vivace("flow-run", "inspect", missing)

    assert result.exit_code == 1
    assert result.stderr == f"Error: flow run '{missing}' not found in the run history\n"


# -- flow-run logs ------------------------------------------------------------------------------


def test_logs_prints_lines_oldest_first(seeded: dict[str, Any]) -> None:
    result = vivace("flow-run", "logs", str(seeded["failed"]["id"]))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(" - ", 1)[1] for line in lines] == [
        "starting",
        "row 1 looks fine",
        "row 2 is bad",
    ]
    assert "| ERROR    | vivace.run - row 2 is bad" in lines[2]


def test_logs_level_filter(seeded: dict[str, Any]) -> None:
    run_id = str(seeded["failed"]["id"])

    warnings = vivace("flow-run", "logs", run_id, "--level", "warning")
    nothing = vivace("flow-run", "logs", run_id, "--level", "CRITICAL")
    bad = vivace("flow-run", "logs", run_id, "--level", "LOUD")

    assert [line.split(" - ", 1)[1] for line in warnings.stdout.splitlines()] == ["row 2 is bad"]
    assert nothing.stdout == "No logs at CRITICAL or above.\n"
    assert (bad.exit_code, bad.stderr.count("\n")) == (2, 1)
    assert "log level 'LOUD'" in bad.stderr


# -- db -----------------------------------------------------------------------------------------


def test_db_upgrade_then_again(database_url: str) -> None:
    first = vivace("db", "upgrade")
    second = vivace("db", "upgrade")

    assert first.exit_code == 0, first.output
    assert f"from an empty database to {HEAD_REVISION}" in first.stdout
    assert f"already at revision {HEAD_REVISION}" in second.stdout


def test_db_reset_asks_first(seeded: dict[str, Any]) -> None:
    declined = vivace("db", "reset", input="n\n")
    assert declined.exit_code == 1
    assert "Delete all run history" in declined.output
    assert "eager-cat" in vivace("flow-run", "ls").stdout

    accepted = vivace("db", "reset", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert vivace("flow-run", "ls").stdout == "No flow runs found.\n"


def test_db_reset_yes_does_not_ask(seeded: dict[str, Any]) -> None:
    result = vivace("db", "reset", "--yes")

    assert result.exit_code == 0, result.output
    assert "Delete all" not in result.output
    assert vivace("flow-run", "ls").stdout == "No flow runs found.\n"


def test_unreachable_database_is_one_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vivace.settings import reset_settings

    monkeypatch.setenv("VIVACE_DATABASE_URL", "postgresql+psycopg://me:s3cret@127.0.0.1:1/x")
    reset_settings()

    result = vivace("flow-run", "ls")

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "cannot use the run-history database at postgresql+psycopg://me:***@" in result.stderr
    assert "s3cret" not in result.output


def test_importing_the_cli_stays_light() -> None:
    code = (
        "import sys, vivace.cli\n"
        "heavy = ('alembic', 'dask', 'distributed', 'ray', 'fastapi', 'uvicorn')\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & set(heavy)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
