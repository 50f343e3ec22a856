"""Task runners. Dask and Ray runners are imported only when asked for."""

from __future__ import annotations

from vivace.runners.base import TaskRunner
from vivace.runners.concurrent import ConcurrentTaskRunner
from vivace.runners.sequential import SequentialTaskRunner

__all__ = ["ConcurrentTaskRunner", "SequentialTaskRunner", "TaskRunner"]
