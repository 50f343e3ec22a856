"""``vivace flow-run ls|inspect|logs --api-url URL``: the same output through a live server as
straight from the database, and clear errors when the server is down or wants a key.

Also ``vivace.client.VivaceClient`` itself, against a real uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vivace import flow, get_run_logger, task
from vivace.cli import cli
from vivace.client import VivaceClient
from vivace.exceptions import ConfigurationError, StoreUnavailableError
from vivace.settings import reset_settings
from vivace.store import queries
from vivace.store.writer import get_writer

SERVER_KEY = "read-key-0123456789abcdef"


@task
def double(x: int) -> int:
    get_run_logger().info("doubling %d", x)
    return 2 * x


@task
def refuse(values: list[int]) -> None:
    get_run_logger().warning("about to refuse %s", values)
    raise RuntimeError("no thanks")


@flow
def inner(n: int) -> int:
    return n + 1


@flow
def outer(n: int = 3) -> int:
    get_run_logger().info("outer starts")
    values = [future.result() for future in double.map(range(n))]
    return inner(sum(values))


@flow
def failing() -> None:
    refuse.submit([double.submit(1)]).result()


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def runs(database_url: str) -> dict[str, str]:
    """Flow runs recorded by real flows: outer (with a subflow) and a failed one."""
    ids = {
        "outer": str(outer(3, return_state=True).run_id),
        "failing": str(failing(return_state=True).run_id),
    }
    get_writer().flush()
    return ids


@pytest.fixture
def keyed_server(
    database_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """A live server that accepts only the read key ``SERVER_KEY``."""
    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{SERVER_KEY}")
    reset_settings()
    url: str = request.getfixturevalue("live_server")
    monkeypatch.delenv("VIVACE_API_KEYS")
    reset_settings()
    return url


@pytest.fixture
def dead_url() -> Iterator[str]:
    with socket.socket() as probe:  # bound but not listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}/api"


# -- the same output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ls"], id="ls"),
        pytest.param(["ls", "--state", "failed", "--limit", "1"], id="ls-filtered"),
        pytest.param(["ls", "--flow", "inner"], id="ls-flow"),
        pytest.param(["inspect", "{outer}"], id="inspect"),
        pytest.param(["inspect", "{failing}"], id="inspect-failed"),
        pytest.param(["logs", "{outer}"], id="logs"),
        pytest.param(["logs", "{failing}", "--level", "warning"], id="logs-level"),
    ],
)
def test_the_output_through_the_server_is_the_databases(
    runs: dict[str, str], live_server: str, command: list[str]
) -> None:
    args = ["flow-run", *(part.format(**runs) for part in command)]

    direct = vivace(*args)
    through_server = vivace(*args, "--api-url", live_server)

    assert direct.exit_code == 0, direct.output
    assert (through_server.exit_code, through_server.stdout) == (0, direct.stdout)
    assert len(direct.stdout.splitlines()) > 2


def test_vivace_api_url_is_used_when_set(
    runs: dict[str, str], live_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    direct = vivace("flow-run", "logs", runs["outer"])
    # The database the CLI would read is now empty: only the server can answer.
    monkeypatch.setenv("VIVACE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("VIVACE_API_URL", live_server + "/api/")
    reset_settings()

    result = vivace("flow-run", "logs", runs["outer"])

    assert (result.exit_code, result.stdout) == (0, direct.stdout)
    assert "doubling 2" in result.stdout


# -- errors -------------------------------------------------------------------------------------


def test_a_server_that_cannot_be_reached(database_url: str, dead_url: str) -> None:
    result = vivace("flow-run", "ls", "--api-url", dead_url)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach the vivace server at {dead_url}: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["inspect", str(uuid.UUID(int=4))], 1, "not found", id="unknown-run"),
        pytest.param(["logs", "nope"], 2, "flow run id 'nope'", id="malformed-id"),
        pytest.param(["ls", "--limit", "5000"], 2, "'limit' = '5000'", id="limit"),
        pytest.param(["ls", "--state", "DONE"], 2, "'state'", id="state"),
        pytest.param(["logs", "{outer}", "--level", "LOUD"], 2, "level 'LOUD'", id="level"),
    ],
)
def test_bad_input_through_the_server(
    runs: dict[str, str], live_server: str, args: list[str], code: int, message: str
) -> None:
    result = vivace("flow-run", *(arg.format(**runs) for arg in args), "--api-url", live_server)

    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_a_server_with_keys_needs_vivace_api_key(
    runs: dict[str, str], keyed_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = vivace("flow-run", "ls", "--api-url", keyed_server)
    monkeypatch.setenv("VIVACE_API_KEY", "wrong-key-0123456789abcdef")
    reset_settings()
    wrong = vivace("flow-run", "ls", "--api-url", keyed_server)
    monkeypatch.setenv("VIVACE_API_KEY", SERVER_KEY)
    reset_settings()
    accepted = vivace("flow-run", "ls", "--api-url", keyed_server)

    assert refused.exit_code == 2
    assert "needs an API key (no API key was sent" in refused.stderr
    assert "set VIVACE_API_KEY" in refused.stderr
    assert wrong.exit_code == 2 and "the API key sent was refused" in wrong.stderr
    assert accepted.exit_code == 0 and runs["outer"] in accepted.stdout


# -- the client ---------------------------------------------------------------------------------


def test_the_client_reads_what_the_store_reads(
    runs: dict[str, str], live_server: str, database_url: str
) -> None:
    client = VivaceClient(live_server)
    outer_id = runs["outer"]

    assert client.health()["status"] == "ok"
    assert client.read_flow_runs(limit=10) == queries.read_flow_runs(database_url, limit=10)
    assert client.read_flow_run(outer_id) == queries.read_flow_run(database_url, outer_id)
    assert client.read_flow_run(uuid.UUID(int=1)) is None
    assert client.read_flow_run_states(outer_id) == queries.read_flow_run_states(
        database_url, outer_id
    )
    assert client.read_task_runs(outer_id, limit=2, sort="name_asc") == queries.read_task_runs(
        database_url, outer_id, limit=2, sort="name_asc"
    )
    assert client.count_task_runs(outer_id) == 3
    assert client.read_subflow_runs(outer_id) == queries.read_subflow_runs(database_url, outer_id)
    assert client.read_logs(flow_run_id=outer_id, min_level="INFO") == queries.read_logs(
        database_url, flow_run_id=outer_id, min_level="INFO"
    )


def test_walking_pages_through_the_client(runs: dict[str, str], live_server: str) -> None:
    client = VivaceClient(live_server + "/api")
    seen, cursor = [], None
    while True:
        page, cursor = client.read_flow_runs(limit=1, cursor=cursor, state_types=["completed"])
        seen.extend(run.flow_name for run in page)
        if cursor is None:
            break

    assert sorted(seen) == ["inner", "outer"]


@pytest.mark.parametrize(
    ("url", "root"),
    [
        pytest.param("http://h:1", "http://h:1/api", id="base-url"),
        pytest.param("http://h:1/api/", "http://h:1/api", id="api-url"),
        pytest.param("https://h/vivace", "https://h/vivace/api", id="behind-a-proxy"),
    ],
)
def test_the_api_root(url: str, root: str) -> None:
    assert VivaceClient(url).api_url == root


@pytest.mark.parametrize("url", ["127.0.0.1:4200", "ftp://h/api", "http://"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not an http"):
        VivaceClient(url)


def test_the_client_of_a_dead_server(dead_url: str) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot reach the vivace server"):
        VivaceClient(dead_url).health()


def test_from_settings_without_a_url() -> None:
    with pytest.raises(ConfigurationError, match="VIVACE_API_URL"):
        VivaceClient.from_settings()


class _Recorder:
    """Stdlib HTTP servers on loopback: each answers GET with ``answer(path, headers)`` and
    notes the Authorization header it got."""

    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.seen: dict[int, list[str | None]] = {}

    def start(self, answer: Any) -> int:
        import http.server
        import threading

        seen: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        port: int = server.server_address[1]
        self.seen[port] = seen
        return port

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    servers = _Recorder()
    yield servers
    servers.close()


def test_the_api_key_does_not_follow_a_redirect_to_another_server(recorder: _Recorder) -> None:
    health = b'{"status": "ok", "version": "0", "database": "ok"}'
    ok = (200, {"Content-Type": "application/json"}, health)
    elsewhere = recorder.start(lambda path: ok)  # another port: another origin
    home = recorder.start(
        lambda path: (307, {"Location": "/api/moved"}, b"") if path == "/api/health" else ok
    )
    away = recorder.start(lambda path: (307, {"Location": f"http://127.0.0.1:{elsewhere}/"}, b""))

    VivaceClient(f"http://127.0.0.1:{home}/api", api_key="secret-key").health()
    assert recorder.seen[home] == ["Bearer secret-key"] * 2  # the same server: kept

    VivaceClient(f"http://127.0.0.1:{away}/api", api_key="secret-key").health()
    assert recorder.seen[away] == ["Bearer secret-key"]
    assert recorder.seen[elsewhere] == [None]  # urllib alone would have sent the key there


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [
        pytest.param("http://h:1/api/a", "http://h:1/api/b", True, id="same-origin"),
        pytest.param("http://h/api", "https://h/api", True, id="upgrade-to-https"),
        pytest.param("https://h/api", "http://h/api", False, id="downgrade-to-http"),
        pytest.param("http://h:1/api", "http://h:2/api", False, id="other-port"),
        pytest.param("http://h/api", "http://evil/api", False, id="other-host"),
        pytest.param("http://h/api", "http://h:x/api", False, id="bad-port"),
    ],
)
def test_which_redirects_keep_the_api_key(old: str, new: str, kept: bool) -> None:
    from vivace.client import _same_server

    assert _same_server(old, new) is kept
