"""Schemathesis against a real server: every GET of /api, generated from /api/openapi.json.

For each operation, bounded and deterministic examples (valid and invalid values, ids that exist
and ids that do not) must never get a 5xx, and every response must match the schema the API
publishes, 4xx errors included. The database holds runs of real flows first, and path ids are
drawn half of the time from the ids that exist, so the 200 answers get checked, not only 404s.
"""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from vivace import Cron, Interval, flow, get_run_logger, task, unmapped
from vivace.blocks import Webhook
from vivace.deployments.parameters import parameter_schema
from vivace.store import queries
from vivace.store.concurrency import create_limit
from vivace.store.deployments import DeploymentSpec, create_deployment_run, save_deployment
from vivace.store.notifications import create_notification_policy
from vivace.store.schedules import read_deployment_schedules
from vivace.store.writer import get_writer

EXAMPLES_PER_OPERATION = 25  # per operation and per mode (valid data, invalid data)
SEED = 20_261_126
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@task
def base() -> int:
    return 3


@task
def times(x: int, factor: int) -> int:
    get_run_logger().info("times %d", x)
    return x * factor


@task
def fail(values: list[int]) -> None:
    get_run_logger().error("refusing %s", values)
    raise ValueError("refused")


@flow
def child_flow(total: int) -> int:
    return total


@flow
def fuzz_flow(n: int = 25) -> int:
    factor = base.submit()
    values = [future.result() for future in times.map(range(n), unmapped(factor))]
    return child_flow(sum(values))


@flow
def failing_flow() -> None:
    fail.submit([base.submit()]).result()


def _seed_runs(database_url: str) -> tuple[list[str], list[str]]:
    """Record a few real runs; their flow run ids and task run ids."""
    fuzz_flow()
    failing_flow(return_state=True)
    get_writer().flush()
    flow_runs, _ = queries.read_flow_runs(database_url, limit=10)
    task_runs, _ = queries.read_task_runs(database_url, limit=10)
    assert len(flow_runs) == 3 and len(task_runs) == 10
    return [str(run.id) for run in flow_runs], [str(run.id) for run in task_runs]


def _seed_deployment(database_url: str) -> tuple[list[str], list[str]]:
    """A deployment of fuzz_flow with one run and two schedules; its name and id, and the
    schedules' ids."""
    spec = DeploymentSpec(
        name="fuzz/nightly",
        flow_name="fuzz_flow",
        entrypoint="test_api_fuzz.py:fuzz_flow",
        storage={"url": "/srv/fuzz"},
        parameter_schema=parameter_schema(fuzz_flow),
        schedules=(Cron("0 9 * * 1-5", "Europe/Lisbon"), Interval(900, active=False)),
    )
    deployment = save_deployment(database_url, spec)
    create_deployment_run(database_url, deployment, parameters={"n": 2})
    schedules = read_deployment_schedules(database_url, deployment.id)
    return [deployment.name, str(deployment.id)], [str(schedule.id) for schedule in schedules]


def _seed_named_resources(database_url: str, name: str) -> None:
    """A concurrency limit and a notification policy called ``name``, like the work queue: the
    routes of all three take their name from the one path parameter ``name``."""
    create_limit(database_url, name, 3)
    webhook = Webhook(url="http://127.0.0.1:9/hook")
    create_notification_policy(database_url, name, states=["Failed"], webhook=webhook)


def _schema(live_server: str, database_url: str) -> Any:
    flow_run_ids, task_run_ids = _seed_runs(database_url)
    deployments, schedule_ids = _seed_deployment(database_url)
    _seed_named_resources(database_url, "default")
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"deterministic": True, "database": "none"},
            "dictionaries": {
                "flow_run_ids": {"values": flow_run_ids},
                "task_run_ids": {"values": task_run_ids},
                "deployments": {"values": deployments},
                "names": {"values": ["default"]},
                "schedule_ids": {"values": schedule_ids},
            },
            "parameters": {
                "path.flow_run_id": {"dictionary": "flow_run_ids", "probability": 0.5},
                "path.task_run_id": {"dictionary": "task_run_ids", "probability": 0.5},
                "query.task_run_id": {"dictionary": "task_run_ids", "probability": 0.5},
                "path.deployment": {"dictionary": "deployments", "probability": 0.5},
                "path.name": {"dictionary": "names", "probability": 0.5},
                "path.schedule_id": {"dictionary": "schedule_ids", "probability": 0.5},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{live_server}/api/openapi.json", config=config)
    return schema.include(method="GET", path_regex="^/api/")


def _fuzz(operation: Any, mode: GenerationMode) -> None:
    """Up to EXAMPLES_PER_OPERATION cases of one operation; raises at the first bad answer."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        # Generation of an operation's first case also loads its schema: slow, not a problem.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def examples(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    examples()


def test_every_get_answers_within_its_schema_and_never_5xx(
    live_server: str, database_url: str
) -> None:
    schema = _schema(live_server, database_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode)
            except Exception as error:  # every operation gets its turn; all failures reported
                failures.append(f"{operation.label} ({mode.value} data): {error}")

    published = httpx.get(f"{live_server}/api/openapi.json").json()["paths"]
    gets = {path for path, methods in published.items() if "get" in methods}
    assert {operation.path for operation in operations} == gets - {"/api/openapi.json"}
    assert len(operations) >= 29  # the filter above let every route through
    assert not failures, "\n\n".join(failures)
