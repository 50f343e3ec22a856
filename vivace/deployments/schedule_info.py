"""A deployment's schedules as people see them: the CLI, the API and the UI show the same.

``upcoming_times`` is when a schedule will next want a run, from its definition alone (so it
reads the same from the database or through a server, and before the scheduler has made any
run); ``summary`` is the one line of a deployments list (whose schedules
:func:`vivace.store.schedules.read_schedules_of_deployments` reads for a whole page at once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vivace.schedules import Schedule
    from vivace.store.schedules import ScheduleRecord

UPCOMING = 3
"""How many next times are shown of a schedule."""
# As far ahead as next times are looked for: a cron of 29 February waits up to eight years.
_HORIZON = dt.timedelta(days=366 * 8 + 2)


def upcoming_times(
    schedule: Schedule, count: int = UPCOMING, now: dt.datetime | None = None
) -> list[dt.datetime]:
    """The schedule's next ``count`` times after ``now`` (default: now), aware, in UTC; fewer
    when it ends (an RRULE's UNTIL or COUNT)."""
    start = dt.datetime.now(dt.UTC) if now is None else now
    return schedule.next_times(start, start + _HORIZON, count)


def local_text(when: dt.datetime, schedule: Schedule) -> str:
    """``2027-03-29 09:00 WEST``: a time as the schedule's own zone reads it (a cron of 09:00
    in Lisbon shows 09:00, wherever it is looked at from)."""
    local = when.astimezone(schedule.zone)
    name = local.tzname()
    return local.strftime("%Y-%m-%d %H:%M") + (f" {name}" if name else "")


def summary(schedules: Sequence[ScheduleRecord]) -> str:
    """One line for a deployments list: ``cron 0 9 * * 1-5 in Europe/Lisbon``, with ``(paused)``
    when it is, or ``+ 2 more`` when there are several; empty for none."""
    if not schedules:
        return ""
    active = [record for record in schedules if record.active]
    first = (active or list(schedules))[0]
    text = first.schedule.describe() + ("" if first.active else " (paused)")
    others = len(schedules) - 1
    if others:
        paused = len(schedules) - len(active)
        text += f" + {others} more"
        if active and paused:
            text += f" ({paused} paused)"
    return text
