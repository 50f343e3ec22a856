"""The services runner (vivace.services.runner) and ``vivace server services start | ls``,
``vivace server start --no-services``.

The runner's tests give it services of their own whose loops say when they ran (events, not
sleeps); the ``services start`` test runs the real command in a subprocess and stops it with
SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.retention.history_rows import RunRows, count, days_ago
from vivace.cli import cli
from vivace.cli import server as server_cli
from vivace.services import SERVICE_MODULES, load_services
from vivace.services import retention as retention_service
from vivace.services import runner as runner_module
from vivace.services.base import Service
from vivace.services.runner import ServiceRunner, run_loop
from vivace.settings import reset_settings
from vivace.store import schema
from vivace.store.service_state import read_service_data

VIVACE = str(Path(sys.executable).with_name("vivace"))
WAIT_SECONDS = 30.0


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_SECONDS:g} s"
        time.sleep(0.02)


def given_services(monkeypatch: pytest.MonkeyPatch, *services: Service) -> None:
    """The runner loads these services instead of the real ones."""
    monkeypatch.setattr(runner_module, "load_services", lambda names=None: list(services))


# -- ServiceRunner ------------------------------------------------------------------------------


def test_the_runner_loops_a_service_and_records_each_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    looped = threading.Semaphore(0)
    calls: list[str] = []

    def loop(url: str) -> str | None:
        calls.append(url)
        looped.release()
        return f"loop {len(calls)}"

    given_services(monkeypatch, Service("ticker", "counts", loop, lambda settings: 0.01))
    runner = ServiceRunner(database_url)
    runner.start()
    try:
        for _ in range(3):  # it loops again and again, every interval
            assert looped.acquire(timeout=WAIT_SECONDS)
        wait_for(
            lambda: "summary" in read_service_data(database_url, "ticker").get("loop", {}),
            "the loop recorded",
        )
    finally:
        assert runner.stop() is True
    assert set(calls) == {database_url}
    loop_record = read_service_data(database_url, "ticker")["loop"]
    assert loop_record["error"] is None
    assert loop_record["summary"].startswith("loop ")
    assert loop_record["seconds"] >= 0
    stopped_after = len(calls)
    assert not looped.acquire(timeout=0.1)  # stopped: no loop after stop() returned
    assert len(calls) == stopped_after


def test_a_loop_that_raises_is_recorded_and_tried_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    seen_by_second_loop: list[dict[str, Any]] = []
    recovered = threading.Event()

    def loop(url: str) -> str | None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("database unreachable")
        if len(calls) == 2:  # what the failed loop left in service_state
            seen_by_second_loop.append(read_service_data(url, "flaky")["loop"])
        recovered.set()
        return "fine again"

    given_services(monkeypatch, Service("flaky", "fails once", loop, lambda settings: 0.01))
    runner = ServiceRunner(database_url)
    runner.start()
    try:
        assert recovered.wait(WAIT_SECONDS)
        wait_for(
            lambda: read_service_data(database_url, "flaky")["loop"].get("summary") is not None,
            "the recovery recorded",
        )
    finally:
        assert runner.stop() is True
    (failure,) = seen_by_second_loop
    assert failure["error"] == "ConnectionError: database unreachable"
    assert "summary" not in failure
    assert read_service_data(database_url, "flaky")["loop"]["error"] is None


def test_run_loop_reports_whether_it_failed(database_url: str) -> None:
    def broken(url: str) -> str | None:
        raise ValueError("no")

    assert run_loop(database_url, Service("broken", "", broken, lambda s: 1.0)) is True
    assert run_loop(database_url, Service("fine", "", lambda url: None, lambda s: 1.0)) is False
    assert read_service_data(database_url, "fine")["loop"]["summary"] is None


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print this error")


def test_the_thread_survives_an_error_it_cannot_print_and_a_bad_interval(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    looped = threading.Semaphore(0)

    def loop(url: str) -> str | None:
        calls.append(len(calls))
        looped.release()
        if len(calls) == 1:
            raise _Unprintable()
        return "fine"

    def interval(settings: Any) -> float:
        if len(calls) == 2:
            raise ValueError("VIVACE_SOMETHING_LOOP_SECONDS is not a number")
        return 0.01

    monkeypatch.setattr(runner_module, "FALLBACK_INTERVAL", 0.01)
    given_services(monkeypatch, Service("fragile", "", loop, interval))
    runner = ServiceRunner(database_url)
    runner.start()
    try:
        for _ in range(3):  # after the unprintable error, and after the bad interval
            assert looped.acquire(timeout=WAIT_SECONDS)
    finally:
        assert runner.stop() is True
    assert len(calls) >= 3


def test_an_error_that_cannot_be_printed_is_recorded_by_its_type(database_url: str) -> None:
    def broken(url: str) -> str | None:
        raise _Unprintable()

    assert run_loop(database_url, Service("unprintable", "", broken, lambda s: 1.0)) is True
    error = read_service_data(database_url, "unprintable")["loop"]["error"]
    assert error == "_Unprintable (its message could not be read)"


def test_disabled_services_are_not_run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    off = Service("off", "", lambda url: "ran", lambda s: 0.01, enabled=lambda settings: False)
    on = Service("on", "", lambda url: "ran", lambda s: 0.01)
    given_services(monkeypatch, off, on)

    runner = ServiceRunner(database_url)

    assert [service.name for service in runner.services] == ["on"]
    # The real retention service is off until VIVACE_RETENTION_DAYS is set.
    monkeypatch.undo()
    assert [service.name for service in ServiceRunner(database_url, ("retention",)).services] == []


# -- vivace server services ---------------------------------------------------------------------


def test_services_start_runs_alone_and_stops_cleanly_on_sigterm(
    database_url: str, vivace_home: Path
) -> None:
    RunRows().flow_run(database_url, started=days_ago(40), ended=days_ago(40))
    environment = {
        **os.environ,
        "VIVACE_HOME": str(vivace_home),
        "VIVACE_DATABASE_URL": database_url,
        "VIVACE_RETENTION_DAYS": "30",
    }
    process = subprocess.Popen(
        [VIVACE, "server", "services", "start", "--only", "retention"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                "loop" in read_service_data(database_url, "retention") or process.poll() is not None
            ),
            "the retention loop ran",
        )
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, err
    assert out.startswith("vivace services over ")
    assert out.rstrip().endswith(": retention")
    assert count(database_url, schema.flow_runs) == 0
    loop = read_service_data(database_url, "retention")["loop"]
    assert loop["summary"].startswith("deleted 1 flow_runs")


def test_services_start_refuses_an_unknown_name(database_url: str) -> None:
    result = vivace("server", "services", "start", "--only", "retention", "--only", "cleaner")

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: no service named 'cleaner'; expected one of {', '.join(SERVICE_MODULES)}\n"
    )


def test_services_start_refuses_a_named_service_that_is_disabled(database_url: str) -> None:
    result = vivace("server", "services", "start", "--only", "retention")

    assert result.exit_code == 2
    assert "service 'retention' is disabled by the settings in force" in result.stderr
    assert "VIVACE_RETENTION_DAYS" in result.stderr


def test_services_ls_shows_every_service_and_its_last_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_RETENTION_DAYS", "30")
    reset_settings()
    RunRows().flow_run(database_url, started=days_ago(40), ended=days_ago(40))
    run_loop(database_url, retention_service.SERVICE)

    result = vivace("server", "services", "ls")

    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert set(SERVICE_MODULES) <= set(lines)
    retention = [cell.strip() for cell in lines["retention"].split("│")]
    assert retention[2:4] == ["yes", "3600 s"]
    assert retention[5].endswith(" s")
    assert retention[6].startswith("deleted 1 flow_runs")
    never = [cell.strip() for cell in lines["scheduler"].split("│")]
    assert never[4:7] == ["-", "-", "-"]


# -- vivace server start [--no-services] --------------------------------------------------------


class RecordingRunner:
    """Stands in for ServiceRunner in `vivace server start`: records what is asked of it."""

    events: list[str] = []

    def __init__(self, url: str, names: tuple[str, ...] | None = None) -> None:
        self.services = load_services(names)
        RecordingRunner.events.append(f"made over {url}")

    def start(self) -> None:
        RecordingRunner.events.append("start")

    def stop(self, timeout: float = 10.0) -> bool:
        RecordingRunner.events.append("stop")
        return True


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the services runner and the server (uvicorn stands aside) were asked, in order."""
    RecordingRunner.events = []
    monkeypatch.setattr(runner_module, "ServiceRunner", RecordingRunner)
    monkeypatch.setattr(
        server_cli, "serve", lambda app, host, port: RecordingRunner.events.append("serve")
    )
    return RecordingRunner.events


def test_server_start_runs_the_services_around_the_server(
    database_url: str, events: list[str]
) -> None:
    result = vivace("server", "start")

    assert result.exit_code == 0, result.output
    assert events == [f"made over {database_url}", "start", "serve", "stop"]
    assert f"services: {', '.join(SERVICE_MODULES)}" in result.stdout


@pytest.mark.parametrize(
    ("args", "environment"),
    [
        pytest.param(["--no-services"], {}, id="flag"),
        pytest.param([], {"VIVACE_SERVER_SERVICES": "false"}, id="setting"),
    ],
)
def test_server_start_without_services(
    database_url: str,
    events: list[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environment: dict[str, str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reset_settings()

    result = vivace("server", "start", *args)

    assert result.exit_code == 0, result.output
    assert events == ["serve"]
    assert "services:" not in result.stdout


@pytest.mark.parametrize(
    ("args", "environment", "links"),
    [
        pytest.param([], {}, "http://127.0.0.1:4200", id="loopback"),
        pytest.param(
            ["--host", "0.0.0.0", "--port", "4300", "--allow-unauthenticated"],
            {},
            "http://localhost:4300",
            id="every-interface",
        ),
        pytest.param(
            [], {"VIVACE_UI_URL": "https://ui.example.com"}, "https://ui.example.com", id="ui-url"
        ),
        pytest.param([], {"VIVACE_API_URL": "https://vivace.example.com/api"}, None, id="api-url"),
    ],
)
def test_server_start_links_notifications_to_itself_unless_a_setting_says(
    database_url: str,
    events: list[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environment: dict[str, str],
    links: str | None,
) -> None:
    from vivace.services.notifications import flow_run_url
    from vivace.settings import get_settings

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reset_settings()

    result = vivace("server", "start", *args)

    assert result.exit_code == 0, result.output
    run_id = uuid.UUID(int=7)
    if links is None:  # VIVACE_API_URL without /api
        links = "https://vivace.example.com"
    assert flow_run_url(get_settings(), run_id) == f"{links}/flow-runs/{run_id}"
    told = f"notifications link to runs under {links}" in result.stdout
    assert told == (not environment)
