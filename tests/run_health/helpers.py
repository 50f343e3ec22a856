"""Helpers of the late and zombie run tests: deployments with the issue-7 options, backdated runs,
and a flow run's history as (type, name) pairs."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.workers.helpers import stored_deployment
from vivace.store.deployments import create_deployment_run
from vivace.store.queries import read_flow_run_states


def deployment(url: str, name: str = "nightly", queue: str = "default", **options: Any) -> Any:
    """A deployment saved straight in the store, its code nowhere (its runs never execute)."""
    return stored_deployment(url, name, queue, **options)


def scheduled_run(url: str, record: Any, seconds_ago: float = 0.0) -> Any:
    """A SCHEDULED run of the deployment that should have started ``seconds_ago``."""
    run, _ = create_deployment_run(
        url, record, parameters={}, expected_start_time=time.time() - seconds_ago
    )
    return run


def states(url: str, run_id: uuid.UUID) -> list[tuple[str, str]]:
    return [(state.type.value, state.name) for state in read_flow_run_states(url, run_id)]
