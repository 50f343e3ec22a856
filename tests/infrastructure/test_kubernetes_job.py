"""KubernetesJob: the exact Job manifest, JSON Patch overrides, name rules, and start/poll/stop
over the kubernetes client, against a stub of the Kubernetes API (no cluster runs here) and
without any configuration."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from stub_api import Request, StubAPI

from vivace.exceptions import ConfigurationError, InfrastructureError
from vivace.infrastructure import KubernetesJob
from vivace.infrastructure.base import UNKNOWN_EXIT_CODE
from vivace.infrastructure.kubernetes import apply_json_patch, job_name

RUN_ID = uuid.UUID("0190f3a2-7c1e-7d4b-9a51-3f2e8b6c1d0a")
NAME = f"vivace-{RUN_ID}"
COMMAND = ["python", "-m", "vivace.engine", str(RUN_ID)]
LABELS = {"io.vivace.flow-run-id": str(RUN_ID)}


def test_manifest_of_the_defaults() -> None:
    manifest = KubernetesJob().launch_spec(RUN_ID, {"VIVACE_DATABASE_URL": "postgresql://db/v"})
    assert manifest == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": "default", "labels": LABELS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "vivace",
                            "image": "vivace",
                            "command": COMMAND,
                            "env": [{"name": "VIVACE_DATABASE_URL", "value": "postgresql://db/v"}],
                        }
                    ],
                },
            },
        },
    }


def test_manifest_of_every_field() -> None:
    job = KubernetesJob(
        image="registry.example.com/flows:1.4",
        namespace="flows",
        service_account="flow-runner",
        labels={"team": "data", "example.com/tier": "batch"},
        env={"EXTRA": "1", "VIVACE_LOGGING_LEVEL": "DEBUG"},
        image_pull_policy="Always",
        backoff_limit=2,
        ttl_seconds_after_finished=3600,
        active_deadline_seconds=7200,
        cpu_request="500m",
        memory_request="1Gi",
    )
    labels = {"team": "data", "example.com/tier": "batch", **LABELS}
    assert job.launch_spec(RUN_ID, {"VIVACE_LOGGING_LEVEL": "INFO", "A": "b"}) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": "flows", "labels": labels},
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": 7200,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "vivace",
                            "image": "registry.example.com/flows:1.4",
                            "command": COMMAND,
                            "env": [
                                {"name": "VIVACE_LOGGING_LEVEL", "value": "DEBUG"},
                                {"name": "A", "value": "b"},
                                {"name": "EXTRA", "value": "1"},
                            ],
                            "imagePullPolicy": "Always",
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                        }
                    ],
                    "serviceAccountName": "flow-runner",
                },
            },
        },
    }


def test_job_overrides_patch_the_manifest() -> None:
    job = KubernetesJob(
        job_overrides=[
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/example.com~1owner", "value": "data"},
            {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"pool": "etl"}},
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/resources",
                "value": {"limits": {"memory": "2Gi"}},
            },
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "proxy"}},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/0", "value": {"name": "X"}},
            {"op": "replace", "path": "/spec/backoffLimit", "value": 3},
            {"op": "remove", "path": "/spec/template/spec/restartPolicy"},
        ]
    )
    manifest = job.launch_spec(RUN_ID, {"A": "b"})
    assert manifest["metadata"]["annotations"] == {"example.com/owner": "data"}
    assert manifest["spec"]["backoffLimit"] == 3
    pod = manifest["spec"]["template"]["spec"]
    assert pod == {
        "containers": [
            {
                "name": "vivace",
                "image": "vivace",
                "command": COMMAND,
                "env": [{"name": "X"}, {"name": "A", "value": "b"}],
                "resources": {"limits": {"memory": "2Gi"}},
            },
            {"name": "proxy"},
        ],
        "nodeSelector": {"pool": "etl"},
    }


def test_patch_leaves_the_document_alone_and_handles_the_root() -> None:
    document = {"a": [1, 2], "b": {"c": 1}}
    patched = apply_json_patch(document, [{"op": "remove", "path": "/a/0"}])
    assert patched == {"a": [2], "b": {"c": 1}}
    assert document == {"a": [1, 2], "b": {"c": 1}}
    assert apply_json_patch(document, [{"op": "replace", "path": "", "value": [0]}]) == [0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param([{"op": "move", "path": "/a"}], "has op 'move'", id="unsupported-op"),
        pytest.param(["add"], "job_overrides.0\n  Input should be a valid dictionary", id="str"),
        pytest.param([{"op": "add", "path": "/spec/x"}], "has no 'value'", id="no-value"),
        pytest.param(
            [{"op": "remove", "path": "/spec/backoffLimit", "value": 1}], "'value'", id="extra"
        ),
        pytest.param([{"op": "add", "path": "spec", "value": 1}], "not a JSON pointer", id="ptr"),
        pytest.param([{"op": "remove", "path": ""}], "whole manifest", id="remove-root"),
        pytest.param(
            [{"op": "add", "path": "/spec/template/spek/nodeSelector", "value": {}}],
            "job_overrides[0] (add /spec/template/spek/nodeSelector): the manifest has nothing "
            "at /spec/template/spek",
            id="missing-parent",
        ),
        pytest.param(
            [{"op": "replace", "path": "/spec/parallelism", "value": 2}],
            "has no 'parallelism' there to replace",
            id="replace-missing",
        ),
        pytest.param(
            [{"op": "remove", "path": "/spec/template/spec/containers/1"}],
            "'1' is not an index of a list of 1",
            id="index-out-of-range",
        ),
        pytest.param(
            [{"op": "add", "path": "/spec/backoffLimit/x", "value": 1}],
            "'x' would go inside 0, which is not an object",
            id="into-a-number",
        ),
        pytest.param(
            [{"op": "replace", "path": "/metadata/name", "value": "Flow_Run"}],
            "leave the Job named 'Flow_Run'",
            id="bad-name",
        ),
    ],
)
def test_bad_overrides_fail_at_construction(overrides: list[Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        KubernetesJob(job_overrides=overrides)


def test_bad_override_raises_configuration_error_at_spec_time() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("job_overrides[1] (replace /x/y)")):
        apply_json_patch(
            {"x": {}},
            [
                {"op": "add", "path": "/a", "value": 1},
                {"op": "replace", "path": "/x/y", "value": 1},
            ],
        )


def test_job_name_is_a_dns_label() -> None:
    for run_id in (RUN_ID, uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)):
        name = job_name(run_id)
        assert len(name) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    renamed = KubernetesJob(
        job_overrides=[{"op": "replace", "path": "/metadata/name", "value": "nightly-etl"}]
    )
    assert renamed.launch_spec(RUN_ID, {})["metadata"]["name"] == "nightly-etl"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"namespace": "Flows"}, "namespace 'Flows' is not", id="namespace-case"),
        pytest.param({"namespace": "a" * 64}, "at most 63", id="namespace-long"),
        pytest.param({"service_account": "Runner"}, "not a service account", id="sa"),
        pytest.param({"labels": {"team": "data team"}}, "not a Kubernetes label value", id="val"),
        pytest.param({"labels": {"-team": "x"}}, "not a Kubernetes label name", id="key"),
        pytest.param({"labels": {"Example.com/x": "y"}}, "label name", id="key-prefix"),
        pytest.param({"labels": {"io.vivace.flow-run-id": "x"}}, "vivace sets", id="own-label"),
        pytest.param({"env": {"1X": "y"}}, "environment variable name", id="env"),
        pytest.param({"cpu_request": "half"}, "not a Kubernetes quantity", id="cpu"),
        pytest.param({"memory_request": "1 Gi"}, "not a Kubernetes quantity", id="memory"),
        pytest.param({"backoff_limit": -1}, "greater than or equal to 0", id="backoff"),
        pytest.param({"active_deadline_seconds": 0}, "greater than 0", id="deadline"),
        pytest.param({"image_pull_policy": "if_not_present"}, "IfNotPresent", id="pull-policy"),
        pytest.param({"image": ""}, "not an image reference", id="image"),
    ],
)
def test_invalid_fields_fail_at_construction(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        KubernetesJob(**fields)


def test_start_without_any_kube_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(InfrastructureError, match="no Kubernetes configuration") as raised:
        KubernetesJob().start(RUN_ID, {})
    assert str(RUN_ID) in str(raised.value) and "KUBECONFIG" in str(raised.value)


class StubCluster:
    """The Kubernetes API requests KubernetesJob makes, answered from a little state."""

    def __init__(self, api: StubAPI) -> None:
        self.job: dict[str, Any] | None = None
        self.pods: list[dict[str, Any]] = []
        jobs = "/apis/batch/v1/namespaces/flows/jobs"
        api.route("POST", jobs, self.create)
        api.route("GET", f"{jobs}/{NAME}/status", self.read)
        api.route("DELETE", f"{jobs}/{NAME}", self.delete)
        api.route("GET", "/api/v1/namespaces/flows/pods", self.list_pods)

    def create(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        self.job = {**request.body, "status": {}}
        return 201, self.job

    def read(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        if self.job is None:
            return 404, {"kind": "Status", "reason": "NotFound", "code": 404}
        return 200, self.job

    def delete(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        self.job = None
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def list_pods(self, match: re.Match[str], request: Request) -> tuple[int, Any]:
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.pods}

    def end(self, condition: str, exit_code: int | None) -> None:
        assert self.job is not None
        self.job["status"] = {"conditions": [{"type": condition, "status": "True"}]}
        self.pods = []
        if exit_code is not None:
            self.pods.append(
                {
                    "metadata": {
                        "name": f"{NAME}-abcde",
                        "creationTimestamp": "2025-01-01T00:00:00Z",
                    },
                    "status": {
                        "containerStatuses": [
                            {
                                "name": "vivace",
                                "image": "vivace",
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {"terminated": {"exitCode": exit_code}},
                            }
                        ]
                    },
                }
            )


@pytest.fixture
def kubeconfig(stub_api: StubAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StubAPI:
    """KUBECONFIG pointing at the stub API (outside any cluster)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": f"http://{stub_api.url}"}}],
        "users": [{"name": "tester", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "tester"}}],
        "current-context": "stub",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return stub_api


@pytest.mark.parametrize(
    ("condition", "pod_exit_code", "expected"),
    [
        pytest.param("Failed", 3, 3, id="failed-pod-code"),
        pytest.param("Complete", 0, 0, id="complete-pod-code"),
        pytest.param("Complete", None, 0, id="complete-no-pod"),
        pytest.param("Failed", None, 1, id="failed-no-pod"),
    ],
)
def test_start_poll_against_a_stub_api(
    kubeconfig: StubAPI, condition: str, pod_exit_code: int | None, expected: int
) -> None:
    cluster = StubCluster(kubeconfig)
    job = KubernetesJob(namespace="flows")
    environment = {"VIVACE_DATABASE_URL": "postgresql://db/v"}
    launched = job.start(RUN_ID, environment)
    assert launched.identifier == f"flows/{NAME}"
    (create,) = kubeconfig.sent("POST", "/apis/batch/v1/namespaces/flows/jobs")
    assert create.body == job.launch_spec(RUN_ID, environment)

    assert launched.poll() is None
    cluster.end(condition, pod_exit_code)
    assert launched.poll() == expected
    (pods,) = kubeconfig.sent("GET", "/api/v1/namespaces/flows/pods")
    assert pods.query == {"labelSelector": f"job-name={NAME}"}


def test_stop_deletes_the_job_in_the_foreground(kubeconfig: StubAPI) -> None:
    StubCluster(kubeconfig)
    launched = KubernetesJob(namespace="flows").start(RUN_ID, {})
    launched.stop(grace_seconds=4.2)
    (delete,) = kubeconfig.sent("DELETE", f"/apis/batch/v1/namespaces/flows/jobs/{NAME}")
    assert delete.query == {"gracePeriodSeconds": "5", "propagationPolicy": "Foreground"}
    assert launched.poll() == UNKNOWN_EXIT_CODE  # the Job is gone
    launched.stop()  # deleting a deleted Job is not an error


def test_create_refused_by_the_api(kubeconfig: StubAPI) -> None:
    kubeconfig.route(
        "POST",
        "/apis/batch/v1/namespaces/flows/jobs",
        lambda m, r: (403, {"kind": "Status", "message": "jobs.batch is forbidden"}),
    )
    with pytest.raises(InfrastructureError, match="cannot create Job") as raised:
        KubernetesJob(namespace="flows").start(RUN_ID, {})
    assert "403" in str(raised.value) and "forbidden" in str(raised.value)
