"""A flow whose tasks run on a long-lived Dask cluster, recorded into a shared database.

Every task run executes on a Dask worker, which records its own states and logs in the database
the flow's settings name: with workers on other machines (or in other containers) that database
must be one they can all reach, i.e. PostgreSQL. ``docker compose up`` (see docker-compose.yml)
runs this file against the compose file's scheduler and PostgreSQL. By hand::

    .venv/bin/dask scheduler --port 8786 &
    .venv/bin/dask worker tcp://127.0.0.1:8786 &
    VIVACE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:8786 .venv/bin/python examples/dask_flow.py

Without ``DASK_SCHEDULER_ADDRESS``, ``DaskTaskRunner`` starts a temporary local cluster for the
flow run instead. The last line printed is ``flow run id: <uuid>``, for
``vivace flow-run inspect``.
"""

from __future__ import annotations

import os
import random

from vivace import flow, get_run_logger, task
from vivace.engine.context import current_flow_run_id
from vivace.runners import DaskTaskRunner

SCHEDULER_ADDRESS = os.environ.get("DASK_SCHEDULER_ADDRESS") or None


@task(retries=2)
def measure(station: int, seed: int) -> float:
    """Pretend to read one weather station's temperature (degrees Celsius)."""
    temperature = round(random.Random(seed * 1_000 + station).uniform(-10.0, 35.0), 1)
    get_run_logger().info("station %d reads %.1f °C", station, temperature)
    return temperature


@task
def summarize(temperatures: list[float]) -> dict[str, float]:
    """The coldest, warmest and mean reading."""
    return {
        "min": min(temperatures),
        "max": max(temperatures),
        "mean": round(sum(temperatures) / len(temperatures), 2),
    }


@flow(name="dask-weather", task_runner=DaskTaskRunner(address=SCHEDULER_ADDRESS))
def weather(stations: int = 20, seed: int = 7) -> dict[str, float]:
    """Read every station on the cluster (one task run each), then summarize on the cluster."""
    logger = get_run_logger()
    where = SCHEDULER_ADDRESS or "a temporary local cluster"
    logger.info("reading %d stations on %s", stations, where)
    readings = measure.map(range(stations), seed=seed)  # seed is not iterable: passed to each
    summary = summarize.submit(readings).result()
    logger.info("summary: %s", summary)
    print(f"summary: {summary}")
    print(f"flow run id: {current_flow_run_id()}")
    return summary


if __name__ == "__main__":
    weather()
