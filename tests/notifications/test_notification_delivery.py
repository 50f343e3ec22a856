"""The notifications service end to end, on SQLite and PostgreSQL: flow runs enter states, a loop
(``notify``, stepped by hand with its clock) matches them to policies and sends them to a real
HTTP receiver on 127.0.0.1, retrying with backoff and recording every attempt."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import free_port, states_as_an_older_vivace_writes_them
from tests.notifications.conftest import Receiver
from tests.notifications.notify_helpers import deployment, ended_run, later, webhook_policy
from vivace import flow
from vivace.blocks.core import Block
from vivace.engine.states import StateType
from vivace.services import notifications as service
from vivace.services.notifications import LoopReport, notify
from vivace.settings import reset_settings
from vivace.store import schema
from vivace.store.database import get_engine, transaction
from vivace.store.notifications import (
    claim_due_deliveries,
    enqueue_deliveries,
    read_notification_deliveries,
    set_notification_policy_active,
)
from vivace.store.service_state import read_service_data, update_service_data
from vivace.store.writer import get_writer


@flow
def nightly_etl() -> None:
    raise ValueError("disk full on /data")


def _deliveries(url: str) -> list[Any]:
    return read_notification_deliveries(url, limit=1000)


def test_a_failed_flow_run_sends_one_notification_with_its_error_and_link(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_UI_URL", "https://vivace.example.com/")
    reset_settings()
    webhook_policy(database_url, receiver.url, states=("Failed", "Crashed"))
    state = nightly_etl(return_state=True)
    get_writer().flush()

    first = notify(database_url)
    again = notify(database_url)

    assert first == LoopReport(queued=1, delivered=1)
    assert again == LoopReport()
    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["Content-Type"].startswith("application/json")
    run = request.body["flow_run"]
    assert run == {
        "id": str(state.run_id),
        "name": run["name"],
        "flow_name": "nightly_etl",
        "state_type": "FAILED",
        "state_name": "Failed",
        "message": "ValueError: disk full on /data",
        "deployment": None,
        "tags": [],
        "url": f"https://vivace.example.com/flow-runs/{state.run_id}",
    }
    assert run["name"] and request.body["policy"] == "failures"
    assert request.body["timestamp"].endswith("+00:00")
    (delivery,) = _deliveries(database_url)
    assert (delivery.status, delivery.attempts, delivery.state_name) == ("delivered", 1, "Failed")
    assert delivery.delivered is not None and delivery.last_error is None


def test_slack_body_names_the_run_links_it_and_escapes_its_text(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_API_URL", "http://vivace.internal:4200/api")
    reset_settings()
    webhook_policy(database_url, receiver.url, states=("crashed",), format="slack")
    nightly = deployment(database_url, "nightly")
    run_id = ended_run(
        database_url, nightly, message="worker <@here> lost & gone", tags=("etl", "prod")
    )

    assert notify(database_url).delivered == 1

    (body,) = receiver.bodies()
    link = f"http://vivace.internal:4200/flow-runs/{run_id}"
    assert set(body) == {"text", "blocks"}
    assert "entered Crashed: worker <@here> lost & gone" in body["text"]
    assert link in body["text"]
    headline, message, context = body["blocks"]
    assert headline["type"] == "section" and headline["text"]["type"] == "mrkdwn"
    assert f"*<{link}|" in headline["text"]["text"]
    assert "of flow *etl* entered *Crashed*" in headline["text"]["text"]
    assert message["text"]["text"] == "```worker &lt;@here&gt; lost &amp; gone```"
    assert context["type"] == "context"
    context_text = context["elements"][0]["text"]
    assert "policy failures" in context_text and "deployment nightly" in context_text
    assert "tags etl, prod" in context_text


def test_filters_by_flow_tag_and_deployment(database_url: str, receiver: Receiver) -> None:
    nightly = deployment(database_url, "nightly", flow_name="etl")
    hourly = deployment(database_url, "hourly", flow_name="etl")
    report = deployment(database_url, "report", flow_name="reports")
    webhook_policy(database_url, receiver.url, "any-run", states=("Crashed",))
    webhook_policy(database_url, receiver.url, "etl-flow", states=("Crashed",), flow_names=["etl"])
    webhook_policy(
        database_url, receiver.url, "prod-or-pii", states=("Crashed",), tags=["prod", "pii"]
    )
    webhook_policy(
        database_url,
        receiver.url,
        "hourly-only",
        states=("Crashed",),
        deployment_names=["hourly"],
    )
    runs = {
        ended_run(database_url, nightly, tags=("prod",)): "nightly+prod",
        ended_run(database_url, hourly, tags=("dev",)): "hourly+dev",
        ended_run(database_url, report, tags=("pii", "x")): "report+pii",
    }

    assert notify(database_url).delivered == 8

    sent = {(body["policy"], runs[uuid.UUID(body["flow_run"]["id"])]) for body in receiver.bodies()}
    assert sent == {
        ("any-run", "nightly+prod"),
        ("any-run", "hourly+dev"),
        ("any-run", "report+pii"),
        ("etl-flow", "nightly+prod"),
        ("etl-flow", "hourly+dev"),
        ("prod-or-pii", "nightly+prod"),
        ("prod-or-pii", "report+pii"),
        ("hourly-only", "hourly+dev"),
    }
    assert len(receiver.requests) == 8


def test_a_type_name_matches_its_variants_and_a_variant_only_itself(
    database_url: str, receiver: Receiver
) -> None:
    nightly = deployment(database_url)
    webhook_policy(database_url, receiver.url, "failed", states=("FAILED",))
    webhook_policy(database_url, receiver.url, "timed-out", states=("timedout",))
    webhook_policy(database_url, receiver.url, "late", states=("Late",))
    webhook_policy(database_url, receiver.url, "completed", states=("Completed",))
    timed_out = ended_run(database_url, nightly, StateType.FAILED, "TimedOut", "ran over 60 s")
    failed = ended_run(database_url, nightly, StateType.FAILED, "Failed", "ValueError: no")
    late = ended_run(database_url, nightly, StateType.SCHEDULED, "Late", "not started in time")

    notify(database_url)

    sent = {(body["policy"], uuid.UUID(body["flow_run"]["id"])) for body in receiver.bodies()}
    assert sent == {
        ("failed", timed_out),
        ("failed", failed),
        ("timed-out", timed_out),
        ("late", late),
    }


def test_a_failing_endpoint_is_retried_with_backoff_and_every_attempt_recorded(
    database_url: str, receiver: Receiver
) -> None:
    secret_url = receiver.url + "/T0001/SECRET-TOKEN"
    webhook_policy(database_url, secret_url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    receiver.answer(500, 503)

    start = time.time()
    assert notify(database_url, now=start) == LoopReport(queued=1, retrying=1)
    (delivery,) = _deliveries(database_url)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "HTTP 500" in delivery.last_error and "127.0.0.1" in delivery.last_error
    assert "SECRET-TOKEN" not in delivery.last_error
    assert delivery.next_attempt.timestamp() == pytest.approx(start + 5, abs=1)

    assert notify(database_url, now=start + 4) == LoopReport()  # not due yet
    assert len(receiver.requests) == 1
    assert notify(database_url, now=start + 6) == LoopReport(retrying=1)
    (delivery,) = _deliveries(database_url)
    assert delivery.attempts == 2
    assert delivery.next_attempt.timestamp() == pytest.approx(start + 16, abs=1)  # 10 s later
    assert "HTTP 503" in delivery.last_error
    assert notify(database_url, now=start + 18) == LoopReport(delivered=1)

    (delivery,) = _deliveries(database_url)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, None)
    bodies = receiver.bodies()
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]


def test_a_refusing_endpoint_is_given_up_at_once(database_url: str, receiver: Receiver) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    receiver.answer(404)

    assert notify(database_url).failed == 1
    assert notify(database_url, now=later(3600)) == LoopReport()

    (delivery,) = _deliveries(database_url)
    assert (delivery.status, delivery.attempts, delivery.next_attempt) == ("failed", 1, None)
    assert "HTTP 404" in delivery.last_error and "the receiver says no" in delivery.last_error
    assert len(receiver.requests) == 1


def test_rate_limits_are_retried_after_what_the_endpoint_asks(
    database_url: str, receiver: Receiver
) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    receiver.answer(429, headers={"Retry-After": "42"})

    start = time.time()
    assert notify(database_url, now=start).retrying == 1

    (delivery,) = _deliveries(database_url)
    assert delivery.next_attempt.timestamp() == pytest.approx(start + 42, abs=1)


def test_it_stops_after_the_maximum_attempts(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_NOTIFICATION_MAX_ATTEMPTS", "2")
    reset_settings()
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    receiver.answer(500, 500, 500)

    assert notify(database_url).retrying == 1
    assert notify(database_url, now=later(6)).failed == 1
    assert notify(database_url, now=later(3600)) == LoopReport()

    (delivery,) = _deliveries(database_url)
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert len(receiver.requests) == 2


def test_an_unreachable_endpoint_is_retried(database_url: str) -> None:
    webhook_policy(database_url, f"http://127.0.0.1:{free_port()}/hook", states=("Crashed",))
    ended_run(database_url, deployment(database_url))

    assert notify(database_url).retrying == 1

    (delivery,) = _deliveries(database_url)
    assert "cannot reach 127.0.0.1" in delivery.last_error


def test_two_loops_at_once_send_each_notification_once(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "SENDERS", 2)  # each loop claims several rounds
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    nightly = deployment(database_url)
    runs = {ended_run(database_url, nightly) for _ in range(7)}
    barrier = threading.Barrier(2)
    reports: list[LoopReport] = []

    def loop() -> None:
        barrier.wait()
        reports.append(notify(database_url))

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(reports) == 2
    assert sum(report.queued for report in reports) == 7
    assert sum(report.delivered for report in reports) == 7
    sent = [uuid.UUID(body["flow_run"]["id"]) for body in receiver.bodies()]
    assert sorted(sent) == sorted(runs)
    assert {d.status for d in _deliveries(database_url)} == {"delivered"}


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(
    database_url: str, receiver: Receiver
) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    now = time.time()
    assert enqueue_deliveries(database_url, since=now - 60, now=now).created == 1

    (first,) = claim_due_deliveries(database_url, now=now, limit=10, lease_seconds=120)
    assert claim_due_deliveries(database_url, now=now + 119, limit=10, lease_seconds=120) == []
    (again,) = claim_due_deliveries(database_url, now=now + 121, limit=10, lease_seconds=120)

    assert (first.id, first.attempt, again.attempt) == (again.id, 1, 2)
    assert first.policy_name == "failures" and first.state_name == "Crashed"


def test_a_paused_policy_is_muted(database_url: str, receiver: Receiver) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    nightly = deployment(database_url)
    ended_run(database_url, nightly)
    now = time.time()
    enqueue_deliveries(database_url, since=now - 60, now=now)  # queued, not sent yet
    set_notification_policy_active(database_url, "failures", False)
    ended_run(database_url, nightly)

    assert notify(database_url) == LoopReport()
    assert receiver.requests == []

    set_notification_policy_active(database_url, "failures", True)
    # What was queued before the pause goes out; what happened while paused stays muted.
    assert notify(database_url) == LoopReport(delivered=1)
    assert len(receiver.requests) == 1
    ended_run(database_url, nightly)
    assert notify(database_url) == LoopReport(queued=1, delivered=1)


def test_a_deleted_policy_sends_nothing_more_even_to_a_loop_that_read_it_before(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.store import notifications as store

    webhook_policy(database_url, receiver.url, states=("Crashed",))
    nightly = deployment(database_url)
    ended_run(database_url, nightly)
    now = time.time()
    assert enqueue_deliveries(database_url, since=now - 60, now=now).created == 1
    ended_run(database_url, nightly)
    # A loop lists the active policies, then the policy is deleted before it inserts.
    listed = store.read_notification_policies(database_url, active_only=True)
    assert store.delete_notification_policy(database_url, "failures")
    monkeypatch.setattr(store, "read_notification_policies", lambda *args, **kwargs: listed)

    assert enqueue_deliveries(database_url, since=now - 60, now=now).created == 0
    monkeypatch.undo()

    assert notify(database_url) == LoopReport()
    assert receiver.requests == []
    with get_engine(database_url).connect() as conn:
        table = schema.notification_deliveries
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


def test_a_state_that_lands_late_is_still_sent_and_older_history_is_not(
    database_url: str, receiver: Receiver
) -> None:
    nightly = deployment(database_url)
    before = ended_run(database_url, nightly)  # before the policy: never notified
    policy = webhook_policy(database_url, receiver.url, states=("Crashed",))
    assert notify(database_url) == LoopReport()
    # A state entered 60 s ago, written only now (a writer's batch that waited): behind the
    # cursor of the loop that already ran, inside the look-back window.
    run_id = ended_run(database_url, nightly)
    backdated = policy.created.timestamp() + 0.001
    with transaction(get_engine(database_url)) as conn:
        states = schema.flow_run_states
        conn.execute(
            sa.update(states).where(states.c.flow_run_id == run_id).values(timestamp=backdated)
        )

    assert notify(database_url, now=backdated + 60).delivered == 1

    (body,) = receiver.bodies()
    assert body["flow_run"]["id"] == str(run_id) != str(before)


def test_a_state_written_long_after_it_was_entered_is_still_sent(
    database_url: str, receiver: Receiver
) -> None:
    """A writer that waited out a database outage writes states entered long before: they are
    new when they land, whatever the look-back window."""
    policy = webhook_policy(database_url, receiver.url, states=("Failed",))
    two_hours_ago = time.time() - 7200
    engine = get_engine(database_url)
    with transaction(engine) as conn:  # the policy has been active for two hours
        table = schema.notification_policies
        conn.execute(
            sa.update(table)
            .where(table.c.id == policy.id)
            .values(created=two_hours_ago, updated=two_hours_ago)
        )
    assert notify(database_url) == LoopReport()  # the service's cursor is at now
    before_writing = time.time()
    state = nightly_etl(return_state=True)
    get_writer().flush()
    states = schema.flow_run_states
    with transaction(engine) as conn:  # entered an hour ago, as the outage began
        conn.execute(
            sa.update(states)
            .where(states.c.flow_run_id == state.run_id)
            .values(timestamp=two_hours_ago + 3600)
        )

    assert notify(database_url) == LoopReport(queued=1, delivered=1)

    (body,) = receiver.bodies()
    assert body["flow_run"]["id"] == str(state.run_id)
    with transaction(engine) as conn:  # the flow's writer stamped its rows as it wrote them
        recorded = (
            conn.execute(sa.select(states.c.recorded).where(states.c.flow_run_id == state.run_id))
            .scalars()
            .all()
        )
    assert recorded and all(when.timestamp() >= before_writing - 1 for when in recorded)


def test_a_state_written_by_an_older_vivace_is_stamped_by_the_database_and_sent(
    database_url: str, receiver: Receiver
) -> None:
    """A process started before the upgrade writes states without ``recorded``: the database
    stamps them (a default on PostgreSQL, a trigger on SQLite), and they are sent."""
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    nightly = deployment(database_url)
    run_id = ended_run(database_url, nightly)
    states = schema.flow_run_states
    older = states_as_an_older_vivace_writes_them()
    crashed = (states.c.flow_run_id == run_id) & (states.c.type == "CRASHED")
    with transaction(get_engine(database_url)) as conn:
        row = conn.execute(sa.select(*(states.c[c.name] for c in older.c)).where(crashed)).one()
        conn.execute(sa.delete(states).where(crashed))
        conn.execute(sa.insert(older).values(**row._asdict()))
        recorded = conn.execute(sa.select(states.c.recorded).where(crashed)).scalar_one()

    assert recorded.timestamp() == pytest.approx(time.time(), abs=5)
    assert notify(database_url) == LoopReport(queued=1, delivered=1)
    (body,) = receiver.bodies()
    assert body["flow_run"]["id"] == str(run_id)


def test_after_a_long_stop_it_reads_on_from_its_cursor_in_batches(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "BATCH_SIZE", 2)
    hour_ago = time.time() - 3600
    policy = webhook_policy(database_url, receiver.url, states=("Crashed",))
    nightly = deployment(database_url)
    runs = [ended_run(database_url, nightly) for _ in range(5)]
    engine = get_engine(database_url)
    with transaction(engine) as conn:  # the policy and the crashes are an hour old
        table = schema.notification_policies
        conn.execute(
            sa.update(table)
            .where(table.c.id == policy.id)
            .values(created=hour_ago, updated=hour_ago)
        )
        for offset, run_id in enumerate(runs):
            states = schema.flow_run_states
            conn.execute(
                sa.update(states)
                .where(states.c.flow_run_id == run_id, states.c.type == "CRASHED")
                .values(timestamp=hour_ago + 60 + offset)
            )
    update_service_data(database_url, "notifications", {"read_from": hour_ago})

    queued = [notify(database_url).queued for _ in range(4)]

    assert queued == [2, 2, 1, 0]
    sent = [uuid.UUID(body["flow_run"]["id"]) for body in receiver.bodies()]
    assert sorted(sent) == sorted(runs)
    cursor = read_service_data(database_url, "notifications")["read_from"]
    assert cursor > time.time() - service.LOOKBACK_SECONDS - 60


def test_a_run_gone_from_the_history_fails_its_delivery(
    database_url: str, receiver: Receiver
) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    run_id = ended_run(database_url, deployment(database_url))
    now = time.time()
    enqueue_deliveries(database_url, since=now - 60, now=now)
    with transaction(get_engine(database_url)) as conn:
        conn.execute(sa.delete(schema.flow_runs).where(schema.flow_runs.c.id == run_id))

    assert notify(database_url, now=now).failed == 1

    (delivery,) = _deliveries(database_url)
    assert "no longer in the run history" in delivery.last_error
    assert receiver.requests == []


def test_a_missing_webhook_block_is_retried_until_it_is_back(
    database_url: str, receiver: Receiver
) -> None:
    webhook_policy(database_url, receiver.url, states=("Crashed",))
    ended_run(database_url, deployment(database_url))
    Block.delete("failures-hook")

    assert notify(database_url).retrying == 1
    (delivery,) = _deliveries(database_url)
    assert "cannot use the webhook block 'failures-hook'" in delivery.last_error

    from vivace.blocks.notifications import Webhook

    Webhook.model_validate({"url": receiver.url}).save("failures-hook")
    assert notify(database_url, now=later(6)).delivered == 1
