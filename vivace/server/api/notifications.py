"""``/api/notifications``: notification policies, with their latest deliveries.

A policy sends a webhook when flow runs enter chosen states (``vivace.store.notifications`` says
how states match); the server's notifications service sends them. Listing is open to read keys;
creating, pausing (``PATCH {"active": false}``) and deleting need an admin key. A policy is
created with the name of a saved Webhook block, or with a ``webhook`` whose URL and headers the
server saves as the block ``<name>-webhook``, encrypted; no answer ever shows them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vivace.server import auth, deps
from vivace.server.api.models import ErrorMessage, error_responses
from vivace.server.api.params import Name
from vivace.store import notifications as store
from vivace.store.notifications import NotificationDeliveryRecord, NotificationPolicyRecord

router = APIRouter(prefix="/notifications", tags=["notifications"])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
PolicyName = Annotated[Name, Path(description="The notification policy's name.")]
RECENT_DELIVERIES = 10  # per policy, in the list
RECENT_SECONDS = 86_400.0  # what delivery_counts counts over
_NOT_FOUND = "No such notification policy."
_ADMIN = [Depends(auth.require_admin)]
_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorMessage,
        "description": "A policy of that name exists (or the block it would save its webhook as).",
    }
}


class WebhookSpec(BaseModel):
    """A webhook to save as the policy's block; write-only: never shown back.

    Plain strings here: the Webhook block checks them, with errors that never quote a value
    (the URL and the headers are secrets).
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http:// or https:// URL (a Slack incoming-webhook URL...).")
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")


class NotificationPolicyCreate(BaseModel):
    """A new policy: the states, optional filters, and where to send."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    states: list[Name] = Field(
        min_length=1,
        description=(
            "State names, any case: a type's name (Failed) matches every state of that type, "
            "another name (Late, TimedOut) only itself."
        ),
    )
    flow_names: list[Name] | None = Field(default=None, description="Only runs of these flows.")
    tags: list[Name] | None = Field(default=None, description="Only runs with any of these tags.")
    deployment_names: list[Name] | None = Field(
        default=None, description="Only runs of these deployments."
    )
    block_name: Name | None = Field(default=None, description="A saved Webhook block.")
    webhook: WebhookSpec | None = Field(
        default=None, description="Or a webhook, saved as the block <name>-webhook."
    )
    active: bool = True


class NotificationPolicyUpdate(BaseModel):
    """What can change in a policy: whether it is active."""

    model_config = ConfigDict(extra="forbid")

    active: bool


class NotificationDelivery(BaseModel):
    """One notification: a policy, a flow run's state, and how sending it went."""

    id: uuid.UUID
    policy: str | None
    flow_run_id: uuid.UUID
    flow_run_name: str | None = Field(description="None once the run left the history.")
    flow_name: str | None
    state_seq: int
    state_name: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt: dt.datetime | None
    last_error: str | None
    created: dt.datetime
    delivered: dt.datetime | None

    @classmethod
    def from_record(cls, record: NotificationDeliveryRecord) -> NotificationDelivery:
        values: dict[str, Any] = {
            name: getattr(record, name) for name in cls.model_fields if name != "policy"
        }
        return cls(policy=record.policy_name, **values)


class NotificationPolicy(BaseModel):
    """A policy, its deliveries of the last 24 hours by status, and its latest deliveries."""

    id: uuid.UUID
    name: str
    states: list[str]
    flow_names: list[str] | None
    tags: list[str] | None
    deployment_names: list[str] | None
    block_name: str
    active: bool
    created: dt.datetime
    updated: dt.datetime
    delivery_counts: dict[str, int] = Field(
        description="Deliveries created in the last 24 hours, by status."
    )
    deliveries: list[NotificationDelivery] = Field(description="The latest, newest first.")

    @classmethod
    def from_record(
        cls,
        record: NotificationPolicyRecord,
        counts: dict[str, int],
        deliveries: list[NotificationDeliveryRecord],
    ) -> NotificationPolicy:
        def names(values: tuple[str, ...] | None) -> list[str] | None:
            return None if values is None else list(values)

        return cls(
            id=record.id,
            name=record.name,
            states=list(record.states),
            flow_names=names(record.flow_names),
            tags=names(record.tags),
            deployment_names=names(record.deployment_names),
            block_name=record.block_name,
            active=record.active,
            created=record.created,
            updated=record.updated,
            delivery_counts={status: counts.get(status, 0) for status in store.DELIVERY_STATUSES},
            deliveries=[NotificationDelivery.from_record(item) for item in deliveries],
        )


@router.get("", response_model=list[NotificationPolicy], responses=error_responses(503))
def list_notification_policies(database_url: DatabaseUrl) -> list[NotificationPolicy]:
    """Every policy by name, each with its latest deliveries."""
    policies = store.read_notification_policies(database_url)
    counts = _recent_counts(database_url)
    return [_detail(database_url, policy, RECENT_DELIVERIES, counts) for policy in policies]


@router.get(
    "/{name}",
    response_model=NotificationPolicy,
    responses=error_responses(404, 422, 503, not_found=_NOT_FOUND),
)
def read_notification_policy(
    database_url: DatabaseUrl,
    name: PolicyName,
    limit: Annotated[int, Query(ge=1, le=1000, description="Deliveries listed.")] = 50,
) -> NotificationPolicy:
    """One policy, with its latest ``limit`` deliveries."""
    return _detail(database_url, _policy_or_404(database_url, name), limit)


@router.post(
    "",
    status_code=201,
    response_model=NotificationPolicy,
    dependencies=_ADMIN,
    responses={**error_responses(403, 422, 503), **_TAKEN},
)
def create_notification_policy(
    database_url: DatabaseUrl, body: NotificationPolicyCreate
) -> NotificationPolicy:
    """Create a policy; it notifies of states entered from now on. A state name vivace does not
    use, a block that is not a Webhook, or a bad webhook URL is answered 422."""
    from vivace.blocks.notifications import Webhook
    from vivace.blocks.store import read_block
    from vivace.exceptions import ConfigurationError

    webhook = None
    if body.webhook is not None:
        try:
            webhook = Webhook.model_validate(body.webhook.model_dump())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                for item in error.errors()
            )
            raise HTTPException(422, f"webhook is not valid ({problems})") from None
    if store.read_notification_policy(database_url, body.name) is not None:
        raise HTTPException(409, f"a notification policy named {body.name!r} already exists")
    block_name = store.webhook_block_name(body.name)
    if webhook is not None and read_block(database_url, block_name) is not None:
        raise HTTPException(
            409,
            f"a block named {block_name!r} already exists; send with it (block_name) or "
            "choose another policy name",
        )
    try:
        policy = store.create_notification_policy(
            database_url,
            body.name,
            states=body.states,
            block_name=body.block_name,
            webhook=webhook,
            flow_names=body.flow_names,
            tags=body.tags,
            deployment_names=body.deployment_names,
            active=body.active,
        )
    except ConfigurationError as error:  # a bad state or filter, a block that is no Webhook
        raise HTTPException(422, str(error)) from None
    return _detail(database_url, policy, RECENT_DELIVERIES)


@router.patch(
    "/{name}",
    response_model=NotificationPolicy,
    dependencies=_ADMIN,
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def update_notification_policy(
    database_url: DatabaseUrl, name: PolicyName, changes: NotificationPolicyUpdate
) -> NotificationPolicy:
    """Pause (``{"active": false}``) or resume a policy; answers with it afterwards."""
    policy = store.set_notification_policy_active(database_url, name, changes.active)
    if policy is None:
        raise _not_found(name)
    return _detail(database_url, policy, RECENT_DELIVERIES)


@router.delete(
    "/{name}",
    response_model=NotificationPolicy,
    dependencies=_ADMIN,
    responses=error_responses(403, 404, 422, 503, not_found=_NOT_FOUND),
)
def delete_notification_policy(database_url: DatabaseUrl, name: PolicyName) -> NotificationPolicy:
    """Delete a policy and its delivery records (its webhook block stays); answers with the
    policy as it was."""
    policy = _policy_or_404(database_url, name)
    before = _detail(database_url, policy, RECENT_DELIVERIES)
    if not store.delete_notification_policy(database_url, name):
        raise _not_found(name)
    return before


def _recent_counts(database_url: str) -> dict[uuid.UUID, dict[str, int]]:
    return store.count_notification_deliveries(database_url, since=time.time() - RECENT_SECONDS)


def _detail(
    database_url: str,
    policy: NotificationPolicyRecord,
    limit: int,
    counts: dict[uuid.UUID, dict[str, int]] | None = None,
) -> NotificationPolicy:
    if counts is None:
        counts = _recent_counts(database_url)
    deliveries = store.read_notification_deliveries(
        database_url, policy_name=policy.name, limit=limit
    )
    return NotificationPolicy.from_record(policy, counts.get(policy.id, {}), deliveries)


def _policy_or_404(database_url: str, name: str) -> NotificationPolicyRecord:
    policy = store.read_notification_policy(database_url, name)
    if policy is None:
        raise _not_found(name)
    return policy


def _not_found(name: str) -> HTTPException:
    return HTTPException(404, f"notification policy {name!r} not found")
