"""RayTaskRunner only, on a real Ray cluster: these add to the runner contract (test_contract.py).

``ray_cluster``: a cluster started as ``ray start --head`` on 127.0.0.1 (2 CPUs and a custom
``special`` resource), reached by address, as a deployment would be; its workers import this
module through ``PYTHONPATH``, as workers import a deployment's code. ``ray stop --force`` at the
end stops every Ray on the machine, so nothing else here may use Ray at the same moment (the
contract suite's in-process Ray is shut down at the end of its module).
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vivace import State, flow, get_run_logger, task
from vivace.engine.context import current_flow_run_id
from vivace.exceptions import ConfigurationError, CrashedRunError

ray = pytest.importorskip("ray")

from vivace.runners import ConcurrentTaskRunner, RayTaskRunner  # noqa: E402

HERE = Path(__file__).resolve().parent
RAY_CLI = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """``ray start --head`` on loopback; yields its address (``127.0.0.1:<port>``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    # `ray start` turns on token authentication by default; drivers reach such a cluster with
    # RAY_AUTH_MODE=token. A loopback test cluster opts out, as Ray's warning suggests.
    env["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    command = [
        RAY_CLI,
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--object-store-memory={200 * 1024 * 1024}",
        '--resources={"special": 1}',
        "--disable-usage-stats",
    ]
    try:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY_CLI, "stop", "--force"], capture_output=True, timeout=120)


# -- tasks (module level: the workers import them by reference) ----------------------------------


@task
def greet(i: int) -> int:
    get_run_logger().info("logged by task %d", i)
    print(f"printed by task {i}")
    return i


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def chunk(n: int) -> list[int]:
    return list(range(n))


@task(runner_options={"num_cpus": 0.5, "resources": {"special": 1}})
def assigned() -> dict[str, float]:
    return dict(ray.get_runtime_context().get_assigned_resources())


@task
def pid() -> int:
    return os.getpid()


@task
def die() -> None:
    os._exit(1)


@task(retries=1)
def die_once(path: str) -> str:
    if not os.path.exists(path):
        Path(path).touch()
        os._exit(1)
    return "survived"


@task(timeout_seconds=1)
def sleepy(path: str) -> None:
    for _ in range(300):  # pure Python between sleeps: the interrupt stops it at the deadline
        time.sleep(0.1)
    Path(path).touch()


@task(timeout_seconds=1)
def hog(path: str) -> None:
    # Catastrophic backtracking: one C call that holds the GIL for minutes, so the worker
    # cannot even report the timeout; only killing its process stops it.
    re.match(r"(a+)+$", "a" * 40 + "b")
    Path(path).touch()


def _connect_and_count_nodes(address: str) -> int:
    ray.init(address=address, log_to_driver=False)
    try:
        return sum(1 for node in ray.nodes() if node["Alive"])
    finally:
        ray.shutdown()


# -- a cluster reached by address ----------------------------------------------------------------


def test_flows_reach_a_long_lived_cluster_with_their_workers_logs(
    ray_cluster: str, monkeypatch: pytest.MonkeyPatch, greetings_recorded: Any
) -> None:
    """Two flows one after another; their tasks' logs reach the store; the cluster lives on."""
    from vivace.settings import reset_settings

    # The workers' writers would write only every minute: what is in the store when a flow run
    # returns got there because a worker writes out soon after a run completes, and the runner
    # waited for it before the flow run's final state.
    monkeypatch.setenv("VIVACE_RECORDER_FLUSH_INTERVAL", "60")
    reset_settings()

    @flow(task_runner=RayTaskRunner(address=ray_cluster), log_prints=True)
    def greetings(n: int) -> list[int]:
        return [f.result() for f in greet.map(range(n))]

    greetings_recorded(greetings)
    assert not ray.is_initialized()  # the runner disconnected
    assert _connect_and_count_nodes(ray_cluster) == 1  # and left the cluster running


@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        pytest.param("concurrent", "ray", id="ray-subflow-in-a-concurrent-flow"),
        pytest.param("ray", "concurrent", id="concurrent-subflow-in-a-ray-flow"),
    ],
)
def test_a_subflow_may_use_another_runner_than_its_parent(
    ray_cluster: str, outer: str, inner: str, history: Any
) -> None:
    def runner(kind: str) -> Any:
        return RayTaskRunner(address=ray_cluster) if kind == "ray" else ConcurrentTaskRunner()

    run_ids: dict[str, uuid.UUID | None] = {}

    @flow(task_runner=runner(inner), log_prints=True)
    def child(n: int) -> int:
        run_ids["child"] = current_flow_run_id()
        return total.submit(greet.map(range(n))).result()

    @flow(task_runner=runner(outer), log_prints=True)
    def parent() -> tuple[int, int]:
        run_ids["parent"] = current_flow_run_id()
        first = greet.submit(3)
        from_child = child(first.result())
        return from_child, total.submit([first, greet.submit(4)]).result()

    assert parent() == (3, 7)
    assert not ray.is_initialized()
    for name, runs, i in (("parent", 3, 3), ("child", 4, 0)):
        flow_run_id = run_ids[name]
        assert flow_run_id is not None
        assert history.flow_run(flow_run_id).state_type == "COMPLETED"
        records = history.task_runs(flow_run_id)
        assert len(records) == runs and {r.state_type for r in records} == {"COMPLETED"}
        messages = {log.message for log in history.logs(flow_run_id) if log.task_run_id}
        assert f"logged by task {i}" in messages and f"printed by task {i}" in messages


def test_twenty_flow_runs_leave_nothing_behind_on_a_cluster_reached_by_address(
    ray_cluster: str,
) -> None:
    """The driver holds no object of the cluster's after each flow run, and no task runs on."""

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def pipeline(n: int) -> int:
        chunk.submit(1000)  # a result nobody fetches
        held = chunk.submit(10)  # a future the flow returns without fetching its result
        run_ids.append(held)
        return total.submit(greet.map(range(n))).result()

    run_ids: list[Any] = []
    # Connected here first, the runner uses this connection and leaves it open: what the flow
    # runs leave on the cluster stays visible through the driver's reference counts.
    ray.init(address=ray_cluster, log_to_driver=False)
    try:
        core = ray._private.worker.global_worker.core_worker
        gc.collect()
        before = set(core.get_all_reference_counts())
        for i in range(20):
            assert pipeline(5) == 10, f"flow run {i}"
        gc.collect()
        # The futures the flows returned still live, their results fetched at each flow's end.
        assert set(core.get_all_reference_counts()) <= before
        assert all(f.result() == list(range(10)) for f in run_ids)
        cpus = ray.cluster_resources()["CPU"]
        deadline = time.monotonic() + 10
        while ray.available_resources().get("CPU") != cpus and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ray.available_resources().get("CPU") == cpus
    finally:
        ray.shutdown()


def test_flush_records_gives_up_with_a_warning_when_records_do_not_arrive(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that cannot reach the database journals its records: the flow run ends anyway."""
    import vivace.runners.ray as ray_runner
    from vivace.engine.remote import RemoteSetup

    monkeypatch.setattr(ray_runner, "FLUSH_MARGIN", 0.3)
    runner = RayTaskRunner()
    runner._setup = RemoteSetup()
    runner._setup.env["recorder_retry_seconds"] = 0.0
    runner._unconfirmed = {uuid.uuid4(): {uuid.uuid4(), uuid.uuid4()}}
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vivace.runners.ray"):
        runner.flush_records()
    assert time.monotonic() - started < 5
    assert "2 task runs completed on Ray workers but are not in the database yet" in caplog.text
    assert not runner._unconfirmed


def test_runner_options_place_a_task_where_its_resource_is(ray_cluster: str) -> None:
    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def placed() -> dict[str, float]:
        return assigned.submit().result()

    resources = placed()
    assert resources.get("special") == 1.0 and resources.get("CPU") == 0.5


def test_a_dead_worker_crashes_its_run_which_retries_if_it_can(
    ray_cluster: str, tmp_path: Path, history: Any
) -> None:
    marker = tmp_path / "died-once"

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def pipeline() -> tuple[State, str]:
        return die.submit().wait(), die_once.submit(str(marker)).result()

    flow_state = pipeline(return_state=True)
    crashed, survived = flow_state.result()
    assert crashed.is_crashed() and "worker died" in (crashed.message or "")
    assert isinstance(crashed.result(raise_on_failure=False), CrashedRunError)
    assert survived == "survived"
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    assert runs["die-0"].state_type == "CRASHED"
    assert runs["die_once-0"].state_type == "COMPLETED"
    states = [(s.type, s.name) for s in history.task_run_states(runs["die_once-0"].id)]
    assert ("SCHEDULED", "AwaitingRetry") in states and states[-1] == ("COMPLETED", "Completed")


def test_a_timeout_ends_the_run_timed_out_and_stops_the_function(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: Any
) -> None:
    """Pure Python is interrupted on the worker; code holding the GIL is force-cancelled."""
    import vivace.runners.ray as ray_runner

    monkeypatch.setattr(ray_runner, "BACKSTOP_GRACE", 2.0)
    interrupted, killed = tmp_path / "interrupted", tmp_path / "killed"

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def pipeline() -> tuple[State, State]:
        a, b = sleepy.submit(str(interrupted)), hog.submit(str(killed))
        return a.wait(), b.wait()

    flow_state = pipeline(return_state=True)
    states = flow_state.result()
    for state in states:
        assert state.is_failed() and state.name == "TimedOut"
    time.sleep(1.0)
    assert not interrupted.exists() and not killed.exists()
    runs = {run.name: run for run in history.task_runs(flow_state.run_id)}
    assert runs["sleepy-0"].state_name == "TimedOut" and runs["hog-0"].state_name == "TimedOut"


def test_a_failing_flow_cancels_its_outstanding_ray_tasks(ray_cluster: str, history: Any) -> None:
    @task
    def slow(i: int) -> int:
        time.sleep(30)
        return i

    @flow(task_runner=RayTaskRunner(address=ray_cluster), timeout_seconds=2)
    def impatient() -> None:
        for future in slow.map(range(4)):
            future.wait()

    started = time.monotonic()
    state = impatient(return_state=True)
    assert state.is_failed()
    assert time.monotonic() - started < 25
    runs = history.task_runs(state.run_id)
    assert len(runs) == 4 and {r.state_type for r in runs} == {"CANCELLED"}


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"address": 10001}, id="address-not-a-string"),
        pytest.param({"init_kwargs": ["num_cpus"]}, id="init-kwargs-not-a-dict"),
        pytest.param({"init_kwargs": {"address": "auto"}}, id="address-in-init-kwargs"),
        pytest.param({"max_in_flight": 0}, id="max-in-flight-zero"),
    ],
)
def test_configuration_errors_are_raised_by_the_constructor(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="RayTaskRunner"):
        RayTaskRunner(**kwargs)


def test_ray_is_imported_only_when_the_runner_is_used() -> None:
    code = (
        "import sys\n"
        "import vivace.runners\n"
        "assert 'ray' not in sys.modules\n"
        "from vivace.runners import RayTaskRunner\n"
        "print('ray' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
