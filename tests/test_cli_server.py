"""``vivace server start`` (a real subprocess where it listens) and ``vivace api-key``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from vivace.cli import cli
from vivace.cli import server as server_cli
from vivace.settings import reset_settings
from vivace.store.api_keys import create_api_key, list_api_keys, verify_api_key

VIVACE = str(Path(sys.executable).with_name("vivace"))


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class RunningServer:
    """``vivace server start`` in a subprocess, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [VIVACE, "server", "start", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"the server exited with {self.process.returncode}: {out}{err}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /api/health in 30 s"
            time.sleep(0.1)

    def terminate(self) -> tuple[int, str, str]:
        """SIGTERM, then the exit code and the output."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def start_server() -> Any:
    servers: list[RunningServer] = []

    def start() -> RunningServer:
        server = RunningServer()
        servers.append(server)
        server.wait_until_healthy()
        return server

    yield start
    for server in servers:
        server.kill()


# -- vivace server start ------------------------------------------------------------------------


def test_server_starts_on_loopback_and_stops_cleanly_on_sigterm(
    database_url: str, start_server: Any
) -> None:
    server = start_server()
    assert httpx.get(f"{server.url}/metrics").status_code == 200  # open: no key exists

    code, out, err = server.terminate()

    assert code == 0, err
    assert out.startswith(f"vivace server on {server.url} over ")
    assert "no API key exists: open to anyone who can reach it" in out
    assert "Application shutdown complete" in err


def test_server_with_a_key_requires_it(database_url: str, start_server: Any) -> None:
    _, key = create_api_key(database_url, "ci", "read")
    server = start_server()

    assert httpx.get(f"{server.url}/api/flows").status_code == 401
    authorized = httpx.get(f"{server.url}/api/flows", headers={"Authorization": f"Bearer {key}"})
    assert authorized.status_code == 200

    code, out, _ = server.terminate()
    assert code == 0
    assert "API keys required (1 active)" in out


def test_server_refuses_every_interface_without_a_key(database_url: str) -> None:
    result = subprocess.run(
        [VIVACE, "server", "start", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: refusing to listen on 0.0.0.0: no API key exists, so anyone who can reach the "
        "server could read the run history; create one with `vivace api-key create --name NAME "
        "--role admin`, or pass --allow-unauthenticated\n"
    )


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Stands in for uvicorn, so a test can check that a start is accepted without listening."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(server_cli, "serve", lambda app, host, port: calls.append((host, port)))
    return calls


def test_every_interface_is_accepted_once_a_key_exists(
    database_url: str, served: list[tuple[str, int]]
) -> None:
    create_api_key(database_url, "ops", "admin")

    result = vivace("server", "start", "--host", "0.0.0.0", "--port", "4300")

    assert result.exit_code == 0, result.output
    assert served == [("0.0.0.0", 4300)]
    assert result.stdout.startswith("vivace server on http://0.0.0.0:4300 over ")
    assert "API keys required (1 active)" in result.stdout


def test_every_interface_is_accepted_when_asked_or_with_environment_keys(
    database_url: str, served: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = vivace("server", "start", "--host", "0.0.0.0", "--allow-unauthenticated")
    assert result.exit_code == 0, result.output
    assert "no API key exists" in result.stdout

    monkeypatch.setenv("VIVACE_API_KEYS", "read:an-environment-key-0123")
    reset_settings()
    result = vivace("server", "start", "--host", "0.0.0.0")
    assert result.exit_code == 0, result.output
    assert served == [("0.0.0.0", 4200), ("0.0.0.0", 4200)]


def test_an_open_server_answers_only_local_host_names_unless_allowed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        # Starlette's TestClient warns once, on import, that it falls back to httpx.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    apps: list[Any] = []
    monkeypatch.setattr(server_cli, "serve", lambda app, host, port: apps.append(app))

    assert vivace("server", "start").exit_code == 0
    assert vivace("server", "start", "--allow-unauthenticated").exit_code == 0

    guarded, unguarded = (TestClient(app) for app in apps)
    rebound = {"Host": "attacker.example"}
    assert guarded.get("/api/flows", headers=rebound).status_code == 403
    assert guarded.get("/api/flows", headers={"Host": "127.0.0.1:4200"}).status_code == 200
    assert unguarded.get("/api/flows", headers=rebound).status_code == 200


def test_a_malformed_environment_key_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, served: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("VIVACE_API_KEYS", "read")
    reset_settings()

    result = vivace("server", "start")

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: VIVACE_API_KEYS entry 1 is not ROLE:KEY")
    assert served == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("127.0.0.1", True, id="ipv4"),
        pytest.param("127.0.0.2", True, id="ipv4-range"),
        pytest.param("::1", True, id="ipv6"),
        pytest.param("[::1]", True, id="ipv6-brackets"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("0.0.0.0", False, id="every-ipv4-interface"),
        pytest.param("::", False, id="every-ipv6-interface"),
        pytest.param("192.168.1.20", False, id="lan"),
        pytest.param("no-such-host.invalid", False, id="unresolvable"),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert server_cli.is_loopback(host) is loopback


# -- vivace api-key -----------------------------------------------------------------------------


def test_create_prints_the_key_once_and_alone_on_stdout(database_url: str) -> None:
    result = vivace("api-key", "create", "--name", "grafana", "--role", "read")

    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("vvc_") and "\n" not in key
    assert verify_api_key(database_url, key) == "read"
    assert "Created the API key 'grafana' (role read, prefix " in result.stderr
    assert "cannot be shown again" in result.stderr

    listing = vivace("api-key", "ls")
    assert listing.exit_code == 0, listing.output
    assert key not in listing.output
    assert key[:12] in listing.output and "grafana" in listing.output and "read" in listing.output


def test_ls_without_keys_says_the_server_is_open(database_url: str) -> None:
    result = vivace("api-key", "ls")

    assert result.exit_code == 0
    assert result.stdout == "No API keys: the server is open to anyone who can reach it.\n"


def test_revoke_by_name_and_unknown_names(database_url: str) -> None:
    _, key = create_api_key(database_url, "ci", "admin")

    result = vivace("api-key", "revoke", "ci")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The API key 'ci' (prefix ")
    assert "running servers refuse it within 5 s" in result.stdout
    assert verify_api_key(database_url, key) is None
    (record,) = list_api_keys(database_url)
    assert record.revoked is not None

    unknown = vivace("api-key", "revoke", "nobody")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("Error: no API key is named 'nobody' or has that prefix")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--name", "ci", "--role", "owner"], "Invalid value for '--role'", id="bad-role"
        ),
        pytest.param(["--role", "read"], "Missing option '--name'", id="no-name"),
        pytest.param(["--name", "ci", "--role", "read"], "'ci' already exists", id="taken"),
    ],
)
def test_create_refuses_bad_input(database_url: str, args: list[str], message: str) -> None:
    create_api_key(database_url, "ci", "admin")

    result = vivace("api-key", "create", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
