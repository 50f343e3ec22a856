"""Infrastructure a worker starts deployment flow runs on: processes, containers, Kubernetes Jobs,
ECS tasks. The classes are imported on first use (``from vivace.infrastructure import Process``),
so the docker, kubernetes and boto3 packages load only when a worker or a deploy needs them.
"""

from __future__ import annotations

from typing import Any

from vivace.infrastructure.base import (
    INFRASTRUCTURE_TYPES,
    Infrastructure,
    Launched,
    engine_command,
    infrastructure_class,
    infrastructure_from_record,
    resolve_infrastructure,
)

_LAZY = {
    "Process": "process",
    "DockerContainer": "docker",
    "KubernetesJob": "kubernetes",
    "ECSTask": "ecs",
}

__all__ = [
    "INFRASTRUCTURE_TYPES",
    "DockerContainer",
    "ECSTask",
    "Infrastructure",
    "KubernetesJob",
    "Launched",
    "Process",
    "engine_command",
    "infrastructure_class",
    "infrastructure_from_record",
    "resolve_infrastructure",
]


def __getattr__(name: str) -> Any:
    type_name = _LAZY.get(name)
    if type_name is None:
        raise AttributeError(f"module 'vivace.infrastructure' has no attribute {name!r}")
    return infrastructure_class(type_name)
