"""``vivace db vacuum``: the retention deletion on demand, its dry run, and compaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.retention.history_rows import RunRows, count, days_ago, ids_in
from vivace.cli import cli
from vivace.settings import reset_settings
from vivace.store import schema


def vivace(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


@pytest.fixture
def history_rows(database_url: str) -> tuple[RunRows, RunRows]:
    """Two expired flow runs and a standalone task run; one recent and one running run."""
    expired, kept = RunRows(), RunRows()
    expired.flow_run(database_url, "COMPLETED", started=days_ago(40), ended=days_ago(40))
    expired.flow_run(database_url, "FAILED", started=days_ago(50), ended=days_ago(50))
    expired.standalone_task(database_url, started=days_ago(40), ended=days_ago(40))
    kept.flow_run(database_url, "COMPLETED", started=days_ago(3), ended=days_ago(3))
    kept.flow_run(database_url, "RUNNING", started=days_ago(90), ended=None)
    return expired, kept


def counts_in(output: str) -> dict[str, int]:
    """The table-and-count lines of the command's output."""
    lines = [line.split() for line in output.splitlines() if line.startswith("  ")]
    return {table: int(number.replace(",", "")) for table, number in lines}


def test_vacuum_deletes_what_ended_before_the_period_and_reports_counts(
    database_url: str, history_rows: tuple[RunRows, RunRows]
) -> None:
    _, kept = history_rows

    result = vivace("db", "vacuum", "--older-than", "30", "--yes")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Deleted the runs that ended before ")
    assert "(30 days ago) in " in result.stdout
    assert counts_in(result.stdout) == {
        "flow_runs": 2,
        "flow_run_states": 4,
        "task_runs": 5,
        "task_run_states": 10,
        "logs": 7,
        "notification_deliveries": 0,
        "concurrency_leases": 0,
        "writer_stats": 0,
    }
    assert ids_in(database_url, schema.flow_runs) == set(kept.flow_run_ids)
    assert ids_in(database_url, schema.task_runs) == set(kept.task_run_ids)


def test_dry_run_counts_and_changes_nothing(
    database_url: str, history_rows: tuple[RunRows, RunRows]
) -> None:
    result = vivace("db", "vacuum", "--older-than", "30", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Would delete the runs that ended before ")
    assert counts_in(result.stdout)["flow_runs"] == 2
    assert counts_in(result.stdout)["logs"] == 7
    assert count(database_url, schema.flow_runs) == 4
    assert count(database_url, schema.task_runs) == 9
    assert count(database_url, schema.logs) == 13


def test_the_period_defaults_to_the_setting_and_a_no_keeps_everything(
    database_url: str, history_rows: tuple[RunRows, RunRows], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_RETENTION_DAYS", "45")
    reset_settings()

    declined = vivace("db", "vacuum", stdin="n\n")

    assert declined.exit_code == 1  # click's Abort
    assert "(45 days ago)" in declined.stdout
    assert count(database_url, schema.flow_runs) == 4

    accepted = vivace("db", "vacuum", stdin="y\n")

    assert accepted.exit_code == 0, accepted.output
    assert counts_in(accepted.stdout)["flow_runs"] == 1  # only the one that ended 50 days ago


def test_without_a_period_it_says_what_it_expected(database_url: str) -> None:
    result = vivace("db", "vacuum", "--yes")

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no retention period given; expected --older-than DAYS or VIVACE_RETENTION_DAYS\n"
    )


@pytest.mark.parametrize("days", ["0", "-1", "soon"])
def test_a_bad_period_is_refused(days: str) -> None:
    result = vivace("db", "vacuum", "--older-than", days, "--yes")

    assert result.exit_code == 2
    assert "Invalid value for '--older-than'" in result.stderr


def test_compact_rewrites_a_sqlite_file_and_leaves_postgres_to_autovacuum(
    database_url: str, history_rows: tuple[RunRows, RunRows]
) -> None:
    result = vivace("db", "vacuum", "--older-than", "30", "--yes", "--compact")

    assert result.exit_code == 0, result.output
    if database_url.startswith("sqlite"):
        line = result.stdout.splitlines()[-1]
        before, after = (float(size) for size in re.findall(r"([\d.]+) MB", line))
        assert line.startswith("Compacted the SQLite file: ")
        assert after <= before
        # The WAL the rewrite filled is folded back into the file and truncated.
        assert Path(database_url.removeprefix("sqlite:///") + "-wal").stat().st_size == 0
    else:
        assert "Not compacted: PostgreSQL's autovacuum" in result.stdout
    assert count(database_url, schema.flow_runs) == 2
