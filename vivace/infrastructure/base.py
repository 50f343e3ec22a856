"""What every infrastructure does: turn a flow run into a launch spec, start, watch and stop it.

An infrastructure is a Block (save one by name and deploy with ``--infra block:NAME``) with a
``type`` that a worker of that type serves. For a flow run it builds a *launch spec*, the exact
thing it would start (a process's argv and environment, a container's create arguments, a
Kubernetes Job manifest, an ECS RunTask request), and ``start`` launches it and returns a
:class:`Launched` handle the worker polls for an exit code and can stop. What runs inside is always
``python -m vivace.engine <flow_run_id>`` (:func:`engine_command`).

``environment`` is what the worker hands every run: the database URL and the settings the engine
needs; the infrastructure's own ``env`` is laid over it.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import Field

from vivace.blocks.core import Block
from vivace.exceptions import ConfigurationError

INFRASTRUCTURE_TYPES = {
    "process": "vivace.infrastructure.process:Process",
    "docker": "vivace.infrastructure.docker:DockerContainer",
    "kubernetes": "vivace.infrastructure.kubernetes:KubernetesJob",
    "ecs": "vivace.infrastructure.ecs:ECSTask",
}


UNKNOWN_EXIT_CODE = -1
"""What :meth:`Launched.poll` returns for infrastructure that ended without reporting an exit code
(an ECS task stopped before its container ran, a container or Job deleted by someone else)."""

DEFAULT_IMAGE = "vivace"
"""The image a container or Job runs by default: what the repository's Dockerfile builds."""

FLOW_RUN_LABEL = "io.vivace.flow-run-id"
"""The label (a tag on ECS) that names the flow run on its container, Job or task, so that
``docker ps``, ``kubectl`` or ``aws ecs`` find a run's infrastructure by the run's id."""


def engine_command(flow_run_id: uuid.UUID, python: str = "python") -> list[str]:
    """The command that runs a deployment's flow run inside any infrastructure."""
    return [python, "-m", "vivace.engine", str(flow_run_id)]


def check_image(value: str) -> str:
    """``value`` if it can be an image reference (not empty, no white space), else ValueError
    (for a field validator)."""
    if not value or any(character.isspace() for character in value):
        raise ValueError(
            f"image {value!r} is not an image reference; expected e.g. 'vivace' or "
            "'registry.example.com/team/flows:1.4'"
        )
    return value


def check_label_not_reserved(key: str) -> None:
    """Raise ValueError (for a field validator) if a ``labels`` key is :data:`FLOW_RUN_LABEL`,
    which vivace sets itself."""
    if key == FLOW_RUN_LABEL:
        raise ValueError(
            f"labels sets {FLOW_RUN_LABEL!r}, which vivace sets to the flow run's id; "
            "expected other label names"
        )


class Launched(ABC):
    """A started flow run's infrastructure, as the worker watches it."""

    identifier: str
    """What was started, for messages and the run's ``infrastructure_id``: a pid, a container id,
    a job name, a task ARN."""

    description: str
    """``"process 1234"``, ``"container 3f2a..."``: how messages name it."""

    @abstractmethod
    def poll(self) -> int | None:
        """The exit code once it has ended, else None (never blocks for long)."""

    @abstractmethod
    def stop(self, grace_seconds: float = 10.0) -> None:
        """Ask it to stop (SIGTERM or its equivalent), and force it after ``grace_seconds``."""


class Infrastructure(Block, ABC):
    """Where a worker starts a flow run; see the module docstring."""

    type: ClassVar[str] = ""
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the run, over the worker's."
    )

    @abstractmethod
    def launch_spec(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> dict[str, Any]:
        """Exactly what ``start`` would launch for this run (JSON-able)."""

    @abstractmethod
    def start(self, flow_run_id: uuid.UUID, environment: dict[str, str]) -> Launched:
        """Launch the run; raises InfrastructureError when it cannot be started."""

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """The run's environment: the worker's ``base``, this infrastructure's ``env`` over it."""
        return {**base, **self.env}

    def to_record(self) -> dict[str, Any]:
        """What a deployment stores: the type and the fields (secrets stay encrypted in blocks;
        an infrastructure in a deployment should not carry any)."""
        return {"type": self.type, **self.model_dump(mode="json")}


def infrastructure_class(type_name: str) -> type[Infrastructure]:
    """The class of an infrastructure type (``process``, ``docker``, ``kubernetes``, ``ecs``)."""
    import importlib

    path = INFRASTRUCTURE_TYPES.get(type_name)
    if path is None:
        raise ConfigurationError(
            f"infrastructure type {type_name!r} is not known; expected one of "
            + ", ".join(INFRASTRUCTURE_TYPES)
        )
    module, _, name = path.partition(":")
    found: type[Infrastructure] = getattr(importlib.import_module(module), name)
    return found


def infrastructure_from_record(record: dict[str, Any]) -> Infrastructure:
    """Rebuild the infrastructure a deployment stored (``to_record``)."""
    fields = dict(record)
    type_name = str(fields.pop("type", "process"))
    return infrastructure_class(type_name).model_validate(fields)


def resolve_infrastructure(value: Infrastructure | str | None) -> Infrastructure:
    """An infrastructure given to ``deploy``: an object, a type name (its defaults), or
    ``block:NAME`` of a saved one; None is a local Process."""
    if value is None:
        value = "process"
    if isinstance(value, Infrastructure):
        return value
    if isinstance(value, str):
        if value.startswith("block:"):
            loaded = Block.load(value[len("block:") :])
            if not isinstance(loaded, Infrastructure):
                raise ConfigurationError(
                    f"block {value[len('block:') :]!r} is a {type(loaded).__name__}, not an "
                    "infrastructure; expected Process, DockerContainer, KubernetesJob or ECSTask"
                )
            return loaded
        return infrastructure_class(value)()
    raise ConfigurationError(
        f"infrastructure {value!r} is not valid; expected an Infrastructure object, one of "
        + ", ".join(INFRASTRUCTURE_TYPES)
        + ", or block:NAME"
    )
