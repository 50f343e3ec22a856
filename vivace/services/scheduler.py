"""The scheduler service: creates the Scheduled runs of deployments' active schedules, ahead.

Every ``VIVACE_SCHEDULER_LOOP_SECONDS`` (default 60) it runs one
:func:`vivace.store.schedules.run_scheduler_loop`: each due schedule gets runs for its next
times, up to ``VIVACE_SCHEDULER_MAX_RUNS`` runs (100) and ``VIVACE_SCHEDULER_MAX_SCHEDULED_TIME``
(100 days) ahead. A loop reads only the schedules that are due, so its cost follows them, not the
number of deployments or the history; several processes may run it at once (two servers, or a
server and ``vivace server services start``) without making a run twice.
"""

from __future__ import annotations

from vivace.services.base import Service


def _loop(url: str) -> str | None:
    from vivace.store.schedules import run_scheduler_loop

    created = run_scheduler_loop(url)
    if not created:
        return None
    return f"created {created} scheduled run{'s' if created != 1 else ''}"


SERVICE = Service(
    name="scheduler",
    description="creates the Scheduled runs of deployments' active schedules, ahead of time",
    loop=_loop,
    interval=lambda settings: settings.scheduler_loop_seconds,
)
