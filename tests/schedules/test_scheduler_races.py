"""Races of the scheduler on SQLite and PostgreSQL: two loops at once (threads, then processes)
and a redeploy racing a loop, in both orders, never make a duplicate run nor leave a run of a
deleted schedule. The order of events is forced with events, not sleeps."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.schedules.helpers import (
    HOUR,
    NOW,
    assert_no_duplicates_and_states_match,
    deploy,
    scheduled_runs,
    spec,
)
from vivace.schedules import Interval
from vivace.store import schedules as store_schedules
from vivace.store.deployments import save_deployment
from vivace.store.schedules import read_deployment_schedules, run_scheduler_loop

DEPLOYMENTS = 10
SCHEDULES_EACH = 4
MAX_RUNS = 6
WAIT = 30  # seconds any wait in these tests may take at most


def many_schedules(url: str) -> None:
    for i in range(DEPLOYMENTS):
        deploy(
            url,
            *(Interval(dt.timedelta(minutes=5 * (k + 1))) for k in range(SCHEDULES_EACH)),
            name=f"deployment-{i}",
        )


def test_two_loops_in_threads_at_once_make_each_run_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    many_schedules(database_url)
    monkeypatch.setattr(store_schedules, "BATCH_SIZE", 3)  # many small batches interleave
    start = threading.Barrier(2, timeout=WAIT)
    created: list[int] = []
    failed: list[BaseException] = []

    def loop() -> None:
        try:
            start.wait()
            created.append(run_scheduler_loop(database_url, now=NOW, max_runs=MAX_RUNS))
        except BaseException as error:
            failed.append(error)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not failed
    assert sum(created) == DEPLOYMENTS * SCHEDULES_EACH * MAX_RUNS
    assert len(scheduled_runs(database_url)) == DEPLOYMENTS * SCHEDULES_EACH * MAX_RUNS
    assert_no_duplicates_and_states_match(database_url)


LOOP_PROCESS = """
import sys, time
from pathlib import Path
import vivace.store.schedules as schedules
schedules.BATCH_SIZE = 3
url, go, now, max_runs = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
from vivace.store.database import ensure_schema, get_engine
ensure_schema(get_engine(url))
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
print(schedules.run_scheduler_loop(url, now=now, max_runs=max_runs))
"""


def test_two_loops_in_processes_at_once_make_each_run_once(
    database_url: str, tmp_path: Path
) -> None:
    many_schedules(database_url)
    go = tmp_path / "go"
    command = [sys.executable, "-c", LOOP_PROCESS, database_url, str(go), str(NOW), str(MAX_RUNS)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()  # both start their loop at once
    outputs = [process.communicate(timeout=WAIT * 2) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sum(int(out.strip()) for out, _ in outputs) == DEPLOYMENTS * SCHEDULES_EACH * MAX_RUNS
    assert len(scheduled_runs(database_url)) == DEPLOYMENTS * SCHEDULES_EACH * MAX_RUNS
    assert_no_duplicates_and_states_match(database_url)


HOURLY = Interval(dt.timedelta(hours=1))
QUARTER_HOURLY = Interval(dt.timedelta(minutes=15))


def test_a_redeploy_during_a_loop_waits_for_it_and_removes_the_runs_it_made(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = deploy(database_url, HOURLY)
    (old,) = read_deployment_schedules(database_url, record.id)
    fill = store_schedules._fill
    filled, go = threading.Event(), threading.Event()

    def fill_then_wait(
        conn: sa.Connection, due: list[Any], limits: Any, moment: float
    ) -> tuple[int, int]:
        created = fill(conn, due, limits, moment)  # inserted, not committed, schedules locked
        filled.set()
        assert go.wait(WAIT)
        return created

    monkeypatch.setattr(store_schedules, "_fill", fill_then_wait)
    results: dict[str, Any] = {}
    loop = threading.Thread(
        target=lambda: results.update(loop=run_scheduler_loop(database_url, now=NOW, max_runs=5))
    )
    loop.start()
    assert filled.wait(WAIT)
    redeployed = threading.Event()

    def redeploy() -> None:
        save_deployment(database_url, spec(schedules=(QUARTER_HOURLY,)))
        redeployed.set()

    redeploying = threading.Thread(target=redeploy)
    redeploying.start()
    # The redeploy cannot go past the loop's locks while the loop is in its transaction.
    assert not redeployed.wait(0.5)
    go.set()
    loop.join(WAIT)
    redeploying.join(WAIT)
    assert results["loop"] == 5 and redeployed.is_set()
    # The loop's runs of the removed schedule went with it.
    assert scheduled_runs(database_url, old.id) == []
    (new,) = read_deployment_schedules(database_url, record.id)
    assert new.id != old.id and new.due_at is not None
    monkeypatch.setattr(store_schedules, "_fill", fill)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=5) == 5
    assert {run["schedule_id"] for run in scheduled_runs(database_url)} == {new.id}
    assert_no_duplicates_and_states_match(database_url)


def test_a_loop_during_a_redeploy_makes_no_run_of_the_schedule_it_removes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = deploy(database_url, HOURLY)
    (old,) = read_deployment_schedules(database_url, record.id)
    assert run_scheduler_loop(database_url, now=NOW, max_runs=2) == 2
    later = NOW + 1.5 * HOUR  # the old schedule is due again: it needs a run
    replace = store_schedules.replace_deployment_schedules
    replaced, go = threading.Event(), threading.Event()

    def replace_then_wait(*args: Any) -> None:
        replace(*args)  # old schedule and runs deleted, not committed, rows locked
        replaced.set()
        assert go.wait(WAIT)

    monkeypatch.setattr(store_schedules, "replace_deployment_schedules", replace_then_wait)
    failed: list[BaseException] = []

    def redeploy() -> None:
        try:
            save_deployment(database_url, spec(schedules=(QUARTER_HOURLY,)))
        except BaseException as error:
            failed.append(error)

    redeploying = threading.Thread(target=redeploy)
    redeploying.start()
    assert replaced.wait(WAIT)
    results: dict[str, int] = {}
    loop = threading.Thread(
        target=lambda: results.update(loop=run_scheduler_loop(database_url, now=later, max_runs=2))
    )
    loop.start()
    if database_url.startswith("postgresql"):
        # The old schedule is locked: the loop skips it rather than wait, and cannot see the new
        # one before the redeploy commits.
        loop.join(WAIT)
        assert results["loop"] == 0
    else:
        # SQLite: the loop waits for the redeploy's write lock.
        loop.join(0.5)
        assert loop.is_alive()
    go.set()
    redeploying.join(WAIT)
    loop.join(WAIT)
    assert not failed
    assert scheduled_runs(database_url, old.id) == []
    run_scheduler_loop(database_url, now=later, max_runs=2)
    (new,) = read_deployment_schedules(database_url, record.id)
    assert {run["schedule_id"] for run in scheduled_runs(database_url)} == {new.id}
    assert len(scheduled_runs(database_url, new.id)) == 2
    assert_no_duplicates_and_states_match(database_url)


def test_a_pause_during_a_loop_removes_the_runs_the_loop_made(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = deploy(database_url, HOURLY)
    (schedule,) = read_deployment_schedules(database_url, record.id)
    fill = store_schedules._fill
    filled, go = threading.Event(), threading.Event()

    def fill_then_wait(
        conn: sa.Connection, due: list[Any], limits: Any, moment: float
    ) -> tuple[int, int]:
        created = fill(conn, due, limits, moment)
        filled.set()
        assert go.wait(WAIT)
        return created

    monkeypatch.setattr(store_schedules, "_fill", fill_then_wait)
    loop = threading.Thread(target=lambda: run_scheduler_loop(database_url, now=NOW, max_runs=4))
    loop.start()
    assert filled.wait(WAIT)
    deleted: list[int] = []
    paused = threading.Event()

    def pause() -> None:
        deleted.append(store_schedules.set_schedule_active(database_url, schedule.id, False)[1])
        paused.set()

    pausing = threading.Thread(target=pause)
    pausing.start()
    assert not paused.wait(0.5)  # it waits for the loop's transaction
    go.set()
    loop.join(WAIT)
    pausing.join(WAIT)
    assert deleted == [4]
    assert scheduled_runs(database_url) == []
    record_after = store_schedules.read_schedule(database_url, schedule.id)
    assert record_after is not None and not record_after.active and record_after.due_at is None
    assert_no_duplicates_and_states_match(database_url)
