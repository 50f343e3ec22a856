"""The scheduler service: creates the Scheduled runs of deployments' active schedules, ahead.

Every ``VIVACE_SCHEDULER_LOOP_SECONDS`` (default 60) it runs one
:func:`vivace.store.schedules.run_scheduler_loop`: each due schedule gets runs for its next
times, up to ``VIVACE_SCHEDULER_MAX_RUNS`` runs (100) and ``VIVACE_SCHEDULER_MAX_SCHEDULED_TIME``
(100 days) ahead. A loop reads only the schedules that are due, so its cost follows them, not the
number of deployments or the history; several processes may run it at once (two servers, or a
server and ``vivace server services start``) without making a run twice.

A loop starts no new transaction after ``LOOP_BUDGET_SECONDS``: deploying a thousand schedules at
once (100,000 runs to create) makes a backlog, not one long loop. The schedules left are still
due, the most overdue first, and while some are the next loop comes after
``BACKLOG_PAUSE_SECONDS`` instead of the full interval.
"""

from __future__ import annotations

from vivace.services.base import Backlog, Service
from vivace.settings import Settings

LOOP_BUDGET_SECONDS = 0.5
"""Seconds after which a loop starts no new transaction (a transaction makes at most 2,000 runs)."""

BACKLOG_PAUSE_SECONDS = 0.5
"""Seconds between loops while due schedules remain: other writers get the database meanwhile."""

# Whether the last loop in this process left due schedules behind.
_backlog = Backlog(BACKLOG_PAUSE_SECONDS)


def _loop(url: str) -> str | None:
    from vivace.store.schedules import has_due_schedules, run_scheduler_loop

    created = run_scheduler_loop(url, time_budget=LOOP_BUDGET_SECONDS)
    left = has_due_schedules(url)
    _backlog.update(left)
    if not created:
        return None
    more = "; more are due" if left else ""
    return f"created {created} scheduled run{'s' if created != 1 else ''}{more}"


def _interval(settings: Settings) -> float:
    return _backlog.interval(settings.scheduler_loop_seconds)


SERVICE = Service(
    name="scheduler",
    description="creates the Scheduled runs of deployments' active schedules, ahead of time",
    loop=_loop,
    interval=_interval,
)
