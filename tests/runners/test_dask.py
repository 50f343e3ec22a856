"""DaskTaskRunner only, on real clusters: these add to the runner contract (test_contract.py).

- ``cli_cluster``: a long-lived cluster started as ``dask scheduler`` and two ``dask worker``
  processes on 127.0.0.1 (one of them with a ``GPU`` resource), reached by address, as a
  deployment would be; its workers import this module through ``PYTHONPATH``, as workers import
  a deployment's code.
- ``dask_cluster`` (conftest): a LocalCluster with two worker processes.
- A few tests let the runner start its own temporary cluster (and close it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vivace import State, StateType, flow, get_run_logger, task
from vivace.engine.context import current_context
from vivace.exceptions import ConfigurationError, CrashedRunError, UnpicklableError
from vivace.runners import ConcurrentTaskRunner, DaskTaskRunner

HERE = Path(__file__).resolve().parent
TIMEOUT = 60
TEMPORARY = {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}


# -- the long-lived cluster ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` + two ``dask worker`` processes; yields the scheduler's address."""
    from distributed import Client

    dask_cli = str(Path(sys.executable).parent / "dask")
    logs = tmp_path_factory.mktemp("dask-cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = {
        "scheduler": [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port)],
        "worker-plain": [dask_cli, "worker", address, "--name", "plain"],
        "worker-gpu": [dask_cli, "worker", address, "--name", "gpu", "--resources", "GPU=1"],
    }
    for name, command in commands.items():
        command += ["--dashboard-address", ":0"]
        if name.startswith("worker"):
            command += ["--host", "127.0.0.1", "--nthreads", "2", "--nworkers", "1"]
    processes = []
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            if name == "scheduler":
                _wait_for_port(address)
        with Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
        yield address
    finally:
        for process in reversed(processes):  # workers first, then the scheduler
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(address: str) -> None:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the dask scheduler did not open {address}")


def _scheduler_tasks(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=TIMEOUT) as client:
        count: int = client.run_on_scheduler(_count_tasks)
        return count


def _count_tasks(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def _worker_count(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=TIMEOUT) as client:
        return len(client.scheduler_info()["workers"])


# -- tasks (module level: the workers import them by reference) ----------------------------------


@task
def greet(i: int) -> int:
    get_run_logger().info("logged by task %d", i)
    print(f"printed by task {i}")
    return i


@task
def worker_address() -> str:
    from distributed import get_worker

    return str(get_worker().address)


@task
def double(x: int) -> int:
    return 2 * x


_unpickled_here: list[int] = []


def _note_unpickled() -> Tracked:
    _unpickled_here.append(1)
    return Tracked.__new__(Tracked)


class Tracked:
    """A result that notes when it is unpickled in this process (the driver)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_note_unpickled, ())


@task
def make_tracked() -> Tracked:
    return Tracked()


@task
def is_tracked(value: Any) -> bool:
    return isinstance(value[0] if isinstance(value, list) else value, Tracked)


# -- a long-lived cluster reached by address -----------------------------------------------------


def test_flows_reach_a_long_lived_cluster_that_outlives_them(
    cli_cluster: str, greetings_recorded: Any
) -> None:
    """Two flows one after another; their tasks' logs reach the store; the cluster lives on."""
    # The workers' writers would write only every minute: what is in the store when a flow run
    # returns got there through the flush the flow run asks every worker for at its end.
    greetings_recorded(DaskTaskRunner(address=cli_cluster), greet)
    assert _worker_count(cli_cluster) == 2
    assert _scheduler_tasks(cli_cluster) == 0  # nothing left behind: no leaked futures


def test_twenty_flow_runs_leave_nothing_on_the_scheduler(cli_cluster: str) -> None:
    @flow(task_runner=DaskTaskRunner(address=cli_cluster))
    def small() -> int:
        futures = [double.submit(i) for i in range(5)]
        return sum(f.result() for f in futures) + double.submit(futures[0]).result()

    from distributed import Client

    with Client(cli_cluster, timeout=TIMEOUT) as client:
        before = client.run_on_scheduler(_scheduler_footprint)
        for _ in range(20):
            assert small() == 20
        after = client.run_on_scheduler(_scheduler_footprint)
    assert after["tasks"] == 0
    assert after["clients"] == before["clients"]
    assert after["task_groups"] <= before["task_groups"] + 1
    assert after["value_topics"] == 0  # the topics small values rode back on, and their events


def _scheduler_footprint(dask_scheduler: Any) -> dict[str, int]:
    return {
        "tasks": len(dask_scheduler.tasks),
        "clients": len(dask_scheduler.clients),
        "task_groups": len(dask_scheduler.task_groups),
        "value_topics": sum(
            topic.startswith("vivace-values-") for topic in dask_scheduler._broker._topics
        ),
    }


def test_runner_options_place_a_task_on_a_worker_with_the_resource(cli_cluster: str) -> None:
    on_gpu = worker_address.with_options(runner_options={"resources": {"GPU": 1}})

    @flow(task_runner=DaskTaskRunner(address=cli_cluster))
    def placed() -> set[str]:
        return {f.result() for f in [on_gpu.submit() for _ in range(6)]}

    from distributed import Client

    with Client(cli_cluster, timeout=TIMEOUT) as client:
        workers = client.scheduler_info()["workers"]
    gpu = {address for address, info in workers.items() if info.get("resources", {}).get("GPU")}
    assert placed() == gpu and len(gpu) == 1


def test_a_client_given_as_address_is_used_and_left_open(cli_cluster: str) -> None:
    from distributed import Client

    with Client(cli_cluster, timeout=TIMEOUT) as client:

        @flow(task_runner=DaskTaskRunner(address=client))
        def on_client() -> int:
            return double.submit(double.submit(5)).result()

        assert on_client() == 20
        assert client.status == "running"
        # Values are fetched: vivace subscribes no handler to the caller's client.
        assert not [t for t in client._event_handlers if t.startswith("vivace-values-")]
        assert client.submit(sum, [1, 2]).result() == 3


def test_an_unreachable_scheduler_fails_the_flow_run_naming_it_and_leaves_no_thread(
    threads_left: Callable[[], set[threading.Thread]],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port that is bound but never listens
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"

        @flow(task_runner=DaskTaskRunner(address=address, client_kwargs={"timeout": 1}))
        def unreachable() -> int:
            return double.submit(1).result()

        state = unreachable(return_state=True)

    assert state.is_failed()
    assert f"DaskTaskRunner could not connect to the Dask scheduler at {address!r}" in (
        state.message or ""
    )

    # distributed's client starts its event-loop thread before it connects, and leaves it
    # running when the connect fails, unless the runner stops it.
    left = threads_left()
    assert not left, f"threads left running by the failed connect: {left}"


# -- data stays on the cluster -------------------------------------------------------------------


def test_the_driver_fetches_a_result_only_when_asked(dask_cluster: Any) -> None:
    """A downstream gets its upstream's value worker to worker; .state never fetches it."""
    _unpickled_here.clear()

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> list[int]:
        made = make_tracked.submit()
        checked = is_tracked.submit(made)
        in_a_list = is_tracked.submit([made])  # nested: the list gets the value
        assert checked.result() is True
        assert in_a_list.result() is True
        assert made.state.is_completed() and made.wait().type is StateType.COMPLETED
        seen_before = len(_unpickled_here)
        made.result()
        return [seen_before, len(_unpickled_here)]

    assert pipeline() == [0, 1]


# Numbers, booleans, None and strings up to 1,024 characters that msgpack carries unchanged.
RIDING = [0, -5, 2**64 - 1, -(2**63), 1.5, float("inf"), True, False, None, "", "é☃" * 512]
# Everything else is fetched on result(): too big for msgpack, too long, no UTF-8 form (a lone
# surrogate, which must not break the worker's stream to the scheduler), not of a plain type.
FETCHED = [2**64, -(2**63) - 1, "x" * 1_025, "\ud800", 1 + 2j, b"bytes", [1], StateType.FAILED]


@task
def identity(value: Any) -> Any:
    return value


def test_small_values_ride_back_with_their_runs_and_others_are_fetched(
    dask_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[Any] = []
    fetch = DaskTaskRunner._fetch

    def counted(self: DaskTaskRunner, value: Any) -> Any:
        fetches.append(value)
        return fetch(self, value)

    monkeypatch.setattr(DaskTaskRunner, "_fetch", counted)

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def returning(values: list[Any]) -> list[Any]:
        futures = [identity.submit(value) for value in values]
        for future in futures:
            future.wait()
        results = [future.result() for future in futures]
        results.append(identity.submit(futures[0]).result())  # a downstream gets it too
        return results

    riding = returning(RIDING)
    assert riding == [*RIDING, RIDING[0]]
    assert [type(value) for value in riding[:-1]] == [type(value) for value in RIDING]
    assert fetches == []  # no value was gathered: each came with its run's completion

    fetched = returning(FETCHED)
    assert fetched == [*FETCHED, FETCHED[0]]
    assert [type(value) for value in fetched[:-1]] == [type(value) for value in FETCHED]
    assert fetches  # gathered on result()
    assert returning([7, "after"]) == [7, "after", 7]  # the workers' streams still work


def test_a_flow_run_drops_value_topics_no_client_listens_to_and_keeps_the_others(
    dask_cluster: Any,
) -> None:
    from distributed import Client

    with Client(dask_cluster.scheduler_address, timeout=TIMEOUT) as client:
        client.log_event("vivace-values-orphaned", ("vivace-value", "gone-1", 1))
        client.subscribe_topic("vivace-values-listened", lambda event: None)
        client.log_event("vivace-values-listened", ("vivace-value", "live-1", 2))

        @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
        def small() -> int:
            return double.submit(4).result()

        assert small() == 8
        topics = client.run_on_scheduler(_value_topics)
    assert topics == ["vivace-values-listened"]


def _value_topics(dask_scheduler: Any) -> list[str]:
    return [t for t in dask_scheduler._broker._topics if t.startswith("vivace-values-")]


def test_results_held_past_the_flow_run_are_fetched_before_it_lets_the_cluster_go(
    dask_cluster: Any,
) -> None:
    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> list[Any]:
        return [double.submit(i) for i in range(3)]

    futures = pipeline()
    assert [f.result() for f in futures] == [0, 2, 4]


@task
def outer(x: int) -> int:
    return double(x) + 1


def test_a_task_called_by_a_task_on_a_worker_is_recorded_nested(
    dask_cluster: Any, history: Any
) -> None:
    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> int:
        return outer.submit(5).result()

    state = pipeline(return_state=True)
    assert state.result() == 11
    runs = {run.name: run for run in history.task_runs(state.run_id)}
    assert set(runs) == {"outer-0", "double-0"}
    assert runs["double-0"].parent_task_run_id == runs["outer-0"].id
    assert all(run.state_type == "COMPLETED" for run in runs.values())


# -- the runner's own temporary cluster ----------------------------------------------------------


def test_a_temporary_cluster_is_started_for_the_flow_run_and_closed(history: Any) -> None:
    seen: dict[str, Any] = {}

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=TEMPORARY), log_prints=True)
    def pipeline() -> list[int]:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        client = ctx.flow.task_runner.client  # type: ignore[attr-defined]
        seen["cluster"] = client.cluster
        seen["workers"] = len(client.scheduler_info()["workers"])
        return [f.result() for f in greet.map(range(4))]

    state = pipeline(return_state=True)
    assert state.result() == [0, 1, 2, 3]
    assert seen["workers"] == 2
    assert seen["cluster"].status.name == "closed"
    assert len(history.task_runs(state.run_id)) == 4
    messages = {log.message for log in history.logs(state.run_id) if log.task_run_id}
    assert {f"logged by task {i}" for i in range(4)} <= messages
    assert {f"printed by task {i}" for i in range(4)} <= messages


def test_a_dead_worker_crashes_its_run_which_retries_if_it_can(
    tmp_path: Path, history: Any
) -> None:
    marker = tmp_path / "died-once"

    @task
    def die() -> None:
        os._exit(1)

    @task(retries=1)
    def die_once(path: str) -> str:
        if not os.path.exists(path):
            Path(path).touch()
            os._exit(1)
        return "survived"

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=TEMPORARY))
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


def test_an_adaptive_cluster_grows_from_no_workers(history: Any) -> None:
    seen: dict[str, int] = {}

    @flow(
        task_runner=DaskTaskRunner(
            cluster_kwargs={**TEMPORARY, "n_workers": 0},
            adapt_kwargs={"minimum": 0, "maximum": 2},
        )
    )
    def pipeline() -> list[int]:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        client = ctx.flow.task_runner.client  # type: ignore[attr-defined]
        seen["at_start"] = len(client.scheduler_info()["workers"])
        results = [f.result() for f in double.map(range(6))]
        seen["after"] = len(client.scheduler_info()["workers"])
        return results

    state = pipeline(return_state=True)
    assert state.result() == [0, 2, 4, 6, 8, 10]
    assert seen["at_start"] == 0 and seen["after"] >= 1
    assert len(history.task_runs(state.run_id)) == 6


# -- failures and limits --------------------------------------------------------------------------


def test_an_unpicklable_argument_fails_its_run_naming_it(dask_cluster: Any, history: Any) -> None:
    @task
    def load(conn: Any) -> None:
        pass

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> tuple[State, ...]:
        with socket.socket() as conn:
            return (load.submit(conn).wait(), load.submit([1, {"c": conn}]).wait())

    flow_state = pipeline(return_state=True)
    for state in flow_state.result():
        assert state.is_failed()
        error = state.result(raise_on_failure=False)
        assert isinstance(error, UnpicklableError)
        assert str(error).startswith("task 'load' got an argument it cannot pickle: <socket")
        assert str(error).endswith("(argument 'conn')")
    runs = history.task_runs(flow_state.run_id)
    assert [r.state_type for r in runs] == ["FAILED", "FAILED"]


def test_an_unpicklable_task_or_result_fails_its_run(dask_cluster: Any, history: Any) -> None:
    lock = threading.Lock()

    @task
    def holds_a_lock() -> bool:
        return lock.locked()

    @task(retries=1)
    def returns_a_lock() -> Any:
        return threading.Lock()

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> tuple[State, State]:
        return holds_a_lock.submit().wait(), returns_a_lock.submit().wait()

    flow_state = pipeline(return_state=True)
    task_state, result_state = flow_state.result()
    error = task_state.result(raise_on_failure=False)
    assert isinstance(error, UnpicklableError)
    assert "task 'holds_a_lock' cannot be pickled" in str(error)
    error = result_state.result(raise_on_failure=False)
    assert isinstance(error, UnpicklableError)
    assert "task 'returns_a_lock' returned a value it cannot pickle: <unlocked" in str(error)
    runs = {r.name: r for r in history.task_runs(flow_state.run_id)}
    assert runs["holds_a_lock-0"].state_type == "FAILED"
    assert (runs["returns_a_lock-0"].state_type, runs["returns_a_lock-0"].run_count) == (
        "FAILED",
        2,
    )


def test_a_timeout_frees_the_worker_while_blocked_code_goes_on(dask_cluster: Any) -> None:
    @task(timeout_seconds=0.5)
    def blocked_in_c() -> None:
        time.sleep(5)  # a C call: the thread runs on after the deadline, its slot freed

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> tuple[State, float, list[int]]:
        started = time.monotonic()
        state = blocked_in_c.submit().wait()
        elapsed = time.monotonic() - started
        return state, elapsed, [f.result() for f in double.map(range(8))]

    state, elapsed, after = pipeline()
    assert (state.type, state.name) == (StateType.FAILED, "TimedOut")
    assert elapsed < 4
    assert after == [0, 2, 4, 6, 8, 10, 12, 14]


def test_a_timed_out_flow_cancels_its_outstanding_runs(dask_cluster: Any, history: Any) -> None:
    from distributed import Event

    address = dask_cluster.scheduler_address
    futures: list[Any] = []

    @task
    def wait_for_event(name: str) -> None:
        Event(name).wait(TIMEOUT)

    @flow(task_runner=DaskTaskRunner(address=address), timeout_seconds=1)
    def pipeline(name: str) -> None:
        futures.extend(wait_for_event.submit(name) for _ in range(6))
        futures[0].result()

    from distributed import Client

    with Client(address, timeout=TIMEOUT) as client:
        event = Event("release-cancelled-runs", client=client)
        try:
            state = pipeline("release-cancelled-runs", return_state=True)
        finally:
            event.set()
        assert state.name == "TimedOut"
        assert all(f.state.type is StateType.CANCELLED for f in futures)
        runs = history.task_runs(state.run_id)
        assert len(runs) == 6 and {r.state_type for r in runs} == {"CANCELLED"}
        deadline = time.monotonic() + TIMEOUT
        while client.run_on_scheduler(_count_tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.run_on_scheduler(_count_tasks) == 0
        # The cancelled runs that were executing end on their workers after the flow run
        # dropped its value topic: their values are not sent, so the topic does not come back.
        while any(client.run(_running_tasks).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(client.run(_running_tasks).values())
        time.sleep(0.5)  # what a worker would have sent reaches the scheduler
        assert client.run_on_scheduler(_scheduler_footprint)["value_topics"] == 0


def _running_tasks(dask_worker: Any) -> int:
    return len(dask_worker.active_threads)


def test_backpressure_bounds_the_cluster_tasks_in_flight(dask_cluster: Any) -> None:
    peak: list[int] = []

    @task
    def pause(i: int) -> tuple[float, float]:
        started = time.time()
        time.sleep(0.05)
        return started, time.time()

    runner = DaskTaskRunner(address=dask_cluster.scheduler_address, max_in_flight=2)

    @flow(task_runner=runner)
    def pipeline() -> list[tuple[float, float]]:
        ctx = current_context()
        assert ctx is not None and ctx.flow is not None
        active = ctx.flow.task_runner
        futures = []
        for i in range(12):
            futures.append(pause.submit(i))
            peak.append(active.in_flight)  # type: ignore[attr-defined]
        return [f.result() for f in futures]

    spans = pipeline()
    assert max(peak) <= 2
    # With 4 worker threads free, never more than 2 of the runs overlapped in time.
    for started, _ in spans:
        assert sum(1 for s, e in spans if s <= started < e) <= 2


# -- subflows with other runners -------------------------------------------------------------------


def test_a_dask_subflow_in_a_concurrent_flow_and_the_reverse(dask_cluster: Any) -> None:
    address = dask_cluster.scheduler_address

    @flow(task_runner=DaskTaskRunner(address=address))
    def on_dask(values: list[int]) -> list[int]:
        return [f.result() for f in double.map(values)]

    @flow(task_runner=ConcurrentTaskRunner())
    def on_threads(value: int) -> int:
        return double.submit(value).result()

    @flow(task_runner=ConcurrentTaskRunner())
    def threads_then_dask() -> list[int]:
        first = double.submit(1)
        return on_dask([first.result(), 5])

    @flow(task_runner=DaskTaskRunner(address=address))
    def dask_then_threads() -> int:
        first = double.submit(3)
        return on_threads(first)  # the subflow gets the future's value

    assert threads_then_dask() == [4, 10]
    assert dask_then_threads() == 12


# -- batches ---------------------------------------------------------------------------------------


def test_a_batch_records_each_run_and_keeps_its_failures_apart(
    dask_cluster: Any, history: Any
) -> None:
    @task
    def invert(x: int) -> float:
        return 1 / x

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def pipeline() -> tuple[list[State], list[float]]:
        futures = invert.map([1, 2, 0, 4, 5], batch_size=2)
        downstream = double.submit(futures[3])  # a run inside a batch, handed over
        return [f.wait() for f in futures], [downstream.result()]

    flow_state = pipeline(return_state=True)
    states, downstream = flow_state.result()
    assert [s.type for s in states] == [StateType.COMPLETED] * 2 + [StateType.FAILED] + [
        StateType.COMPLETED
    ] * 2
    assert isinstance(states[2].result(raise_on_failure=False), ZeroDivisionError)
    assert [states[i].result() for i in (0, 1, 3, 4)] == [1.0, 0.5, 0.25, 0.2]
    assert downstream == [0.5]
    runs = history.task_runs(flow_state.run_id)
    assert len(runs) == 6
    assert sorted(r.state_type for r in runs) == ["COMPLETED"] * 5 + ["FAILED"]


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"address": "tcp://127.0.0.1:1", "cluster_kwargs": {}},
            "address connects to a running cluster",
            id="address-and-cluster",
        ),
        pytest.param({"address": 8786}, "address must be a scheduler address", id="bad-address"),
        pytest.param({"max_in_flight": 0}, "max_in_flight must be", id="max-in-flight"),
        pytest.param({"cluster_kwargs": [1]}, "cluster_kwargs must be a dict", id="kwargs"),
        pytest.param(
            {"cluster_class": "no_such_module.Cluster"},
            "cannot import cluster_class 'no_such_module.Cluster'",
            id="cluster-class-path",
        ),
    ],
)
def test_configuration_errors_are_raised_by_the_constructor(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DaskTaskRunner(**kwargs)


def test_cluster_class_may_be_an_import_path() -> None:
    from distributed import LocalCluster

    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster")
    assert runner.cluster_class is LocalCluster
    assert runner.duplicate().cluster_class is LocalCluster
    assert repr(runner) == "DaskTaskRunner(cluster_class=LocalCluster)"


def test_dask_is_imported_only_when_the_runner_is_used() -> None:
    code = (
        "import sys\n"
        "from vivace.runners import DaskTaskRunner\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules\n"
        "sys.modules['distributed'] = None  # as if the extra were not installed\n"
        "try:\n"
        "    DaskTaskRunner()\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("MissingExtraError DaskTaskRunner needs dask and distributed")
    assert "pip install 'vivace[dask]'" in out
