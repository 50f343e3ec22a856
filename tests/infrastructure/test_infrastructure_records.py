"""DockerContainer, KubernetesJob and ECSTask as a deployment stores them (``to_record``) and as
blocks saved by name; and the error when their SDK is not installed."""

from __future__ import annotations

import sys
import uuid

import pytest

from vivace.blocks import Block
from vivace.exceptions import MissingExtraError
from vivace.infrastructure import (
    DockerContainer,
    ECSTask,
    Infrastructure,
    KubernetesJob,
    infrastructure_from_record,
    resolve_infrastructure,
)

CONFIGURED = [
    pytest.param(
        DockerContainer(
            image="flows:1.4",
            env={"A": "b"},
            volumes=["/srv/data:/data:ro"],
            network="flows",
            name="etl",
            labels={"team": "data"},
            auto_remove=True,
            image_pull_policy="always",
            mem_limit="2g",
            extra_hosts={"warehouse": "10.0.0.7"},
            docker_host="tcp://10.0.0.5:2376",
        ),
        id="docker",
    ),
    pytest.param(
        KubernetesJob(
            image="flows:1.4",
            namespace="flows",
            service_account="runner",
            job_overrides=[{"op": "add", "path": "/spec/parallelism", "value": 1}],
            labels={"team": "data"},
            env={"A": "b"},
            image_pull_policy="IfNotPresent",
            backoff_limit=1,
            ttl_seconds_after_finished=60,
            active_deadline_seconds=600,
            cpu_request="250m",
            memory_request="256Mi",
        ),
        id="kubernetes",
    ),
    pytest.param(
        ECSTask(
            cluster="flows",
            image="flows:1.4",
            cpu="512",
            memory="1024",
            subnets=["subnet-0a"],
            security_groups=["sg-0b"],
            assign_public_ip=True,
            execution_role_arn="arn:aws:iam::1:role/exec",
            task_role_arn="arn:aws:iam::1:role/task",
            region="eu-west-1",
            container_name="engine",
            family="etl",
            tags={"team": "data"},
            env={"A": "b"},
        ),
        id="ecs",
    ),
]


@pytest.mark.parametrize("infrastructure", CONFIGURED)
def test_record_round_trip(infrastructure: Infrastructure) -> None:
    record = infrastructure.to_record()
    assert record["type"] == infrastructure.type
    rebuilt = infrastructure_from_record(record)
    assert type(rebuilt) is type(infrastructure)
    assert rebuilt == infrastructure
    run_id = uuid.uuid4()
    assert rebuilt.launch_spec(run_id, {"X": "1"}) == infrastructure.launch_spec(run_id, {"X": "1"})


def test_saved_as_blocks_and_deployed_by_name(database_url: str) -> None:
    for index, param in enumerate(CONFIGURED):
        (infrastructure,) = param.values
        assert isinstance(infrastructure, Infrastructure)
        infrastructure.save(f"infra-{index}")
        assert Block.load(f"infra-{index}") == infrastructure
        assert resolve_infrastructure(f"block:infra-{index}") == infrastructure


def test_type_names_resolve_to_their_defaults() -> None:
    assert resolve_infrastructure("docker") == DockerContainer()
    assert resolve_infrastructure("kubernetes") == KubernetesJob()


@pytest.mark.parametrize(
    ("module", "infrastructure", "extra"),
    [
        pytest.param("docker", DockerContainer(), "docker", id="docker"),
        pytest.param("kubernetes", KubernetesJob(), "kubernetes", id="kubernetes"),
        pytest.param(
            "boto3", ECSTask(task_definition_arn="etl", launch_type="EC2"), "ecs", id="ecs"
        ),
    ],
)
def test_missing_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, infrastructure: Infrastructure, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingExtraError, match=rf"pip install 'vivace\[{extra}\]'"):
        infrastructure.start(uuid.uuid4(), {})
