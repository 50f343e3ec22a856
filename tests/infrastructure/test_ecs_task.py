"""ECSTask: the exact boto3 requests, validation, and start/poll/stop against a real moto server
process (the ``moto_server`` fixture), which implements the ECS API in memory.

What moto 5.2.5 does and does not do, as these tests found it:

- Fargate ``run_task`` works without any instance, with an ``awsvpc`` network configuration
  whose subnet exists in moto's EC2 and whose VPC has DNS hostnames enabled (moto needs that to
  make the task's network interface). EC2 ``run_task`` needs a registered container instance.
- Nothing runs: a task is RUNNING, then moves one status further on each ``describe_tasks``
  (DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED) unless moto's state manager holds it, and
  its container's ``exitCode`` is always 0. The tests that stop a task hold it RUNNING through
  ``/moto-api/state-manager`` so what they see follows from what they did.
- moto never answers ``run_task`` with ``failures``; that answer is tested with botocore's
  Stubber, not moto.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import ValidationError

from vivace.exceptions import InfrastructureError
from vivace.infrastructure import ECSTask
from vivace.infrastructure.base import UNKNOWN_EXIT_CODE
from vivace.infrastructure.ecs import DEFINITION_TAG, LaunchedTask

RUN_ID = uuid.UUID("0190f3a2-7c1e-7d4b-9a51-3f2e8b6c1d0a")
COMMAND = ["python", "-m", "vivace.engine", str(RUN_ID)]
ENVIRONMENT = {"VIVACE_DATABASE_URL": "postgresql+psycopg://vivace@db.internal/vivace"}


def test_spec_registers_a_task_definition_for_an_image() -> None:
    task = ECSTask(
        cluster="flows",
        image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/flows:1.4",
        cpu="512",
        memory=1024,
        subnets=["subnet-0a", "subnet-0b"],
        security_groups=["sg-0c"],
        assign_public_ip=True,
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        task_role_arn="arn:aws:iam::123456789012:role/task",
        env={"EXTRA": "1"},
        tags={"team": "data"},
    )
    spec = task.launch_spec(RUN_ID, ENVIRONMENT)
    register = spec["register_task_definition"]
    digest = register["tags"][0]["value"]
    assert re.fullmatch(r"[0-9a-f]{32}", digest)
    assert register == {
        "family": "vivace-flows-1-4",
        "containerDefinitions": [
            {
                "name": "vivace",
                "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/flows:1.4",
                "essential": True,
                "memory": 1024,
            }
        ],
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "512",
        "memory": "1024",
        "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
        "taskRoleArn": "arn:aws:iam::123456789012:role/task",
        "tags": [{"key": DEFINITION_TAG, "value": digest}],
    }
    assert spec["run_task"] == {
        "cluster": "flows",
        "taskDefinition": "vivace-flows-1-4",
        "launchType": "FARGATE",
        "count": 1,
        "startedBy": "vivace",
        "overrides": {
            "containerOverrides": [
                {
                    "name": "vivace",
                    "command": COMMAND,
                    "environment": [
                        {
                            "name": "VIVACE_DATABASE_URL",
                            "value": ENVIRONMENT["VIVACE_DATABASE_URL"],
                        },
                        {"name": "EXTRA", "value": "1"},
                    ],
                }
            ]
        },
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-0a", "subnet-0b"],
                "securityGroups": ["sg-0c"],
                "assignPublicIp": "ENABLED",
            }
        },
        "tags": [
            {"key": "io.vivace.flow-run-id", "value": str(RUN_ID)},
            {"key": "team", "value": "data"},
        ],
    }
    # The digest follows the definition's content, and only that.
    assert task.launch_spec(uuid.uuid4(), {})["register_task_definition"] == register
    resized = task.model_copy(update={"cpu": "1024"}).launch_spec(RUN_ID, ENVIRONMENT)
    assert resized["register_task_definition"]["tags"][0]["value"] != digest


def test_spec_runs_an_existing_task_definition_on_ec2() -> None:
    task = ECSTask(
        task_definition_arn="arn:aws:ecs:us-east-1:123456789012:task-definition/etl:7",
        launch_type="EC2",
        memory="2048",
        container_name="engine",
    )
    assert task.launch_spec(RUN_ID, {}) == {
        "register_task_definition": None,
        "run_task": {
            "cluster": "default",
            "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/etl:7",
            "launchType": "EC2",
            "count": 1,
            "startedBy": "vivace",
            "overrides": {
                "containerOverrides": [{"name": "engine", "command": COMMAND, "environment": []}],
                "memory": "2048",
            },
            "tags": [{"key": "io.vivace.flow-run-id", "value": str(RUN_ID)}],
        },
    }


@pytest.mark.parametrize(
    ("image", "family"),
    [
        pytest.param("flows", "vivace-flows", id="name"),
        pytest.param("registry:5000/a/b/flows:2024.06", "vivace-flows-2024-06", id="registry"),
        pytest.param("flows@sha256:0123abcd", "vivace-flows", id="digest"),
    ],
)
def test_family_is_derived_from_the_image(image: str, family: str) -> None:
    task = ECSTask(image=image, launch_type="EC2")
    assert task.task_definition_family() == family
    assert ECSTask(image=image, family="etl", launch_type="EC2").task_definition_family() == "etl"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({}, "exactly one of image", id="neither"),
        pytest.param(
            {"image": "a", "task_definition_arn": "b", "subnets": ["subnet-1"]},
            "both were given",
            id="both",
        ),
        pytest.param({"image": "flows"}, "FARGATE task needs at least one subnet", id="subnets"),
        pytest.param(
            {"task_definition_arn": "etl", "family": "x", "launch_type": "EC2"},
            "expected no family",
            id="family",
        ),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "cpu": "1 vCPU"}, "not an ECS size", id="cpu"
        ),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "memory": 0}, "not an ECS size", id="mem"
        ),
        pytest.param({"image": "a", "subnets": ["10.0.0.0/24"]}, "'subnet-0a1b2c3d'", id="subnet"),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "security_groups": ["default"]}, "'sg-", id="sg"
        ),
        pytest.param({"image": "a", "launch_type": "EC2S"}, "'FARGATE' or 'EC2'", id="launch"),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "cluster": "my cluster"}, "cluster", id="cl"
        ),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "container_name": "a.b"}, "ECS name", id="c"
        ),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "tags": {"io.vivace.flow-run-id": "x"}},
            "vivace sets",
            id="own-tag",
        ),
        pytest.param(
            {"image": "a", "launch_type": "EC2", "tags": {"aws:x": "y"}}, "aws:", id="aws"
        ),
        pytest.param({"image": "a", "launch_type": "EC2", "region": "EU West"}, "region", id="rg"),
        pytest.param({"image": "my image", "launch_type": "EC2"}, "has spaces", id="image"),
    ],
)
def test_invalid_fields_fail_at_construction(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ECSTask(**fields)


@dataclass
class MotoECS:
    endpoint: str
    ecs: Any
    cluster: str
    subnet: str
    security_group: str

    def task(self, **fields: Any) -> ECSTask:
        fields.setdefault("image", "flows:1.4")
        return ECSTask(
            cluster=self.cluster,
            subnets=[self.subnet],
            security_groups=[self.security_group],
            **fields,
        )

    def describe(self, task_arn: str) -> dict[str, Any]:
        (task,) = self.ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn], include=["TAGS"])[
            "tasks"
        ]
        return dict(task)


@pytest.fixture
def moto_ecs(moto_server: str) -> MotoECS:
    """A cluster of this test's own, and a subnet and security group for its Fargate tasks."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName=f"flows-{uuid.uuid4().hex[:8]}", Description="flows", VpcId=vpc
    )["GroupId"]
    ecs = boto3.client("ecs")
    cluster = f"flows-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    return MotoECS(moto_server, ecs, cluster, subnet, group)


@pytest.fixture
def held_tasks(moto_ecs: MotoECS) -> Iterator[None]:
    """Moto's ECS tasks stay RUNNING until stopped (not one status further per describe)."""
    _moto_api(
        moto_ecs.endpoint,
        "set-transition",
        {
            "model_name": "ecs::task",
            "transition": {"progression": "manual", "times": 10**9},
        },
    )
    try:
        yield
    finally:
        _moto_api(moto_ecs.endpoint, "unset-transition", {"model_name": "ecs::task"})


def _moto_api(endpoint: str, action: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/{action}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def test_start_poll_stop_on_moto(moto_ecs: MotoECS, held_tasks: None) -> None:
    task = moto_ecs.task(tags={"team": "data"})
    spec = task.launch_spec(RUN_ID, ENVIRONMENT)
    launched = task.start(RUN_ID, ENVIRONMENT)
    assert launched.identifier.startswith("arn:aws:ecs:us-east-1:")
    assert launched.description.startswith("ECS task ")

    described = moto_ecs.describe(launched.identifier)
    assert described["lastStatus"] == "RUNNING"
    assert described["launchType"] == "FARGATE"
    assert described["startedBy"] == "vivace"
    assert described["overrides"] == spec["run_task"]["overrides"]
    assert described["tags"] == spec["run_task"]["tags"]
    assert described["clusterArn"].endswith(f":cluster/{moto_ecs.cluster}")
    definition = moto_ecs.ecs.describe_task_definition(
        taskDefinition=described["taskDefinitionArn"], include=["TAGS"]
    )
    assert definition["taskDefinition"]["family"] == "vivace-flows-1-4"
    assert definition["taskDefinition"]["networkMode"] == "awsvpc"
    assert definition["tags"] == spec["register_task_definition"]["tags"]
    found = moto_ecs.ecs.list_tasks(cluster=moto_ecs.cluster, startedBy="vivace")["taskArns"]
    assert found == [launched.identifier]

    assert launched.poll() is None
    assert launched.poll() is None
    launched.stop(grace_seconds=5)
    stopped = moto_ecs.describe(launched.identifier)
    assert stopped["lastStatus"] == "STOPPED"
    assert stopped["stoppedReason"] == f"stopped by vivace: flow run {RUN_ID} was cancelled"
    assert launched.poll() == 0  # moto's containers always exit 0


def test_task_definition_is_reused_until_it_changes(moto_ecs: MotoECS, held_tasks: None) -> None:
    task = moto_ecs.task(family=f"etl-{uuid.uuid4().hex[:8]}")
    arns = [
        moto_ecs.describe(task.start(uuid.uuid4(), {}).identifier)["taskDefinitionArn"]
        for _ in range(2)
    ]
    resized = task.model_copy(update={"memory": "1024"})
    arns.append(moto_ecs.describe(resized.start(uuid.uuid4(), {}).identifier)["taskDefinitionArn"])
    assert arns[0] == arns[1] != arns[2]
    assert [arn.rsplit(":", 1)[1] for arn in arns] == ["1", "1", "2"]


def test_task_that_ends_by_itself_reports_its_exit_code(moto_ecs: MotoECS) -> None:
    launched = moto_ecs.task().start(RUN_ID, ENVIRONMENT)
    # moto moves the task one status on per describe: RUNNING ... STOPPED within four polls.
    codes = [launched.poll() for _ in range(6)]
    assert None in codes[:3]
    assert codes[-1] == 0


def test_existing_task_definition_on_ec2_instances(moto_ecs: MotoECS, held_tasks: None) -> None:
    registered = moto_ecs.ecs.register_task_definition(
        family=f"etl-{uuid.uuid4().hex[:8]}",
        containerDefinitions=[{"name": "engine", "image": "flows:2", "memory": 256}],
        requiresCompatibilities=["EC2"],
    )["taskDefinition"]["taskDefinitionArn"]
    ec2 = boto3.client("ec2")
    ecs_optimized = [{"Name": "name", "Values": ["amzn2-ami-ecs-hvm-*"]}]
    image_id = ec2.describe_images(Owners=["amazon"], Filters=ecs_optimized)["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    moto_ecs.ecs.register_container_instance(
        cluster=moto_ecs.cluster,
        instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"]}),
    )
    task = ECSTask(
        cluster=moto_ecs.cluster,
        task_definition_arn=registered,
        launch_type="EC2",
        container_name="engine",
        memory="512",
    )
    launched = task.start(RUN_ID, {"A": "b"})
    described = moto_ecs.describe(launched.identifier)
    assert described["taskDefinitionArn"] == registered
    assert described["launchType"] == "EC2"
    assert described["containerInstanceArn"]
    assert described["overrides"] == {
        "containerOverrides": [
            {"name": "engine", "command": COMMAND, "environment": [{"name": "A", "value": "b"}]}
        ],
        "memory": "512",
    }
    launched.stop()
    assert launched.poll() == 0


def test_errors_from_ecs_name_the_cluster(moto_server: str) -> None:
    task = ECSTask(cluster="no-such-cluster", task_definition_arn="etl", launch_type="EC2")
    with pytest.raises(InfrastructureError, match="in cluster 'no-such-cluster'") as raised:
        task.start(RUN_ID, {})
    assert "run_task failed" in str(raised.value) and str(RUN_ID) in str(raised.value)


def test_poll_of_a_task_ecs_does_not_know(moto_ecs: MotoECS) -> None:
    unknown = f"arn:aws:ecs:us-east-1:123456789012:task/{moto_ecs.cluster}/{uuid.uuid4()}"
    launched = LaunchedTask(moto_ecs.ecs, moto_ecs.cluster, unknown, "vivace", RUN_ID)
    assert launched.poll() == UNKNOWN_EXIT_CODE


def test_run_task_failures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client(
        "ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    task = ECSTask(cluster="flows", task_definition_arn="etl:3", launch_type="EC2")
    stubber = Stubber(client)
    stubber.add_response(
        "run_task",
        {
            "tasks": [],
            "failures": [
                {"arn": "arn:aws:ecs:us-east-1:1:container-instance/x", "reason": "RESOURCE:MEMORY"}
            ],
        },
        task.launch_spec(RUN_ID, {})["run_task"],
    )
    monkeypatch.setattr(boto3, "client", lambda *args, **kwargs: client)
    with stubber, pytest.raises(InfrastructureError, match="ECS did not start the task") as raised:
        task.start(RUN_ID, {})
    assert "RESOURCE:MEMORY" in str(raised.value)
