"""The ``late_runs`` service: deployments' runs that did not start in time become Late, and the
runs later than their deployment's ``skip_late_after`` are skipped.

Every ``VIVACE_LATE_RUNS_LOOP_SECONDS`` (5 s) it first ends CANCELLED ``Skipped`` the waiting runs
their deployment says are too late to start (a backlog after an outage does not stampede), then
moves to SCHEDULED ``Late`` the runs still ``Scheduled`` ``VIVACE_LATE_AFTER_SECONDS`` (15 s) after
their expected start. A Late run is still claimed by workers like any waiting run; a notification
policy can watch for the Late state. The work is done in transactions of a hundred runs, at most
``_MAX_BATCHES`` of them per loop; the queries are in :mod:`vivace.store.run_health`.
"""

from __future__ import annotations

from collections.abc import Callable

from vivace.services.base import Service
from vivace.settings import get_settings
from vivace.store.run_health import BATCH, mark_late_runs, skip_too_late_runs

_MAX_BATCHES = 10  # per kind and loop: a backlog is worked through over a few loops


def _loop(url: str) -> str | None:
    late_after = get_settings().late_after_seconds
    skipped = _repeat(lambda: len(skip_too_late_runs(url)))
    marked = _repeat(lambda: len(mark_late_runs(url, late_after)))
    done = [
        f"{count} run{'s' if count != 1 else ''} {what}"
        for count, what in ((skipped, "skipped"), (marked, "marked Late"))
        if count
    ]
    return ", ".join(done) or None


def _repeat(batch: Callable[[], int]) -> int:
    """Run ``batch`` until it changes fewer than a full batch (or ``_MAX_BATCHES`` times)."""
    total = 0
    for _ in range(_MAX_BATCHES):
        changed = batch()
        total += changed
        if changed < BATCH:
            break
    return total


SERVICE = Service(
    name="late_runs",
    description="marks Scheduled runs that did not start in time Late, and skips the too late",
    loop=_loop,
    interval=lambda settings: settings.late_runs_loop_seconds,
)
