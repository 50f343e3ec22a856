"""The container set-up (Dockerfile, .dockerignore, docker-compose.yml), checked without Docker.

No Docker engine runs here, so these tests check what can go wrong without one: that the compose
file parses, that every command a service runs is a real ``vivace``/``dask`` command line (each is
run with ``--help`` appended), that ports, addresses and the database URL agree between services,
and that the Dockerfile copies and installs what the services use. The last test runs the
services' own command lines as local processes (hosts and ports moved to 127.0.0.1), on this
test's PostgreSQL, and reads the example flow's run back through the server's API.
``docker compose config`` is also run where the compose plugin exists.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
IMAGE_HOME = "/home/vivace"  # the image's WORKDIR, where the examples are copied
VIVACE_SERVICES = ("server", "scheduler", "worker", "example-flow")
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${NAME:-default}`` interpolation, with none of the variables set."""
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["op"] in (":-", "-"):
            return match["arg"]
        raise AssertionError(f"{match[0]} in docker-compose.yml has no default")

    return _VARIABLE.sub(substitute, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(parsed, dict), "docker-compose.yml is not a mapping"
    interpolated: dict[str, Any] = _interpolate(parsed)
    return interpolated


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _option(command: list[str], name: str) -> str:
    assert name in command, f"{command} has no {name}"
    return command[command.index(name) + 1]


def _scheduler_address(compose: dict[str, Any]) -> str:
    port = _option(_services(compose)["scheduler"]["command"], "--port")
    return f"tcp://scheduler:{port}"


# -- the compose file -----------------------------------------------------------------------------


def test_compose_file_has_the_documented_services(compose: dict[str, Any]) -> None:
    services = _services(compose)

    assert set(services) == {"postgres", *VIVACE_SERVICES}
    for name in VIVACE_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["server"]["image"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["postgres"]["image"].startswith("postgres:")


def _command_lines(compose: dict[str, Any]) -> Iterator[Any]:
    for name in VIVACE_SERVICES:
        command = _services(compose)[name]["command"]
        yield pytest.param(name, command, id=name)


@pytest.mark.parametrize(
    ("service", "command"), list(_command_lines(yaml.safe_load(COMPOSE_FILE.read_text())))
)
def test_every_service_command_is_a_real_command_line(service: str, command: list[str]) -> None:
    assert isinstance(command, list) and all(isinstance(part, str) for part in command), (
        f"{service}: the command should be a list of strings, got {command!r}"
    )
    program, *arguments = command
    if program == "python":  # a script of the image, which the next tests import and run
        (script,) = arguments
        assert (ROOT / script).is_file(), f"{service} runs {script}, which does not exist"
        return
    assert program in ("vivace", "dask"), f"{service} runs {program}, not vivace or dask"
    # click parses every argument before it acts on --help: a misspelt option fails here (wrong
    # values show in test_the_services_run_together, which runs these commands for real).
    done = subprocess.run(
        [str(BIN / program), *_interpolate(arguments), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, f"{service}: {' '.join(command)} --help\n{done.stderr}"
    assert "Usage:" in done.stdout


def test_python_health_checks_compile(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in _services(compose).items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"<healthcheck of {name}>", "exec")
            checked += 1

    assert checked == 2  # the server's and the scheduler's


def test_every_vivace_process_uses_the_postgres_service(compose: dict[str, Any]) -> None:
    services = _services(compose)
    postgres = services["postgres"]["environment"]
    urls = {
        name: services[name]["environment"]["VIVACE_DATABASE_URL"]
        for name in ("server", "worker", "example-flow")
    }

    assert len(set(urls.values())) == 1, f"the services use different databases: {urls}"
    url = sa.make_url(next(iter(urls.values())))
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.database == postgres["POSTGRES_DB"]
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]


def test_workers_and_the_flow_reach_the_scheduler(compose: dict[str, Any]) -> None:
    services = _services(compose)
    address = _scheduler_address(compose)

    assert services["worker"]["command"][:3] == ["dask", "worker", address]
    assert services["example-flow"]["environment"]["DASK_SCHEDULER_ADDRESS"] == address
    assert _option(services["scheduler"]["command"], "--host") == "0.0.0.0"


def test_the_server_port_is_published(compose: dict[str, Any]) -> None:
    server = _services(compose)["server"]
    port = _option(server["command"], "--port")

    published = [str(mapping).rsplit(":", 1) for mapping in server["ports"]]
    assert [container for _, container in published] == [port]
    # On the host's loopback only: without API keys the server is open to whoever reaches it.
    assert published[0][0] == f"127.0.0.1:{port}"
    assert _option(server["command"], "--host") == "0.0.0.0"
    assert port in server["healthcheck"]["test"][3]


def test_depends_on_names_services_that_can_be_waited_for(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI here")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin")

    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr


# -- the image ------------------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_image_is_slim_and_runs_as_an_unprivileged_user() -> None:
    lines = _dockerfile()

    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE}"]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users == ["vivace"]
    assert f"WORKDIR {IMAGE_HOME}" in lines


def test_the_image_installs_extras_that_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    install = next(line for line in _dockerfile() if 'extras="' in line)

    installed = re.findall(r'extras="([^"]+)"', install)
    named = {extra for group in installed for extra in group.replace("$extras,", "").split(",")}
    assert named == {"postgres", "dask", "server", "ray", "kubernetes"}
    assert named <= set(extras)


def test_the_image_holds_what_the_services_run(compose: dict[str, Any]) -> None:
    copies = [
        [word for word in line.split()[1:] if not word.startswith("--")]
        for line in _dockerfile()
        if line.startswith("COPY ")
    ]
    sources = {source for *froms, _ in copies for source in froms}
    (script,) = _services(compose)["example-flow"]["command"][1:]

    assert ["examples", f"{IMAGE_HOME}/examples"] in copies
    assert script.startswith("examples/")
    assert {"pyproject.toml", "vivace"} <= sources
    # .dockerignore keeps everything else out of the build context, but lets these in.
    patterns = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] not in "#"
    ]
    allowed = [line[1:].rstrip("/") for line in patterns if line.startswith("!")]
    assert patterns[0] == "*"
    for source in ("pyproject.toml", "README.md", "vivace", "examples"):
        assert source in allowed


# -- the services, run here ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Local:
    """Rewrites a service's strings for this machine: hosts to 127.0.0.1, ports to free ones."""

    def __init__(self, compose: dict[str, Any], database_url: str) -> None:
        services = _services(compose)
        self.database_url = database_url
        self.server_port = str(_free_port())
        self.scheduler_port = str(_free_port())
        self.replacements = {
            _scheduler_address(compose): f"tcp://127.0.0.1:{self.scheduler_port}",
            f"'127.0.0.1', {_option(services['scheduler']['command'], '--port')}": (
                f"'127.0.0.1', {self.scheduler_port}"
            ),
            f"127.0.0.1:{_option(services['server']['command'], '--port')}/": (
                f"127.0.0.1:{self.server_port}/"
            ),
        }
        self.ports = {"server": self.server_port, "scheduler": self.scheduler_port}

    def text(self, value: str) -> str:
        for old, new in self.replacements.items():
            value = value.replace(old, new)
        return value

    def command(self, name: str, service: dict[str, Any]) -> list[str]:
        program, *arguments = (self.text(part) for part in service["command"])
        if "--host" in arguments:
            arguments[arguments.index("--host") + 1] = "127.0.0.1"
        if "--port" in arguments:
            arguments[arguments.index("--port") + 1] = self.ports[name]
        executable = sys.executable if program == "python" else str(BIN / program)
        return [executable, *arguments]

    def environment(self, service: dict[str, Any], home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
        for key, value in service.get("environment", {}).items():
            env[key] = self.database_url if key == "VIVACE_DATABASE_URL" else self.text(value)
        env["VIVACE_HOME"] = str(home)  # each container has its own home
        return env


@pytest.fixture
def compose_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server, as the compose stack starts with."""
    name = f"vivace_compose_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_until_healthy(
    local: _Local, service: dict[str, Any], env: dict[str, str], process: subprocess.Popen[bytes]
) -> None:
    """Run the service's own health check until it passes (while the service runs)."""
    code = local.text(service["healthcheck"]["test"][3])
    deadline = time.monotonic() + 90
    while True:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        if done.returncode == 0:
            return
        output = (Path(env["VIVACE_HOME"]) / "output.log").read_text(errors="replace")[-2000:]
        assert process.poll() is None, f"exited with {process.returncode}:\n{output}"
        assert time.monotonic() < deadline, f"not healthy in 90 s:\n{output}"
        time.sleep(0.5)


def test_the_services_run_together(
    compose: dict[str, Any], compose_database: str, tmp_path: Path
) -> None:
    import httpx

    services = _services(compose)
    local = _Local(compose, compose_database)
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, replica: int = 0) -> dict[str, str]:
        home = tmp_path / f"{name}-{replica}"
        env = local.environment(services[name], home)
        home.mkdir()
        with open(home / "output.log", "wb") as log:
            command = local.command(name, services[name])
            processes.append(
                subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
        return env

    try:
        for name in ("server", "scheduler"):
            env = start(name)
            _wait_until_healthy(local, services[name], env, processes[-1])
        for replica in range(services["worker"]["deploy"]["replicas"]):
            start("worker", replica)
        flow = subprocess.run(
            local.command("example-flow", services["example-flow"]),
            env=local.environment(services["example-flow"], tmp_path / "example-flow"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert flow.returncode == 0, flow.stdout[-2000:] + flow.stderr[-2000:]
        flow_run_id = flow.stdout.strip().splitlines()[-1].removeprefix("flow run id: ")

        with httpx.Client(base_url=f"http://127.0.0.1:{local.server_port}/api") as api:
            run = api.get(f"/flow-runs/{flow_run_id}").json()
            task_runs = api.get(f"/flow-runs/{flow_run_id}/task-runs", params={"limit": 100})
    finally:
        for process in reversed(processes):  # workers first, the server last
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    assert run["flow_name"] == "dask-weather"
    assert run["state_type"] == "COMPLETED"
    names = sorted(item["name"].rsplit("-", 1)[0] for item in task_runs.json()["items"])
    assert names == ["measure"] * 20 + ["summarize"]
