"""DockerContainer: the exact create arguments, validation, and start/poll/stop over the docker
SDK, against a stub of the Docker Engine API (no Docker engine runs here) and against an
address where nothing listens."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from stub_api import Request, StubAPI, unused_port

from vivace.exceptions import InfrastructureError
from vivace.infrastructure import DockerContainer
from vivace.infrastructure.base import UNKNOWN_EXIT_CODE

RUN_ID = uuid.UUID("0190f3a2-7c1e-7d4b-9a51-3f2e8b6c1d0a")
COMMAND = ["python", "-m", "vivace.engine", str(RUN_ID)]
POSTGRES = "postgresql+psycopg://vivace:secret@127.0.0.1:5432/vivace"


def test_launch_spec_is_the_create_arguments() -> None:
    container = DockerContainer(
        image="registry.example.com/flows:1.4",
        env={"EXTRA": "1", "VIVACE_LOGGING_LEVEL": "DEBUG"},
        volumes=["/srv/data:/data:ro", "/srv/cache:/cache", "pip-cache:/root/.cache/pip:rw"],
        network="flows",
        name="etl",
        labels={"team": "data"},
        mem_limit="2g",
        extra_hosts={"warehouse": "10.0.0.7"},
    )
    spec = container.launch_spec(
        RUN_ID,
        {
            "VIVACE_DATABASE_URL": POSTGRES,
            "VIVACE_API_URL": "http://localhost:4200",
            "VIVACE_LOGGING_LEVEL": "INFO",
        },
    )
    assert spec == {
        "image": "registry.example.com/flows:1.4",
        "command": COMMAND,
        "environment": {
            "VIVACE_DATABASE_URL": (
                "postgresql+psycopg://vivace:secret@host.docker.internal:5432/vivace"
            ),
            "VIVACE_API_URL": "http://host.docker.internal:4200",
            "VIVACE_LOGGING_LEVEL": "DEBUG",
            "EXTRA": "1",
        },
        "labels": {"team": "data", "io.vivace.flow-run-id": str(RUN_ID)},
        "name": f"etl-{RUN_ID}",
        "detach": True,
        "volumes": {
            "/srv/data": {"bind": "/data", "mode": "ro"},
            "/srv/cache": {"bind": "/cache", "mode": "rw"},
            "pip-cache": {"bind": "/root/.cache/pip", "mode": "rw"},
        },
        "network": "flows",
        "extra_hosts": {"host.docker.internal": "host-gateway", "warehouse": "10.0.0.7"},
        "mem_limit": "2g",
    }


def test_defaults_make_a_minimal_spec() -> None:
    spec = DockerContainer().launch_spec(RUN_ID, {})
    assert spec == {
        "image": "vivace",
        "command": COMMAND,
        "environment": {},
        "labels": {"io.vivace.flow-run-id": str(RUN_ID)},
        "name": f"vivace-{RUN_ID}",
        "detach": True,
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(POSTGRES, POSTGRES.replace("127.0.0.1", "host.docker.internal"), id="ipv4"),
        pytest.param(
            "postgresql://u:p%40ss@localhost/db",
            "postgresql://u:p%40ss@host.docker.internal/db",
            id="localhost-no-port",
        ),
        pytest.param(
            "postgresql://u@[::1]:5433/db?sslmode=disable",
            "postgresql://u@host.docker.internal:5433/db?sslmode=disable",
            id="ipv6",
        ),
        pytest.param(
            "postgresql://u@127.0.1.1/db", "postgresql://u@host.docker.internal/db", id="127/8"
        ),
        pytest.param("postgresql://u@db.internal:5432/db", None, id="remote-unchanged"),
        pytest.param("postgresql://u@10.0.0.5/db", None, id="address-unchanged"),
    ],
)
def test_loopback_database_url_is_rewritten_to_the_host(url: str, expected: str | None) -> None:
    spec = DockerContainer().launch_spec(RUN_ID, {"VIVACE_DATABASE_URL": url})
    assert spec["environment"]["VIVACE_DATABASE_URL"] == (expected or url)
    if expected is None:
        assert "extra_hosts" not in spec
    else:
        assert spec["extra_hosts"] == {"host.docker.internal": "host-gateway"}


def test_host_network_keeps_loopback_urls() -> None:
    spec = DockerContainer(network="host").launch_spec(RUN_ID, {"VIVACE_DATABASE_URL": POSTGRES})
    assert spec["environment"]["VIVACE_DATABASE_URL"] == POSTGRES
    assert spec["network"] == "host"
    assert "extra_hosts" not in spec


def test_own_extra_hosts_entry_wins() -> None:
    container = DockerContainer(extra_hosts={"host.docker.internal": "172.17.0.1"})
    spec = container.launch_spec(RUN_ID, {"VIVACE_DATABASE_URL": POSTGRES})
    assert spec["extra_hosts"] == {"host.docker.internal": "172.17.0.1"}


def test_sqlite_database_is_reached_through_its_volume(tmp_path: Path) -> None:
    database = tmp_path / "home" / "vivace.db"
    environment = {"VIVACE_DATABASE_URL": f"sqlite:///{database}"}
    with pytest.raises(InfrastructureError, match=re.escape(str(database))) as raised:
        DockerContainer().launch_spec(RUN_ID, environment)
    assert "volume" in str(raised.value) and "PostgreSQL" in str(raised.value)

    mounted = DockerContainer(volumes=[f"{tmp_path}/home:/vivace"])
    spec = mounted.launch_spec(RUN_ID, environment)
    assert spec["environment"]["VIVACE_DATABASE_URL"] == "sqlite:////vivace/vivace.db"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"image": "my image"}, "image 'my image' is not an image", id="image"),
        pytest.param({"volumes": ["/data"]}, "not HOST:CONTAINER", id="volume-one-part"),
        pytest.param({"volumes": ["/a:/b:rx"]}, "mode 'rx'", id="volume-mode"),
        pytest.param({"volumes": ["/a:data"]}, "'data' is not absolute", id="volume-target"),
        pytest.param({"volumes": ["./a:/data"]}, "'./a' is neither", id="volume-relative"),
        pytest.param({"volumes": ["/a:/b", "/a:/c"]}, "a second time", id="volume-twice"),
        pytest.param({"name": "-x"}, "name '-x' cannot start", id="name"),
        pytest.param({"network": " "}, "network is empty", id="network"),
        pytest.param({"labels": {"io.vivace.flow-run-id": "x"}}, "vivace sets", id="label"),
        pytest.param({"mem_limit": "2 GB"}, "not a memory size", id="mem-limit"),
        pytest.param({"mem_limit": 0}, "not a positive number", id="mem-limit-zero"),
        pytest.param({"extra_hosts": {"db": ""}}, "expected an IP address", id="extra-host"),
        pytest.param({"docker_host": "10.0.0.5:2376"}, "not a Docker engine URL", id="host"),
        pytest.param({"image_pull_policy": "sometimes"}, "if_not_present", id="pull-policy"),
        pytest.param({"env": {"A=B": "1"}}, "cannot be an environment variable", id="env"),
    ],
)
def test_invalid_fields_fail_at_construction(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        DockerContainer(**fields)


def test_start_without_an_engine_names_the_docker_host() -> None:
    host = f"tcp://127.0.0.1:{unused_port()}"
    with pytest.raises(InfrastructureError, match="cannot reach the Docker engine") as raised:
        DockerContainer(docker_host=host).start(RUN_ID, {})
    assert host in str(raised.value) and str(RUN_ID) in str(raised.value)


class StubEngine:
    """The Docker Engine API requests DockerContainer makes, answered from a little state."""

    def __init__(self, api: StubAPI, images: set[str]) -> None:
        self.images = images
        self.state: dict[str, Any] = {"Status": "created", "ExitCode": 0}
        prefix = r"/v1\.\d+"
        api.route("GET", "/version", lambda m, r: (200, {"ApiVersion": "1.44"}))
        api.route("GET", prefix + r"/images/(?P<name>.+)/json", self.inspect_image)
        api.route("POST", prefix + "/images/create", self.pull)
        api.route("POST", prefix + "/containers/create", self.create)
        api.route("GET", prefix + "/containers/c0ffee/json", self.inspect)
        api.route("POST", prefix + "/containers/c0ffee/start", self.start)
        api.route("POST", prefix + "/containers/c0ffee/stop", self.stop)
        api.route("DELETE", prefix + "/containers/c0ffee", lambda m, r: (204, None))

    def inspect_image(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        if _tagged(match["name"]) in self.images:
            return 200, {"Id": "sha256:1234"}
        return 404, {"message": f"No such image: {match['name']}"}

    def pull(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        self.images.add(f"{request.query['fromImage']}:{request.query['tag']}")
        return 200, {"status": "Downloaded newer image"}

    def create(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        if _tagged(request.body["Image"]) not in self.images:
            return 404, {"message": f"No such image: {request.body['Image']}"}
        return 201, {"Id": "c0ffee", "Warnings": []}

    def inspect(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        return 200, {"Id": "c0ffee", "Name": "/x", "State": dict(self.state)}

    def start(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        self.state["Status"] = "running"
        return 204, None

    def stop(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        self.state.update(Status="exited", ExitCode=143)
        return 204, None


def _tagged(image: str) -> str:
    """The engine's name for an image: ``vivace`` is ``vivace:latest``."""
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"


def test_start_poll_stop_against_a_stub_engine(stub_api: StubAPI) -> None:
    StubEngine(stub_api, images=set())
    container = DockerContainer(
        image="flows:1.4",
        volumes=["/srv/data:/data:ro"],
        labels={"team": "data"},
        mem_limit="1g",
        auto_remove=True,
        docker_host=f"tcp://{stub_api.url}",
    )
    launched = container.start(RUN_ID, {"VIVACE_DATABASE_URL": POSTGRES})
    assert launched.identifier == "c0ffee"
    assert launched.description == f"container c0ffee (vivace-{RUN_ID})"
    assert [
        (r.query["fromImage"], r.query["tag"]) for r in stub_api.sent("POST", r".*/images/create")
    ] == [("flows", "1.4")]

    (create,) = stub_api.sent("POST", r".*/containers/create")
    assert create.query == {"name": f"vivace-{RUN_ID}"}
    body = create.body
    assert body["Image"] == "flows:1.4"
    assert body["Cmd"] == COMMAND
    assert body["Env"] == [
        "VIVACE_DATABASE_URL=postgresql+psycopg://vivace:secret@host.docker.internal:5432/vivace"
    ]
    assert body["Labels"] == {"team": "data", "io.vivace.flow-run-id": str(RUN_ID)}
    assert body["HostConfig"]["Binds"] == ["/srv/data:/data:ro"]
    assert body["HostConfig"]["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert body["HostConfig"]["Memory"] == 1024**3
    assert len(stub_api.sent("POST", r".*/containers/c0ffee/start")) == 1

    assert launched.poll() is None
    launched.stop(grace_seconds=2.5)
    (stop,) = stub_api.sent("POST", r".*/containers/c0ffee/stop")
    assert stop.query["t"] == "3"
    assert stub_api.sent("DELETE", r".*/containers/c0ffee") == []
    assert launched.poll() == 143
    assert len(stub_api.sent("DELETE", r".*/containers/c0ffee")) == 1  # auto_remove


@pytest.mark.parametrize(
    ("policy", "present", "pulled"),
    [
        pytest.param("if_not_present", True, False, id="if-not-present-present"),
        pytest.param("always", True, True, id="always"),
        pytest.param("never", True, False, id="never"),
    ],
)
def test_image_pull_policy(stub_api: StubAPI, policy: str, present: bool, pulled: bool) -> None:
    StubEngine(stub_api, images={"vivace:latest"} if present else set())
    container = DockerContainer(image_pull_policy=policy, docker_host=f"tcp://{stub_api.url}")
    container.start(RUN_ID, {})
    pulls = stub_api.sent("POST", r".*/images/create")
    assert [(r.query["fromImage"], r.query["tag"]) for r in pulls] == (
        [("vivace", "latest")] if pulled else []
    )


def test_missing_image_with_pull_policy_never_fails_to_create(stub_api: StubAPI) -> None:
    StubEngine(stub_api, images=set())
    container = DockerContainer(image_pull_policy="never", docker_host=f"tcp://{stub_api.url}")
    with pytest.raises(InfrastructureError, match="cannot create container") as raised:
        container.start(RUN_ID, {})
    assert "No such image" in str(raised.value)
    assert stub_api.sent("POST", r".*/images/create") == []


def test_poll_of_a_removed_container_is_an_unknown_exit(stub_api: StubAPI) -> None:
    StubEngine(stub_api, images={"vivace:latest"})
    launched = DockerContainer(docker_host=f"tcp://{stub_api.url}").start(RUN_ID, {})
    stub_api.route(
        "GET",
        r"/v1\.\d+/containers/c0ffee/json",
        lambda m, r: (404, {"message": "No such container"}),
    )
    assert launched.poll() == UNKNOWN_EXIT_CODE
