"""THE test of the issue: 20 task runs tagged with a limit of 3, on a real Dask LocalCluster (two
worker processes, four threads each: eight could run at once), never have more than 3 RUNNING at
once, checked from the start and end times the workers recorded in the store. On SQLite and
PostgreSQL; the limit holds across the worker processes through the database alone."""

from __future__ import annotations

import time
from typing import Any

from tests.concurrency.helpers import most_at_once, run_spans
from vivace import flow, task
from vivace.runners import DaskTaskRunner
from vivace.store import concurrency as store


@task(tags=["warehouse-load"])
def load(i: int) -> int:
    time.sleep(0.15)
    return i


def test_twenty_tagged_runs_on_a_dask_cluster_never_exceed_the_limit(
    database_url: str, dask_cluster: Any, history: Any
) -> None:
    from distributed import Client

    from vivace.concurrency_limits import forget_tag_limits

    store.create_limit(database_url, "tag:warehouse-load", 3)
    with Client(dask_cluster) as client:  # workers reused across the cases: nothing stale
        client.run(forget_tag_limits)

    @flow(task_runner=DaskTaskRunner(address=dask_cluster))
    def many() -> list[int]:
        return [future.result() for future in load.map(range(20))]

    state = many(return_state=True)

    assert state.result() == list(range(20))
    runs = history.task_runs(state.run_id)
    assert len(runs) == 20 and all(run.state_type == "COMPLETED" for run in runs)
    assert most_at_once(run_spans(runs)) == 3
    waited = [log for log in history.logs(state.run_id) if "waiting for a slot" in log.message]
    assert waited  # some runs waited, and said so from their worker
    assert store.slots_in_use(database_url, ["tag:warehouse-load"]) == {"tag:warehouse-load": 0}
