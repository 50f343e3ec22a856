"""A small ETL flow: fetch raw readings, clean each one concurrently, load the total.

Run it with ``./scripts/demo`` (which then shows the run history), or directly::

    VIVACE_HOME=/tmp/vivace-hello .venv/bin/python examples/hello_flow.py

The last line it prints is ``flow run id: <uuid>``, for ``vivace flow-run inspect``.
"""

from __future__ import annotations

import random

from vivace import flow, get_run_logger, task
from vivace.engine.context import current_flow_run_id
from vivace.runners import ConcurrentTaskRunner


@task(retries=2)
def extract(count: int, seed: int) -> list[float]:
    """Pretend to read ``count`` raw sensor readings (in tenths of a degree)."""
    rng = random.Random(seed)
    readings = [rng.uniform(-50.0, 400.0) for _ in range(count)]
    get_run_logger().info("extracted %d readings", len(readings))
    return readings


@task
def transform(raw: float) -> float:
    """Convert one reading to degrees Celsius, clamped to the sensor's range."""
    return round(min(max(raw, 0.0), 350.0) / 10.0, 2)


@task
def load(values: list[float]) -> float:
    """Pretend to write the cleaned values somewhere; return their sum."""
    total = round(sum(values), 2)
    get_run_logger().info("loaded %d values, total %.2f", len(values), total)
    return total


@flow(name="hello-etl", task_runner=ConcurrentTaskRunner())
def hello_etl(count: int = 8, seed: int = 42) -> float:
    logger = get_run_logger()
    logger.info("starting: %d readings", count)

    raw = extract.submit(count, seed).result()
    cleaned = transform.map(raw)  # one task run per reading, run concurrently
    total = load.submit([future.result() for future in cleaned]).result()

    logger.info("finished: total %.2f", total)
    print(f"total: {total}")
    print(f"flow run id: {current_flow_run_id()}")
    return total


if __name__ == "__main__":
    hello_etl()
