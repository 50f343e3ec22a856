"""How long a deployment's run waits between being created and running, with a process worker.

LESSONS.md quotes the established orchestrator's process workers at 5-7 s from submission to
running. This script measures vivace's: it starts the real server (``vivace server start``) and a
real worker (``vivace worker start``) as processes on 127.0.0.1, deploys a flow of one no-op task
from a temporary project folder, then creates runs one at a time (each after the previous one
ended) and reads each run's state history from the store:

- *to running*: from the run's creation (SCHEDULED) to RUNNING: the worker's poll, the claim,
  starting ``python -m vivace.engine``, fetching the code from storage, importing the flow;
- *to completed*: from creation to COMPLETED;
- *claim*: from creation to PENDING ``Claimed`` (the worker's poll interval decides most of it).

Figures, not a test: see RESULTS.md.

    python benchmarks/worker_latency.py                      # SQLite, 20 runs, poll every 2 s
    python benchmarks/worker_latency.py --poll-interval 0.5 --runs 30
    python benchmarks/worker_latency.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/vivace_bench
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLOW = """
from vivace import flow, task


@task
def noop(x: int) -> int:
    return x


@flow
def tiny(x: int = 1) -> int:
    return noop(x)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--database-url", default=None)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vivace-worker-latency-") as folder:
        home = Path(folder)
        url = arguments.database_url or f"sqlite:///{home / 'vivace.db'}"
        os.environ.update(VIVACE_HOME=str(home / "home"), VIVACE_DATABASE_URL=url)
        project = home / "project"
        project.mkdir()
        (project / "flows.py").write_text(FLOW)
        (project / ".vivaceignore").write_text("")

        from vivace.deployments.runs import create_run
        from vivace.results.resume import load_flow
        from vivace.store.database import reset_database

        if arguments.database_url:
            reset_database(url)
        load_flow(f"{project / 'flows.py'}:tiny", "tiny").deploy("tiny", work_queue="bench")

        port = _free_port()
        api = f"http://127.0.0.1:{port}"
        vivace = str(Path(sys.executable).with_name("vivace"))
        logs = (home / "server.log").open("wb")
        server = subprocess.Popen(
            [vivace, "server", "start", "--port", str(port)], stdout=logs, stderr=logs
        )
        _wait_for(f"{api}/api/health")
        worker_command = [vivace, "worker", "start", "--queue", "bench", "--api-url", api]
        worker = subprocess.Popen(
            [*worker_command, "--poll-interval", str(arguments.poll_interval)],
            stdout=logs,
            stderr=logs,
        )
        try:
            time.sleep(arguments.poll_interval)  # registered and polling
            rows = [_one_run(url, create_run) for _ in range(arguments.runs)]
        finally:
            worker.terminate()
            server.terminate()
            worker.wait(30)
            server.wait(30)
    _report(rows, arguments)


def _one_run(url: str, create_run: object) -> dict[str, float]:
    from vivace.engine.states import FINAL_TYPES
    from vivace.store.queries import read_flow_run, read_flow_run_states

    run, _ = create_run(url, "tiny", {"x": 2})  # type: ignore[operator]
    while True:
        record = read_flow_run(url, run.id)
        if record is not None and record.state_type in FINAL_TYPES:
            break
        time.sleep(0.02)
    assert record.state_type.value == "COMPLETED", record.state_message
    states = read_flow_run_states(url, run.id)
    created = states[0].timestamp
    at = {state.name: (state.timestamp - created).total_seconds() for state in states}
    return {"claim": at["Claimed"], "to_running": at["Running"], "to_completed": at["Completed"]}


def _report(rows: list[dict[str, float]], arguments: argparse.Namespace) -> None:
    summary = {}
    for key in ("claim", "to_running", "to_completed"):
        values = sorted(row[key] for row in rows)
        summary[key] = {
            "median_s": round(statistics.median(values), 3),
            "p95_s": round(values[max(0, int(len(values) * 0.95) - 1)], 3),
            "min_s": round(values[0], 3),
        }
    print(json.dumps({"runs": len(rows), "poll_interval": arguments.poll_interval, **summary}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    main()
