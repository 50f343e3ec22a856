"""The runner contract for results, caching and resume: every runner passes every test here.

Runs on the runners of ``test_contract.RUNNERS`` (sequential, concurrent, dask, ray). Tasks tell
the test that they ran by writing marker files (they may run in other processes), and results are
checked through the store, where every runner records them the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_contract import RUNNERS, OnCluster, RunnerFactory

from vivace import flow, resume_flow_run, task
from vivace.cache_policies import INPUTS
from vivace.settings import get_settings
from vivace.store.queries import read_flow_run, read_task_runs

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> RunnerFactory:
    """A factory of fresh runners of one kind: the runners of the main contract suite."""
    factory = request.param
    if isinstance(factory, OnCluster):
        cluster = request.getfixturevalue(factory.fixture)
        make = factory.make
        return lambda: make(cluster)
    return factory  # type: ignore[no-any-return]


def ran(markers: str, name: str) -> None:
    Path(markers, f"{name}-{os.getpid()}-{os.urandom(4).hex()}").touch()


def count(markers: Path, name: str) -> int:
    return sum(1 for path in markers.iterdir() if path.name.startswith(f"{name}-"))


@task(persist_result=True)
def persisted_square(markers: str, x: int) -> int:
    ran(markers, f"square{x}")
    return x * x


@task(cache_policy=INPUTS)
def cached_cube(markers: str, x: int) -> int:
    ran(markers, f"cube{x}")
    return x**3


@task(cache_policy=INPUTS)
def shared_double(x: int) -> int:
    """Filled by another process in the cross-process test, hit by a Dask worker."""
    return 2 * x


@task
def failing_sum(markers: str, values: list[int]) -> int:
    ran(markers, "sum")
    if Path(markers, "broken").exists():
        raise RuntimeError("sum is broken")
    return sum(values)


def _url() -> str:
    return get_settings().resolved_database_url


def _records(flow_run_id: Any) -> list[Any]:
    runs, _ = read_task_runs(_url(), flow_run_id)
    return runs


def test_persisted_results_load_back_from_the_store(runner: RunnerFactory, tmp_path: Path) -> None:
    markers = str(tmp_path)

    def body() -> list[int]:
        futures = persisted_square.map([markers] * 3, [1, 2, 3])
        return [f.result() for f in futures]

    state = flow(name="persisting", task_runner=runner())(body)(return_state=True)

    assert state.result() == [1, 4, 9]
    records = sorted(_records(state.run_id), key=lambda r: r.dynamic_key)
    # Position, then a digest of the arguments (a persisted call's identity on resume).
    assert [r.dynamic_key.split("@")[0] for r in records] == ["0", "1", "2"]
    assert len({r.dynamic_key.split("@")[1] for r in records}) == 3
    assert [r.state.result() for r in records] == [1, 4, 9]
    assert all(r.result_key == r.id.hex for r in records)


def test_a_cache_entry_written_by_one_flow_run_is_hit_by_the_next(
    runner: RunnerFactory, tmp_path: Path
) -> None:
    markers = str(tmp_path)

    def body(xs: list[int]) -> list[int]:
        return [f.result() for f in cached_cube.map([markers] * len(xs), xs)]

    caching = flow(name="caching", task_runner=runner())(body)
    first = caching([1, 2], return_state=True)
    second = caching([1, 2, 3], return_state=True)

    assert first.result() == [1, 8] and second.result() == [1, 8, 27]
    assert [count(tmp_path, f"cube{x}") for x in (1, 2, 3)] == [1, 1, 1]
    names = {r.dynamic_key.split("@")[0]: r.state_name for r in _records(second.run_id)}
    assert names == {"0": "Cached", "1": "Cached", "2": "Completed"}


def test_a_resumed_flow_run_reruns_only_the_failed_part(
    runner: RunnerFactory, tmp_path: Path
) -> None:
    markers = str(tmp_path)
    (tmp_path / "broken").touch()
    resumable = flow(name="resumable", task_runner=runner())(_resumable_body)
    failed = resumable(markers, return_state=True)
    assert failed.is_failed()
    (tmp_path / "broken").unlink()

    # The flow is loaded from its entrypoint: this module's module-level flow, on this runner.
    _RESUMABLE.task_runner = runner()
    assert resume_flow_run(failed.run_id) == 14
    assert [count(tmp_path, f"square{x}") for x in (1, 2, 3)] == [1, 1, 1]
    assert count(tmp_path, "sum") == 2
    record = read_flow_run(_url(), failed.run_id)
    assert record is not None and record.run_count == 2 and record.state_name == "Completed"


def _resumable_body(markers: str) -> int:
    squares = persisted_square.map([markers] * 3, [1, 2, 3])
    return failing_sum.submit(markers, squares).result()


_RESUMABLE = flow(name="resumable")(_resumable_body)
_resumable_body.__qualname__ = "_RESUMABLE"  # its entrypoint names the module-level flow


@pytest.mark.parametrize("dask_cluster_runner", ["dask"])
def test_a_dask_worker_hits_an_entry_another_process_wrote(
    dask_cluster_runner: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    from vivace.runners import DaskTaskRunner

    cluster = request.getfixturevalue("dask_cluster")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from vivace import flow\n"
        "from vivace.runners import SequentialTaskRunner\n"
        "from test_contract_results import shared_double\n"
        "fill = flow(name='fill', task_runner=SequentialTaskRunner())(lambda: shared_double(21))\n"
        "assert fill() == 42\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=90,
        capture_output=True,
        env={**os.environ, "VIVACE_LOGGING_CONSOLE": "false"},
    )

    def body() -> int:
        return shared_double.submit(21).result()

    runner_ = DaskTaskRunner(address=cluster.scheduler_address)
    state = flow(name="hit", task_runner=runner_)(body)(return_state=True)

    assert state.result() == 42
    (record,) = _records(state.run_id)
    assert record.state_name == "Cached" and record.run_count == 0
