"""``vivace notification``: policies that send a webhook when flow runs enter chosen states.

    vivace notification create NAME --state Failed [--state Crashed]... [--flow F]... [--tag T]...
                               [--deployment D]... (--block NAME | --webhook-url URL [--slack]
                               [--header 'Name: value']...) [--inactive]
    vivace notification ls
    vivace notification inspect NAME [--limit N]
    vivace notification pause NAME | resume NAME
    vivace notification delete NAME [--yes]
    vivace notification test NAME

``--webhook-url`` saves a Webhook block named ``NAME-webhook`` for the policy (its URL and
headers encrypted like every block secret); ``--block`` uses a Webhook block saved before, e.g.
from Python. The notifications themselves are sent by the server's notifications service
(``vivace server start``, or ``vivace server services start``); ``test`` sends a sample now,
from this process. The commands use the database directly, like ``vivace work-queue``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from vivace.cli import _BadInput, _console, _database_url, _Failure, _table, _text, _time, cli

if TYPE_CHECKING:
    from vivace.blocks.notifications import Webhook
    from vivace.store.notifications import NotificationPolicyRecord

RECENT_SECONDS = 86_400.0  # what `ls` counts deliveries over


@cli.group("notification")
def notification() -> None:
    """Notification policies: webhooks sent when flow runs enter chosen states."""


@notification.command("create")
@click.argument("name")
@click.option(
    "--state",
    "states",
    multiple=True,
    required=True,
    metavar="STATE",
    help=(
        "A state that triggers it (repeatable, any case): Failed, Crashed, Completed, "
        "Cancelled, Late, TimedOut... A type's name (Failed) also matches its variants "
        "(TimedOut)."
    ),
)
@click.option(
    "--flow",
    "flows",
    multiple=True,
    metavar="NAME",
    help="Only runs of this flow (repeatable: any of them).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Only runs with this tag (repeatable: any of them).",
)
@click.option(
    "--deployment",
    "deployments",
    multiple=True,
    metavar="NAME",
    help="Only this deployment's runs (repeatable: any of them).",
)
@click.option("--block", "block_name", metavar="NAME", help="A saved Webhook block to send with.")
@click.option(
    "--webhook-url",
    metavar="URL",
    help="Send to this http(s) URL: saves a Webhook block named NAME-webhook.",
)
@click.option("--slack", is_flag=True, help="With --webhook-url: send Slack's message format.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="With --webhook-url: a request header (repeatable), kept secret.",
)
@click.option("--inactive", is_flag=True, help="Create it paused (`resume` starts it).")
def notification_create(
    name: str,
    states: tuple[str, ...],
    flows: tuple[str, ...],
    tags: tuple[str, ...],
    deployments: tuple[str, ...],
    block_name: str | None,
    webhook_url: str | None,
    slack: bool,
    headers: tuple[str, ...],
    inactive: bool,
) -> None:
    """Create a policy: notify when flow runs enter one of the states."""
    from vivace.store.notifications import create_notification_policy

    if (block_name is None) == (webhook_url is None):
        raise _BadInput("expected either --block NAME or --webhook-url URL (one of them)")
    if webhook_url is None and (slack or headers):
        raise _BadInput("--slack and --header go with --webhook-url; a block has its own")
    webhook = None if webhook_url is None else _webhook(webhook_url, slack, headers)
    policy = create_notification_policy(
        _database_url(),
        name,
        states=states,
        block_name=block_name,
        webhook=webhook,
        flow_names=flows or None,
        tags=tags or None,
        deployment_names=deployments or None,
        active=not inactive,
    )
    made = f" and the Webhook block {policy.block_name!r}" if webhook is not None else ""
    click.echo(f"Created the notification policy {policy.name!r}{made}: {_describe(policy)}.")
    if inactive:
        click.echo(f"It is paused: `vivace notification resume {policy.name}` starts it.")


@notification.command("ls")
def notification_ls() -> None:
    """List the policies, with their deliveries of the last 24 hours."""
    from vivace.store.notifications import (
        count_notification_deliveries,
        read_notification_policies,
    )

    url = _database_url()
    policies = read_notification_policies(url)
    if not policies:
        click.echo("No notification policies; `vivace notification create` makes one.")
        return
    counts = count_notification_deliveries(url, since=time.time() - RECENT_SECONDS)
    table = _table("Name", "States", "Only", "Block", "Active", "Delivered", "Pending", "Failed")
    for policy in policies:
        count = counts.get(policy.id, {})
        table.add_row(
            _text(policy.name),
            _text(", ".join(policy.states)),
            _text(_filters(policy) or "-"),
            _text(policy.block_name),
            "yes" if policy.active else "paused",
            str(count.get("delivered", 0)),
            str(count.get("pending", 0)),
            str(count.get("failed", 0)),
        )
    console = _console()
    console.print(table)
    console.print("Deliveries of the last 24 hours; `vivace notification inspect NAME` lists them.")


@notification.command("inspect")
@click.argument("name")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Deliveries shown."
)
def notification_inspect(name: str, limit: int) -> None:
    """Show a policy and its latest deliveries, with their errors."""
    from vivace.store.notifications import read_notification_deliveries

    url = _database_url()
    policy = _existing(url, name)
    console = _console()
    details = _table("", "", title=f"Notification policy {name!r}", show_header=False)
    for label, value in (
        ("States", ", ".join(policy.states)),
        ("Only", _filters(policy) or "every flow run"),
        ("Block", policy.block_name),
        ("Active", "yes" if policy.active else "paused"),
        ("Created", _time(policy.created)),
    ):
        details.add_row(label, _text(value))
    console.print(details)
    deliveries = read_notification_deliveries(url, policy_name=name, limit=limit)
    if not deliveries:
        console.print("No deliveries yet.")
        return
    table = _table("Created", "Flow run", "State", "Status", "Attempts", "Delivered", "Last error")
    for item in deliveries:
        table.add_row(
            _time(item.created),
            _text(item.flow_run_name or str(item.flow_run_id)),
            _text(item.state_name),
            item.status,
            str(item.attempts),
            _time(item.delivered),
            _text(item.last_error or ""),
        )
    console.print(table)


@notification.command("pause")
@click.argument("name")
def notification_pause(name: str) -> None:
    """Mute a policy: nothing is notified while paused; pending ones wait for resume."""
    _set_active(name, False)
    click.echo(f"Paused the notification policy {name!r}.")


@notification.command("resume")
@click.argument("name")
def notification_resume(name: str) -> None:
    """Start a paused policy again."""
    _set_active(name, True)
    click.echo(f"Resumed the notification policy {name!r}.")


@notification.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def notification_delete(name: str, yes: bool) -> None:
    """Delete a policy and its delivery records (its webhook block stays)."""
    from vivace.store.notifications import delete_notification_policy

    url = _database_url()
    policy = _existing(url, name)
    if not yes:
        click.confirm(f"Delete the notification policy {name!r}?", abort=True)
    if not delete_notification_policy(url, name):
        raise _Failure(f"notification policy {name!r} not found; it was deleted meanwhile")
    click.echo(
        f"Deleted the notification policy {name!r}. Its webhook block {policy.block_name!r} is "
        f"kept (`vivace block delete {policy.block_name}` removes it)."
    )


@notification.command("test")
@click.argument("name")
def notification_test(name: str) -> None:
    """Send a sample notification with the policy's webhook now, and say how it went."""
    from vivace.blocks.notifications import load_webhook, sample_notification

    url = _database_url()
    policy = _existing(url, name)
    webhook = load_webhook(url, policy.block_name)
    result = webhook.send(sample_notification(policy.name))
    where = f"{webhook.host} (block {policy.block_name!r}, {webhook.format} format)"
    if not result.ok:
        raise _Failure(f"the test notification to {where} failed: {result.describe()}")
    click.echo(f"Sent a test notification to {where}: {result.describe()}.")


def _webhook(webhook_url: str, slack: bool, headers: tuple[str, ...]) -> Webhook:
    """The Webhook block the options describe (not saved yet)."""
    from pydantic import ValidationError

    from vivace.blocks.notifications import Webhook

    values: dict[str, str] = {}
    for header in headers:
        header_name, colon, value = header.partition(":")
        if not colon or not header_name.strip():
            # Not quoted: without its colon, the whole text may be the secret value.
            raise _BadInput(
                "--header is not valid: expected 'Name: value', a header's name, a colon and "
                "its value (the text given is not shown: it may be a secret)"
            )
        values[header_name.strip()] = value.strip()
    try:
        return Webhook.model_validate(
            {"url": webhook_url, "format": "slack" if slack else "json", "headers": values}
        )
    except ValidationError as error:
        # Named by the option that gave the value, never quoting it (a webhook URL or a
        # header may be the credential itself).
        problems = "; ".join(
            f"{_OPTION_OF_FIELD.get(str(item['loc'][0]) if item['loc'] else '', '--webhook-url')}"
            f" is not valid: {str(item['msg']).removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise _BadInput(problems) from None


_OPTION_OF_FIELD = {"url": "--webhook-url", "headers": "--header"}
"""The option of ``notification create`` that gives each field of the Webhook block it saves."""


def _existing(url: str, name: str) -> NotificationPolicyRecord:
    from vivace.store.notifications import read_notification_policy

    policy = read_notification_policy(url, name)
    if policy is None:
        raise _Failure(
            f"notification policy {name!r} not found; `vivace notification ls` lists them"
        )
    return policy


def _set_active(name: str, active: bool) -> None:
    from vivace.store.notifications import set_notification_policy_active

    if set_notification_policy_active(_database_url(), name, active) is None:
        raise _Failure(
            f"notification policy {name!r} not found; `vivace notification ls` lists them"
        )


def _filters(policy: NotificationPolicyRecord) -> str:
    parts = []
    for label, values in (
        ("flows", policy.flow_names),
        ("tags", policy.tags),
        ("deployments", policy.deployment_names),
    ):
        if values:
            parts.append(f"{label} {', '.join(values)}")
    return "; ".join(parts)


def _describe(policy: NotificationPolicyRecord) -> str:
    only = _filters(policy)
    text = f"on {', '.join(policy.states)}"
    if only:
        text += f", only {only}"
    return f"{text}, sent with the block {policy.block_name!r}"
