"""Notification policies in the store, on SQLite and PostgreSQL: what a policy accepts (state
names, filters, its webhook block), and what creating, pausing and deleting one does."""

from __future__ import annotations

import time

import pytest

from tests.notifications.notify_helpers import deployment, ended_run, webhook_policy
from vivace.blocks import Secret
from vivace.blocks.notifications import Webhook, load_webhook
from vivace.blocks.store import read_block
from vivace.exceptions import ConfigurationError
from vivace.store.notifications import (
    STATE_NAMES,
    check_state_names,
    count_notification_deliveries,
    create_notification_policy,
    delete_notification_policy,
    enqueue_deliveries,
    read_notification_deliveries,
    read_notification_policies,
    read_notification_policy,
    set_notification_policy_active,
)

HOOK = "http://127.0.0.1:9/hook"


def test_state_names_are_matched_in_any_case_and_spelled_as_vivace_does() -> None:
    assert check_state_names(["failed", "CRASHED", "timedout", " Late ", "Failed"]) == (
        "Failed",
        "Crashed",
        "TimedOut",
        "Late",
    )
    for name in ("Completed", "Cancelled", "Skipped", "AwaitingRetry", "Scheduled"):
        assert name in STATE_NAMES


@pytest.mark.parametrize(
    ("states", "message"),
    [
        pytest.param(
            ["Failed", "Borked"], "state 'Borked' is not a state name vivace uses", id="x"
        ),
        pytest.param([], "needs at least one state", id="none"),
        pytest.param([3], "state 3 is not a state name", id="not-text"),
    ],
)
def test_unknown_states_are_refused_naming_the_known_ones(
    states: list[object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        check_state_names(states)  # type: ignore[arg-type]
    if states:
        assert "expected one of Scheduled, Pending" in str(caught.value)
        assert "Late" in str(caught.value) and "(any case)" in str(caught.value)


def test_a_policy_keeps_its_filters(database_url: str) -> None:
    policy = webhook_policy(
        database_url,
        HOOK,
        "etl-failures",
        states=("failed", "crashed"),
        flow_names=["etl", "etl"],
        tags=["prod"],
        deployment_names=["nightly"],
    )

    assert policy == read_notification_policy(database_url, "etl-failures")
    assert (policy.states, policy.flow_names, policy.tags, policy.deployment_names) == (
        ("Failed", "Crashed"),
        ("etl",),
        ("prod",),
        ("nightly",),
    )
    assert (policy.block_name, policy.active) == ("etl-failures-hook", True)
    everything = webhook_policy(database_url, HOOK, "all")
    assert (everything.flow_names, everything.tags, everything.deployment_names) == (None,) * 3
    assert [p.name for p in read_notification_policies(database_url)] == ["all", "etl-failures"]


BAD_POLICIES = [
    ({"name": "has space"}, "policy name 'has space' is not valid"),
    ({"tags": [""]}, "tag '' is not valid"),
    ({"flow_names": ["x" * 300]}, "flow name 'xxx"),
    ({"block_name": "nope"}, "no block named 'nope' is saved"),
    ({"block_name": "secret"}, "is a Secret, not a Webhook"),
    ({"block_name": None}, "either the name of a Webhook block"),
]


def test_a_bad_policy_is_refused_saying_what_is_expected(database_url: str) -> None:
    Secret.model_validate({"value": "x"}).save("secret")
    Webhook.model_validate({"url": HOOK}).save("hook")
    arguments: dict[str, object] = {"name": "ops", "states": ["Failed"], "block_name": "hook"}

    for changes, message in BAD_POLICIES:
        with pytest.raises(ConfigurationError, match=message):
            create_notification_policy(database_url, **{**arguments, **changes})  # type: ignore[arg-type]
    assert read_notification_policies(database_url) == []


def test_a_taken_name_is_refused(database_url: str) -> None:
    webhook_policy(database_url, HOOK, "ops")

    with pytest.raises(ConfigurationError, match="policy named 'ops' already exists"):
        create_notification_policy(database_url, "ops", states=["Crashed"], block_name="ops-hook")


def test_a_policy_with_a_webhook_saves_it_as_its_block(database_url: str) -> None:
    webhook = Webhook.model_validate({"url": HOOK, "format": "slack"})

    policy = create_notification_policy(database_url, "ops", states=["Failed"], webhook=webhook)

    assert policy.block_name == "ops-webhook"
    assert load_webhook(database_url, "ops-webhook") == webhook
    with pytest.raises(ConfigurationError, match="policy named 'ops' already exists"):
        create_notification_policy(database_url, "ops", states=["Failed"], webhook=webhook)
    assert load_webhook(database_url, "ops-webhook") == webhook  # not replaced
    Webhook.model_validate({"url": HOOK}).save("other-webhook")
    with pytest.raises(ConfigurationError, match="block named 'other-webhook' already exists"):
        create_notification_policy(database_url, "other", states=["Failed"], webhook=webhook)
    assert read_notification_policy(database_url, "other") is None


def test_pausing_resuming_and_deleting(database_url: str) -> None:
    webhook_policy(database_url, HOOK, "ops", states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    now = time.time()
    assert enqueue_deliveries(database_url, since=now - 60, now=now).created == 1

    paused = set_notification_policy_active(database_url, "ops", False)
    assert paused is not None and not paused.active and paused.updated > paused.created
    resumed = set_notification_policy_active(database_url, "ops", True)
    assert resumed is not None and resumed.active
    assert set_notification_policy_active(database_url, "nope", True) is None
    (policy,) = read_notification_policies(database_url)
    assert count_notification_deliveries(database_url, since=now - 60) == {
        policy.id: {"pending": 1, "delivered": 0, "failed": 0}
    }

    assert delete_notification_policy(database_url, "ops")
    assert not delete_notification_policy(database_url, "ops")
    assert read_notification_policies(database_url) == []
    assert read_notification_deliveries(database_url) == []
    assert read_block(database_url, "ops-hook") is not None  # the block stays
