"""Helpers shared by the deployment tests."""

from __future__ import annotations

import threading
import time
import uuid

from vivace.engine.states import StateType
from vivace.store.database import get_engine, transaction
from vivace.store.queries import read_flow_runs
from vivace.store.run_control import transition_flow_run


def crash_first_run_soon(url: str, deployment_id: uuid.UUID) -> threading.Thread:
    """A started thread that waits (up to 20 s) for the deployment's first run and ends it
    CRASHED as a worker would report a process exiting with code 9 (for ``--watch`` tests)."""

    def crash_it() -> None:
        deadline = time.monotonic() + 20
        while not (runs := read_flow_runs(url, deployment_id=deployment_id)[0]):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        with transaction(get_engine(url)) as conn:
            transition_flow_run(
                conn,
                runs[0].id,
                StateType.CRASHED,
                "Crashed",
                "process 42 exited with code 9",
                allowed_from=(StateType.SCHEDULED,),
            )

    thread = threading.Thread(target=crash_it, daemon=True)
    thread.start()
    return thread
