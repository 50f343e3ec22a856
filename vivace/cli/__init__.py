"""The ``vivace`` command: settings, the run-history database, and the flow runs recorded in it.

    vivace config view [--show-defaults] [--show-sources]
    vivace db upgrade | reset [--yes]
    vivace flow-run ls [--state TYPE]... [--flow NAME] [--limit N] [--api-url URL]
    vivace flow-run inspect ID [--api-url URL]
    vivace flow-run logs ID [--level LEVEL] [--api-url URL]

Errors print one line, ``Error: ...``, and exit with 2 for bad input (an id, a state, a setting)
and 1 when the database cannot be used or the run does not exist. SQLAlchemy and rich are imported
inside the commands, so ``vivace --help`` stays quick.

The ``flow-run`` commands read the database, or, given ``--api-url`` (or ``VIVACE_API_URL``), a
vivace server's API through ``vivace.client`` (sending ``VIVACE_API_KEY``), with the same output.

The other command groups live in modules of this package, registered by the imports at the
bottom: ``flow-run retry`` and ``cache`` (results), ``flow-run watch`` (watch), ``flow-run
cancel`` (cancel), ``deploy`` and ``deployment`` (deployments), ``worker`` and ``work-queue``
(workers), ``block``, ``api-key``, ``server``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from vivace.exceptions import ConfigurationError, VivaceError

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table

    from vivace.client import VivaceClient
    from vivace.store.records import FlowRunRecord, LogRecord, StateRecord, TaskRunRecord

_STATE_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "bold red",
    "RUNNING": "blue",
    "CANCELLED": "bright_black",
    "CANCELLING": "bright_black",
    "SCHEDULED": "yellow",
    "PENDING": "yellow",
    "PAUSED": "yellow",
}
_INSPECT_TASK_RUNS = 200  # task runs listed by `flow-run inspect`
_LOG_PAGE = 1000


class _Failure(click.ClickException):
    """A one-line error: the database cannot be used, the run does not exist."""

    exit_code = 1


class _BadInput(_Failure):
    """A one-line error about what the user typed or set."""

    exit_code = 2


class _Group(click.Group):
    """Turns vivace's errors, raised anywhere below, into one-line CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except ConfigurationError as error:
            raise _BadInput(str(error)) from None
        except ValidationError as error:
            raise _BadInput(_describe_settings_error(error)) from None
        except VivaceError as error:
            raise _Failure(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """vivace: run Python workflows and look at what they did."""


def main() -> None:
    """Entry point of the ``vivace`` console script."""
    cli(prog_name="vivace")


# -- config -------------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Settings (read from VIVACE_* environment variables)."""


@config.command("view")
@click.option("--show-defaults", is_flag=True, help="Also list settings left at their default.")
@click.option("--show-sources", is_flag=True, help="Say where each value comes from.")
def config_view(show_defaults: bool, show_sources: bool) -> None:
    """Show the settings in force; by default only those changed from their default."""
    from vivace.settings import Settings, get_settings, setting_sources
    from vivace.store.database import masked_url

    settings = get_settings()
    sources = setting_sources()
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if not show_defaults and value == field.get_default(call_default_factory=True):
            continue
        if name == "database_url" and value:
            value = masked_url(value)
        source = f" (from {sources[name]})" if show_sources else ""
        click.echo(f"VIVACE_{name.upper()}={'' if value is None else value}{source}")
    click.echo(f"Database URL in force: {masked_url(settings.resolved_database_url)}")


# -- db -----------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The run-history database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the latest schema (done automatically on first use too)."""
    from vivace.store.database import HEAD_REVISION, masked_url, upgrade_database

    url = _database_url()
    before = upgrade_database(url)
    if before == HEAD_REVISION:
        click.echo(f"The database at {masked_url(url)} is already at revision {HEAD_REVISION}.")
    else:
        was = "an empty database" if before is None else f"revision {before}"
        click.echo(f"Upgraded the database at {masked_url(url)} from {was} to {HEAD_REVISION}.")


@db.command("reset")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Delete all run history: drop every vivace table and create them again."""
    from vivace.store.database import masked_url, reset_database

    url = _database_url()
    if not yes:
        click.confirm(f"Delete all run history in {masked_url(url)}?", abort=True)
    reset_database(url)
    click.echo(f"Reset the database at {masked_url(url)}.")


# -- flow runs ----------------------------------------------------------------------------------


@cli.group("flow-run")
def flow_run() -> None:
    """Flow runs recorded in the run history."""


_api_url_option = click.option(
    "--api-url",
    metavar="URL",
    help=(
        "Read through the vivace server at URL (e.g. http://127.0.0.1:4200/api) instead of the "
        "database. Default: VIVACE_API_URL when set."
    ),
)


@flow_run.command("ls")
@click.option(
    "--state", "states", multiple=True, metavar="TYPE", help="Only runs in this state type."
)
@click.option("--flow", "flow_name", metavar="NAME", help="Only runs of this flow.")
@click.option("--limit", default=20, show_default=True, help="How many runs to list (1-1000).")
@_api_url_option
def flow_run_ls(
    states: tuple[str, ...], flow_name: str | None, limit: int, api_url: str | None
) -> None:
    """List flow runs, most recent first (those not started yet on top)."""
    runs, next_cursor = _history(api_url).read_flow_runs(
        flow_name=flow_name, state_types=states or None, limit=limit
    )
    if not runs:
        click.echo("No flow runs found.")
        return
    console = _console()
    console.print(_flow_runs_table(runs))
    if next_cursor is not None:
        console.print(f"Showing the first {limit} flow runs; use --limit to see more.")


@flow_run.command("inspect")
@click.argument("flow_run_id", metavar="ID")
@_api_url_option
def flow_run_inspect(flow_run_id: str, api_url: str | None) -> None:
    """Show a flow run: its details, state history, task runs and subflow runs."""
    history = _history(api_url)
    run = _existing_flow_run(history, flow_run_id)
    states = history.read_flow_run_states(run.id)
    task_runs, _ = history.read_task_runs(run.id, limit=_INSPECT_TASK_RUNS)
    task_run_count = history.count_task_runs(run.id)
    subflow_runs = history.read_subflow_runs(run.id)

    console = _console()
    console.print(_run_details(run))
    console.print()
    console.print(_states_table(states))
    console.print()
    if task_runs:
        console.print(_task_runs_table(task_runs, task_run_count))
    else:
        console.print("No task runs.")
    if subflow_runs:
        console.print()
        console.print(_flow_runs_table(subflow_runs, title="Subflow runs"))


@flow_run.command("logs")
@click.argument("flow_run_id", metavar="ID")
@click.option("--level", metavar="LEVEL", help="Only lines at this level or above (e.g. WARNING).")
@_api_url_option
def flow_run_logs(flow_run_id: str, level: str | None, api_url: str | None) -> None:
    """Print a flow run's logs (its task runs' included), oldest first."""
    history = _history(api_url)
    run = _existing_flow_run(history, flow_run_id)
    cursor: str | None = None
    printed = 0
    while True:
        lines, cursor = history.read_logs(
            flow_run_id=run.id, min_level=level, limit=_LOG_PAGE, cursor=cursor
        )
        for line in lines:
            stamp = line.timestamp.astimezone().isoformat(sep=" ", timespec="milliseconds")
            click.echo(f"{stamp} | {line.level_name:<8} | {line.name} - {line.message}")
        printed += len(lines)
        if cursor is None:
            break
    if not printed:
        click.echo("No logs found." if level is None else f"No logs at {level} or above.")


# -- helpers ------------------------------------------------------------------------------------


def _database_url() -> str:
    from vivace.settings import get_settings

    return get_settings().resolved_database_url


class _DatabaseHistory:
    """The flow-run commands' reads, straight from the database (``vivace.store.queries``).

    Has the methods of ``vivace.client.VivaceClient`` that the commands use, with the same
    arguments, so a command reads the same way from either.
    """

    def __init__(self, url: str) -> None:
        from vivace.store import queries

        self.url = url
        self.queries = queries

    def read_flow_runs(self, **filters: Any) -> tuple[list[FlowRunRecord], str | None]:
        return self.queries.read_flow_runs(self.url, **filters)

    def read_flow_run(self, flow_run_id: uuid.UUID) -> FlowRunRecord | None:
        return self.queries.read_flow_run(self.url, flow_run_id)

    def read_flow_run_states(self, flow_run_id: uuid.UUID) -> list[StateRecord]:
        return self.queries.read_flow_run_states(self.url, flow_run_id)

    def read_task_runs(
        self, flow_run_id: uuid.UUID, **options: Any
    ) -> tuple[list[TaskRunRecord], str | None]:
        return self.queries.read_task_runs(self.url, flow_run_id, **options)

    def count_task_runs(self, flow_run_id: uuid.UUID) -> int:
        return self.queries.count_task_runs(self.url, flow_run_id)

    def read_subflow_runs(self, flow_run_id: uuid.UUID) -> list[FlowRunRecord]:
        return self.queries.read_subflow_runs(self.url, flow_run_id)

    def read_logs(self, **options: Any) -> tuple[list[LogRecord], str | None]:
        return self.queries.read_logs(self.url, **options)


def _history(api_url: str | None) -> _DatabaseHistory | VivaceClient:
    """Where the flow-run commands read: the server at ``api_url`` or VIVACE_API_URL, else the
    database."""
    from vivace.settings import get_settings

    if api_url or get_settings().api_url:
        from vivace.client import VivaceClient

        return VivaceClient.from_settings(api_url)
    return _DatabaseHistory(_database_url())


def _existing_flow_run(history: _DatabaseHistory | VivaceClient, flow_run_id: str) -> FlowRunRecord:
    from vivace._ids import parse_id

    run_id = parse_id(flow_run_id, "flow run id")
    run = history.read_flow_run(run_id)
    if run is None:
        raise _Failure(f"flow run {flow_run_id!r} not found in the run history")
    return run


def _describe_settings_error(error: ValidationError) -> str:
    """One line for a pydantic ValidationError of the settings, naming the variables."""
    problems = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if "VIVACE_" not in message:
            variable = "VIVACE_" + "_".join(str(part) for part in item["loc"]).upper()
            message = f"{variable}={item.get('input')!r}: {message}"
        problems.append(message)
    return "invalid setting: " + "; ".join(problems)


def _run_details(run: FlowRunRecord) -> Table:
    table = _table("", "", title=f"Flow run {run.name!r}", show_header=False)
    details: list[tuple[str, Any]] = [
        ("ID", str(run.id)),
        ("Flow", _text(run.flow_name)),
        ("State", _state(run.state_type.value, run.state_name)),
        ("Message", _text(run.state_message or "")),
        ("Started", _time(run.start_time)),
        ("Ended", _time(run.end_time)),
        ("Duration", _duration(run.duration)),
        ("Run count", str(run.run_count)),
        ("Tags", _text(", ".join(run.tags))),
        ("Parameters", _text(json.dumps(run.parameters, default=str))),
        ("Created", _time(run.created)),
    ]
    if run.parent_flow_run_id is not None:
        details.append(("Parent flow run", str(run.parent_flow_run_id)))
    for label, value in details:
        table.add_row(label, value)
    return table


def _states_table(states: Iterable[StateRecord]) -> Table:
    table = _table("#", "Type", "Name", "Time", "Message", title="State history")
    for state in states:
        table.add_row(
            str(state.seq),
            _state(state.type.value, state.type.value),
            _text(state.name),
            _time(state.timestamp),
            _text(state.message or ""),
        )
    return table


def _flow_runs_table(runs: Iterable[FlowRunRecord], title: str | None = None) -> Table:
    table = _table("ID", "Flow", "Name", "State", "Started", "Duration", title=title)
    for run in runs:
        table.add_row(
            str(run.id),
            _text(run.flow_name),
            _text(run.name),
            _state(run.state_type.value, run.state_name),
            _time(run.start_time),
            _duration(run.duration),
        )
    return table


def _task_runs_table(task_runs: list[TaskRunRecord], total: int) -> Table:
    shown = f" (first {len(task_runs)} of {total})" if total > len(task_runs) else f" ({total})"
    table = _table("ID", "Name", "State", "Started", "Duration", title="Task runs" + shown)
    for task_run in task_runs:
        table.add_row(
            str(task_run.id),
            _text(task_run.name),
            _state(task_run.state_type.value, task_run.state_name),
            _time(task_run.start_time),
            _duration(task_run.duration),
        )
    return table


def _console() -> Console:
    import sys

    from rich.console import Console

    # Piped output (grep, files) gets a wide console so ids and names are never cut.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _table(*columns: str, title: str | None = None, show_header: bool = True) -> Table:
    from rich.table import Table
    from rich.text import Text

    heading = None if title is None else Text(title, style="bold")  # not markup: names in it
    table = Table(title=heading, title_justify="left", show_header=show_header)
    for column in columns:
        table.add_column(column, no_wrap=column == "ID")
    return table


def _text(value: str) -> Any:
    from rich.text import Text

    return Text(value)  # never read as rich markup: names may contain [brackets]


def _state(state_type: str, name: str) -> Any:
    from rich.text import Text

    return Text(name, style=_STATE_STYLES.get(state_type, ""))


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# Command groups kept in their own modules register themselves on `cli` when imported; import
# them last, once `cli` exists. Their heavy imports stay inside the commands.
from vivace.cli import api_keys as _api_keys  # noqa: E402, F401
from vivace.cli import blocks as _blocks  # noqa: E402, F401
from vivace.cli import cancel as _cancel  # noqa: E402, F401
from vivace.cli import concurrency as _concurrency  # noqa: E402, F401
from vivace.cli import deployments as _deployments  # noqa: E402, F401
from vivace.cli import notifications as _notifications  # noqa: E402, F401
from vivace.cli import results as _results  # noqa: E402, F401
from vivace.cli import retention as _retention  # noqa: E402, F401
from vivace.cli import schedules as _schedules  # noqa: E402, F401
from vivace.cli import server as _server  # noqa: E402, F401
from vivace.cli import watch as _watch  # noqa: E402, F401
from vivace.cli import workers as _workers  # noqa: E402, F401
