"""``/metrics`` in Prometheus text format: run history, writers' health, the server's latency.

The figures come from the database at scrape time (a custom collector), so any number of servers
over one database report the same values and nothing is kept between scrapes. Each app has its
own ``CollectorRegistry`` (``install``), never the process-wide one, so two apps in one process
(tests, several databases) do not collide. What one scrape costs:

- ``vivace_flow_runs{state}``: one ``GROUP BY state_type`` over all flow runs (there are few of
  them next to task runs);
- ``vivace_task_runs{state}`` and ``vivace_task_runs_finished_per_second``: one range scan of the
  ``start_time`` index over the task runs started in the last ``TASK_RUN_WINDOW_SECONDS``, never
  the whole table. Over 1M task runs, 20,000 of them in the last hour, a scrape took 8-12 ms on
  SQLite and PostgreSQL, where counting them all takes 175-255 ms; a busy hour costs more (85-155
  ms with 200,000). ``end_time`` has no index, on purpose (it would slow every task's write), so
  "finished in the last minute" is counted among the runs of that window: a task run that started
  earlier is not counted;
- writer health: the ``writer_stats`` rows refreshed within three ``VIVACE_WRITER_STATS_INTERVAL``
  (one row per live writer, on the ``updated`` index).

``vivace_database_up`` is 0, and the history figures are missing, while the database cannot be
read; the scrape itself still succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vivace.engine.states import StateType
from vivace.exceptions import StoreError
from vivace.server.auth import route_path
from vivace.settings import get_settings
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine
from vivace.store.queries import count_flow_runs_by_state

TASK_RUN_WINDOW_SECONDS = 3600.0
"""Task runs are counted among those that started this recently (see the module docstring)."""
FINISHED_RATE_SECONDS = 60.0
"""``vivace_task_runs_finished_per_second`` averages over this many seconds."""
WRITER_ALIVE_INTERVALS = 3
"""A writer whose row is older than this many stats intervals counts as gone."""

_REGISTRY_STATE = "vivace_metrics_registry"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNROUTED = "<unrouted>"
_WRITER_LABELS = ("hostname", "pid")

_logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The app's metrics, in Prometheus text format (read from the database now)."""
    registry: CollectorRegistry = getattr(request.app.state, _REGISTRY_STATE)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Give ``app`` its registry, the history collector and the request latency histogram.

    Call it after ``auth.install``: its middleware then wraps access control, so refused
    requests are timed too.
    """
    registry = CollectorRegistry()
    registry.register(HistoryCollector(app.state.database_url))
    latency = Histogram(
        "vivace_http_request_duration_seconds",
        "Time the server took to answer HTTP requests, by route template, method and status.",
        ["route", "method", "status"],
        registry=registry,
    )
    setattr(app.state, _REGISTRY_STATE, registry)
    app.add_middleware(RequestLatencyMiddleware, latency=latency)


class HistoryCollector(Collector):
    """Reads the run history and the writers' health rows at every scrape."""

    def __init__(self, database_url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.database_url = database_url
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "vivace_database_up", "1 if the run-history database could be read for this scrape."
        )
        try:
            families = self._history_families(self.clock())
        except StoreError as error:
            _logger.warning("/metrics cannot read the run-history database: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _history_families(self, now: float) -> list[Metric]:
        engine = get_engine(self.database_url)
        ensure_schema(engine)
        flow_runs = count_flow_runs_by_state(engine)
        task_runs, finished = _recent_task_runs(engine, now)
        writers = _live_writers(engine, now, get_settings().writer_stats_interval)
        return [
            _by_state(
                "vivace_flow_runs",
                "Flow runs in the run history, by current state type.",
                flow_runs,
            ),
            _by_state(
                "vivace_task_runs",
                f"Task runs that started in the last {TASK_RUN_WINDOW_SECONDS:.0f} s, by current "
                "state type (a recent window, so that a scrape never scans every task run).",
                task_runs,
            ),
            GaugeMetricFamily(
                "vivace_task_runs_finished_per_second",
                f"Task runs that ended in the last {FINISHED_RATE_SECONDS:.0f} s, per second "
                f"(among those that started in the last {TASK_RUN_WINDOW_SECONDS:.0f} s).",
                value=finished / FINISHED_RATE_SECONDS,
            ),
            *_writer_families(writers),
        ]


def _by_state(name: str, documentation: str, counts: dict[StateType, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state_type in StateType:
        family.add_metric([state_type.value], counts.get(state_type, 0))
    return family


def _recent_task_runs(engine: sa.Engine, now: float) -> tuple[dict[StateType, int], int]:
    """Task runs started in the window, per state type, and how many of them ended lately."""
    table = schema.task_runs
    ended_lately = sa.func.coalesce(
        sa.func.sum(sa.case((table.c.end_time >= now - FINISHED_RATE_SECONDS, 1), else_=0)), 0
    )
    query = (
        sa.select(table.c.state_type, sa.func.count(), ended_lately)
        .where(table.c.start_time >= now - TASK_RUN_WINDOW_SECONDS)
        .group_by(table.c.state_type)
    )
    counts: dict[StateType, int] = {}
    finished = 0
    with connect(engine) as conn:
        for state_type, count, ended in conn.execute(query):
            counts[StateType(state_type)] = count
            finished += int(ended)
    return counts, finished


def _live_writers(engine: sa.Engine, now: float, interval: float) -> list[sa.Row[Any]]:
    """The newest row of each (hostname, pid) refreshed within the last few intervals."""
    table = schema.writer_stats
    query = (
        sa.select(
            table.c.hostname,
            table.c.pid,
            table.c.queue_depth,
            table.c.last_flush_seconds,
            table.c.records_written,
            table.c.flushes,
        )
        .where(table.c.updated >= now - WRITER_ALIVE_INTERVALS * interval)
        .order_by(table.c.updated)
    )
    with connect(engine) as conn:
        rows: list[sa.Row[Any]] = list(conn.execute(query))
    # A pid reused on the same host within the window: one series, the newer writer's.
    return list({(row.hostname, row.pid): row for row in rows}.values())


def _writer_families(writers: Sequence[sa.Row[Any]]) -> list[Metric]:
    queue_depth = GaugeMetricFamily(
        "vivace_writer_queue_depth",
        "Records queued in a background writer, waiting for its next flush.",
        labels=_WRITER_LABELS,
    )
    last_flush = GaugeMetricFamily(
        "vivace_writer_last_flush_seconds",
        "How long a background writer's last flush to the database took.",
        labels=_WRITER_LABELS,
    )
    records = CounterMetricFamily(
        "vivace_writer_records_written",
        "Records a background writer has written since its process started.",
        labels=_WRITER_LABELS,
    )
    flushes = CounterMetricFamily(
        "vivace_writer_flushes",
        "Flushes (batched transactions) a background writer has made since its process started.",
        labels=_WRITER_LABELS,
    )
    for row in writers:
        labels = [row.hostname, str(row.pid)]
        queue_depth.add_metric(labels, row.queue_depth)
        last_flush.add_metric(labels, row.last_flush_seconds)
        records.add_metric(labels, row.records_written)
        flushes.add_metric(labels, row.flushes)
    alive = GaugeMetricFamily(
        "vivace_writers_alive",
        f"Background writers (one per recording process) that reported in the last "
        f"{WRITER_ALIVE_INTERVALS} VIVACE_WRITER_STATS_INTERVAL periods.",
        value=len(writers),
    )
    return [queue_depth, last_flush, records, flushes, alive]


class RequestLatencyMiddleware:
    """Times every HTTP request into ``latency``, labelled by route template, not raw path.

    The template (``/api/flow-runs/{flow_run_id}``) keeps the number of series bounded whatever
    paths clients send. A request no route handled (not found, or refused by access control
    before routing) is ``<unrouted>``; an unusual method is ``OTHER``.
    """

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)  # now: routing into a Mount changes the scope's root_path
        status = 500  # if the app raises before answering, the server answers 500
        started = time.perf_counter()

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            template = route_template(scope.get("route"), path)
            self.latency.labels(template, method, str(status)).observe(
                time.perf_counter() - started
            )


def route_template(route: Any, path: str) -> str:
    """The template of the route that handled ``path``, with the prefix of its router.

    FastAPI keeps an included router's routes with their own path (``/flow-runs/{id}``) and
    matches the prefix separately; the prefix is the shortest leading part of ``path`` after
    which the route's pattern matches. vivace's routers have fixed prefixes (``/api``).
    """
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return _UNROUTED
    pattern = getattr(route, "path_regex", None)
    if pattern is None or pattern.match(path):
        return template
    for cut in range(1, len(path)):
        if path[cut] == "/" and pattern.match(path[cut:]):
            return path[:cut] + template
    return template
