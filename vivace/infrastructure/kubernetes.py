"""``KubernetesJob``: a flow run as a Kubernetes Job, created through the kubernetes client.

The launch spec is the ``batch/v1`` Job manifest ``start`` creates: named ``vivace-<flow run
id>`` (a valid DNS-1123 label), labelled ``io.vivace.flow-run-id=<id>`` on the Job and its pod
(``kubectl get jobs,pods -l io.vivace.flow-run-id=<id>`` finds them), one container named
``vivace`` running ``python -m vivace.engine <id>`` with the run's environment, ``restartPolicy:
Never`` and ``backoffLimit: 0`` (a crashed engine is reported CRASHED, not silently retried).

``job_overrides`` are RFC 6902 JSON Patch operations (``add``, ``replace``, ``remove``) applied
to that manifest last, for anything the fields do not cover: node selectors, tolerations,
volumes, resource limits, annotations::

    KubernetesJob(
        image="registry.example.com/flows:1.4",
        namespace="flows",
        job_overrides=[
            {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"pool": "etl"}},
            {"op": "add", "path": "/spec/template/spec/containers/0/resources/limits",
             "value": {"memory": "2Gi"}},
        ],
    )

Each operation is checked when the object is made, against the manifest it would build, so a
misspelt path fails at construction with the operation's index and what is missing.

``start`` loads the cluster configuration as a pod would (in-cluster service account), else the
kubeconfig (``KUBECONFIG`` or ``~/.kube/config``, its current context). The database URL in the
environment must be reachable from the cluster's pods: a worker's ``127.0.0.1`` is not.

No cluster ran where this was written: the manifest is tested exactly and ``start``, ``poll``
and ``stop`` against a stub of the Kubernetes API, not against a real cluster.
"""

from __future__ import annotations

import copy
import math
import os
import re
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vivace.exceptions import ConfigurationError, InfrastructureError, MissingExtraError
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

CONTAINER_NAME = "vivace"
_SAMPLE_RUN_ID = uuid.UUID(int=0)  # overrides are checked against this run's manifest

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_PATCH_OPS = ("add", "replace", "remove")


def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as error:
        raise MissingExtraError(
            f"KubernetesJob needs the kubernetes package, which is not installed ({error}); "
            "install it with: pip install 'vivace[kubernetes]'"
        ) from None
    return kubernetes


class KubernetesJob(Infrastructure):
    """A flow run as a Kubernetes Job; see the module docstring for the manifest."""

    type: ClassVar[str] = "kubernetes"

    image: str = Field(
        default=DEFAULT_IMAGE,
        description="Image with vivace installed, pullable by the cluster; default 'vivace'.",
    )
    namespace: str = Field(default="default", description="Namespace of the Job.")
    service_account: str | None = Field(
        default=None, description="Service account of the Job's pod; default: the namespace's."
    )
    job_overrides: list[dict[str, Any]] = Field(
        default_factory=list,
        description="RFC 6902 JSON Patch operations (add, replace, remove) applied to the Job "
        "manifest.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description=f"Labels of the Job and its pod; {FLOW_RUN_LABEL} is always added.",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] | None = Field(
        default=None,
        description="The container's imagePullPolicy; default: Kubernetes' (Always for "
        ":latest, else IfNotPresent).",
    )
    backoff_limit: int = Field(
        default=0, ge=0, description="Pod retries before the Job fails; 0 reports a crash."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job after this many seconds."
    )
    active_deadline_seconds: int | None = Field(
        default=None, gt=0, description="Kill the Job after it has run this many seconds."
    )
    cpu_request: str | None = Field(
        default=None, description="CPU the pod requests, e.g. '500m' or '2'."
    )
    memory_request: str | None = Field(
        default=None, description="Memory the pod requests, e.g. '512Mi' or '4Gi'."
    )

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"namespace {value!r} is not a Kubernetes namespace name; expected at most 63 "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        return value

    @field_validator("service_account")
    @classmethod
    def _check_service_account(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value)):
            raise ValueError(
                f"service_account {value!r} is not a service account name; expected lowercase "
                "letters, digits, '-' and '.'"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label_value in value.items():
            check_label_not_reserved(key)
            _check_label(key, label_value)
        return value

    @field_validator("job_overrides")
    @classmethod
    def _check_overrides_shape(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, operation in enumerate(value):
            _check_operation(index, operation)
        return value

    @field_validator("cpu_request", "memory_request")
    @classmethod
    def _check_quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a Kubernetes quantity; expected e.g. '500m', '2', '512Mi' "
                "or '4Gi'"
            )
        return value

    @model_validator(mode="after")
    def _check_manifest(self) -> KubernetesJob:
        for key in self.env:
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(
                    f"env has {key!r}, which Kubernetes does not take as an environment "
                    "variable name; expected letters, digits, '_', '-' and '.', not starting "
                    "with a digit"
                )
        try:
            self.launch_spec(_SAMPLE_RUN_ID, {})
        except ConfigurationError as error:
            raise ValueError(str(error)) from None
        return self

    def launch_spec(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> dict[str, Any]:
        """The Job manifest ``start`` creates: the fields' manifest, then ``job_overrides``.

        Raises ConfigurationError when an override does not apply or leaves the Job without a
        valid name.
        """
        labels = {**self.labels, FLOW_RUN_LABEL: str(flow_run_id)}
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": self.image,
            "command": engine_command(flow_run_id),
            "env": [
                {"name": name, "value": value}
                for name, value in self.environment(environment).items()
            ],
        }
        if self.image_pull_policy is not None:
            container["imagePullPolicy"] = self.image_pull_policy
        resource_requests = {
            name: quantity
            for name, quantity in (("cpu", self.cpu_request), ("memory", self.memory_request))
            if quantity is not None
        }
        if resource_requests:
            container["resources"] = {"requests": resource_requests}
        pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if self.service_account is not None:
            pod_spec["serviceAccountName"] = self.service_account
        job_spec: dict[str, Any] = {"backoffLimit": self.backoff_limit}
        if self.ttl_seconds_after_finished is not None:
            job_spec["ttlSecondsAfterFinished"] = self.ttl_seconds_after_finished
        if self.active_deadline_seconds is not None:
            job_spec["activeDeadlineSeconds"] = self.active_deadline_seconds
        job_spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
        manifest: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name(flow_run_id),
                "namespace": self.namespace,
                "labels": labels,
            },
            "spec": job_spec,
        }
        manifest = apply_json_patch(manifest, self.job_overrides)
        name = (manifest.get("metadata") or {}).get("name")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            raise ConfigurationError(
                f"job_overrides leave the Job named {name!r}, which is not a valid Job name; "
                "expected at most 63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit"
            )
        return manifest

    def start(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> Launched:
        """Create the Job in the cluster that the in-cluster config or the kubeconfig names."""
        manifest = self.launch_spec(flow_run_id, environment)
        kubernetes = _kubernetes()
        name = manifest["metadata"]["name"]
        namespace = manifest["metadata"].get("namespace") or self.namespace
        api_client = _api_client(kubernetes, flow_run_id)
        batch = kubernetes.client.BatchV1Api(api_client)
        try:
            batch.create_namespaced_job(namespace=namespace, body=manifest)
        except Exception as error:  # ApiException, urllib3 errors: the message says which
            raise InfrastructureError(
                f"KubernetesJob could not start flow run {flow_run_id}: cannot create Job "
                f"{name!r} in namespace {namespace!r} ({_describe(error)})"
            ) from None
        containers = manifest["spec"]["template"]["spec"].get("containers") or [{}]
        container = next(
            (item for item in containers if item.get("name") == CONTAINER_NAME), containers[0]
        )
        return LaunchedJob(api_client, name, namespace, container.get("name", CONTAINER_NAME))


class LaunchedJob(Launched):
    """A created Job; ``identifier`` is ``<namespace>/<job name>``."""

    def __init__(self, api_client: Any, name: str, namespace: str, container: str) -> None:
        self._api_client = api_client
        self._name = name
        self._namespace = namespace
        self._container = container
        self.identifier = f"{namespace}/{name}"
        self.description = f"Kubernetes Job {name} in namespace {namespace}"

    def poll(self) -> int | None:
        """None while the Job runs; once it is Complete or Failed, its pod's exit code (0 or 1
        when the pod has none to report)."""
        kubernetes = _kubernetes()
        batch = kubernetes.client.BatchV1Api(self._api_client)
        try:
            job = batch.read_namespaced_job_status(self._name, self._namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return UNKNOWN_EXIT_CODE  # deleted (its TTL, or someone else): code unknown
            raise self._error("read the state of", error) from None
        except Exception as error:
            raise self._error("read the state of", error) from None
        conditions = {
            condition.type
            for condition in (job.status.conditions or [])
            if condition.status == "True"
        }
        if "Complete" in conditions:
            fallback = 0
        elif "Failed" in conditions:
            fallback = 1
        else:
            return None
        exit_code = self._pod_exit_code(kubernetes)
        return fallback if exit_code is None else exit_code

    def _pod_exit_code(self, kubernetes: Any) -> int | None:
        core = kubernetes.client.CoreV1Api(self._api_client)
        try:
            pods = core.list_namespaced_pod(
                self._namespace, label_selector=f"job-name={self._name}"
            ).items
        except Exception:  # the Job's own condition still says how it ended
            return None
        pods.sort(key=lambda pod: str(pod.metadata.creation_timestamp or ""))
        for pod in reversed(pods):
            for status in pod.status.container_statuses or []:
                terminated = status.state.terminated if status.state else None
                if status.name == self._container and terminated is not None:
                    return int(terminated.exit_code)
        return None

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Delete the Job and, first, its pods (propagation Foreground); the pod gets
        ``grace_seconds`` between SIGTERM and SIGKILL."""
        kubernetes = _kubernetes()
        batch = kubernetes.client.BatchV1Api(self._api_client)
        try:
            batch.delete_namespaced_job(
                self._name,
                self._namespace,
                propagation_policy="Foreground",
                grace_period_seconds=max(0, math.ceil(grace_seconds)),
            )
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise self._error("delete", error) from None
        except Exception as error:
            raise self._error("delete", error) from None

    def _error(self, action: str, error: Exception) -> InfrastructureError:
        return InfrastructureError(
            f"KubernetesJob cannot {action} {self.description} ({_describe(error)})"
        )


def job_name(flow_run_id: uuid.UUID) -> str:
    """The Job's name for a run: ``vivace-<flow run id>``, a DNS-1123 label of 43 characters."""
    return f"vivace-{flow_run_id}"


def _api_client(kubernetes: Any, flow_run_id: uuid.UUID) -> Any:
    """A client for the cluster this process runs in, else for the kubeconfig's context."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException as in_cluster:
        try:
            # Read KUBECONFIG now: the client reads it once, when it is imported.
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config"),
                client_configuration=configuration,
            )
        except Exception as error:  # ConfigException, and YAML or file errors of a bad file
            raise InfrastructureError(
                f"KubernetesJob could not start flow run {flow_run_id}: no Kubernetes "
                f"configuration was found: not inside a cluster ({in_cluster}), and no usable "
                f"kubeconfig ({error}); expected KUBECONFIG or ~/.kube/config to name a "
                "cluster, or the worker to run in a pod"
            ) from None
    return kubernetes.client.ApiClient(configuration)


def _describe(error: Exception) -> str:
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    body = getattr(error, "body", None)
    if status is not None:
        detail = f"HTTP {status} {reason or ''}".strip()
        return f"{detail}: {body}" if body else detail
    return f"{type(error).__name__}: {error}"


def _check_label(key: str, value: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if (
        (slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)))
        or len(name) > 63
        or not _LABEL_NAME.fullmatch(name)
    ):
        raise ValueError(
            f"labels has {key!r}, which is not a Kubernetes label name; expected an optional "
            "DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'"
        )
    if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
        raise ValueError(
            f"labels sets {key!r} to {value!r}, which is not a Kubernetes label value; "
            "expected up to 63 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit"
        )


def _check_operation(index: int, operation: Any) -> None:
    where = f"job_overrides[{index}]"
    if not isinstance(operation, dict):
        raise ValueError(f"{where} is {operation!r}; expected an object with 'op' and 'path'")
    op = operation.get("op")
    if op not in _PATCH_OPS:
        raise ValueError(
            f"{where} has op {op!r}; expected one of {', '.join(_PATCH_OPS)} (RFC 6902)"
        )
    expected = {"op", "path", "value"} if op != "remove" else {"op", "path"}
    unknown = sorted(set(operation) - expected)
    if unknown:
        raise ValueError(
            f"{where} ({op}) has {', '.join(map(repr, unknown))}; expected only "
            f"{', '.join(sorted(expected))}"
        )
    if op != "remove" and "value" not in operation:
        raise ValueError(f"{where} ({op}) has no 'value'; expected the value to {op}")
    path = operation.get("path")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ValueError(
            f"{where} has path {path!r}, which is not a JSON pointer; expected e.g. "
            "'/spec/template/spec/nodeSelector'"
        )
    if op == "remove" and path == "":
        raise ValueError(f"{where} removes the whole manifest; expected a path inside it")


def apply_json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """``document`` (not changed) with the RFC 6902 ``add``/``replace``/``remove`` operations
    applied in order; ConfigurationError names the operation that does not apply."""
    result = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        _check_operation_or_raise(index, operation)
        op, path = operation["op"], operation["path"]
        value = copy.deepcopy(operation.get("value"))
        where = f"job_overrides[{index}] ({op} {path})"
        if path == "":
            result = value  # add or replace the whole document
            continue
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]
        parent: Any = result
        for depth, token in enumerate(tokens[:-1]):
            parent = _child(parent, token, where, "/" + "/".join(tokens[: depth + 1]))
        last = tokens[-1]
        if isinstance(parent, dict):
            if op != "add" and last not in parent:
                raise ConfigurationError(
                    f"{where}: the manifest has no {last!r} there to {op}; expected an "
                    f"existing key (keys there: {', '.join(sorted(map(str, parent))) or 'none'})"
                )
            if op == "remove":
                del parent[last]
            else:
                parent[last] = value
        elif isinstance(parent, list):
            if op == "add" and last == "-":
                parent.append(value)
                continue
            size = len(parent) + (1 if op == "add" else 0)
            if not _ARRAY_INDEX.fullmatch(last) or int(last) >= size:
                raise ConfigurationError(
                    f"{where}: {last!r} is not an index of a list of {len(parent)}; expected "
                    f"0 to {size - 1}" + (" or '-' to append" if op == "add" else "")
                )
            if op == "add":
                parent.insert(int(last), value)
            elif op == "replace":
                parent[int(last)] = value
            else:
                del parent[int(last)]
        else:
            raise ConfigurationError(
                f"{where}: {last!r} would go inside {parent!r}, which is not an object or a list"
            )
    return result


def _check_operation_or_raise(index: int, operation: Any) -> None:
    try:
        _check_operation(index, operation)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def _child(parent: Any, token: str, where: str, pointer: str) -> Any:
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list) and _ARRAY_INDEX.fullmatch(token) and int(token) < len(parent):
        return parent[int(token)]
    raise ConfigurationError(
        f"{where}: the manifest has nothing at {pointer}; expected the path to exist up to its "
        "last part (add the missing object first)"
    )
