"""The ``zombies`` service: flow runs whose heartbeat stopped end CRASHED (no run stays RUNNING
forever).

Every running flow run heartbeats, every ``VIVACE_HEARTBEAT_INTERVAL`` seconds (a deployment's
run from its engine's heartbeat thread, any other flow run from its process's writer). Every
``VIVACE_ZOMBIES_LOOP_SECONDS`` (10 s) this service ends the runs silent for more than
``VIVACE_HEARTBEAT_MISSED_LIMIT`` intervals: CRASHED, or CANCELLED if they were being cancelled,
with their unfinished task runs, and a message saying when the heartbeat stopped. Built in: there
is nothing to set up. Each run is judged by the interval its process beats at (stamped with its
heartbeat), so flows may run with a ``VIVACE_HEARTBEAT_INTERVAL`` other than the server's; the
server's applies to a row stamped without one. The queries are in
:mod:`vivace.store.run_health`.
"""

from __future__ import annotations

from vivace.services.base import Service
from vivace.settings import get_settings
from vivace.store.run_health import BATCH, crash_zombie_runs

_MAX_BATCHES = 10  # per loop: a pile of zombies (a machine that died) goes over a few loops


def _loop(url: str) -> str | None:
    settings = get_settings()
    total = 0
    for _ in range(_MAX_BATCHES):
        ended = len(
            crash_zombie_runs(url, settings.heartbeat_missed_limit, settings.heartbeat_interval)
        )
        total += ended
        if ended < BATCH:
            break
    if not total:
        return None
    return f"{total} flow run{'s' if total != 1 else ''} whose heartbeat stopped ended"


SERVICE = Service(
    name="zombies",
    description="marks CRASHED the flow runs whose heartbeat stopped",
    loop=_loop,
    interval=lambda settings: settings.zombies_loop_seconds,
)
