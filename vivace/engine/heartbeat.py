"""The heartbeat of a deployment's flow run: proof that its engine lives, and its cancel check.

While a flow run started by ``python -m vivace.engine`` runs, a daemon thread records a heartbeat
on the run's row every ``VIVACE_HEARTBEAT_INTERVAL`` seconds
(:func:`vivace.store.run_control.flow_run_heartbeat`) and reads back the run's state as the
database has it. CANCELLING means somebody asked to cancel the run (``vivace flow-run cancel``,
``POST /api/flow-runs/{id}/cancel``): the heartbeat calls ``on_cancelling`` once, with the row's
``state_seq``, and the engine stops the run (:mod:`vivace.engine.flow_engine`).

Only deployment runs have one: a plain flow call starts no thread and makes no query of its own;
its process's writer stamps its heartbeat along with those of the process's other running flow
runs (:mod:`vivace.store.writer`), without the cancel check. A run whose heartbeat stops, either
way, is ended CRASHED by the server's ``zombies`` service. A database that cannot be reached for
a while is logged once and retried at the next beat; the run goes on meanwhile.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from vivace.engine.states import StateType, describe_exception

logger = logging.getLogger("vivace.flow_runs")


class RunHeartbeat:
    """Beats for one flow run on a daemon thread (``start``/``stop``), or once on demand
    (``beat``)."""

    def __init__(
        self,
        url: str,
        flow_run_id: uuid.UUID,
        interval: float,
        on_cancelling: Callable[[int], None],
    ) -> None:
        self.url = url
        self.flow_run_id = flow_run_id
        self.interval = interval
        self.on_cancelling = on_cancelling
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._notified = False
        self._failing = False

    def beat(self) -> tuple[StateType, int] | None:
        """Record a heartbeat now; return the run's state type and ``state_seq`` in the
        database (None if the run is not there). Raises what the store raises."""
        from vivace.store.run_control import flow_run_heartbeat

        return flow_run_heartbeat(self.url, self.flow_run_id, self.interval)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="vivace-run-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self) -> bool:
        """Stop beating; return whether it has stopped (a beat in progress is waited for, a few
        seconds at most)."""
        self._stopped.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout=5)
        return not thread.is_alive()

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                found = self.beat()
            except Exception as error:
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "flow run %s: its heartbeat cannot be recorded (%s); trying again every "
                        "%g s",
                        self.flow_run_id,
                        describe_exception(error),
                        self.interval,
                    )
                continue
            self._failing = False
            if self._stopped.is_set():
                return
            if found is not None and found[0] is StateType.CANCELLING and not self._notified:
                self._notified = True
                self.on_cancelling(found[1])
