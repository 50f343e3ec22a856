"""``ECSTask``: a flow run as an Amazon ECS task (Fargate or EC2), started through boto3.

The launch spec is the two requests ``start`` sends, as boto3 keyword arguments:

- ``register_task_definition`` (None when ``task_definition_arn`` names an existing one): a
  task definition of one container, ``container_name``, from ``image``, in the family
  ``family`` (default: ``vivace-`` and the image's name, e.g. ``vivace-flows-1-4``), tagged
  with a digest of its own content. ``start`` reuses the family's latest revision when it
  carries the same digest, so runs of one deployment do not add a revision each.
- ``run_task``: one task of that definition, ``startedBy: "vivace"``, tagged
  ``io.vivace.flow-run-id=<id>`` (``aws ecs list-tasks --started-by vivace`` and the tags find
  it), whose ``containerOverrides`` run ``python -m vivace.engine <id>`` with the run's
  environment; on Fargate (and on EC2 when ``subnets`` are given) with an ``awsvpc`` network
  configuration. ``start`` sends exactly this request, except that when it registered (or
  reused) the task definition, ``taskDefinition`` names that revision's ARN instead of the
  family, so a revision registered meanwhile by someone else is never the one run.

The environment travels in the task's overrides, which anyone who can describe the task reads:
the database URL in it must be reachable from the task's subnets, and its password is visible
to the account's ECS readers (prefer an IAM-authenticated or secret-injected database URL).

``poll`` describes the task: once it is ``STOPPED`` it returns the container's ``exitCode``;
a task that stopped without one (its image could not be pulled, it was stopped before the
container ran, Fargate capacity ran out) returns ``UNKNOWN_EXIT_CODE`` (-1), and so does a task
ECS no longer knows. ``stop`` is ``stop_task``: ECS sends SIGTERM, then SIGKILL after the
container's ``stopTimeout`` (30 s unless the task definition says otherwise); ECS, not
``grace_seconds``, decides that wait.

Tested against moto's ECS server on 127.0.0.1, not against AWS.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vivace.exceptions import InfrastructureError, MissingExtraError
from vivace.infrastructure.base import (
    FLOW_RUN_LABEL,
    UNKNOWN_EXIT_CODE,
    Infrastructure,
    Launched,
    engine_command,
)

FLOW_RUN_TAG = FLOW_RUN_LABEL
DEFINITION_TAG = "io.vivace.task-definition-digest"
STARTED_BY = "vivace"
DEFAULT_CPU = "256"
DEFAULT_MEMORY = "512"

_ECS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SIZE = re.compile(r"[1-9][0-9]*")


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as error:
        raise MissingExtraError(
            f"ECSTask needs boto3, which is not installed ({error}); install it with: "
            "pip install 'vivace[ecs]'"
        ) from None
    return boto3


class ECSTask(Infrastructure):
    """A flow run as an ECS task; give ``image`` (a task definition is registered for it) or
    ``task_definition_arn`` (an existing one whose ``container_name`` container has vivace).

    ::

        ECSTask(
            cluster="flows",
            image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/flows:1.4",
            subnets=["subnet-0a1b2c3d"],
            security_groups=["sg-0a1b2c3d"],
            execution_role_arn="arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        ).save("ecs-flows")
    """

    type: ClassVar[str] = "ecs"

    cluster: str = Field(default="default", description="Cluster name or ARN.")
    task_definition_arn: str | None = Field(
        default=None,
        description="An existing task definition (ARN, family or family:revision) to run.",
    )
    image: str | None = Field(
        default=None, description="Image to register a task definition for (with vivace in it)."
    )
    cpu: str | None = Field(
        default=None,
        description=f"Task CPU units ('256' = 1/4 vCPU); default {DEFAULT_CPU} for a registered "
        "definition, else the definition's.",
    )
    memory: str | None = Field(
        default=None,
        description=f"Task memory in MiB; default {DEFAULT_MEMORY} for a registered definition, "
        "else the definition's.",
    )
    launch_type: Literal["FARGATE", "EC2"] = Field(
        default="FARGATE", description="FARGATE (serverless) or EC2 (the cluster's instances)."
    )
    subnets: list[str] = Field(
        default_factory=list, description="Subnets of the task's network interface (Fargate)."
    )
    security_groups: list[str] = Field(
        default_factory=list, description="Security groups; default: the VPC's default group."
    )
    assign_public_ip: bool = Field(
        default=False,
        description="Give the task a public IP (a Fargate task in a public subnet without a "
        "NAT gateway needs one to pull its image).",
    )
    execution_role_arn: str | None = Field(
        default=None, description="Role ECS uses to pull the image and write logs."
    )
    task_role_arn: str | None = Field(default=None, description="Role the flow's code runs as.")
    region: str | None = Field(
        default=None, description="AWS region; default: boto3's (AWS_DEFAULT_REGION, profile)."
    )
    container_name: str = Field(default="vivace", description="The container that runs the engine.")
    family: str | None = Field(
        default=None,
        description="Family of the registered task definition; default: from the image.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description=f"Task tags; {FLOW_RUN_TAG} is always added."
    )

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, value: str) -> str:
        if not value.startswith("arn:") and not _ECS_NAME.fullmatch(value):
            raise ValueError(
                f"cluster {value!r} is not an ECS cluster name or ARN; expected up to 255 "
                "letters, digits, '-' and '_', or an arn:aws:ecs:... ARN"
            )
        return value

    @field_validator("task_definition_arn", "image", "execution_role_arn", "task_role_arn")
    @classmethod
    def _check_reference(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is empty or has spaces; expected an ARN or a name")
        return value

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _check_size(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not _SIZE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an ECS size; expected CPU units (1024 per vCPU) or MiB, "
                "such as '256' or '2048'"
            )
        return value

    @field_validator("subnets")
    @classmethod
    def _check_subnets(cls, value: list[str]) -> list[str]:
        return _check_ids(value, "subnets", "subnet-")

    @field_validator("security_groups")
    @classmethod
    def _check_security_groups(cls, value: list[str]) -> list[str]:
        return _check_ids(value, "security_groups", "sg-")

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]+", value):
            raise ValueError(f"region {value!r} is not an AWS region; expected e.g. 'eu-west-1'")
        return value

    @field_validator("container_name", "family")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _ECS_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an ECS name; expected up to 255 letters, digits, '-' and '_'"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            if key in (FLOW_RUN_TAG, DEFINITION_TAG):
                raise ValueError(f"tags sets {key!r}, which vivace sets; expected other keys")
            if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
                raise ValueError(
                    f"tags has key {key!r}; expected 1 to 128 characters, not starting with 'aws:'"
                )
            if len(tag_value) > 256:
                raise ValueError(f"tags sets {key!r} to a value longer than 256 characters")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> ECSTask:
        if (self.image is None) == (self.task_definition_arn is None):
            raise ValueError(
                "ECSTask needs exactly one of image (a task definition is registered for it) "
                "and task_definition_arn (an existing task definition); "
                + ("both were given" if self.image is not None else "neither was given")
            )
        if self.family is not None and self.image is None:
            raise ValueError(
                "family names the task definition registered for image; with "
                "task_definition_arn nothing is registered, so expected no family"
            )
        if self.launch_type == "FARGATE" and not self.subnets:
            raise ValueError(
                "a FARGATE task needs at least one subnet for its network interface; expected "
                "subnets=['subnet-...'] (and security_groups, or the VPC's default group is used)"
            )
        return self

    def task_definition_family(self) -> str | None:
        """The family registered for ``image`` (None with ``task_definition_arn``)."""
        if self.image is None:
            return None
        if self.family is not None:
            return self.family
        name = self.image.rsplit("/", 1)[-1].split("@", 1)[0]
        return ("vivace-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-"))[:255]

    def launch_spec(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> dict[str, Any]:
        """``{"register_task_definition": request or None, "run_task": request}``: the boto3
        ECS requests ``start`` sends (see the module docstring for ``taskDefinition``)."""
        awsvpc = self.launch_type == "FARGATE" or bool(self.subnets)
        register: dict[str, Any] | None = None
        family = self.task_definition_family()
        if family is not None:
            memory = self.memory or DEFAULT_MEMORY
            register = {
                "family": family,
                # The one container may use all the task's memory. Saying so at the container
                # too is what moto needs (AWS needs it at the task or the container).
                "containerDefinitions": [
                    {
                        "name": self.container_name,
                        "image": self.image,
                        "essential": True,
                        "memory": int(memory),
                    }
                ],
                "requiresCompatibilities": [self.launch_type],
                "networkMode": "awsvpc" if awsvpc else "bridge",
                "cpu": self.cpu or DEFAULT_CPU,
                "memory": memory,
            }
            for key, value in (
                ("executionRoleArn", self.execution_role_arn),
                ("taskRoleArn", self.task_role_arn),
            ):
                if value is not None:
                    register[key] = value
            register["tags"] = [{"key": DEFINITION_TAG, "value": _digest(register)}]
        overrides: dict[str, Any] = {
            "containerOverrides": [
                {
                    "name": self.container_name,
                    "command": engine_command(flow_run_id),
                    "environment": [
                        {"name": name, "value": value}
                        for name, value in self.environment(environment).items()
                    ],
                }
            ]
        }
        if register is None:  # resize an existing definition only when asked to
            overrides.update(
                (key, value) for key, value in (("cpu", self.cpu), ("memory", self.memory)) if value
            )
        run_task: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition_arn or family,
            "launchType": self.launch_type,
            "count": 1,
            "startedBy": STARTED_BY,
            "overrides": overrides,
        }
        if awsvpc:
            network: dict[str, Any] = {"subnets": list(self.subnets)}
            if self.security_groups:
                network["securityGroups"] = list(self.security_groups)
            network["assignPublicIp"] = "ENABLED" if self.assign_public_ip else "DISABLED"
            run_task["networkConfiguration"] = {"awsvpcConfiguration": network}
        run_task["tags"] = [
            {"key": FLOW_RUN_TAG, "value": str(flow_run_id)},
            *({"key": key, "value": value} for key, value in self.tags.items()),
        ]
        return {"register_task_definition": register, "run_task": run_task}

    def start(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> Launched:
        """Register the task definition (or reuse an identical revision), then run the task."""
        spec = self.launch_spec(flow_run_id, environment)
        boto3 = _boto3()
        from botocore.exceptions import BotoCoreError, ClientError

        def error(problem: str) -> InfrastructureError:
            return InfrastructureError(
                f"ECSTask could not start flow run {flow_run_id} in cluster {self.cluster!r}: "
                f"{problem}"
            )

        try:
            client = boto3.client("ecs", region_name=self.region)
        except BotoCoreError as failure:
            raise error(f"cannot make an ECS client ({failure})") from None
        run_task = dict(spec["run_task"])
        register = spec["register_task_definition"]
        if register is not None:
            try:
                run_task["taskDefinition"] = _task_definition(client, register)
            except (BotoCoreError, ClientError) as failure:
                raise error(
                    f"cannot register a task definition in family {register['family']!r} "
                    f"({failure})"
                ) from None
        try:
            response = client.run_task(**run_task)
        except (BotoCoreError, ClientError) as failure:
            raise error(f"run_task failed ({failure})") from None
        failures = response.get("failures") or []
        tasks = response.get("tasks") or []
        if failures or not tasks:
            reasons = "; ".join(
                f"{item.get('arn', 'task')}: {item.get('reason', 'no reason')}"
                + (f" ({item['detail']})" if item.get("detail") else "")
                for item in failures
            )
            raise error(f"ECS did not start the task ({reasons or 'no task and no failure'})")
        return LaunchedTask(
            client, self.cluster, tasks[0]["taskArn"], self.container_name, flow_run_id
        )


class LaunchedTask(Launched):
    """A started ECS task; ``identifier`` is its ARN."""

    def __init__(
        self, client: Any, cluster: str, task_arn: str, container: str, flow_run_id: uuid.UUID
    ) -> None:
        self._client = client
        self._cluster = cluster
        self._container = container
        self._flow_run_id = flow_run_id
        self.identifier = task_arn
        self.description = f"ECS task {task_arn.rsplit('/', 1)[-1]} in cluster {cluster}"

    def poll(self) -> int | None:
        """None until the task is STOPPED; then its container's exit code (see the module
        docstring for -1)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.describe_tasks(cluster=self._cluster, tasks=[self.identifier])
        except (BotoCoreError, ClientError) as failure:
            raise InfrastructureError(
                f"ECSTask cannot read the state of {self.description} ({failure})"
            ) from None
        tasks = response.get("tasks") or []
        if not tasks:
            return UNKNOWN_EXIT_CODE  # ECS no longer knows the task (failures: MISSING)
        task = tasks[0]
        if task.get("lastStatus") != "STOPPED":
            return None
        for container in task.get("containers") or []:
            if container.get("name") == self._container and container.get("exitCode") is not None:
                return int(container["exitCode"])
        return UNKNOWN_EXIT_CODE

    def stop(self, grace_seconds: float = 10.0) -> None:
        """``stop_task``; ECS waits the container's ``stopTimeout``, not ``grace_seconds``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.stop_task(
                cluster=self._cluster,
                task=self.identifier,
                reason=f"stopped by vivace: flow run {self._flow_run_id} was cancelled",
            )
        except (BotoCoreError, ClientError) as failure:
            raise InfrastructureError(
                f"ECSTask cannot stop {self.description} ({failure})"
            ) from None


def _task_definition(client: Any, register: dict[str, Any]) -> str:
    """The ARN of the family's latest revision if it is this definition, else of a new one."""
    from botocore.exceptions import ClientError

    digest = register["tags"][0]["value"]
    try:
        found = client.describe_task_definition(taskDefinition=register["family"], include=["TAGS"])
    except ClientError:
        found = None  # no such family yet: register its first revision
    if found is not None and found["taskDefinition"].get("status") == "ACTIVE":
        tags = {tag.get("key"): tag.get("value") for tag in found.get("tags") or []}
        if tags.get(DEFINITION_TAG) == digest:
            arn: str = found["taskDefinition"]["taskDefinitionArn"]
            return arn
    registered: str = client.register_task_definition(**register)["taskDefinition"][
        "taskDefinitionArn"
    ]
    return registered


def _digest(request: dict[str, Any]) -> str:
    content = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def _check_ids(value: list[str], field: str, prefix: str) -> list[str]:
    for item in value:
        if not item.startswith(prefix) or any(c.isspace() for c in item):
            raise ValueError(f"{field} has {item!r}; expected ids such as '{prefix}0a1b2c3d'")
    return value
