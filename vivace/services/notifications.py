"""The notifications service: sends a webhook when a flow run enters a state a policy watches.

Every ``VIVACE_NOTIFICATIONS_LOOP_SECONDS`` (2 s) one loop does two things:

1. **Match.** It reads the flow-run states written since its cursor (``flow_run_states``, by the
   index on the time each row was written, ``recorded``) that an active policy asks for, and
   creates one pending delivery per policy and state
   (:func:`vivace.store.notifications.enqueue_deliveries`). By the time written, not the time
   entered: a state whose writer waited out a database outage lands with an old time of its
   own, and is still new. States reach the database in batches from the processes that run
   flows, and a batch's transaction may commit after a later one: each loop reads again what
   was written in the last ``LOOKBACK_SECONDS`` (5 min), and the unique (policy, run, state)
   index of the deliveries keeps every notification single. The cursor,
   kept in ``service_state``, only matters after the service was stopped for longer than that:
   it then reads on from where it stopped, ``BATCH_SIZE`` states per policy per loop.
2. **Send.** It claims the due pending deliveries, ``SENDERS`` at a time, and sends each round
   with its policies' webhook blocks, up to ``SEND_LIMIT`` per loop. A claim is a lease of
   ``LEASE_SECONDS``, so a second service process never sends the same one, and a delivery
   whose sender died is sent again once its lease ends (delivery is at least once). A delivery
   that fails (no connection, no answer within the block's timeout, HTTP 5xx, 408 or 429) is
   tried again after 5 s, 10 s, 20 s... (at most ``MAX_RETRY_SECONDS``, or longer if the endpoint's
   ``Retry-After`` says so) until ``VIVACE_NOTIFICATION_MAX_ATTEMPTS`` attempts, then recorded
   ``failed``; one the endpoint refuses (another 4xx, a redirect) fails at once. Each attempt's
   error is kept in ``last_error``; ``vivace notification ls`` and ``/notifications`` show them.

The link to the run's page is ``VIVACE_UI_URL`` (or ``VIVACE_API_URL`` without its ``/api``)
followed by ``/flow-runs/<id>``. Without either, ``vivace server start`` links to itself
(``localhost`` when it listens on every interface); ``vivace server services start``, which
does not know where the UI is, sends no link.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from vivace.blocks.notifications import (
    MAX_TIMEOUT,
    FlowRunNotification,
    Webhook,
    WebhookResult,
    load_webhook,
)
from vivace.engine.states import describe_exception
from vivace.exceptions import BlockError
from vivace.services.base import Service
from vivace.settings import Settings, get_settings
from vivace.store.notifications import (
    DELIVERED,
    FAILED,
    PENDING,
    DueDelivery,
    claim_due_deliveries,
    enqueue_deliveries,
    record_delivery_outcome,
)
from vivace.store.service_state import read_service_data, update_service_data

NAME = "notifications"
LOOKBACK_SECONDS = 300.0
"""How far back each loop reads states again, for those that reached the database late."""
BATCH_SIZE = 500
"""New states matched per policy per loop."""
SEND_LIMIT = 100
"""Deliveries sent per loop, at most."""
SENDERS = 8
"""Requests in flight at once; also how many deliveries one claim takes."""
LEASE_SECONDS = 2 * MAX_TIMEOUT
"""How long a claimed delivery is left to its sender before another may try it: longer than a
round of requests can take (each waits at most its block's timeout to connect, and to read)."""
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0

logger = logging.getLogger("vivace.services.notifications")


@dataclasses.dataclass(frozen=True, slots=True)
class LoopReport:
    """What one loop did: deliveries created, and how this loop's attempts ended."""

    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def summary(self) -> str | None:
        """``"queued 2, delivered 1, retrying 1"``, or None for a loop that did nothing."""
        parts = [
            f"{label} {count}"
            for label, count in (
                ("queued", self.queued),
                ("delivered", self.delivered),
                ("retrying", self.retrying),
                ("failed", self.failed),
            )
            if count
        ]
        return ", ".join(parts) or None


def notify(url: str, *, now: float | None = None) -> LoopReport:
    """One loop over the database at ``url`` (see the module docstring).

    ``now``: the loop's time (tests step it to make retries due); default: the clock.
    """
    now = time.time() if now is None else now
    settings = get_settings()
    queued = _enqueue(url, now)
    statuses = _send_due(url, now, settings)
    return LoopReport(
        queued=queued,
        delivered=statuses.count(DELIVERED),
        retrying=statuses.count(PENDING),
        failed=statuses.count(FAILED),
    )


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1): 5, 10, 20... capped,
    but at least what the endpoint asked for in ``Retry-After`` (capped too)."""
    delay: float = min(FIRST_RETRY_SECONDS * 2.0 ** (attempt - 1), MAX_RETRY_SECONDS)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_SECONDS))
    return delay


def flow_run_url(settings: Settings, flow_run_id: uuid.UUID) -> str | None:
    """The run's page in the UI, from ``VIVACE_UI_URL`` or ``VIVACE_API_URL`` (None: neither)."""
    base = settings.ui_url
    if not base and settings.api_url:
        base = settings.api_url.rstrip("/").removesuffix("/api")
    if not base:
        return None
    return f"{base.rstrip('/')}/flow-runs/{flow_run_id}"


def _enqueue(url: str, now: float) -> int:
    """Match the states since the cursor (and the look-back window) to the policies."""
    window_start = now - LOOKBACK_SECONDS
    read_from = read_service_data(url, NAME).get("read_from")
    since = window_start
    if isinstance(read_from, int | float):
        since = min(float(read_from), window_start)
    result = enqueue_deliveries(url, since=since, batch_size=BATCH_SIZE, now=now)
    # Caught up: the next loop reads the window again. Else it reads on from the last state
    # taken (a policy had more new states than one batch).
    next_from = window_start if result.read_until is None else min(result.read_until, window_start)
    update_service_data(url, NAME, {"read_from": next_from})
    return result.created


def _send_due(url: str, now: float, settings: Settings) -> list[str]:
    """Send the due deliveries, ``SENDERS`` at a time: claim a round, send it, record each
    outcome, and again, up to ``SEND_LIMIT``; return their statuses.

    Claiming round by round keeps each claim's lease longer than its round can take (each
    request is bounded by its block's timeout), so no delivery waits in a queue while its lease
    runs out. The loop's clock goes on from ``now`` as real time passes.
    """
    started = time.monotonic()
    webhooks: dict[str, Webhook | str] = {}
    statuses: list[str] = []
    with ThreadPoolExecutor(SENDERS, thread_name_prefix="vivace-notify") as pool:
        while len(statuses) < SEND_LIMIT:
            clock = now + (time.monotonic() - started)
            due = claim_due_deliveries(url, now=clock, limit=SENDERS, lease_seconds=LEASE_SECONDS)
            for name in {item.block_name for item in due} - set(webhooks):
                webhooks[name] = _webhook(url, name)
            rounds = [(url, item, webhooks, clock, settings) for item in due]
            statuses.extend(pool.map(lambda args: _deliver(*args), rounds))
            if len(due) < SENDERS:
                break
    return statuses


def _webhook(url: str, name: str) -> Webhook | str:
    """The webhook block ``name``, or why it cannot be used (a delivery then retries)."""
    try:
        return load_webhook(url, name)
    except BlockError as error:  # gone, another type, another encryption key
        return f"cannot use the webhook block {name!r}: {error}"


def _deliver(
    url: str, item: DueDelivery, webhooks: dict[str, Webhook | str], now: float, settings: Settings
) -> str:
    """Send one claimed delivery and record the outcome; return its status afterwards."""
    try:
        outcome = _attempt(item, webhooks[item.block_name], settings)
    except Exception as error:  # never leave a claimed delivery without its outcome
        logger.exception("sending notification %s failed unexpectedly", item.id)
        outcome = WebhookResult(ok=False, error=describe_exception(error))
    return _record(url, item, outcome, now, settings.notification_max_attempts)


def _attempt(item: DueDelivery, webhook: Webhook | str, settings: Settings) -> WebhookResult:
    if isinstance(webhook, str):
        return WebhookResult(ok=False, error=webhook)
    if item.flow_run_name is None or item.flow_name is None:
        return WebhookResult(
            ok=False,
            error=f"flow run {item.flow_run_id} is no longer in the run history",
            permanent=True,
        )
    return webhook.send(_notification(item, settings))


def _notification(item: DueDelivery, settings: Settings) -> FlowRunNotification:
    assert item.flow_run_name is not None and item.flow_name is not None
    return FlowRunNotification(
        flow_run_id=item.flow_run_id,
        flow_run_name=item.flow_run_name,
        flow_name=item.flow_name,
        state_type=item.state_type or "",
        state_name=item.state_name,
        message=item.message,
        timestamp=item.timestamp or _utc(time.time()),
        deployment=item.deployment_name,
        tags=item.tags,
        url=flow_run_url(settings, item.flow_run_id),
        policy=item.policy_name,
    )


def _record(
    url: str, item: DueDelivery, outcome: WebhookResult, now: float, max_attempts: int
) -> str:
    """Record the attempt's outcome; return the delivery's status afterwards."""
    label = f"notification of policy {item.policy_name!r} for flow run {item.flow_run_id}"
    if outcome.ok:
        status, error, retry_at = DELIVERED, None, None
    elif outcome.permanent or item.attempt >= max_attempts:
        status, error, retry_at = FAILED, outcome.describe(), None
        logger.warning("%s failed after %d attempt(s): %s", label, item.attempt, outcome.describe())
    else:
        status, error = PENDING, outcome.describe()
        retry_at = now + retry_delay(item.attempt, outcome.retry_after)
        logger.info("%s: attempt %d failed (%s); trying again", label, item.attempt, error)
    record_delivery_outcome(url, item.id, item.attempt, now=now, error=error, retry_at=retry_at)
    return status


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _loop(url: str) -> str | None:
    return notify(url).summary()


SERVICE = Service(
    name=NAME,
    description="sends the notifications of flow runs' states to webhooks, with retries",
    loop=_loop,
    interval=lambda settings: settings.notifications_loop_seconds,
)
