"""Fixtures of the concurrency-limit tests (helpers: tests/concurrency/helpers.py).

- (autouse) each test starts with this process's concurrency state clean: nothing read yet of
  which tags have limits (another test may have left a list for the same PostgreSQL URL), and no
  lease still held and renewed. A test that leaves a lease held fails, naming it.
- ``dask_cluster``: a LocalCluster of two worker processes with four threads each, shared by the
  tests of one module: more threads than the limits tested, so the limits do the limiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def clean_concurrency_state() -> Iterator[None]:
    from vivace.concurrency_limits import forget_tag_limits
    from vivace.store import concurrency_slots

    forget_tag_limits()
    yield
    forget_tag_limits()
    held = concurrency_slots.held_lease_count()
    concurrency_slots._keeper.forget_all()
    assert held == 0, f"the test left {held} concurrency lease(s) held"


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=4, processes=True, dashboard_address=":0"
    )
    try:
        yield cluster
    finally:
        cluster.close()
