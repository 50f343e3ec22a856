"""``Webhook``: a block that sends flow-run notifications to an HTTP endpoint.

A notification policy (``vivace notification create``) names a saved ``Webhook`` block; the
notifications service (:mod:`vivace.services.notifications`) sends each notification with it::

    Webhook(url="https://hooks.slack.com/services/T0/B0/XXXX", format="slack").save("ops-slack")
    Webhook(url="https://alerts.internal/hook", headers={"Authorization": "Bearer ..."}).save("ops")

The URL and the header values are secrets (a Slack webhook URL *is* its credential): encrypted at
rest, shown as ``**********`` by ``vivace block inspect``, and never quoted in an error. What is
sent is one JSON document, ``format`` deciding its shape:

- ``"json"``: ``{"flow_run": {"id", "name", "flow_name", "state_type", "state_name", "message",
  "deployment", "tags", "url"}, "policy": ..., "timestamp": ...}`` (``url`` is the run's UI
  page; see :mod:`vivace.services.notifications` for where it comes from, None if unknown);
- ``"slack"``: ``{"text": ..., "blocks": [...]}``, which Slack (and Mattermost, which accepts the
  same incoming-webhook body) shows as a message with the run's name linked to its page.

The request goes through the standard library (``urllib``), so sending needs no extra package.
An answer below 300 is a delivery; a refused connection, a timeout, a 5xx, 408 or 429 is worth
trying again later; any other answer (a 3xx, a 4xx) will not change by retrying:
:class:`WebhookResult` says which.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_core import to_jsonable_python

from vivace.blocks.core import Block, _check_name

if TYPE_CHECKING:
    import urllib.error
    import urllib.request

    from vivace.blocks.store import Bind

MAX_TIMEOUT = 60.0
"""Longest ``timeout`` a webhook may have: the service claims a delivery for a bounded time."""
SLACK_TEXT_LIMIT = 2900  # Slack refuses a section's text over 3000 characters
_SHOWN_BODY = 200  # characters of an error answer's body quoted in the recorded error
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATE_ICONS = {
    "COMPLETED": ":white_check_mark:",
    "FAILED": ":x:",
    "CRASHED": ":boom:",
    "CANCELLED": ":no_entry_sign:",
    "SCHEDULED": ":hourglass:",
}


@dataclasses.dataclass(frozen=True, slots=True)
class FlowRunNotification:
    """What one notification says: a flow run entered a state that a policy watches."""

    flow_run_id: uuid.UUID
    flow_run_name: str
    flow_name: str
    state_type: str
    state_name: str
    message: str | None
    # When the run entered the state.
    timestamp: dt.datetime
    deployment: str | None
    tags: tuple[str, ...]
    # The run's page in the UI; None when no base URL is configured.
    url: str | None
    policy: str


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookResult:
    """How one request went. ``permanent``: a failure that retrying will not fix."""

    ok: bool
    status: int | None = None
    error: str | None = None
    permanent: bool = False
    # Seconds the endpoint asked to wait (a 429 or 503 ``Retry-After``), if it said.
    retry_after: float | None = None

    def describe(self) -> str:
        """``"HTTP 200"``, or the error."""
        if self.ok:
            return f"HTTP {self.status}"
        return self.error or "failed"


class Webhook(Block):
    """An HTTP endpoint that receives flow-run notifications as JSON (see the module docstring)."""

    url: SecretStr = Field(description="http:// or https:// URL; kept secret (Slack's is a key).")
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers, such as Authorization."
    )
    format: Literal["json", "slack"] = Field(
        default="json", description="json: vivace's JSON document; slack: Slack's message body."
    )
    timeout: float = Field(
        default=10.0, gt=0, le=MAX_TIMEOUT, description="Seconds to wait for each network step."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        # Never quote the URL in the error: it may be the credential itself.
        expected = "expected an http:// or https:// URL with a host name, without spaces"
        text = value.get_secret_value()
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ValueError(expected) from None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in text)
        ):
            raise ValueError(expected)
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if any(char in header.get_secret_value() for char in "\r\n\x00"):
                raise ValueError(f"header {name!r} holds a line break or NUL; expected one line")
        return value

    @property
    def host(self) -> str:
        """The endpoint's host name: what messages name instead of the (secret) URL."""
        return urllib.parse.urlsplit(self.url.get_secret_value()).hostname or "?"

    def body(self, notification: FlowRunNotification) -> dict[str, Any]:
        """The JSON document sent for ``notification``, in this block's ``format``."""
        if self.format == "slack":
            return slack_body(notification)
        return json_body(notification)

    def send(self, notification: FlowRunNotification) -> WebhookResult:
        """Send ``notification`` now, once; never raises for a failed request."""
        return self.post(self.body(notification))

    def post(self, body: dict[str, Any]) -> WebhookResult:
        """Send ``body`` as JSON with this block's method and headers; never raises for a failed
        request (the result says what happened)."""
        import http.client
        import urllib.error
        import urllib.request

        from vivace import __version__

        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"vivace/{__version__}",
            **{name: value.get_secret_value() for name, value in self.headers.items()},
        }
        request = urllib.request.Request(
            self.url.get_secret_value(),
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers=headers,
            method=self.method,
        )
        try:
            with _opener().open(request, timeout=self.timeout) as response:
                response.read(1024)
                return WebhookResult(ok=True, status=response.status)
        except urllib.error.HTTPError as error:
            return self._refused(error)
        except (http.client.InvalidURL, ValueError):
            # Their messages quote the URL, which is secret.
            return WebhookResult(
                ok=False, error=f"the webhook URL for {self.host} is not valid", permanent=True
            )
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                message = f"no answer from {self.host} within {self.timeout:g} s"
            else:
                message = f"cannot reach {self.host}: {reason}"
            return WebhookResult(ok=False, error=message)

    def _refused(self, error: urllib.error.HTTPError) -> WebhookResult:
        status = error.code
        try:
            text = error.read(_SHOWN_BODY * 4).decode("utf-8", "replace")
        except OSError:
            text = ""
        text = " ".join(text.split())[:_SHOWN_BODY]
        detail = f"HTTP {status} {error.reason} from {self.host}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            detail += "; expected the webhook's final URL, not one that redirects"
        retry_after = _seconds(error.headers.get("Retry-After")) if error.headers else None
        permanent = status < 500 and status not in (408, 429)
        return WebhookResult(
            ok=False, status=status, error=detail, permanent=permanent, retry_after=retry_after
        )


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """urllib's opener without redirects: it would follow a POST's redirect as a GET without
    the body, so a redirect is reported instead (urllib is imported on first use)."""
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(NoRedirects)


# -- bodies -------------------------------------------------------------------------------------


def json_body(notification: FlowRunNotification) -> dict[str, Any]:
    """vivace's generic JSON document for ``notification``."""
    return {
        "flow_run": {
            "id": str(notification.flow_run_id),
            "name": notification.flow_run_name,
            "flow_name": notification.flow_name,
            "state_type": notification.state_type,
            "state_name": notification.state_name,
            "message": notification.message,
            "deployment": notification.deployment,
            "tags": list(notification.tags),
            "url": notification.url,
        },
        "policy": notification.policy,
        "timestamp": notification.timestamp.astimezone(dt.UTC).isoformat(),
    }


def slack_body(notification: FlowRunNotification) -> dict[str, Any]:
    """A Slack incoming-webhook message for ``notification``: ``text`` (what notifications and
    old clients show) and ``blocks`` (the formatted message)."""
    run = f"flow run '{notification.flow_run_name}' of flow '{notification.flow_name}'"
    text = f"The {run} entered {notification.state_name}"
    if notification.message:
        text += f": {_shorten(notification.message, 300)}"
    if notification.url:
        text += f" {notification.url}"
    name = _slack_escape(notification.flow_run_name)
    if notification.url:
        name = f"<{notification.url}|{name}>"
    icon = _STATE_ICONS.get(notification.state_type, ":information_source:")
    headline = (
        f"{icon} Flow run *{name}* of flow *{_slack_escape(notification.flow_name)}* "
        f"entered *{_slack_escape(notification.state_name)}*"
    )
    blocks: list[dict[str, Any]] = [_section(headline)]
    if notification.message:
        # A code block keeps a traceback's layout; a ``` inside would end it early.
        message = _shorten(notification.message, SLACK_TEXT_LIMIT).replace("```", "'''")
        blocks.append(_section(f"```{_slack_escape(message)}```"))
    context = [f"policy {_slack_escape(notification.policy)}"]
    if notification.deployment:
        context.append(f"deployment {_slack_escape(notification.deployment)}")
    if notification.tags:
        context.append("tags " + ", ".join(_slack_escape(tag) for tag in notification.tags))
    context.append(notification.timestamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": text, "blocks": blocks}


def sample_notification(policy: str) -> FlowRunNotification:
    """A made-up notification, for ``vivace notification test``: a run that failed just now."""
    return FlowRunNotification(
        flow_run_id=uuid.UUID(int=0),
        flow_run_name="test-notification",
        flow_name="vivace-test",
        state_type="FAILED",
        state_name="Failed",
        message="This is a test notification from `vivace notification test`.",
        timestamp=dt.datetime.now(dt.UTC),
        deployment=None,
        tags=(),
        url=None,
        policy=policy,
    )


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions: user text must not make any.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is rare for webhooks: ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# -- saving and loading by database URL ----------------------------------------------------------


def load_webhook(bind: Bind, name: str) -> Webhook:
    """The webhook block saved as ``name`` in the database ``bind`` (``Webhook.load`` reads the
    settings' database; the server and its services read the one they serve).

    Raises ``BlockNotFoundError``, ``BlockTypeError`` (not a webhook) or
    ``SecretDecryptionError``, like ``Webhook.load``.
    """
    from vivace.blocks.store import read_block
    from vivace.exceptions import BlockNotFoundError

    _check_name(name)
    record = read_block(bind, name)
    if record is None:
        raise BlockNotFoundError(f"no block named {name!r} is saved; see `vivace block ls`")
    webhook_class = Webhook._stored_class(name, record.block_type)
    return webhook_class._from_stored(name, record.data)


def save_webhook(bind: Bind, name: str, webhook: Webhook) -> uuid.UUID:
    """Save ``webhook`` as ``name`` in the database ``bind`` (``BlockExistsError`` if taken)."""
    from vivace.blocks.encryption import encrypt_secrets, load_encryption_key
    from vivace.blocks.store import write_block

    _check_name(name)
    data = to_jsonable_python(
        encrypt_secrets(webhook.model_dump(mode="python"), load_encryption_key())
    )
    return write_block(bind, name, webhook.block_type_path, data, overwrite=False)


def webhook_block_problem(bind: Bind, name: str) -> str | None:
    """Why ``name`` cannot be a policy's webhook block (no such block, another type), or None.

    Reads only the stored type: neither the encryption key nor the secrets are needed.
    """
    from vivace.blocks.core import resolve_block_type
    from vivace.blocks.store import read_block
    from vivace.exceptions import BlockTypeError

    record = read_block(bind, name)
    if record is None:
        return (
            f"no block named {name!r} is saved; expected the name of a Webhook block "
            "(`vivace block ls --type Webhook`), or --webhook-url to create one"
        )
    try:
        found = resolve_block_type(record.block_type, block_name=name)
    except BlockTypeError as error:
        return str(error)
    if not issubclass(found, Webhook):
        return f"block {name!r} is a {found.__name__}, not a Webhook; expected a Webhook block"
    return None
