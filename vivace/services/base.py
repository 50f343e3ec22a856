"""What a server service is: a named loop run every so many seconds.

Each service module (``vivace.services.scheduler``, ...) defines ``SERVICE``, a
:class:`Service`: its name, a one-line description, how often it loops (read from the settings
at each loop, so tests and operators can change it) and ``loop(url)``, one pass over the
database at ``url``. A loop does a bounded amount of work, is safe to run in several processes
at once (two servers, or a server and ``vivace server services start``), and returns a short
summary of what it did for the log and ``vivace server services ls``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from vivace.settings import Settings


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    """A loop the server runs in the background."""

    name: str
    description: str
    # One pass over the database at the URL; returns a summary ("created 3 runs") or None.
    loop: Callable[[str], str | None]
    # Seconds to wait after a loop, from the settings in force.
    interval: Callable[[Settings], float]
    # Whether the service runs at all with these settings (retention is off by default).
    enabled: Callable[[Settings], bool] = lambda settings: True


class Backlog:
    """Whether a service's last loop in this process left work behind (it stopped at its time
    budget): while it did, the next loop comes after ``pause`` seconds instead of the full
    interval, so a backlog is worked off in short loops without waiting a whole interval."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._left = threading.Event()

    def update(self, left: bool) -> None:
        """Record whether the loop that just ended left work behind."""
        if left:
            self._left.set()
        else:
            self._left.clear()

    def clear(self) -> None:
        self._left.clear()

    def interval(self, full: float) -> float:
        """Seconds to the next loop, given the service's ``full`` interval."""
        return min(full, self.pause) if self._left.is_set() else full
