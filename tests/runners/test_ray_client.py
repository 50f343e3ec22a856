"""RayTaskRunner through Ray Client (``address="ray://host:port"``), on a real cluster.

``ray_client``: a head started by this module (:func:`test_ray.ray_head`: ``ray start --head`` on
127.0.0.1, in a session and temporary directory of its own, stopped alone at the end) with a Ray
Client server on a free port; the driver reaches it only as ``ray://127.0.0.1:<port>``. Each
connection makes the client server start a process of its own for that driver, which takes a few
seconds: the tests allow for it.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vivace import flow, get_run_logger, task
from vivace.engine.context import current_flow_run_id

ray = pytest.importorskip("ray")
pytest.importorskip("grpc", reason="Ray Client needs ray[client]")

from test_ray import HERE, _connect_and_count_nodes, _free_port, ray_head  # noqa: E402

from vivace.runners import RayTaskRunner  # noqa: E402


@pytest.fixture(scope="module")
def ray_client() -> Iterator[str]:
    """A head with a Ray Client server; yields its ``ray://127.0.0.1:<port>`` address."""
    client_port = _free_port()
    # The client server forks a process per driver while its gRPC threads run; under load that
    # process was seen to die at startup ("Starting Ray client server failed"), once in a dozen
    # connections. It execs at once and needs no gRPC fork handlers: off, as a precaution.
    with ray_head(f"--ray-client-server-port={client_port}", GRPC_ENABLE_FORK_SUPPORT="0"):
        yield f"ray://127.0.0.1:{client_port}"


# -- tasks (module level: the workers import them by reference) ----------------------------------


@task
def greet(i: int) -> int:
    get_run_logger().info("logged by task %d", i)
    print(f"printed by task {i}")
    return i


@task
def squares(n: int) -> list[int]:
    return [i * i for i in range(n)]


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def fail(message: str) -> None:
    raise ValueError(message)


# -- a cluster reached through Ray Client --------------------------------------------------------


def test_flows_run_through_ray_client_with_their_workers_logs(
    ray_client: str, greetings_recorded: Any
) -> None:
    """Two flows; the workers write their records and logs themselves; the cluster lives on."""
    # The workers' writers would write only every minute: what is in the store when a flow run
    # returns got there because each worker writes out soon after a run completes, and the
    # driver (through the client, with no Ray of its own) checked the database before the flow
    # run's final state.
    greetings_recorded(RayTaskRunner(address=ray_client), greet)
    assert not ray.is_initialized()  # the runner disconnected its client
    assert _connect_and_count_nodes(ray_client) == 1  # and left the cluster running


def test_results_and_failures_travel_through_ray_client(ray_client: str, history: Any) -> None:
    """Upstream values move worker to worker; the driver fetches values and errors on demand."""
    run_ids: list[uuid.UUID | None] = []

    @flow(task_runner=RayTaskRunner(address=ray_client))
    def pipeline() -> tuple[list[int], int, str]:
        run_ids.append(current_flow_run_id())
        listed = squares.submit(4)  # a list: stays on the cluster until result() asks
        summed = total.submit(listed)  # handed to the downstream as Ray's ObjectRef
        failed = fail.submit("broken on purpose")
        error = failed.result(raise_on_failure=False)
        return listed.result(), summed.result(), f"{type(error).__name__}: {error}"

    assert pipeline() == ([0, 1, 4, 9], 14, "ValueError: broken on purpose")
    assert not ray.is_initialized()
    (flow_run_id,) = run_ids
    assert flow_run_id is not None
    states = {run.name: run.state_type for run in history.task_runs(flow_run_id)}
    assert states == {"squares-0": "COMPLETED", "total-0": "COMPLETED", "fail-0": "FAILED"}


def test_a_failed_connect_is_undone_and_a_local_ray_works_after_it(
    monkeypatch: pytest.MonkeyPatch, threads_left: Callable[[], set[threading.Thread]]
) -> None:
    """Nothing listens at the address: a clear error naming it, and no client state left over
    (Ray would otherwise stay in client mode and send the next local Ray astray)."""
    from ray.util.client import worker as client_worker

    # Ray Client retries a connection for ~30 s by default; a second is enough here.
    monkeypatch.setattr(client_worker, "INITIAL_TIMEOUT_SEC", 1)
    monkeypatch.setattr(client_worker, "MAX_TIMEOUT_SEC", 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port that is bound but never listens
        address = f"ray://127.0.0.1:{sock.getsockname()[1]}"

        @flow(task_runner=RayTaskRunner(address=address))
        def unreachable() -> int:
            return total.submit([1, 2]).result()

        state = unreachable(return_state=True)

    assert state.is_failed()
    assert f"RayTaskRunner could not connect to the Ray cluster at {address!r}" in (
        state.message or ""
    )
    assert not ray.is_initialized()
    from ray._private.client_mode_hook import client_mode_should_convert

    assert not client_mode_should_convert()  # the process is out of client mode

    # Nothing keeps retrying the connect in the background (Ray leaves the gRPC channel of a
    # connect that gave up open, polled by a thread of its own, unless the runner closes it).
    left = threads_left()
    assert not left, f"threads left running by the failed connect: {left}"

    # A local Ray of the flow run's own, in the same process: its workers import this module.
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    local = RayTaskRunner(init_kwargs={"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024})

    @flow(task_runner=local)
    def nearby() -> int:
        return total.submit(squares.submit(3)).result()

    assert nearby() == 5
    assert not ray.is_initialized()  # the runner shut down the Ray it started
