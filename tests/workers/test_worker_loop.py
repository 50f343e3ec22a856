"""The worker's loop stepped by hand, against a stand-in for the server and for infrastructure:
how often it polls what it launched, what it does with a 404 to an exit report, with an
unexpected error from an infrastructure, and with a run cancelled before it was launched."""

from __future__ import annotations

import datetime as dt
import logging
import types
import uuid
from typing import Any

import pytest

from vivace.infrastructure.base import Launched
from vivace.infrastructure.process import LaunchedProcess
from vivace.workers import Worker
from vivace.workers.api import ClaimedRun
from vivace.workers.worker import _Launch

WORKER_ID = uuid.UUID(int=1)


class FakeServer:
    """What the worker asks of ``/api/workers``, recorded; answers set by the test."""

    api_url = "http://127.0.0.1:9/api"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.knows_worker = True
        self.knows_run = True
        self.cancelling: list[uuid.UUID] = []

    def register(self, name: str, kind: str, queues: list[str], worker_id: Any = None) -> Any:
        self.calls.append(("register", worker_id))
        self.knows_worker = True
        return worker_id or WORKER_ID

    def heartbeat(self, worker_id: uuid.UUID) -> list[uuid.UUID] | None:
        self.calls.append(("heartbeat", worker_id))
        return list(self.cancelling) if self.knows_worker else None

    def exited(self, worker_id: uuid.UUID, run_id: uuid.UUID, code: Any, what: str) -> Any:
        self.calls.append(("exited", run_id, code))
        if not (self.knows_worker and self.knows_run):
            return None  # a 404
        return types.SimpleNamespace(state_name="Crashed")

    def start_failed(self, worker_id: uuid.UUID, run_id: uuid.UUID, message: str) -> None:
        self.calls.append(("start_failed", run_id, message))

    def release(self, worker_id: uuid.UUID, run_id: uuid.UUID) -> None:
        self.calls.append(("release", run_id))


class FakeLaunched(Launched):
    """A container, say: counts its polls; ``exit_code`` (or ``error``) is what a poll gives."""

    def __init__(self) -> None:
        self.identifier = "container-1"
        self.description = "container container-1"
        self.polls = 0
        self.exit_code: int | None = None
        self.error: Exception | None = None

    def poll(self) -> int | None:
        self.polls += 1
        if self.error is not None:
            raise self.error
        return self.exit_code

    def stop(self, grace_seconds: float = 10.0) -> None:
        pass


class FakeProcess(LaunchedProcess):
    """A local process, as far as the worker can tell."""

    def __init__(self) -> None:
        self.identifier = "4242"
        self.description = "process 4242"
        self.polls = 0

    def poll(self) -> int | None:
        self.polls += 1
        return None


def claimed_run(start_in: float = 0.0) -> ClaimedRun:
    return ClaimedRun(
        id=uuid.uuid4(),
        name="brave-otter",
        flow_name="etl",
        expected_start_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=start_in),
        infrastructure={"type": "process"},
    )


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def worker(server: FakeServer) -> Worker:
    worker = Worker(server.api_url, poll_interval=5.0, heartbeat_interval=30.0)
    worker.api = server  # type: ignore[assignment]
    worker.worker_id = WORKER_ID
    return worker


def launch(worker: Worker, launched: Launched) -> _Launch:
    entry = _Launch(claimed_run(), launched)
    worker._launched[entry.run.id] = entry
    return entry


def test_remote_infrastructure_is_polled_every_poll_interval_a_process_at_every_step(
    worker: Worker,
) -> None:
    container, process = FakeLaunched(), FakeProcess()
    launch(worker, container)
    launch(worker, process)

    for now in (100.0, 100.2, 101.0, 104.9, 105.0, 105.2):
        worker._watch(now)

    assert (container.polls, process.polls) == (2, 6)


def test_an_exit_report_answered_404_is_dropped_once_the_worker_is_known(
    worker: Worker, server: FakeServer
) -> None:
    container = FakeLaunched()
    container.exit_code = 3
    entry = launch(worker, container)
    server.knows_run = False

    worker._watch(0.0)

    assert worker._launched == {}
    assert server.calls == [("exited", entry.run.id, 3), ("heartbeat", WORKER_ID)]


def test_a_worker_the_server_forgot_registers_under_its_id_and_reports_again(
    worker: Worker, server: FakeServer
) -> None:
    container = FakeLaunched()
    container.exit_code = 3
    entry = launch(worker, container)
    server.knows_worker = False

    worker._watch(0.0)
    assert worker._launched == {entry.run.id: entry}  # to report again
    worker._watch(10.0)

    assert worker._launched == {} and worker.worker_id == WORKER_ID
    assert server.calls == [
        ("exited", entry.run.id, 3),
        ("heartbeat", WORKER_ID),
        ("register", WORKER_ID),
        ("exited", entry.run.id, 3),
    ]


def test_an_unexpected_error_starting_a_run_crashes_it_and_the_loop_goes_on(
    worker: Worker, server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    class Broken:
        def start(self, run_id: uuid.UUID, environment: dict[str, str]) -> Launched:
            raise KeyError("image")

    monkeypatch.setattr(
        "vivace.infrastructure.base.infrastructure_from_record", lambda record: Broken()
    )
    run = claimed_run()
    worker._waiting.append(run)

    with caplog.at_level(logging.ERROR, logger="vivace.workers"):
        worker._launch_due()

    assert worker._waiting == [] and worker._launched == {}
    assert server.calls == [("start_failed", run.id, "KeyError: 'image'")]
    (logged,) = caplog.records
    assert logged.exc_info is not None  # with its traceback


def test_an_unexpected_error_polling_is_logged_once_and_polled_again(
    worker: Worker, server: FakeServer, caplog: Any
) -> None:
    container = FakeLaunched()
    container.error = AttributeError("'NoneType' object has no attribute 'status'")
    entry = launch(worker, container)

    with caplog.at_level(logging.ERROR, logger="vivace.workers"):
        for now in (0.0, 5.0, 10.0):
            worker._watch(now)
        container.error, container.exit_code = None, 0
        worker._watch(15.0)

    assert container.polls == 4
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    assert server.calls == [("exited", entry.run.id, 0)]


def test_a_claimed_run_cancelled_before_its_start_is_given_back_not_launched(
    worker: Worker, server: FakeServer
) -> None:
    cancelled, other = claimed_run(start_in=-1), claimed_run(start_in=60)
    worker._waiting.extend([cancelled, other])
    server.cancelling = [cancelled.id]

    worker._heartbeat()
    worker._launch_due()

    assert worker._waiting == [other] and worker._launched == {}
    assert server.calls == [("heartbeat", WORKER_ID), ("release", cancelled.id)]
