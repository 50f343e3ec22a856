"""``vivace flow-run watch ID``: follow a flow run live until it ends.

    vivace flow-run watch ID [--api-url URL]

In a terminal it draws a rich Live view, redrawn about four times a second: the run's name and
state (colored as in ``flow-run ls``), a progress bar of its task runs finished out of those
recorded so far, and its latest log lines. Piped or captured output (no terminal) gets no
redrawing, only the final view once the run has ended. The exit code says how it ended: 0 for
COMPLETED, 1 for any other end, 130 when interrupted (the run itself goes on).

It reads the database (``VIVACE_DATABASE_URL``), or, given ``--api-url`` (or
``VIVACE_API_URL``), a vivace server's API through ``vivace.client``, with the same view. Each
refresh costs three small queries (or requests): the run, its task-run counts per state, and the
log lines written since the last refresh (the log page's resume cursor is kept, nothing is read
twice). ``vivace deployment run --watch`` follows the run it created the same way, through the
server when it created the run through one.
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import click

from vivace.cli import (
    _STATE_STYLES,
    _api_url_option,
    _console,
    _database_url,
    _duration,
    _Failure,
    _history,
    flow_run,
)

if TYPE_CHECKING:
    from rich.console import Console

    from vivace.client import VivaceClient
    from vivace.engine.states import StateType
    from vivace.store.queries import LogPage
    from vivace.store.records import FlowRunRecord, LogRecord

REFRESH_SECONDS = 0.25
LOG_LINES = 10
_LOG_PAGE = 500
_LOG_PAGES_PER_REFRESH = 4  # a run with a long log is caught up over a few refreshes


@flow_run.command("watch")
@click.argument("flow_run_id", metavar="ID")
@_api_url_option
@click.pass_context
def flow_run_watch(ctx: click.Context, flow_run_id: str, api_url: str | None) -> None:
    """Follow a flow run live (state, task progress, latest logs) until it ends.

    Exits 0 when the run COMPLETED, 1 when it ended otherwise.
    """
    from vivace._ids import parse_id
    from vivace.client import VivaceClient

    run_id = parse_id(flow_run_id, "flow run id")
    history = _history(api_url)  # the server at --api-url or VIVACE_API_URL, else the database
    source = history if isinstance(history, VivaceClient) else _database_url()
    ctx.exit(watch_flow_run(source, run_id))


def watch_flow_run(
    source: str | VivaceClient, flow_run_id: uuid.UUID, console: Console | None = None
) -> int:
    """Follow the run until it ends; return the exit code (0 COMPLETED, 1 otherwise, 130 if
    interrupted).

    ``source`` is the database's URL, or a client of the vivace server to read through.
    """
    from vivace.engine.states import FINAL_TYPES, StateType

    console = console or _console()
    reader = _DatabaseRuns(source) if isinstance(source, str) else source
    watcher = _Watcher(reader, flow_run_id)
    try:
        if console.is_terminal:
            from rich.live import Live

            with Live(watcher.view(), console=console, auto_refresh=False, transient=False) as live:
                while watcher.run.state_type not in FINAL_TYPES:
                    time.sleep(REFRESH_SECONDS)
                    watcher.refresh()
                    live.update(watcher.view(), refresh=True)
                watcher.refresh()  # what was written with the final state
                live.update(watcher.view(), refresh=True)
        else:
            while watcher.run.state_type not in FINAL_TYPES:
                time.sleep(REFRESH_SECONDS)
                watcher.refresh()
            watcher.refresh()
            console.print(watcher.view())
    except KeyboardInterrupt:
        console.print(
            f"Stopped watching flow run {watcher.run.name!r}; it goes on "
            f"(it is {watcher.run.state_name}).",
            markup=False,
        )
        return 130
    run = watcher.run
    took = "" if run.duration is None else f" in {_duration(run.duration)}"
    console.print(
        f"Flow run {run.name!r} ended {run.state_name} ({run.state_type.value}){took}.",
        markup=False,
        style=_STATE_STYLES.get(run.state_type.value, ""),
    )
    return 0 if run.state_type is StateType.COMPLETED else 1


class _RunReader(Protocol):
    """What the watcher reads: the database's (``_DatabaseRuns``) or a ``VivaceClient``."""

    def read_flow_run_progress(
        self, flow_run_id: uuid.UUID
    ) -> tuple[FlowRunRecord | None, dict[StateType, int]]: ...

    def read_log_page(
        self, *, flow_run_id: uuid.UUID, limit: int, cursor: str | None
    ) -> LogPage: ...


class _DatabaseRuns:
    """The watcher's reads straight from the database (``vivace.store.queries``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def read_flow_run_progress(
        self, flow_run_id: uuid.UUID
    ) -> tuple[FlowRunRecord | None, dict[StateType, int]]:
        from vivace.store.queries import count_task_runs_by_state, read_flow_run

        run = read_flow_run(self.url, flow_run_id)
        return run, {} if run is None else count_task_runs_by_state(self.url, flow_run_id)

    def read_log_page(self, *, flow_run_id: uuid.UUID, limit: int, cursor: str | None) -> LogPage:
        from vivace.store.queries import read_log_page

        return read_log_page(self.url, flow_run_id=flow_run_id, limit=limit, cursor=cursor)


class _Watcher:
    """What the view shows, read again on each refresh."""

    def __init__(self, reader: _RunReader, flow_run_id: uuid.UUID) -> None:
        self.reader = reader
        self.flow_run_id = flow_run_id
        self.logs: collections.deque[LogRecord] = collections.deque(maxlen=LOG_LINES)
        self.log_cursor: str | None = None
        self.counts: dict[StateType, int] = {}
        self.refresh()

    def refresh(self) -> None:
        # The run and its task counts in one read (one request through a server).
        run, self.counts = self.reader.read_flow_run_progress(self.flow_run_id)
        if run is None:
            raise _Failure(f"flow run {str(self.flow_run_id)!r} not found in the run history")
        self.run = run
        for _ in range(_LOG_PAGES_PER_REFRESH):
            page = self.reader.read_log_page(
                flow_run_id=self.flow_run_id, limit=_LOG_PAGE, cursor=self.log_cursor
            )
            self.logs.extend(page.records)
            self.log_cursor = page.resume_cursor
            if page.next_cursor is None:
                break

    def view(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        from vivace.engine.states import FINAL_TYPES, StateType

        run = self.run
        heading = Text.assemble(
            ("Flow run ", "bold"),
            (run.name, "bold"),
            f"  {run.flow_name}  ",
            (run.state_name, _STATE_STYLES.get(run.state_type.value, "")),
        )
        if run.state_message:
            heading.append(f"  {run.state_message}", style="dim")
        lines: list[Any] = [heading]
        if run.state_type is StateType.SCHEDULED and run.work_queue_name is not None:
            lines.append(
                Text(f"Waiting for a worker on work queue {run.work_queue_name!r}.", style="dim")
            )
        total = sum(self.counts.values())
        finished = sum(self.counts.get(kind, 0) for kind in FINAL_TYPES)
        failed = sum(self.counts.get(kind, 0) for kind in (StateType.FAILED, StateType.CRASHED))
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            ProgressBar(total=max(total, 1), completed=finished if total else 0, width=40),
            Text(
                f"{finished}/{total} task runs finished"
                + (f" ({failed} failed)" if failed else ""),
            ),
        )
        lines.append(progress)
        if self.logs:
            lines.append(Text("Latest logs:", style="bold"))
            for record in self.logs:
                stamp = record.timestamp.astimezone().strftime("%H:%M:%S")
                style = "red" if record.level >= 40 else "yellow" if record.level >= 30 else ""
                message, *more = record.message.splitlines() or [""]
                text = f"{stamp} {record.level_name:<8} {record.name} - {message}"
                lines.append(Text(text + (" ..." if more else ""), style))
        else:
            lines.append(Text("No logs yet.", style="dim"))
        return Group(*lines)
