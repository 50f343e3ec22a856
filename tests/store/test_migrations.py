"""Migrations: to head on first use, once per process, safely from several processes at once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.conftest import states_as_an_older_vivace_writes_them
from vivace._ids import uuid7
from vivace.exceptions import StoreError
from vivace.store import schema
from vivace.store.database import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    alembic_config,
    connect,
    dispose_engines,
    ensure_schema,
    get_engine,
    reset_database,
    transaction,
    upgrade_database,
)

VIVACE_TABLES = {
    "flows",
    "flow_runs",
    "flow_run_states",
    "task_runs",
    "task_run_states",
    "logs",
    "api_keys",
    "blocks",
    "writer_stats",
    "task_cache",
    "deployments",
    "deployment_versions",
    "work_queues",
    "workers",
    "deployment_schedules",
    "concurrency_limits",
    "concurrency_leases",
    "notification_policies",
    "notification_deliveries",
    "service_state",
}


def _tables(url: str) -> set[str]:
    with connect(get_engine(url)) as conn:
        return set(sa.inspect(conn).get_table_names())


def _revision(url: str) -> str | None:
    with connect(get_engine(url)) as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def test_head_revision_is_alembics_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())

    assert script.get_current_head() == HEAD_REVISION
    # Found next to the module, so they ship inside the wheel with it.
    assert MIGRATIONS_DIR.parent.name == "store"
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()


def test_fresh_database_is_migrated_to_head(database_url: str) -> None:
    before = upgrade_database(database_url)

    assert before is None
    assert _tables(database_url) == VIVACE_TABLES | {"alembic_version"}
    assert _revision(database_url) == HEAD_REVISION


def test_second_upgrade_changes_nothing(database_url: str) -> None:
    upgrade_database(database_url)
    with transaction(get_engine(database_url)) as conn:
        conn.execute(schema.flows.insert(), [{"id": uuid7(), "name": "kept", "created": 0.0}])

    before = upgrade_database(database_url)

    assert before == HEAD_REVISION
    with connect(get_engine(database_url)) as conn:
        assert conn.execute(sa.select(schema.flows.c.name)).scalars().all() == ["kept"]


def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    upgrade_database(database_url)

    with connect(get_engine(database_url)) as conn:
        dialect = conn.dialect.name

        def built_on_this_backend(obj: object, *_: object) -> bool:
            # Objects declared with .ddl_if(dialect=...) exist only on that backend.
            condition = getattr(obj, "_ddl_if", None)
            return condition is None or condition.dialect in (None, dialect)

        context = MigrationContext.configure(conn, opts={"include_object": built_on_this_backend})
        diffs = compare_metadata(context, schema.metadata)

    assert diffs == []


def test_ensure_schema_costs_nothing_after_the_first_time(database_url: str) -> None:
    engine = get_engine(database_url)
    ensure_schema(engine)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    ensure_schema(engine)

    assert statements == []


def test_an_up_to_date_database_is_checked_without_importing_alembic(database_url: str) -> None:
    upgrade_database(database_url)
    code = (
        "import sys\n"
        "from vivace.store.database import ensure_schema, get_engine\n"
        f"ensure_schema(get_engine({database_url!r}))\n"
        "print(sorted(name for name in sys.modules if name.startswith('alembic')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_two_processes_migrate_the_same_database_at_once(database_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=upgrade_database, args=(database_url,)) for _ in range(2)]

    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)

    assert [process.exitcode for process in processes] == [0, 0]
    assert _revision(database_url) == HEAD_REVISION
    assert _tables(database_url) == VIVACE_TABLES | {"alembic_version"}


def test_states_get_the_time_they_were_written_from_0007_on(database_url: str) -> None:
    """0007: the states the notification service may still read (entered within its look-back)
    get their own time as ``recorded``, older ones none; a row inserted without the column, as a
    process running an older vivace does, gets the database's time."""
    engine = get_engine(database_url)
    with transaction(engine) as conn:
        command.upgrade(alembic_config(conn), "0006")
    now = time.time()
    recent, old = uuid7(), uuid7()
    states = states_as_an_older_vivace_writes_them()

    def row(run_id: uuid.UUID, entered: float) -> dict[str, Any]:
        return {
            "flow_run_id": run_id,
            "seq": 1,
            "type": "FAILED",
            "name": "Failed",
            "timestamp": entered,
        }

    with transaction(engine) as conn:
        conn.execute(sa.insert(states), [row(recent, now - 60), row(old, now - 3600)])

    with transaction(engine) as conn:
        command.upgrade(alembic_config(conn), "head")
    later = uuid7()
    with transaction(engine) as conn:
        conn.execute(sa.insert(states), [row(later, now - 7200)])  # an older vivace's writer

    table = schema.flow_run_states
    with connect(engine) as conn:
        recorded = dict(conn.execute(sa.select(table.c.flow_run_id, table.c.recorded)).all())
    assert recorded[recent].timestamp() == pytest.approx(now - 60)
    assert recorded[old] is None  # never read again: behind the look-back
    assert recorded[later].timestamp() == pytest.approx(time.time(), abs=5)


def test_downgrade_removes_every_table(database_url: str) -> None:
    upgrade_database(database_url)

    with transaction(get_engine(database_url)) as conn:
        command.downgrade(alembic_config(conn), "base")

    assert _tables(database_url) == {"alembic_version"}


def test_reset_database_deletes_the_history(database_url: str) -> None:
    upgrade_database(database_url)
    with transaction(get_engine(database_url)) as conn:
        conn.execute(schema.flows.insert(), [{"id": uuid7(), "name": "gone", "created": 0.0}])

    reset_database(database_url)

    with connect(get_engine(database_url)) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.flows)).scalar() == 0
    assert _revision(database_url) == HEAD_REVISION


def test_database_from_a_newer_vivace_is_an_error(database_url: str) -> None:
    upgrade_database(database_url)
    with transaction(get_engine(database_url)) as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    dispose_engines()  # a new process, as far as the memo of migrated URLs goes

    with pytest.raises(StoreError, match=r"'9999'.*expected a database created by"):
        ensure_schema(get_engine(database_url))
