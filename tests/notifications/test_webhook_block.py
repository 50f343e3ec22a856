"""The ``Webhook`` block: what it accepts, what it keeps secret, and how each answer of an
endpoint is classified (delivered, worth retrying, refused for good)."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from tests.conftest import free_port
from tests.notifications.conftest import Receiver
from vivace.blocks.notifications import (
    FlowRunNotification,
    Webhook,
    json_body,
    load_webhook,
    sample_notification,
    slack_body,
)
from vivace.cli import cli
from vivace.exceptions import BlockTypeError
from vivace.services.notifications import flow_run_url, retry_delay
from vivace.settings import Settings

SECRET_URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://example.com/hook", id="not-http"),
        pytest.param("https:///no-host", id="no-host"),
        pytest.param("https://example.com/a b", id="space"),
        pytest.param("https://example.com:99999/x", id="bad-port"),
        pytest.param("hooks.slack.com/services/XXXXSECRETXXXX", id="no-scheme"),
    ],
)
def test_a_bad_url_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Webhook.model_validate({"url": url})

    assert "expected an http:// or https:// URL with a host name" in str(caught.value)
    assert "SECRET" not in str(caught.value) and "example.com" not in str(caught.value)


def test_headers_and_method_are_checked() -> None:
    with pytest.raises(ValidationError, match="not a valid HTTP header name"):
        Webhook.model_validate({"url": SECRET_URL, "headers": {"Bad Name": "x"}})
    with pytest.raises(ValidationError, match="line break"):
        Webhook.model_validate({"url": SECRET_URL, "headers": {"X-Token": "a\r\nInjected: 1"}})
    assert Webhook.model_validate({"url": SECRET_URL, "method": "put"}).method == "PUT"
    with pytest.raises(ValidationError):
        Webhook.model_validate({"url": SECRET_URL, "timeout": 600})


def test_the_url_and_headers_are_secret_at_rest_and_in_the_cli(database_url: str) -> None:
    Webhook.model_validate(
        {"url": SECRET_URL, "headers": {"Authorization": "Bearer TOKEN-123"}, "format": "slack"}
    ).save("ops")

    assert "XXXXSECRETXXXX" not in repr(Webhook.load("ops"))
    shown = CliRunner().invoke(cli, ["block", "inspect", "ops"])
    assert shown.exit_code == 0, shown.output
    assert "XXXXSECRETXXXX" not in shown.output and "TOKEN-123" not in shown.output
    assert "slack" in shown.output
    loaded = load_webhook(database_url, "ops")
    assert loaded.url.get_secret_value() == SECRET_URL
    assert loaded.headers["Authorization"].get_secret_value() == "Bearer TOKEN-123"
    assert loaded.host == "hooks.slack.com"


def test_load_webhook_refuses_another_block_type(database_url: str) -> None:
    from vivace.blocks import Secret

    Secret.model_validate({"value": "x"}).save("not-a-hook")

    with pytest.raises(BlockTypeError, match="is a Secret"):
        load_webhook(database_url, "not-a-hook")


def test_post_sends_json_with_the_method_and_headers(receiver: Receiver) -> None:
    webhook = Webhook.model_validate(
        {"url": receiver.url, "method": "PUT", "headers": {"Authorization": "Bearer abc"}}
    )

    result = webhook.post({"hello": "wörld"})

    assert (result.ok, result.status, result.describe()) == (True, 200, "HTTP 200")
    (request,) = receiver.requests
    assert request.method == "PUT" and request.body == {"hello": "wörld"}
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers["User-Agent"].startswith("vivace/")


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        pytest.param(500, False, id="500"),
        pytest.param(503, False, id="503"),
        pytest.param(408, False, id="408"),
        pytest.param(429, False, id="429"),
        pytest.param(400, True, id="400"),
        pytest.param(401, True, id="401"),
        pytest.param(404, True, id="404"),
        pytest.param(410, True, id="410"),
    ],
)
def test_error_answers_say_whether_a_retry_can_help(
    receiver: Receiver, status: int, permanent: bool
) -> None:
    receiver.answer(status)

    result = Webhook.model_validate({"url": receiver.url}).post({})

    assert (result.ok, result.status, result.permanent) == (False, status, permanent)
    assert result.error.startswith(f"HTTP {status} ")
    assert "from 127.0.0.1: the receiver says no" in result.error
    assert "/hook" not in result.error


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.answer(302, headers={"Location": "http://127.0.0.1:1/elsewhere"})

    result = Webhook.model_validate({"url": receiver.url}).post({})

    assert (result.ok, result.status, result.permanent) == (False, 302, True)
    assert "expected the webhook's final URL" in result.error
    assert len(receiver.requests) == 1


def test_a_refused_connection_is_worth_retrying() -> None:
    result = Webhook.model_validate({"url": f"http://127.0.0.1:{free_port()}/x"}).post({})

    assert (result.ok, result.permanent, result.status) == (False, False, None)
    assert result.error.startswith("cannot reach 127.0.0.1: ")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts the request and never answers (until the test ends)."""
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            done.wait(10)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow"
    done.set()
    server.shutdown()
    server.server_close()


def test_no_answer_within_the_timeout_is_worth_retrying(silent_server: str) -> None:
    started = time.monotonic()
    result = Webhook.model_validate({"url": silent_server, "timeout": 0.3}).post({})

    assert (result.ok, result.permanent) == (False, False)
    assert result.error == "no answer from 127.0.0.1 within 0.3 s"
    assert time.monotonic() - started < 5  # bounded by the timeout, not the server


def _notification(**changes: object) -> FlowRunNotification:
    values: dict[str, object] = {
        "flow_run_id": uuid.UUID(int=7),
        "flow_run_name": "brave-otter",
        "flow_name": "etl",
        "state_type": "FAILED",
        "state_name": "Failed",
        "message": "ValueError: ```x``` " + "y" * 5000,
        "timestamp": dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC),
        "deployment": None,
        "tags": (),
        "url": None,
        "policy": "p",
        **changes,
    }
    return FlowRunNotification(**values)  # type: ignore[arg-type]


def test_bodies_without_a_link_and_with_a_long_message() -> None:
    slack = slack_body(_notification())
    generic = json_body(_notification())

    assert "<" not in slack["blocks"][0]["text"]["text"]  # no link without a base URL
    message = slack["blocks"][1]["text"]["text"]
    assert len(message) <= 3000 and message.startswith("```ValueError: '''x''' y")
    assert generic["timestamp"] == "2026-12-01T09:30:00+00:00"
    assert generic["flow_run"]["url"] is None and len(generic["flow_run"]["message"]) > 5000
    sample = json_body(sample_notification("ops"))
    assert sample["policy"] == "ops" and sample["flow_run"]["state_name"] == "Failed"


def test_retry_delays_double_up_to_a_cap() -> None:
    assert [retry_delay(attempt) for attempt in range(1, 9)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
    assert retry_delay(1, retry_after=42) == 42
    assert retry_delay(3, retry_after=1) == 20
    assert retry_delay(1, retry_after=86_400) == 300


def test_the_run_link_comes_from_the_ui_url_or_the_api_url() -> None:
    run_id = uuid.UUID(int=1)
    page = f"/flow-runs/{run_id}"

    assert flow_run_url(Settings(), run_id) is None
    assert flow_run_url(Settings(api_url="http://h:4200/api/"), run_id) == f"http://h:4200{page}"
    assert flow_run_url(
        Settings(api_url="http://h:4200/api", ui_url="https://ui.example/vivace/"), run_id
    ) == (f"https://ui.example/vivace{page}")
