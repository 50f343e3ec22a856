"""Helpers of the notification tests: a policy sending to the test receiver, runs that end."""

from __future__ import annotations

import time
import uuid
from typing import Any

from vivace.blocks.notifications import Webhook, save_webhook
from vivace.engine.states import StateType
from vivace.store.notifications import NotificationPolicyRecord, create_notification_policy


def webhook_policy(
    url: str,
    webhook_url: str,
    name: str = "failures",
    states: tuple[str, ...] = ("Failed",),
    format: str = "json",
    **filters: Any,
) -> NotificationPolicyRecord:
    """A policy sending to ``webhook_url`` with its own Webhook block (named like the policy)."""
    save_webhook(
        url, f"{name}-hook", Webhook.model_validate({"url": webhook_url, "format": format})
    )
    return create_notification_policy(
        url, name, states=states, block_name=f"{name}-hook", **filters
    )


def deployment(url: str, name: str = "nightly", flow_name: str = "etl") -> Any:
    """A deployment saved in the store; its code is nowhere (its runs are never executed)."""
    from vivace.store.deployments import DeploymentSpec, save_deployment

    return save_deployment(
        url,
        DeploymentSpec(
            name=name,
            flow_name=flow_name,
            entrypoint="etl.py:etl",
            storage={"url": "/srv/code"},
            parameter_schema={"type": "object", "properties": {}},
        ),
    )


def ended_run(
    url: str,
    deployment: Any,
    state: StateType = StateType.CRASHED,
    name: str = "Crashed",
    message: str = "process 4242 exited with code -9",
    tags: tuple[str, ...] = (),
) -> uuid.UUID:
    """A run of ``deployment`` moved from SCHEDULED to ``state`` the way the server does it."""
    from vivace.store.database import get_engine, transaction
    from vivace.store.deployments import create_deployment_run
    from vivace.store.run_control import transition_flow_run

    run, _ = create_deployment_run(url, deployment, parameters={}, tags=tags)
    with transaction(get_engine(url)) as conn:
        seq = transition_flow_run(
            conn, run.id, state, name, message, allowed_from=(StateType.SCHEDULED,)
        )
    assert seq is not None
    return run.id


def later(seconds: float) -> float:
    """A loop time ``seconds`` from now (a retry that is due then)."""
    return time.time() + seconds
