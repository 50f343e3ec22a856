"""Clusters for the runner tests: real ones, started by the tests themselves (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    """A LocalCluster with two worker processes, shared by the tests of one module.

    Its scheduler does not re-run a task whose worker died (``allowed-failures`` 0), like the
    temporary clusters DaskTaskRunner starts: vivace decides what a dead worker means.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        )
    try:
        yield cluster
    finally:
        cluster.close()
