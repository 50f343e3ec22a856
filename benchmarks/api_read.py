"""How fast the history API reads at scale: populate a big run history, serve it, time the reads.

The issue's target: with 1,000,000 task runs and 10,000 flow runs, the list and filter endpoints
answer in at most 50 ms at p95, on SQLite and on PostgreSQL. This script

1. fills a database straight through the driver with a realistic history (``fill_history.py``:
   several flows, mixed states, tags, parameters, start and end times over 30 days, task runs per
   flow run from 1 to 25,000 with a few big mapped runs, ``task_inputs`` linking each task run to
   its upstreams, the state history of every run, log lines);
2. starts the real server (``vivace server start`` in a subprocess, on 127.0.0.1) over it, or with
   ``--via store`` calls the store's read helpers that the endpoints call, in this process;
3. sends many requests per endpoint, one at a time, each variant with other ids, filters and
   cursors, and prints p50/p95 per endpoint.

Figures, not a test: see benchmarks/README.md and RESULTS.md.

    python benchmarks/api_read.py                                   # SQLite in a temp folder
    python benchmarks/api_read.py --reuse                           # keep the data for next time
    python benchmarks/api_read.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/vivace_bench
    python benchmarks/api_read.py --flow-runs 1000 --task-runs 100000 --requests 50
    python benchmarks/api_read.py --via store --explain --probe 'logs'
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from fill_history import (  # noqa: E402  (next to this file)
    EXTRA_TAGS,
    FLOWS,
    MAP_REDUCE,
    Sizes,
    existing_sizes,
    populate,
)

UTC = dt.UTC

# -- what to read ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Targets:
    """Ids and filter values to read, found in the populated database."""

    flow_names: list[str]
    tags: list[str]
    started_runs: list[str]  # random flow runs that started (any size)
    small_runs: list[str]  # random flow runs with 5 to 500 task runs
    big_runs: list[tuple[str, int]]  # (id, task runs), the biggest first
    graph_run: tuple[str, int]  # the big run nearest 10,000 task runs
    failed_big_run: str
    task_runs: list[str]  # random task runs
    reduce_task_runs: list[str]  # last task run of each big run: 10,000+ upstream ids
    chattiest_run: tuple[str, int]  # the big run with the most log lines, and how many
    first_start: dt.datetime
    last_start: dt.datetime


def find_targets(url: str, rng: random.Random) -> Targets:
    import sqlalchemy as sa

    from vivace.store import queries, schema
    from vivace.store.database import connect, get_engine

    engine = get_engine(url)
    runs = schema.flow_runs
    with connect(engine) as conn:
        started = [
            (str(row.id), row.flow_name, row.state_type)
            for row in conn.execute(
                sa.select(runs.c.id, runs.c.flow_name, runs.c.state_type).where(
                    runs.c.start_time.is_not(None)
                )
            )
        ]
        first_start, last_start = conn.execute(
            sa.select(sa.func.min(runs.c.start_time), sa.func.max(runs.c.start_time))
        ).one()
    big = [
        (run_id, queries.count_task_runs(engine, run_id))
        for run_id, f, _ in started
        if f == MAP_REDUCE.name
    ]
    big.sort(key=lambda item: -item[1])
    failed = [run_id for run_id, f, s in started if f == MAP_REDUCE.name and s == "FAILED"]
    sample = rng.sample(started, min(300, len(started)))
    small = [r for r, _, _ in sample if 5 <= queries.count_task_runs(engine, r) <= 500][:100]
    task_runs: list[str] = []
    for run_id, _, _ in sample[:100]:
        page, _ = queries.read_task_runs(engine, run_id, limit=50)
        task_runs.extend(str(t.id) for t in rng.sample(page, min(3, len(page))))
    reduce_runs = []
    for run_id, _ in big:
        page, _ = queries.read_task_runs(engine, run_id, name_like=MAP_REDUCE.tasks[2], limit=1)
        reduce_runs.extend(str(t.id) for t in page)
    log_lines = schema.logs
    with connect(engine) as conn:
        lines = {
            run_id: conn.execute(
                sa.select(sa.func.count()).where(log_lines.c.flow_run_id == uuid.UUID(run_id))
            ).scalar_one()
            for run_id, _ in big
        }
    return Targets(
        flow_names=[f.name for f in (*FLOWS, MAP_REDUCE)],
        tags=sorted({tag for f in FLOWS for tag in f.tags} | {t for t, _ in EXTRA_TAGS}),
        started_runs=[r for r, _, _ in sample],
        small_runs=small,
        big_runs=big,
        graph_run=min(big, key=lambda item: abs(item[1] - 10_000)),
        failed_big_run=failed[0] if failed else big[0][0],
        task_runs=task_runs,
        reduce_task_runs=reduce_runs,
        chattiest_run=max(lines.items(), key=lambda item: item[1]),
        first_start=first_start,
        last_start=last_start,
    )


@dataclasses.dataclass(frozen=True)
class Request:
    """One read: a route with its id filled in (if it has one) and query parameters."""

    route: str  # "/api/flow-runs/{id}/task-runs"
    id: str | None = None
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def path(self) -> str:
        return self.route.replace("{id}", self.id or "")

    def values(self, name: str) -> list[Any] | None:
        """Every value of a repeatable parameter (``state=A&state=B``); None if it is absent."""
        found = [value for key, value in self.params if key == name]
        return found or None

    def param(self, name: str, default: Any = None) -> Any:
        found = self.values(name)
        return default if found is None else found[0]

    def with_params(self, **more: Any) -> Request:
        extra = tuple((k, v) for k, v in more.items() if v is not None)
        return dataclasses.replace(self, params=self.params + extra)


def _req(route: str, id: str | None = None, **params: Any) -> Request:
    flat: list[tuple[str, Any]] = []
    for name, value in params.items():
        if isinstance(value, list):
            flat.extend((name, v) for v in value)
        elif value is not None:
            flat.append((name, value))
    return Request(route, id, tuple(flat))


# The store call behind each route (what the API's endpoint calls), for ``--via store``.
def _flow_run_filters(r: Request) -> dict[str, Any]:
    return {
        "flow_name": r.param("flow"),
        "state_types": r.values("state"),
        "tags": r.values("tag"),
        "started_after": _time_param(r.param("started_after")),
        "started_before": _time_param(r.param("started_before")),
    }


def _store_flow_runs(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    return queries.read_flow_runs(
        engine, **_flow_run_filters(r), limit=int(r.param("limit", 50)), cursor=r.param("cursor")
    )


def _store_counts(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    return queries.count_flow_runs_by_state(engine, **_flow_run_filters(r))


def _store_flow_run(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    run = queries.read_flow_run(engine, r.id or "")
    return run, queries.count_task_runs_by_state(engine, r.id)


def _store_task_runs(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    queries.read_flow_run(engine, r.id or "")  # the endpoint's 404 check
    return queries.read_task_runs(
        engine,
        r.id,
        state_types=r.values("state"),
        name_like=r.param("name_like"),
        limit=int(r.param("limit", 50)),
        cursor=r.param("cursor"),
    )


def _store_logs(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    queries.read_flow_run(engine, r.id or "")  # the endpoint's 404 check
    page = queries.read_log_page(
        engine,
        flow_run_id=r.id,
        min_level=r.param("level"),
        limit=int(r.param("limit", 200)),
        cursor=r.param("cursor"),
    )
    return page.records, page.next_cursor, page.resume_cursor


def _store_task_run(engine: Any, r: Request) -> Any:
    from vivace.store import queries

    run = queries.read_task_run(engine, r.id or "")
    upstreams = [uuid.UUID(i) for ids in (run.task_inputs if run else {}).values() for i in ids]
    return run, queries.read_task_runs_by_id(engine, upstreams)


def _store_graph(engine: Any, r: Request) -> Any:
    from vivace.server.graph import read_task_graph
    from vivace.store import queries

    queries.read_flow_run(engine, r.id or "")  # the endpoint's 404 check
    return read_task_graph(engine, r.id or "")


def _time_param(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


STORE_CALLS: dict[str, Callable[[Any, Request], Any]] = {
    "/api/flow-runs": _store_flow_runs,
    "/api/flow-runs/counts": _store_counts,
    "/api/flow-runs/{id}": _store_flow_run,
    "/api/flow-runs/{id}/task-runs": _store_task_runs,
    "/api/flow-runs/{id}/logs": _store_logs,
    "/api/flow-runs/{id}/graph": _store_graph,
    "/api/task-runs/{id}": _store_task_run,
}


@dataclasses.dataclass
class Probe:
    """One line of the results: a name and the requests it cycles through."""

    name: str
    requests: list[Request]


class Reader(abc.ABC):
    """Sends requests: timed, or for a page of a list (items, next cursor, resume cursor)."""

    @abc.abstractmethod
    def page(self, request: Request) -> tuple[list[Any], str | None, str | None]:
        """One page of a list."""

    @abc.abstractmethod
    def timed(self, request: Request) -> float:
        """Seconds to answer the request, the whole answer read."""

    def serves(self, route: str) -> bool:
        """Whether the route exists (the store has a call for every route)."""
        return True


class StoreReader(Reader):
    """The store calls behind each route, in this process: the database's share of a request."""

    def __init__(self, url: str) -> None:
        from vivace.store.database import ensure_schema, get_engine

        self.engine = get_engine(url)
        ensure_schema(self.engine)

    def page(self, request: Request) -> tuple[list[Any], str | None, str | None]:
        result = STORE_CALLS[request.route](self.engine, request)
        return result[0], result[1], result[2] if len(result) > 2 else None

    def timed(self, request: Request) -> float:
        started = time.perf_counter()
        STORE_CALLS[request.route](self.engine, request)
        return time.perf_counter() - started


class HttpReader(Reader):
    """httpx over one keep-alive connection to ``vivace server start`` in a subprocess."""

    def __init__(self, url: str) -> None:
        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.home = tempfile.mkdtemp(prefix="vivace-api-read-server-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIVACE_")}
        env.update(VIVACE_HOME=self.home, VIVACE_DATABASE_URL=url, PYTHONPATH=str(REPO))
        command = [str(Path(sys.executable).with_name("vivace")), "server", "start"]
        self.log = Path(self.home) / "server.log"
        with open(self.log, "wb") as log:  # uvicorn's access log: one line per request
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                spec = self.client.get("/api/openapi.json")
                if spec.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                output = self.log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"the server did not start on 127.0.0.1:{port}:\n{output}")
            time.sleep(0.2)
        self.routes = {re.sub(r"\{[^}]*\}", "{id}", path) for path in spec.json()["paths"]}

    def serves(self, route: str) -> bool:
        return route in self.routes

    def _get(self, request: Request) -> Any:
        response = self.client.get(request.path, params=list(request.params))
        if response.status_code != 200:
            raise RuntimeError(
                f"GET {response.url} -> {response.status_code}: {response.text[:300]}"
            )
        return response

    def page(self, request: Request) -> tuple[list[Any], str | None, str | None]:
        body = self._get(request).json()
        return body["items"], body["next_cursor"], body.get("resume_cursor")

    def timed(self, request: Request) -> float:
        started = time.perf_counter()
        self._get(request).read()
        return time.perf_counter() - started

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


def deep_cursors(reader: Reader, request: Request, count: int, walk_limit: int = 1000) -> list[str]:
    """Cursors of pages in the second half of a list, found by walking it with big pages."""
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        _, cursor, _ = reader.page(request.with_params(limit=walk_limit, cursor=cursor))
        if cursor is None:
            break
        cursors.append(cursor)
    deep = cursors[len(cursors) // 2 :] or cursors
    return [deep[i * len(deep) // count] for i in range(count)] if deep else []


def tail_cursor(reader: Reader, request: Request) -> str | None:
    """The cursor a live tail polls with once it has read every line of a log list."""
    cursor: str | None = None
    while True:
        _, next_cursor, resume = reader.page(request.with_params(limit=1000, cursor=cursor))
        if next_cursor is None:
            return resume
        cursor = next_cursor


def build_probes(reader: Reader, t: Targets, rng: random.Random) -> list[Probe]:
    """The reads the issue names, each with varied ids, filters and cursors."""
    runs, run_tasks, run_logs = (
        "/api/flow-runs",
        "/api/flow-runs/{id}/task-runs",
        "/api/flow-runs/{id}/logs",
    )
    span = (t.last_start - t.first_start).total_seconds()

    def window(hours: float) -> dict[str, str]:
        start = t.first_start + dt.timedelta(seconds=rng.uniform(0, max(span - hours * 3600, 1)))
        end = start + dt.timedelta(hours=hours)
        return {"started_after": start.isoformat(), "started_before": end.isoformat()}

    big_ids = [run_id for run_id, _ in t.big_runs]
    filters: list[dict[str, Any]] = [
        {},
        {"flow": "nightly-etl"},
        {"flow": "adhoc-debug"},
        {"tag": "critical"},
        {"tag": "incident-4711"},
        {"state": "FAILED"},
        window(24),
    ]
    probes = [
        Probe("flow runs: first page, no filter", [_req(runs, limit=50)]),
        Probe("flow runs: by flow", [_req(runs, flow=name, limit=50) for name in t.flow_names]),
        Probe(
            "flow runs: by state",
            [
                _req(runs, state=states, limit=50)
                for states in ("FAILED", "CRASHED", "RUNNING", "SCHEDULED", ["COMPLETED", "FAILED"])
            ],
        ),
        Probe(
            "flow runs: by tag",
            [_req(runs, tag=tag, limit=50) for tag in t.tags]
            + [_req(runs, tag=["etl", "critical"])],
        ),
        Probe(
            "flow runs: by time range (1 h, 1 day, 7 days)",
            [_req(runs, limit=50, **window(hours)) for hours in (1, 24, 168) for _ in range(10)],
        ),
        Probe(
            "flow runs: deep pages (cursor)",
            [
                _req(runs, limit=50, cursor=c)
                for c in deep_cursors(reader, _req(runs), 40, walk_limit=100)
            ],
        ),
        Probe(
            "flow runs: deep pages, by state FAILED (cursor)",
            [
                _req(runs, state="FAILED", limit=50, cursor=c)
                for c in deep_cursors(reader, _req(runs, state="FAILED"), 40, walk_limit=50)
            ],
        ),
        Probe("flow runs: counts by state", [_req(runs + "/counts", **f) for f in filters]),
        Probe("flow run: one (random)", [_req(runs + "/{id}", r) for r in t.started_runs]),
        Probe("flow run: one (10,000+ task runs)", [_req(runs + "/{id}", r) for r in big_ids]),
        Probe(
            "task runs of a small run: first page",
            [_req(run_tasks, r, limit=50) for r in t.small_runs],
        ),
        Probe(
            "task runs of a big run: first page", [_req(run_tasks, r, limit=50) for r in big_ids]
        ),
        Probe(
            "task runs of a big run: deep pages (cursor)",
            [
                _req(run_tasks, r, limit=50, cursor=c)
                for r in big_ids[:5]
                for c in deep_cursors(reader, _req(run_tasks, r), 8)
            ],
        ),
        Probe(
            "task runs of a big run: by state",
            [_req(run_tasks, t.failed_big_run, state=s, limit=50) for s in ("FAILED", "COMPLETED")]
            + [_req(run_tasks, r, state="FAILED", limit=50) for r in big_ids[:5]]
            + [
                _req(run_tasks, r, state=["CRASHED", "FAILED"], limit=50) for r in t.small_runs[:10]
            ],
        ),
        Probe(
            "task runs of a big run: by name",
            [
                _req(run_tasks, r, name_like=name, limit=50)
                for r in big_ids[:5]
                for name in ("reduce", "map_chunk-99", "split")
            ],
        ),
        Probe(
            "logs of a run: first page",
            [_req(run_logs, r, limit=200) for r in big_ids + t.started_runs[:40]],
        ),
        Probe(
            "logs of a run: deep pages (cursor)",
            [
                _req(run_logs, r, limit=200, cursor=c)
                for r in big_ids[:5]
                for c in deep_cursors(reader, _req(run_logs, r), 8)
            ],
        ),
        Probe(
            "logs of a run: live tail poll (cursor after the last line)",
            [
                _req(run_logs, r, limit=200, cursor=tail_cursor(reader, _req(run_logs, r)))
                for r in big_ids[:10] + t.started_runs[:20]
            ],
        ),
        Probe(
            "logs of a run: level filter",
            [
                _req(run_logs, r, level=level, limit=200)
                for r in big_ids[:10] + t.started_runs[:20]
                for level in ("WARNING", "ERROR")
            ],
        ),
        *_chattiest_run_probes(reader, t.chattiest_run),
        Probe("task run: one (random)", [_req("/api/task-runs/{id}", r) for r in t.task_runs]),
        Probe(
            "task run: one with 10,000+ upstreams",
            [_req("/api/task-runs/{id}", r) for r in t.reduce_task_runs],
        ),
        Probe(
            f"graph: run of {t.graph_run[1]:,} task runs",
            [_req(runs + "/{id}/graph", t.graph_run[0])],
        ),
        Probe("graph: small run", [_req(runs + "/{id}/graph", r) for r in t.small_runs]),
    ]
    for probe in probes:
        rng.shuffle(probe.requests)
    return probes


def _chattiest_run_probes(reader: Reader, run: tuple[str, int]) -> list[Probe]:
    """The log reads whose cost could grow with a run's lines, on the run with the most."""
    run_id, lines = run
    route = "/api/flow-runs/{id}/logs"
    where = f"logs of the chattiest run ({lines:,} lines)"
    cursors = deep_cursors(reader, _req(route, run_id), 20)
    return [
        Probe(
            f"{where}: deep pages (cursor)",
            [_req(route, run_id, limit=200, cursor=cursor) for cursor in cursors],
        ),
        Probe(
            f"{where}: live tail poll",
            [_req(route, run_id, limit=200, cursor=tail_cursor(reader, _req(route, run_id)))],
        ),
        Probe(
            f"{where}: level WARNING, or ERROR (it has none)",
            [_req(route, run_id, level=level, limit=200) for level in ("WARNING", "ERROR")],
        ),
    ]


def measure(reader: Reader, probe: Probe, count: int, budget: float = 30.0) -> dict[str, Any]:
    """Send ``count`` requests cycling through the probe's variants, after a short warm-up.

    A slow probe stops after ``budget`` seconds, with at least 20 requests.

    A variant that fails (an HTTP error, an exception in the store) is dropped and reported; the
    probe's figures are those of the variants that answered.
    """
    requests, errors = [], {}
    for request in probe.requests:
        if len(requests) >= 5:
            requests.append(request)
            continue
        try:
            reader.timed(request)  # warm-up, and a check that the variant answers
            requests.append(request)
        except Exception as error:
            errors[request.path] = " ".join(str(error).split())[:300]
    samples: list[float] = []
    deadline = time.monotonic() + budget
    while requests and len(samples) < count:
        if len(samples) >= 20 and time.monotonic() > deadline:
            break
        request = requests[len(samples) % len(requests)]
        try:
            samples.append(reader.timed(request) * 1000)
        except Exception as error:
            errors[request.path] = " ".join(str(error).split())[:300]
            requests.remove(request)
    result: dict[str, Any] = {"probe": probe.name, "variants": len(requests)}
    if errors:
        result["failed_variants"] = len(errors)
        result["first_error"] = next(iter(errors.values()))
    if len(samples) < 2:
        result["skipped"] = f"every variant failed: {result.get('first_error')}"
        return result
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    result.update(
        requests=len(samples),
        p50_ms=round(statistics.median(samples), 2),
        p95_ms=round(cuts[94], 2),
        max_ms=round(max(samples), 2),
    )
    return result


def explain(url: str, request: Request) -> list[str]:
    """The query plans of the SELECTs the store runs for ``request`` (``--explain``).

    SQLite: EXPLAIN QUERY PLAN. PostgreSQL: EXPLAIN (ANALYZE, BUFFERS), which runs the query.
    """
    import sqlalchemy as sa

    from vivace.store.database import get_engine

    engine = get_engine(url)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "alembic_version" not in statement:
            captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        STORE_CALLS[request.route](engine, request)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    sqlite = engine.dialect.name == "sqlite"
    lines = []
    for statement, parameters in captured:
        prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(prefix + statement, parameters).fetchall()
        lines.append("    " + " ".join(statement.split())[:400])
        lines.extend("      " + (str(row[-1]) if sqlite else str(row[0])) for row in rows)
    return lines


# -- the run --------------------------------------------------------------------------------------


def _postgres_database(url: str, create: bool) -> bool:
    """Create the URL's PostgreSQL database if missing (``create``); whether it was created."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": parsed.database}
            ).first()
            if exists is None and create:
                conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
                return True
            return False
    finally:
        admin.dispose()


def _drop_postgres_database(url: str) -> None:
    import sqlalchemy as sa

    from vivace.store.database import dispose_engines

    dispose_engines()
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    admin.dispose()


def _same_sizes(rows: dict[str, int], sizes: Sizes) -> bool:
    """Whether a database holds the history asked for (log lines are generated to within 5%)."""
    return (
        rows["flow_runs"] == sizes.flow_runs
        and rows["task_runs"] == sizes.task_runs
        and abs(rows["logs"] - sizes.logs) <= 0.05 * sizes.logs
    )


def _database_size_mb(url: str) -> float:
    import sqlalchemy as sa

    from vivace.store.database import connect, get_engine

    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return round(os.path.getsize(parsed.database or "") / 2**20, 1)
    with connect(get_engine(url)) as conn:
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    return round(size / 2**20, 1)


def _print_table(results: list[dict[str, Any]]) -> None:
    width = max(len(r["probe"]) for r in results)
    print(f"{'probe':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}  requests (variants)")
    for r in results:
        if "skipped" in r:
            print(f"{r['probe']:<{width}}  {'—':>8}  {'—':>8}  {'—':>8}  {r['skipped']}")
            continue
        print(
            f"{r['probe']:<{width}}  {r['p50_ms']:>8.2f}  {r['p95_ms']:>8.2f}  {r['max_ms']:>8.2f}"
            f"  {r['requests']} ({r['variants']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        help="the database to fill and read (default: a SQLite file in a temporary folder); "
        "a PostgreSQL database is created if it does not exist",
    )
    parser.add_argument("--flow-runs", type=int, default=10_000)
    parser.add_argument("--task-runs", type=int, default=1_000_000)
    parser.add_argument("--logs", type=int, default=2_000_000, help="log lines, about")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database afterwards, and skip filling it when it already holds as many "
        "flow runs, task runs and (within 5%%) log lines as asked (the default SQLite file "
        f"is then in {Path(tempfile.gettempdir()) / 'vivace-api-read'})",
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per probe")
    parser.add_argument(
        "--via",
        choices=("http", "store"),
        default="http",
        help="http: a uvicorn server in a subprocess, read with httpx; store: the read helpers "
        "the API calls, in this process",
    )
    parser.add_argument("--probe", action="append", help="only probes whose name matches (regex)")
    parser.add_argument("--explain", action="store_true", help="print each probe's query plans")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "api_read.json")
    args = parser.parse_args()

    os.environ["VIVACE_HOME"] = home = tempfile.mkdtemp(prefix="vivace-api-read-home-")
    for name in ("VIVACE_DATABASE_URL", "VIVACE_API_KEY", "VIVACE_API_KEYS"):
        os.environ.pop(name, None)
    folder: Path | None = None
    url = args.database_url
    if url is None:
        if args.reuse:
            folder = Path(tempfile.gettempdir()) / "vivace-api-read"
            folder.mkdir(exist_ok=True)
        else:
            folder = Path(tempfile.mkdtemp(prefix="vivace-api-read-"))
        url = f"sqlite:///{folder / 'vivace.db'}"
    backend = url.split(":", 1)[0].split("+", 1)[0]
    created_database = backend == "postgresql" and _postgres_database(url, create=True)
    sizes = Sizes(args.flow_runs, args.task_runs, args.logs)
    rng = random.Random(args.seed)
    reader: Reader | None = None
    try:
        existing = existing_sizes(url) if args.reuse else None
        if existing and _same_sizes(existing, sizes):
            population: dict[str, Any] = {"rows": existing, "reused": True}
            print(f"reusing {url}: {existing}", flush=True)
        else:
            print(f"filling {url} ...", flush=True)
            population = populate(url, sizes, args.seed)
            print(
                f"filled in {population['load_seconds']} s, indexes rebuilt in "
                f"{population['index_seconds']} s: {population['rows']}",
                flush=True,
            )
        population["database_mb"] = _database_size_mb(url)
        targets = find_targets(url, rng)
        reader = HttpReader(url) if args.via == "http" else StoreReader(url)
        load_before = os.getloadavg()
        results = []
        for probe in build_probes(reader, targets, rng):
            if args.probe and not any(re.search(p, probe.name) for p in args.probe):
                continue
            route = probe.requests[0].route if probe.requests else ""
            if not probe.requests:
                results.append({"probe": probe.name, "skipped": "no requests: the list is short"})
                continue
            if not reader.serves(route):
                results.append({"probe": probe.name, "skipped": f"the server has no {route}"})
                continue
            result = measure(reader, probe, args.requests)
            results.append(result)
            if "first_error" in result:
                print(
                    f"  {probe.name}: {result['failed_variants']} variant(s) failed: "
                    f"{result['first_error']}",
                    flush=True,
                )
            if "skipped" in result:
                continue
            print(
                f"  {result['probe']}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms",
                flush=True,
            )
            if args.explain:
                slowest = max(probe.requests[:50], key=reader.timed)
                print("\n".join(explain(url, slowest)), flush=True)
        meta = {
            "date": dt.datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "backend": backend,
            "via": args.via,
            "sizes": dataclasses.asdict(sizes),
            "population": population,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        }
        print()
        _print_table(results)
        print(f"\n{json.dumps(meta)}")
        args.output.parent.mkdir(exist_ok=True)
        args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    finally:
        if isinstance(reader, HttpReader):
            reader.close()
        if not args.reuse:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            elif created_database:
                _drop_postgres_database(url)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
