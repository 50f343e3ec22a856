"""Task runners. Dask and Ray runners are imported only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vivace.runners.base import TaskRunner
from vivace.runners.concurrent import ConcurrentTaskRunner
from vivace.runners.sequential import SequentialTaskRunner

if TYPE_CHECKING:
    from vivace.runners.dask import DaskTaskRunner

__all__ = ["ConcurrentTaskRunner", "DaskTaskRunner", "SequentialTaskRunner", "TaskRunner"]


def __getattr__(name: str) -> Any:
    # ``from vivace.runners import DaskTaskRunner`` imports the runner's module only then; the
    # runner itself imports dask when it is constructed.
    if name == "DaskTaskRunner":
        from vivace.runners.dask import DaskTaskRunner

        return DaskTaskRunner
    raise AttributeError(f"module 'vivace.runners' has no attribute {name!r}")
