"""``DockerContainer``: a flow run in a Docker container, started through the docker SDK.

The launch spec is the keyword arguments of ``docker.DockerClient().containers.create(...)``:
the image, ``python -m vivace.engine <flow_run_id>`` as the command, the run's environment, the
volumes in the SDK's dict form (``{"/host": {"bind": "/container", "mode": "ro"}}``), the
network, the labels (always ``io.vivace.flow-run-id``, so ``docker ps --filter
label=io.vivace.flow-run-id=<id>`` finds the run's container) and a name, ``<name>-<flow run
id>``, unique per run so that concurrent runs never collide. ``start`` pulls the image as
``image_pull_policy`` says, creates the container with exactly that spec and starts it.

What the container must reach, it reaches from inside the container:

- a database or API URL on the worker's loopback (``127.0.0.1``, ``localhost``) would point at
  the container itself, so ``VIVACE_DATABASE_URL`` and ``VIVACE_API_URL`` are rewritten to
  ``host.docker.internal`` and that name is mapped to the host (``extra_hosts``
  ``{"host.docker.internal": "host-gateway"}``). The host's server must listen on an address
  the container can reach (not only 127.0.0.1: on Linux the gateway is the docker0 bridge).
  With ``network="host"`` the container shares the host's network and nothing is rewritten.
- a SQLite database is a file: the run fails at once unless a volume mounts the file's folder,
  in which case the URL is rewritten to the file's path inside the container. PostgreSQL is the
  database for containers.
- the deployment's code: the engine fetches it from the deployment's storage, so local-folder
  storage must be mounted at the same path (``volumes=["/srv/flows:/srv/flows:ro"]``); S3, GCS,
  Azure or a GitHub repository need nothing (but the image needs their extras).

The default image, ``vivace``, is what the repository's Dockerfile builds (``docker build -t
vivace .``); any image with vivace installed, at the worker's version, works.

``auto_remove`` removes the container once the worker has read its exit code (vivace does it,
not Docker's ``--rm``, which would remove the container, and its exit code, before the worker
looked). No Docker engine ran where this was written: the spec is tested exactly and ``start``,
``poll`` and ``stop`` against a stub of the Docker Engine API, not against a real engine.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
import uuid
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vivace.exceptions import InfrastructureError, MissingExtraError
from vivace.infrastructure.base import (
    DEFAULT_IMAGE,
    FLOW_RUN_LABEL,
    UNKNOWN_EXIT_CODE,
    Infrastructure,
    Launched,
    check_image,
    check_label_not_reserved,
    engine_command,
)

HOST_ALIAS = "host.docker.internal"
HOST_GATEWAY = "host-gateway"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Settings that name a host: what the engine in the container connects to.
URL_VARIABLES = ("VIVACE_DATABASE_URL", "VIVACE_API_URL")

_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_MEMORY = re.compile(r"[0-9]+[bkmg]?", re.IGNORECASE)
_DOCKER_HOST_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")


def _docker() -> Any:
    try:
        import docker
    except ImportError as error:
        raise MissingExtraError(
            f"DockerContainer needs the docker package, which is not installed ({error}); "
            "install it with: pip install 'vivace[docker]'"
        ) from None
    return docker


class DockerContainer(Infrastructure):
    """A flow run in a Docker container; see the module docstring for what the container gets.

    ::

        DockerContainer(
            image="registry.example.com/flows:1.4",
            volumes=["/srv/data:/data:ro"],
            env={"EXTRA_PIP_PACKAGES": "pandas"},
            mem_limit="2g",
        ).save("docker-flows")
    """

    type: ClassVar[str] = "docker"

    image: str = Field(
        default=DEFAULT_IMAGE,
        description="Image with vivace installed; default 'vivace', built by the Dockerfile.",
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Mounts, 'HOST:CONTAINER' or 'HOST:CONTAINER:ro' ('rw' is the default); "
        "HOST is an absolute path or a named volume.",
    )
    network: str | None = Field(
        default=None, description="Network to join ('host' shares the host's); default: bridge."
    )
    name: str | None = Field(
        default=None,
        description="Start of the container's name, followed by the flow run id; default 'vivace'.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description=f"Container labels; {FLOW_RUN_LABEL} is always added."
    )
    auto_remove: bool = Field(
        default=False, description="Remove the container once the worker has its exit code."
    )
    image_pull_policy: Literal["if_not_present", "always", "never"] = Field(
        default="if_not_present",
        description="Pull the image when it is missing (default), before every run, or never.",
    )
    mem_limit: int | str | None = Field(
        default=None, description="Memory limit: bytes, or a number with b, k, m or g ('2g')."
    )
    extra_hosts: dict[str, str] = Field(
        default_factory=dict,
        description="Extra /etc/hosts entries, name -> address (or 'host-gateway').",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine URL, e.g. 'tcp://10.0.0.5:2376'; default: DOCKER_HOST, "
        "else the local socket.",
    )

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("volumes")
    @classmethod
    def _check_volumes(cls, value: list[str]) -> list[str]:
        sources: set[str] = set()
        for volume in value:
            source, _, _ = _parse_volume(volume)
            if source in sources:
                raise ValueError(
                    f"volume {volume!r} mounts {source!r} a second time; expected each host "
                    "path or named volume once (the docker SDK keys mounts by source)"
                )
            sources.add(source)
        return value

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("network is empty; expected a network name, 'host', or None")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _CONTAINER_NAME.fullmatch(value):
            raise ValueError(
                f"name {value!r} cannot start a container name; expected letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.strip():
                raise ValueError("labels has an empty key; expected label names such as 'team'")
            check_label_not_reserved(key)
        return value

    @field_validator("mem_limit")
    @classmethod
    def _check_mem_limit(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"mem_limit {value} is not a positive number of bytes")
        if isinstance(value, str) and not _MEMORY.fullmatch(value):
            raise ValueError(
                f"mem_limit {value!r} is not a memory size; expected bytes or a number with "
                "b, k, m or g, such as '512m' or '2g'"
            )
        return value

    @field_validator("extra_hosts")
    @classmethod
    def _check_extra_hosts(cls, value: dict[str, str]) -> dict[str, str]:
        for host, address in value.items():
            if not host or any(character.isspace() or character == ":" for character in host):
                raise ValueError(f"extra_hosts has {host!r}, which is not a host name")
            if not address or any(character.isspace() for character in address):
                raise ValueError(
                    f"extra_hosts maps {host!r} to {address!r}; expected an IP address or "
                    f"{HOST_GATEWAY!r}"
                )
        return value

    @field_validator("docker_host")
    @classmethod
    def _check_docker_host(cls, value: str | None) -> str | None:
        if value is not None:
            scheme = value.partition("://")[0]
            if "://" not in value or scheme not in _DOCKER_HOST_SCHEMES:
                raise ValueError(
                    f"docker_host {value!r} is not a Docker engine URL; expected e.g. "
                    "'unix:///var/run/docker.sock', 'tcp://10.0.0.5:2376' or "
                    "'ssh://user@host'"
                )
        return value

    @model_validator(mode="after")
    def _check_environment_names(self) -> DockerContainer:
        for key in self.env:
            if not key or "=" in key:
                raise ValueError(
                    f"env has {key!r}, which cannot be an environment variable name; "
                    "expected a name without '='"
                )
        return self

    def container_name(self, flow_run_id: uuid.UUID) -> str:
        """The name of the run's container: ``<name or 'vivace'>-<flow run id>``."""
        return f"{self.name or 'vivace'}-{flow_run_id}"

    def launch_spec(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> dict[str, Any]:
        """The keyword arguments ``start`` passes to ``DockerClient().containers.create``.

        Raises InfrastructureError when the run's SQLite database is not mounted (see the module
        docstring).
        """
        run_environment = self.environment(environment)
        extra_hosts = dict(self.extra_hosts)
        if self.network != "host":
            rewritten = False
            for variable in URL_VARIABLES:
                url = run_environment.get(variable)
                if url is not None:
                    new_url = _reach_host(url)
                    rewritten = rewritten or new_url != url
                    run_environment[variable] = new_url
            if rewritten:
                extra_hosts = {HOST_ALIAS: HOST_GATEWAY, **extra_hosts}
        database_url = run_environment.get("VIVACE_DATABASE_URL")
        if database_url is not None and database_url.startswith("sqlite"):
            run_environment["VIVACE_DATABASE_URL"] = self._mounted_sqlite(database_url)
        spec: dict[str, Any] = {
            "image": self.image,
            "command": engine_command(flow_run_id),
            "environment": run_environment,
            "labels": {**self.labels, FLOW_RUN_LABEL: str(flow_run_id)},
            "name": self.container_name(flow_run_id),
            "detach": True,
        }
        if self.volumes:
            spec["volumes"] = {
                source: {"bind": target, "mode": mode}
                for source, target, mode in map(_parse_volume, self.volumes)
            }
        if self.network is not None:
            spec["network"] = self.network
        if extra_hosts:
            spec["extra_hosts"] = extra_hosts
        if self.mem_limit is not None:
            spec["mem_limit"] = self.mem_limit
        return spec

    def start(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> Launched:
        """Pull the image (per ``image_pull_policy``), create the container and start it."""
        spec = self.launch_spec(flow_run_id, environment)
        docker = _docker()
        import requests

        failures = (docker.errors.DockerException, requests.RequestException)
        engine = self.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        try:
            if self.docker_host is not None:
                client = docker.DockerClient(base_url=self.docker_host)
            else:
                client = docker.from_env()
        except failures as error:
            raise self._error(
                flow_run_id, f"cannot reach the Docker engine at {engine} ({error})"
            ) from None
        try:
            self._pull(client, docker)
        except failures as error:
            raise self._error(
                flow_run_id,
                f"cannot pull image {self.image!r} with image_pull_policy="
                f"{self.image_pull_policy!r} from the engine at {engine} ({error})",
            ) from None
        try:
            container = client.containers.create(**spec)
        except failures as error:
            raise self._error(
                flow_run_id,
                f"cannot create container {spec['name']!r} from image {self.image!r} on the "
                f"engine at {engine} ({error})",
            ) from None
        try:
            container.start()
        except failures as error:
            try:
                container.remove(force=True)
            except failures:
                pass  # the start error is the one to report
            raise self._error(
                flow_run_id, f"cannot start container {spec['name']!r} ({error})"
            ) from None
        return LaunchedContainer(container, spec["name"], auto_remove=self.auto_remove)

    def _pull(self, client: Any, docker: Any) -> None:
        if self.image_pull_policy == "never":
            return
        if self.image_pull_policy == "if_not_present":
            try:
                client.images.get(self.image)
                return
            except docker.errors.ImageNotFound:
                pass
        repository, tag = docker.utils.parse_repository_tag(self.image)
        client.images.pull(repository, tag=tag or "latest")

    def _mounted_sqlite(self, url: str) -> str:
        """The SQLite URL as seen inside the container, through the volume that mounts it."""
        import sqlalchemy as sa

        parsed = sa.make_url(url)
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return url
        path = os.path.abspath(database)
        for volume in self.volumes:
            source, target, _ = _parse_volume(volume)
            if not source.startswith("/"):
                continue
            source = source.rstrip("/") or "/"
            if path == source or path.startswith(source.rstrip("/") + "/"):
                inside = PurePosixPath(target) / os.path.relpath(path, source)
                return parsed.set(database=str(inside)).render_as_string(hide_password=False)
        raise InfrastructureError(
            f"DockerContainer cannot run a flow run on the SQLite database {path}: the file is "
            "on the worker's machine, not in the container; expected a PostgreSQL "
            "VIVACE_DATABASE_URL, or a volume that mounts the database's folder, e.g. "
            f"volumes=['{os.path.dirname(path)}:{os.path.dirname(path)}']"
        )

    def _error(self, flow_run_id: uuid.UUID, problem: str) -> InfrastructureError:
        return InfrastructureError(
            f"DockerContainer could not start flow run {flow_run_id}: {problem}"
        )


class LaunchedContainer(Launched):
    """A started container; ``identifier`` is its id."""

    def __init__(self, container: Any, name: str, auto_remove: bool) -> None:
        self._container = container
        self._auto_remove = auto_remove
        self.identifier = str(container.id)
        self.description = f"container {self.identifier[:12]} ({name})"

    def poll(self) -> int | None:
        docker = _docker()
        import requests

        try:
            self._container.reload()
        except docker.errors.NotFound:
            return UNKNOWN_EXIT_CODE  # removed by someone else: its exit code went with it
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise InfrastructureError(
                f"DockerContainer cannot read the state of {self.description} ({error})"
            ) from None
        state = self._container.attrs.get("State") or {}
        if state.get("Status") not in ("exited", "dead"):
            return None
        exit_code = state.get("ExitCode")
        if self._auto_remove:
            try:
                self._container.remove()
            except (docker.errors.DockerException, requests.RequestException):
                pass  # the run is over either way; the container stays for `docker rm`
        return int(exit_code) if exit_code is not None else UNKNOWN_EXIT_CODE

    def stop(self, grace_seconds: float = 10.0) -> None:
        """``docker stop``: SIGTERM, then SIGKILL after ``grace_seconds`` (whole seconds)."""
        docker = _docker()
        import requests

        try:
            self._container.stop(timeout=max(0, math.ceil(grace_seconds)))
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise InfrastructureError(
                f"DockerContainer cannot stop {self.description} ({error})"
            ) from None


def _parse_volume(volume: str) -> tuple[str, str, str]:
    """``"host:container[:ro|rw]"`` -> (host, container, mode); ValueError naming the mount."""
    parts = volume.split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
    source, target = parts if len(parts) == 2 else ("", "")
    problem = None
    if not source or not target:
        problem = "it is not HOST:CONTAINER or HOST:CONTAINER:MODE"
    elif mode not in ("ro", "rw"):
        problem = f"its mode {mode!r} is neither 'ro' nor 'rw'"
    elif not target.startswith("/"):
        problem = f"the container path {target!r} is not absolute"
    elif not source.startswith("/") and not _VOLUME_NAME.fullmatch(source):
        problem = f"{source!r} is neither an absolute host path nor a volume name"
    if problem is not None:
        raise ValueError(
            f"volume {volume!r} is not valid: {problem}; expected e.g. '/srv/data:/data' or "
            "'/srv/data:/data:ro'"
        )
    return source, target, mode


def _reach_host(url: str) -> str:
    """``url`` with a loopback host replaced by ``host.docker.internal``; others unchanged."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return url
    if host is None or not (host == "localhost" or host == "::1" or host.startswith("127.")):
        return url
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{HOST_ALIAS}" + (f":{port}" if port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
