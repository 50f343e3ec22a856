"""``vivace.store.deployments`` on SQLite and PostgreSQL: two first deploys of one name at the same
moment, and deleting a deployment."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from vivace.engine.states import StateType
from vivace.store import deployments, schema
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import (
    DeploymentRecord,
    DeploymentSpec,
    create_deployment_run,
    delete_deployment,
    read_deployment,
    read_deployment_versions,
    save_deployment,
)
from vivace.store.queries import read_flow_runs
from vivace.store.run_control import transition_flow_run


def spec(name: str = "nightly", **changes: Any) -> DeploymentSpec:
    values: dict[str, Any] = {
        "name": name,
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "storage": {"url": "/srv/code/nightly"},
        "parameter_schema": {"type": "object", "properties": {}},
        **changes,
    }
    return DeploymentSpec(**values)


def test_two_first_deploys_of_one_name_at_once_get_versions_1_and_2(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_deployment(database_url, spec("other"))  # its flow and queue exist: only the name races
    if database_url.startswith("postgresql"):
        # Both transactions find no row before either inserts one: the race, every time. (On
        # SQLite the second transaction cannot begin before the first ends: no race to force.)
        both_looked = threading.Barrier(2, timeout=30)
        insert = deployments._insert_deployment

        def insert_once_both_looked(*args: Any) -> None:
            both_looked.wait()
            insert(*args)

        monkeypatch.setattr(deployments, "_insert_deployment", insert_once_both_looked)
    start = threading.Barrier(2, timeout=30)
    saved: list[DeploymentRecord] = []
    failed: list[BaseException] = []

    def deploy(description: str) -> None:
        start.wait()
        try:
            saved.append(save_deployment(database_url, spec(description=description)))
        except BaseException as error:
            failed.append(error)

    threads = [threading.Thread(target=deploy, args=(str(n),)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failed == []
    assert sorted(record.version for record in saved) == [1, 2]
    assert len({record.id for record in saved}) == 1
    latest = read_deployment(database_url, "nightly")
    assert latest is not None and latest.version == 2
    assert [v.version for v in read_deployment_versions(database_url, latest.id)] == [2, 1]


def test_a_deploy_returns_the_version_it_saved_when_another_commits_right_after(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What two deploys at once sometimes did: the first commits version 1, the second commits
    # version 2, and only then the first reads its record back.
    real_transaction = deployments.transaction
    other: list[DeploymentRecord] = []
    deploying_other = False

    @contextlib.contextmanager
    def then_another_deploy(engine: sa.Engine) -> Iterator[sa.Connection]:
        nonlocal deploying_other
        with real_transaction(engine) as conn:
            yield conn
        if not deploying_other:  # once: not again after the other deploy's own transaction
            deploying_other = True
            other.append(save_deployment(database_url, spec(description="second")))

    monkeypatch.setattr(deployments, "transaction", then_another_deploy)
    first = save_deployment(database_url, spec(description="first"))

    assert (first.version, first.description) == (1, "first")
    assert [(record.version, record.description) for record in other] == [(2, "second")]


def test_delete_says_how_many_waiting_runs_it_cancelled(database_url: str) -> None:
    record = save_deployment(database_url, spec())
    waiting, started, retrying = (
        create_deployment_run(database_url, record, parameters={})[0] for _ in "abc"
    )
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn, started.id, StateType.RUNNING, "Running", None, allowed_from=[StateType.SCHEDULED]
        )
        # Waiting between retries: SCHEDULED, but its engine holds it (it has a heartbeat).
        conn.execute(
            sa.update(schema.flow_runs)
            .where(schema.flow_runs.c.id == retrying.id)
            .values(heartbeat=time.time())
        )

    deleted, cancelled = delete_deployment(database_url, "nightly")

    assert (deleted.id, cancelled) == (record.id, 1)
    assert read_deployment(database_url, "nightly") is None
    states = {run.id: run.state_type for run in read_flow_runs(database_url, limit=10)[0]}
    assert states == {
        waiting.id: StateType.CANCELLED,
        started.id: StateType.RUNNING,
        retrying.id: StateType.SCHEDULED,
    }
