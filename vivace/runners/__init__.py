"""Task runners. Dask and Ray runners are imported only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vivace.runners.base import TaskRunner
from vivace.runners.concurrent import ConcurrentTaskRunner
from vivace.runners.sequential import SequentialTaskRunner

if TYPE_CHECKING:
    from vivace.runners.dask import DaskTaskRunner
    from vivace.runners.ray import RayTaskRunner

__all__ = [
    "ConcurrentTaskRunner",
    "DaskTaskRunner",
    "RayTaskRunner",
    "SequentialTaskRunner",
    "TaskRunner",
]


def __getattr__(name: str) -> Any:
    # ``from vivace.runners import DaskTaskRunner`` (or RayTaskRunner) imports the runner's module
    # only then; the runner itself imports dask (ray) when it is constructed.
    if name == "DaskTaskRunner":
        from vivace.runners.dask import DaskTaskRunner

        return DaskTaskRunner
    if name == "RayTaskRunner":
        from vivace.runners.ray import RayTaskRunner

        return RayTaskRunner
    raise AttributeError(f"module 'vivace.runners' has no attribute {name!r}")
