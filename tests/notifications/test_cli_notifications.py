"""``vivace notification create | ls | inspect | pause | resume | test | delete`` through
click's CliRunner, against the test's database and a receiver on 127.0.0.1."""

from __future__ import annotations

from click.testing import CliRunner, Result

from tests.notifications.conftest import Receiver
from tests.notifications.notify_helpers import deployment, ended_run
from vivace.blocks.notifications import load_webhook
from vivace.cli import cli
from vivace.services.notifications import notify
from vivace.store.notifications import read_notification_policy


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_create_with_a_webhook_url_then_list_inspect_pause_and_delete(
    database_url: str, receiver: Receiver
) -> None:
    secret_url = receiver.url + "/SECRET-PATH"
    created = invoke(
        "notification", "create", "ops", "--state", "failed", "--state", "Crashed",
        "--tag", "prod", "--webhook-url", secret_url, "--slack",
        "--header", "X-Token: TOKEN-1",
    )  # fmt: skip

    assert created.exit_code == 0, created.output
    assert "Created the notification policy 'ops' and the Webhook block 'ops-webhook'" in (
        created.output
    )
    assert "on Failed, Crashed, only tags prod" in created.output
    webhook = load_webhook(database_url, "ops-webhook")
    assert webhook.format == "slack" and webhook.url.get_secret_value() == secret_url
    assert webhook.headers["X-Token"].get_secret_value() == "TOKEN-1"

    ended_run(database_url, deployment(database_url), tags=("prod",))
    notify(database_url)
    listed = invoke("notification", "ls")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if "ops-webhook" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["ops", "Failed, Crashed", "tags prod", "ops-webhook", "yes", "1", "0", "0"]
    inspected = invoke("notification", "inspect", "ops")
    assert inspected.exit_code == 0, inspected.output
    assert "Crashed" in inspected.output and "delivered" in inspected.output
    for output in (created.output, listed.output, inspected.output):
        assert "SECRET-PATH" not in output and "TOKEN-1" not in output

    assert invoke("notification", "pause", "ops").exit_code == 0
    assert not read_notification_policy(database_url, "ops").active
    assert "paused" in invoke("notification", "ls").output
    assert invoke("notification", "resume", "ops").exit_code == 0
    assert read_notification_policy(database_url, "ops").active

    deleted = invoke("notification", "delete", "ops", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "Its webhook block 'ops-webhook' is kept" in deleted.output
    assert read_notification_policy(database_url, "ops") is None
    assert "No notification policies" in invoke("notification", "ls").output


def test_create_with_a_saved_block_and_test_it(database_url: str, receiver: Receiver) -> None:
    from vivace.blocks.notifications import Webhook

    Webhook.model_validate({"url": receiver.url}).save("team-hook")

    created = invoke(
        "notification", "create", "etl", "--state", "Completed", "--flow", "etl",
        "--deployment", "nightly", "--block", "team-hook", "--inactive",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "It is paused" in created.output

    tested = invoke("notification", "test", "etl")
    assert tested.exit_code == 0, tested.output
    assert "Sent a test notification to 127.0.0.1 (block 'team-hook', json format): HTTP 200" in (
        tested.output
    )
    (body,) = receiver.bodies()
    assert body["policy"] == "etl" and body["flow_run"]["flow_name"] == "vivace-test"

    receiver.answer(404)
    refused = invoke("notification", "test", "etl")
    assert refused.exit_code == 1
    assert "failed: HTTP 404 Not Found from 127.0.0.1" in refused.output


def test_bad_input_is_refused_clearly(database_url: str) -> None:
    url = "http://127.0.0.1:9/hook"
    cases = [
        (["--state", "Failed"], 2, "expected either --block NAME or --webhook-url URL"),
        (["--state", "Failed", "--block", "b", "--webhook-url", url], 2, "one of them"),
        (["--state", "Failed", "--block", "b", "--slack"], 2, "--slack and --header go with"),
        (["--state", "Broken", "--webhook-url", url], 2, "state 'Broken' is not a state name"),
        (
            ["--state", "Failed", "--webhook-url", "ftp://x/y"],
            2,
            "Error: --webhook-url is not valid: expected an http:// or https:// URL",
        ),
        (
            ["--state", "Failed", "--webhook-url", url, "--header", "Bad Name: v"],
            2,
            "Error: --header is not valid: header name 'Bad Name' is not a valid HTTP header",
        ),
        (
            ["--state", "Failed", "--webhook-url", url, "--header", "Bearer TOKEN-2"],
            2,
            "Error: --header is not valid: expected 'Name: value'",
        ),
        (["--state", "Failed", "--block", "missing"], 2, "no block named 'missing' is saved"),
    ]
    for options, code, message in cases:
        result = invoke("notification", "create", "ops", *options)
        assert (result.exit_code, message in result.output) == (code, True), result.output
        assert "TOKEN-2" not in result.output  # a header without its colon may be the secret

    assert invoke("notification", "create", "ops", "--state", "Failed", "--webhook-url", url)
    again = invoke("notification", "create", "ops", "--state", "Failed", "--webhook-url", url)
    assert again.exit_code == 2 and "policy named 'ops' already exists" in again.output
    for command in ("inspect", "pause", "resume", "delete", "test"):
        missing = invoke("notification", command, "nope")
        assert missing.exit_code == 1
        assert "notification policy 'nope' not found" in missing.output
