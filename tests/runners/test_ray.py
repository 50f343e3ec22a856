"""RayTaskRunner only, on a real Ray cluster: these add to the runner contract (test_contract.py).

``ray_cluster``: a cluster started as ``ray start --head`` on 127.0.0.1 (2 CPUs and a custom
``special`` resource), reached by address, as a deployment would be; its workers import this
module through ``PYTHONPATH``, as workers import a deployment's code. :func:`ray_head` starts such
a head in a session and a temporary directory of its own and stops exactly that cluster at the end
(``ray stop`` would stop every Ray on the machine, other test runs' included); the own temporary
directory also keeps it out of ``/tmp/ray/ray_current_cluster``, where a driver's
``ray.init()`` would find it and join it instead of starting a Ray of its own.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vivace import State, flow, get_run_logger, task
from vivace.engine.context import current_context, current_flow_run_id
from vivace.exceptions import ConfigurationError, CrashedRunError, VivaceError

ray = pytest.importorskip("ray")

from vivace.runners import ConcurrentTaskRunner, RayTaskRunner  # noqa: E402
from vivace.runners._ray_worker import ENCODED  # noqa: E402

HERE = Path(__file__).resolve().parent
RAY_CLI = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def ray_head(*options: str, **environment: str) -> Iterator[str]:
    """``ray start --head --block`` on loopback (2 CPUs); yields its address (``127.0.0.1:<port>``).

    The head runs in a session of its own (every process of the cluster, workers included, is in
    it) with a temporary directory of its own; at the end the processes of that session, and
    nothing else, are killed. ``options`` go to ``ray start``, ``environment`` to its
    environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    # `ray start` turns on token authentication by default; drivers reach such a cluster with
    # RAY_AUTH_MODE=token. A loopback test cluster opts out, as Ray's warning suggests.
    env["RAY_AUTH_MODE"] = "disabled"
    env.update(environment)
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # short: Ray's socket paths are limited
    command = [
        RAY_CLI,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--object-store-memory={200 * 1024 * 1024}",
        "--disable-usage-stats",
        *options,
    ]
    with open(os.path.join(temp_dir, "ray-start.log"), "wb") as log:
        head = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        # `ray start` writes the address file once the head is up, just before it blocks.
        ready = os.path.join(temp_dir, "ray_current_cluster")
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            if head.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(temp_dir, "ray-start.log"), "rb") as output:
                    text = output.read().decode(errors="replace")
                raise RuntimeError(f"ray start --head did not come up:\n{text[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_session(head: subprocess.Popen[bytes]) -> None:
    """Kill every process of the head's session (workers included), as ``ray stop --force``
    would, but only those; wait until they are gone."""
    deadline = time.monotonic() + 30
    while True:
        alive = _alive_in_session(head.pid)
        if not alive or time.monotonic() > deadline:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=10)


def _alive_in_session(session: int) -> list[int]:
    """The processes of this session that still run (zombies nobody reaped do not count)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, _, _, sid = stat.read().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(sid) == session:
            alive.append(int(entry))
    return alive


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head with a custom ``special`` resource, shared by this module's tests."""
    with ray_head('--resources={"special": 1}') as address:
        yield address


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


BIG = 1_000_000  # bytes: far more than the driver fetches by the way (FETCH_LIMIT)


@task
def big_value() -> bytes:
    return b"x" * BIG


@task
def huge_failure() -> None:
    raise ValueError("y" * 300_000)


class DriverShy:
    """A value that unpickles anywhere but in the process that asked for it (the driver)."""

    def __init__(self, home: int) -> None:
        self.home = home

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["home"] == os.getpid():
            raise RuntimeError("DriverShy does not unpickle in its home process")
        self.__dict__.update(state)


@task
def shy(home: int) -> DriverShy:
    return DriverShy(home)


def _connect_and_count_nodes(address: str) -> int:
    ray.init(address=address, log_to_driver=False)
    try:
        return sum(1 for node in ray.nodes() if node["Alive"])
    finally:
        ray.shutdown()


# -- a cluster reached by address ----------------------------------------------------------------


def test_flows_reach_a_long_lived_cluster_with_their_workers_logs(
    ray_cluster: str, greetings_recorded: Any
) -> None:
    """Two flows one after another; their tasks' logs reach the store; the cluster lives on."""
    # The workers' writers would write only every minute: what is in the store when a flow run
    # returns got there because a worker writes out soon after a run completes, and the runner
    # waited for it before the flow run's final state.
    greetings_recorded(RayTaskRunner(address=ray_cluster), greet)
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


# -- small values travel as bytes (vivace.runners._ray_worker.encode_value) ----------------------

SMALL_VALUES = [
    0,
    -(2**70),
    1.5,
    2j,
    True,
    None,
    "",
    "short text",
    "x" * 5000,  # longer than ENCODED_STR_LIMIT: travels as Ray serializes it
    b"plain bytes",
    ENCODED + b"bytes that look encoded",
    ENCODED,
]


@task
def echo(value: Any) -> Any:
    return value


@task
def described(value: Any) -> tuple[str, Any]:
    return type(value).__name__, value


def test_values_come_back_as_they_were_returned_and_reach_downstream_runs_so(
    ray_cluster: str,
) -> None:
    """Small values go through the cluster encoded as bytes: whatever the task returned comes
    back from result() as it was, bytes that look encoded included, and a downstream run gets
    the same, from a one-run upstream and from a batch's."""

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def round_trip() -> tuple[list[Any], list[Any], list[Any]]:
        singles = [echo.submit(value) for value in SMALL_VALUES]
        batched = echo.map(SMALL_VALUES, batch_size=4)
        from_single = [described.submit(future) for future in singles]
        from_batch = [described.submit(future) for future in batched]
        return (
            [future.result() for future in singles],
            [future.result() for future in from_single],
            [future.result() for future in from_batch],
        )

    results, from_single, from_batch = round_trip()
    expected = [(type(value).__name__, value) for value in SMALL_VALUES]
    assert results == SMALL_VALUES
    assert [type(value) for value in results] == [type(value) for value in SMALL_VALUES]
    assert from_single == expected
    assert from_batch == expected


class TaggedBytes(bytes):
    """A bytes subclass: Ray hands it back as plain bytes."""


def test_only_small_values_and_bytes_that_look_encoded_are_encoded() -> None:
    from vivace.runners._ray_worker import ENCODED_STR_LIMIT, decode_value, encode_value

    for value in [*SMALL_VALUES, TaggedBytes(ENCODED + b"!")]:
        travelling = encode_value(value)
        assert decode_value(travelling) == value and type(decode_value(travelling)) is type(value)
    assert encode_value(b"plain bytes") == b"plain bytes"  # as it is: Ray passes bytes through
    assert encode_value(TaggedBytes(b"plain")) == b"plain"
    assert type(encode_value(7)) is bytes and encode_value(7).startswith(ENCODED)
    assert encode_value("x" * ENCODED_STR_LIMIT).startswith(ENCODED)
    longer = "x" * (ENCODED_STR_LIMIT + 1)
    assert encode_value(longer) is longer
    big = [1, 2, 3]
    assert encode_value(big) is big and decode_value(big) is big


def test_a_big_value_that_looks_encoded_comes_back_as_it_was(ray_cluster: str) -> None:
    """Over FETCH_LIMIT, a run's value stays on the cluster until result() fetches it, or until
    the flow run's end fetches what its futures still hold: both decode it."""
    value = ENCODED + b"x" * 200_000

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def big() -> tuple[bytes, Any]:
        waited = echo.submit(value)
        waited.wait()  # settled without its value, which stays on the cluster
        return waited.result(), echo.submit(value)

    fetched, held = big()
    assert fetched == value
    assert held.result() == value


# -- sending Ray tasks (vivace.runners._ray_submit) ----------------------------------------------


def _count_ray_preambles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions whose ``.remote()`` preamble runs, one entry per call."""
    from ray.remote_function import RemoteFunction

    calls: list[str] = []
    preamble = RemoteFunction._remote

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self._function_name.rsplit(".", 1)[-1])
        return preamble(self, *args, **kwargs)

    monkeypatch.setattr(RemoteFunction, "_remote", counted)
    return calls


def test_ray_resolves_a_flow_runs_task_options_once(
    ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's per-call preamble runs for the first Ray task of a flow run; the next ones go
    through the closure Ray built then, their upstream values included (ObjectRefs)."""
    calls = _count_ray_preambles(monkeypatch)

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def pipeline(n: int) -> tuple[int, list[int]]:
        futures = greet.map(range(n))
        return total.submit(futures).result(), chunk.map([1, 2], batch_size=2)[1].result()

    assert pipeline(12) == (66, [0, 1])
    assert pipeline(3) == (3, [0, 1])
    # Per flow run: one preamble of the one-run function, one of the batch function.
    assert sorted(calls) == ["run_batch", "run_batch", "run_one", "run_one"]


def test_a_task_launch_hook_sees_every_ray_task(
    ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray calls its task-launch hook in the preamble: with a hook set, every task pays it."""
    import ray.remote_function

    launched: list[str] = []
    monkeypatch.setattr(
        ray.remote_function,
        "_task_launch_hook",
        lambda descriptor, resources, strategy: launched.append(descriptor.function_name),
    )

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def pipeline(n: int) -> list[int]:
        return [f.result() for f in greet.map(range(n))]

    assert pipeline(5) == [0, 1, 2, 3, 4]
    assert launched == ["run_one"] * 5


def _double(x: int, *rest: Any) -> int:
    return 2 * x


def test_a_submitter_learns_again_when_ray_is_started_again(ray_cluster: str) -> None:
    """The kept closure belongs to one connection: after a new ``ray.init`` the next task goes
    through ``.remote()`` again (which exports the function to the new job) and is kept anew."""
    from vivace.runners._ray_submit import Submitter, keep_invocation

    function: Any = _double
    function.__ray_invocation_decorator__ = keep_invocation
    submitter = Submitter(ray.remote(num_returns=1, max_retries=0)(function))
    kept: list[Any] = []
    for round_ in range(2):
        ray.init(address=ray_cluster, log_to_driver=False)
        try:
            refs = [submitter.remote(i) for i in range(4)]
            # A task of a function the new job never exported would wait forever.
            assert ray.get(refs, timeout=60) == [0, 2, 4, 6], f"connection {round_}"
            kept.append(submitter._invocation)
        finally:
            ray.shutdown()
    assert kept[0] is not None and kept[1] is not None and kept[1] is not kept[0]


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


@task
def pause(i: int) -> tuple[float, float]:
    started = time.time()
    time.sleep(0.05)
    return started, time.time()


def test_a_big_value_stays_on_the_cluster_until_result_asks_for_it(ray_cluster: str) -> None:
    """One return per run: waiting for a run, and the settling thread, tell COMPLETED from the
    object's size without fetching a big value; ``result()`` fetches it."""

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def big() -> list[Any]:
        waited, settled, watched = big_value.submit(), big_value.submit(), big_value.submit()
        called = threading.Event()
        watched.add_done_callback(lambda _: called.set())  # Ray reports its end
        state = waited.wait()
        deadline = time.monotonic() + 30
        while not settled.done() and time.monotonic() < deadline:  # the settling thread's look
            time.sleep(0.05)
        called.wait(30)
        futures = (waited, settled, watched)
        seen = [state.type, settled.state.type, watched.state.type]
        seen += [future.handle.fetched() for future in futures]
        return [*seen, *(len(future.result()) for future in futures)]

    assert big() == ["COMPLETED"] * 3 + [False] * 3 + [BIG] * 3


def test_a_failure_too_big_to_travel_arrives_as_a_failure_naming_it(
    ray_cluster: str, history: Any
) -> None:
    """A failure is kept small enough never to be taken for a value: a huge exception travels
    as a VivaceError with its type, the start of its message and the end of its traceback."""

    flow_run_ids = []

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def failing() -> list[State]:
        flow_run_ids.append(current_flow_run_id())
        waited, settled = huge_failure.submit(), huge_failure.submit()
        deadline = time.monotonic() + 30
        while not settled.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        return [waited.wait(), settled.state]

    states = failing()
    assert [state.type for state in states] == ["FAILED", "FAILED"]
    for state in states:
        with pytest.raises(
            VivaceError, match=r"ValueError: y+\.\.\. \(the exception pickles to "
        ) as raised:
            state.result()
        assert "too many to travel back from the Ray worker" in str(raised.value)
        assert "Traceback on the worker" in "".join(raised.value.__notes__)
        assert 'raise ValueError("y" * 300_000)' in "".join(raised.value.__notes__)
    runs = history.task_runs(flow_run_ids[0])
    assert len(runs) == 2 and {run.state_type for run in runs} == {"FAILED"}


def test_a_failure_is_shrunk_below_the_limit_only_when_it_is_too_big() -> None:
    from vivace.engine.remote import RemoteFailure, pack_error
    from vivace.engine.states import StateType
    from vivace.runners._ray_worker import FAILURE_LIMIT, MESSAGE_LIMIT, _within_limit

    small = RemoteFailure(StateType.FAILED, "Failed", "boom", 0.0, pack_error(KeyError(1), "t"))
    assert _within_limit(small) is small
    try:
        raise KeyError("k" * 200_000)
    except KeyError as error:
        packed = pack_error(error, "t")
    big = RemoteFailure(StateType.FAILED, "Failed", "m" * 200_000, 0.0, packed)
    shrunk = _within_limit(big)
    assert len(pickle.dumps(shrunk)) < FAILURE_LIMIT
    assert shrunk.message is not None and len(shrunk.message) == MESSAGE_LIMIT
    assert shrunk.message.endswith("m...")
    error = shrunk.unpack()
    assert isinstance(error, VivaceError)
    assert str(error).startswith("KeyError: 'kkk") and "too many to travel back" in str(error)
    assert 'raise KeyError("k" * 200_000)' in "".join(error.__notes__)


def test_a_value_the_driver_cannot_unpickle_completes_and_result_says_why(
    ray_cluster: str,
) -> None:
    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def shy_flow() -> str:
        future = shy.submit(os.getpid())
        with pytest.raises(VivaceError, match="could not fetch the result from the Ray cluster"):
            future.result()
        return str(future.state.type)

    assert shy_flow() == "COMPLETED"


def test_max_in_flight_bounds_the_ray_tasks_submitted_at_once(ray_cluster: str) -> None:
    """A sender that finds every slot taken learns itself which Ray tasks ended (nobody is told
    of each task's end), so twelve runs go through two slots without waiting on anyone."""
    peak: list[int] = []

    @flow(task_runner=RayTaskRunner(address=ray_cluster, max_in_flight=2))
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
    assert len(spans) == 12 and max(peak) <= 2
    for started, _ in spans:  # never more than two of the runs overlapped in time
        assert sum(1 for s, e in spans if s <= started < e) <= 2


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
    for run in runs:  # started or not, each run's history begins PENDING
        types = [s.type for s in history.task_run_states(run.id)]
        assert types[0] == "PENDING" and types[-1] == "CANCELLED"


@task
def hold(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_run_waiting_in_ray_shows_pending_before_it_starts(
    ray_cluster: str, history: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker that starts a run records its PENDING state (with RUNNING, in one write); a
    run still waiting after PENDING_GRACE seconds is recorded PENDING by the driver."""
    import vivace.runners._ray_completion as completion

    monkeypatch.setattr(completion, "PENDING_GRACE", 0.2)
    seen: list[tuple[str, Any]] = []

    @flow(task_runner=RayTaskRunner(address=ray_cluster))
    def queued() -> float:
        blockers = [hold.submit(2.5) for _ in range(2)]  # both of the cluster's CPUs
        waiting = hold.submit(0)
        deadline = time.monotonic() + 2
        while not seen and time.monotonic() < deadline:
            for run in history.task_runs(current_flow_run_id()):
                if run.id == waiting.task_run.id:
                    seen.append((run.state_type, run.start_time))
            time.sleep(0.05)
        return sum(f.result() for f in [*blockers, waiting])

    state = queued(return_state=True)
    assert state.result() == 5
    assert seen == [("PENDING", None)]
    for run in history.task_runs(state.run_id):
        types = [(s.seq, s.type) for s in history.task_run_states(run.id)]
        assert types == [(1, "PENDING"), (2, "RUNNING"), (3, "COMPLETED")]


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
