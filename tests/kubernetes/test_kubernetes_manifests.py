"""deploy/kubernetes/, checked without a cluster.

What can be checked here: every document parses and is an object of a known kind whose fields
all exist (each one goes through the kubernetes client's model of its kind and back, unchanged);
the images are those the Dockerfile and docker-compose.yml build and use; every ``vivace`` and
``dask`` command line parses with the real click commands; ports, addresses, the database URL,
environment variables, Secret and ConfigMap references, Service selectors and probes agree with
each other and with the code; the worker's Role allows every Kubernetes API call that
vivace/infrastructure/kubernetes.py makes. ``kubectl kustomize`` builds the folder where kubectl
exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import sqlalchemy as sa
import yaml

from vivace.cli import cli
from vivace.exceptions import ConfigurationError
from vivace.settings import Settings, reset_settings
from vivace.store.api_keys import parse_env_api_keys

ROOT = Path(__file__).resolve().parent.parent.parent
FOLDER = ROOT / "deploy" / "kubernetes"
KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}
WORKLOADS = ("Deployment", "StatefulSet")


# -- reading the folder -------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    return parsed


def documents() -> list[dict[str, Any]]:
    found = []
    for name in kustomization()["resources"]:
        found.extend(doc for doc in yaml.safe_load_all((FOLDER / name).read_text()) if doc)
    return found


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every Deployment and StatefulSet."""
    for kind in WORKLOADS:
        for workload in objects(kind):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def command_of(container: dict[str, Any]) -> list[str]:
    """The container's command ([""] when it runs its image's entrypoint, as PostgreSQL does)."""
    return list(container.get("command") or [""])


def container_running(*command: str) -> dict[str, Any]:
    """The one container whose command starts with ``command``."""
    (found,) = [c for _, c in containers() if command_of(c)[: len(command)] == list(command)]
    return found


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def compose_images() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {
        "vivace": compose["x-vivace-image"]["image"],
        "postgres": compose["services"]["postgres"]["image"],
    }


def secret_data() -> dict[str, str]:
    data: dict[str, str] = named("Secret", "vivace")["stringData"]
    return data


# -- the documents ------------------------------------------------------------------------------


def test_every_file_is_listed_and_every_document_is_a_known_kind() -> None:
    listed = set(kustomization()["resources"])
    files = {path.name for path in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}

    assert listed == files
    kinds = {(doc["apiVersion"], doc["kind"]) for doc in documents()}
    assert kinds <= KNOWN_KINDS, kinds - KNOWN_KINDS
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in documents()]
    assert len(names) == len(set(names))


def test_every_field_is_one_its_kind_has() -> None:
    """The kubernetes client's model of each kind drops what it does not know: a misspelt or
    misplaced field comes back missing."""
    import kubernetes

    client = kubernetes.client.ApiClient()
    # The client's own deserializer (what it applies to the API server's answers); private by
    # name, so a release that renames it fails here loudly rather than passing.
    for doc in documents():
        model = doc["apiVersion"].rpartition("/")[2].capitalize() + doc["kind"]
        parsed = client._ApiClient__deserialize(doc, model)
        assert client.sanitize_for_serialization(parsed) == doc, doc["metadata"]["name"]


def test_everything_lives_in_the_namespace() -> None:
    (namespace,) = objects("Namespace")
    name = namespace["metadata"]["name"]

    assert kustomization()["namespace"] == name
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == name, doc["metadata"]["name"]
    for binding in objects("RoleBinding"):
        assert {subject["namespace"] for subject in binding["subjects"]} == {name}


def test_images_are_the_ones_the_dockerfile_and_compose_build_and_use() -> None:
    images = compose_images()
    vivace_image = images["vivace"]

    for workload, container in containers():
        if command_of(container)[0] in ("vivace", "dask"):
            assert container["image"] == vivace_image, workload["metadata"]["name"]
        else:
            assert container["image"] == images["postgres"], workload["metadata"]["name"]
    # kustomize's `images` entry renames exactly that image.
    (entry,) = kustomization()["images"]
    assert entry["name"] == vivace_image.partition(":")[0]
    # The worker needs the kubernetes extra: the Dockerfile has the build argument that adds it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG WITH_KUBERNETES=false" in dockerfile
    assert 'if [ "$WITH_KUBERNETES" = "true" ]; then extras="$extras,kubernetes"; fi' in dockerfile
    assert "--build-arg WITH_KUBERNETES=true" in (FOLDER / "kustomization.yaml").read_text()


# -- commands and ports -------------------------------------------------------------------------


def parse_command(root: click.Command, args: list[str]) -> click.Context:
    """Resolve subcommands from ``root`` and parse the rest of ``args`` as the last command's
    options and arguments, exactly as the CLI would (nothing is run)."""
    command, words = root, list(args)
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    assert not isinstance(command, click.Group), f"{args} names a group, not a command"
    return command.make_context(command.name or "", words)


def test_every_vivace_command_line_parses() -> None:
    commands = [command_of(c) for _, c in containers() if command_of(c)[0] == "vivace"]

    assert len(commands) == 3  # the server, its services, the worker
    for command in commands:
        parse_command(cli, command[1:])


def test_every_dask_command_line_parses() -> None:
    dask_commands = {ep.name: ep for ep in entry_points(group="dask_cli")}
    commands = [command_of(c) for _, c in containers() if command_of(c)[0] == "dask"]

    assert sorted(command[1] for command in commands) == ["scheduler", "worker"]
    for command in commands:
        parse_command(dask_commands[command[1]].load(), command[2:])


def test_the_server_serves_on_its_port_and_the_services_run_alone() -> None:
    server = container_running("vivace", "server", "start")
    deployment = named("Deployment", "vivace-server")
    services = named("Deployment", "vivace-services")
    dockerfile = (ROOT / "Dockerfile").read_text()

    params = parse_command(cli, server["command"][1:]).params
    assert params["host"] == "0.0.0.0"
    assert params["no_services"] is True
    (port,) = server["ports"]
    assert port["containerPort"] == params["port"] == 4200
    assert f"EXPOSE {params['port']}" in dockerfile
    assert deployment["spec"]["replicas"] >= 2
    # The services: one process of `vivace server services start`, all of them.
    (runner,) = services["spec"]["template"]["spec"]["containers"]
    assert runner["command"] == ["vivace", "server", "services", "start"]
    assert services["spec"]["replicas"] == 1
    assert services["spec"]["strategy"]["type"] == "Recreate"


def test_compose_runs_one_server_with_the_services_inside() -> None:
    """docker-compose.yml's single server runs the services itself (no --no-services and no
    separate `vivace server services start`), while the manifests split them; both name only
    real settings."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    vivace_commands = {
        name: service["command"]
        for name, service in services.items()
        if isinstance(service.get("command"), list) and service["command"][0] == "vivace"
    }

    assert list(vivace_commands) == ["server"]
    params = parse_command(cli, vivace_commands["server"][1:]).params
    assert params["no_services"] is False
    assert params["port"] == 4200
    settings = {f"VIVACE_{name.upper()}" for name in Settings.model_fields}
    environments = [compose["x-vivace-environment"]]
    environments += [service.get("environment", {}) for service in services.values()]
    named_variables = {name for env in environments for name in env if name.startswith("VIVACE_")}
    assert named_variables <= settings, named_variables - settings
    # The server's services decrypt webhook blocks: compose passes the key through.
    assert "VIVACE_ENCRYPTION_KEY" in services["server"]["environment"]


def service_port(name: str) -> int:
    (port,) = named("Service", name)["spec"]["ports"]
    number: int = port["port"]
    return number


def test_addresses_name_the_services_and_their_ports() -> None:
    namespace = kustomization()["namespace"]
    worker = container_running("vivace", "worker", "start")
    dask_worker = container_running("dask", "worker")
    scheduler = container_running("dask", "scheduler")

    # The worker reaches the API through the server's Service, under /api.
    api = urlsplit(option(worker["command"], "--api-url"))
    assert api.hostname in ("vivace-server", f"vivace-server.{namespace}.svc")
    assert api.port == service_port("vivace-server") and api.path == "/api"
    # Dask workers reach the scheduler through its Service, on the port it listens on.
    address = urlsplit(dask_worker["command"][2])
    assert address.scheme == "tcp" and address.hostname == "dask-scheduler"
    listen = int(option(scheduler["command"], "--port"))
    assert address.port == service_port("dask-scheduler") == listen
    assert [port["containerPort"] for port in scheduler["ports"]] == [listen]
    # The database URL names the in-cluster PostgreSQL, its user, database and password.
    url = sa.make_url(secret_data()["VIVACE_DATABASE_URL"])
    (database,) = named("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in database["env"]}
    assert url.drivername == "postgresql+psycopg"
    assert url.host in ("postgres", f"postgres.{namespace}.svc")
    assert url.port == service_port("postgres") == database["ports"][0]["containerPort"]
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.database == env["POSTGRES_DB"]["value"]
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    assert url.password == secret_data()["POSTGRES_PASSWORD"]
    assert named("StatefulSet", "postgres")["spec"]["serviceName"] == "postgres"


def test_service_selectors_match_their_pods_and_target_ports_exist() -> None:
    for service in objects("Service"):
        selector = service["spec"]["selector"]
        selected = [
            workload
            for kind in WORKLOADS
            for workload in objects(kind)
            if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {
            port["name"]
            for container in selected[0]["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]
    for kind in WORKLOADS:
        for workload in objects(kind):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -- environment and secrets --------------------------------------------------------------------


def test_every_vivace_variable_is_a_setting_and_every_reference_resolves() -> None:
    settings = {f"VIVACE_{name.upper()}" for name in Settings.model_fields}
    secret = secret_data()
    config = named("ConfigMap", "vivace-config")["data"]
    named_variables = set(config) | set(secret)
    for _, container in containers():
        for item in container.get("env", []):
            named_variables.add(item["name"])
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference["name"] == "vivace" and reference["key"] in secret, item
        for source in container.get("envFrom", []):
            assert source == {"configMapRef": {"name": "vivace-config"}}

    vivace_variables = {name for name in named_variables if name.startswith("VIVACE_")}
    assert vivace_variables <= settings, vivace_variables - settings
    assert {"VIVACE_DATABASE_URL", "VIVACE_API_KEYS", "VIVACE_API_KEY"} <= vivace_variables


def env_names(container: dict[str, Any]) -> set[str]:
    return {item["name"] for item in container.get("env", [])}


def test_each_process_gets_what_it_needs() -> None:
    server = container_running("vivace", "server", "start")
    worker = container_running("vivace", "worker", "start")

    # Every vivace process and Dask worker records into or reads the database (as in
    # docker-compose.yml); the Dask scheduler runs no vivace code.
    for _, container in containers():
        command = command_of(container)
        if command[0] == "vivace" or command[:2] == ["dask", "worker"]:
            assert "VIVACE_DATABASE_URL" in env_names(container), container["name"]
    assert "VIVACE_API_KEYS" in env_names(server)  # so it may listen beyond its pod
    assert "VIVACE_API_KEY" in env_names(worker)  # the server requires a key
    assert option(worker["command"], "--type") == "kubernetes"


def test_the_placeholder_api_keys_are_refused_until_replaced() -> None:
    """A Secret applied unedited stops the server rather than opening it with a known key."""
    with pytest.raises(ConfigurationError, match="has a space in its key"):
        parse_env_api_keys(secret_data()["VIVACE_API_KEYS"])


# -- probes -------------------------------------------------------------------------------------


def test_probes_reach_paths_the_server_answers_without_a_key(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient

    from vivace.server.app import create_app

    server = container_running("vivace", "server", "start")
    probes = {kind: server[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    # A server with keys, as in the cluster: the probes send none.
    monkeypatch.setenv("VIVACE_API_KEYS", "admin:" + "k" * 32)
    reset_settings()
    with TestClient(create_app(f"sqlite:///{vivace_home / 'vivace.db'}")) as client:
        assert client.get("/api/flows").status_code == 401
        for kind, probe in probes.items():
            assert probe["httpGet"]["port"] == server["ports"][0]["name"], kind
            assert client.get(probe["httpGet"]["path"]).status_code == 200, kind
    # Readiness is the health check, which queries the database; liveness must not be.
    assert probes["readinessProbe"]["httpGet"]["path"] == "/api/health"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/api/health/live"


# -- the worker's permissions -------------------------------------------------------------------


def kubernetes_calls() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every Kubernetes API method KubernetesJob calls."""
    import kubernetes

    source = (ROOT / "vivace" / "infrastructure" / "kubernetes.py").read_text()
    verbs = {"create": "create", "read": "get", "list": "list", "delete": "delete"}
    verbs |= {"patch": "patch", "replace": "update"}
    calls = set()
    for method, verb, resource in re.findall(
        r"\.((create|read|list|delete|patch|replace)_namespaced_(\w+))\(", source
    ):
        groups = [
            group
            for group, api in (("batch", "BatchV1Api"), ("", "CoreV1Api"))
            if hasattr(getattr(kubernetes.client, api), method)
        ]
        assert len(groups) == 1, method
        kind, _, sub = resource.partition("_")
        calls.add((groups[0], f"{kind}s" + (f"/{sub}" if sub else ""), verbs[verb]))
    return calls


def test_the_worker_may_make_every_call_kubernetes_jobs_make() -> None:
    calls = kubernetes_calls()
    role = named("Role", "vivace-worker")
    binding = named("RoleBinding", "vivace-worker")
    (workload,) = [w for w, c in containers() if command_of(c)[:3] == ["vivace", "worker", "start"]]

    assert calls >= {
        ("batch", "jobs", "create"),
        ("batch", "jobs/status", "get"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
    }
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert calls <= allowed, calls - allowed
    assert {("batch", "jobs", "watch"), ("", "pods/log", "get")} <= allowed
    account = workload["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": kustomization()["namespace"]}
    ]
    assert named("ServiceAccount", account)


# -- kustomize ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_folder() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(FOLDER)], capture_output=True, text=True, timeout=60
    )

    assert built.returncode == 0, built.stderr
    output = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in output) == sorted(
        (doc["kind"], doc["metadata"]["name"]) for doc in documents()
    )
    for doc in output:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vivace"
