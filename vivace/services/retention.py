"""The retention service: deletes the run history older than ``VIVACE_RETENTION_DAYS``.

Off by default (history is kept for good). Once ``VIVACE_RETENTION_DAYS`` is set, every
``VIVACE_RETENTION_LOOP_SECONDS`` (an hour by default) a loop deletes the flow runs that ended
before then, with all their rows, and the rest that :mod:`vivace.store.retention` lists, in
transactions of ``VIVACE_RETENTION_BATCH_SIZE`` flow runs. A loop stops starting new batches
after ``LOOP_BUDGET_SECONDS``, so turning retention on over years of history never holds the
database for long: the loop says how many expired runs it left, and while some remain the next
loop comes after ``BACKLOG_PAUSE_SECONDS`` instead of the full interval.
"""

from __future__ import annotations

from vivace.services.base import Backlog, Service
from vivace.settings import Settings, get_settings

LOOP_BUDGET_SECONDS = 5.0
"""Seconds after which a loop starts no new batch (each kind of row still gets one)."""

BACKLOG_PAUSE_SECONDS = 10.0
"""Seconds between loops while expired runs remain (when the setting's interval is longer)."""

# Whether the last loop in this process left expired runs behind.
_backlog = Backlog(BACKLOG_PAUSE_SECONDS)


def _loop(url: str) -> str | None:
    from vivace.store.retention import delete_expired, retention_cutoff

    settings = get_settings()
    if settings.retention_days is None:
        _backlog.clear()
        return None
    report = delete_expired(
        url,
        retention_cutoff(settings.retention_days),
        batch_size=settings.retention_batch_size,
        time_budget=LOOP_BUDGET_SECONDS,
    )
    _backlog.update(bool(report.remaining))
    return report.summary()


def _interval(settings: Settings) -> float:
    return _backlog.interval(settings.retention_loop_seconds)


SERVICE = Service(
    name="retention",
    description="deletes flow runs, task runs and logs older than VIVACE_RETENTION_DAYS",
    loop=_loop,
    interval=_interval,
    enabled=lambda settings: settings.retention_days is not None,
)
