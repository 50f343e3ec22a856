"""``vivace deploy`` and ``vivace deployment``: deploy flows, list them, run them.

    vivace deploy FILE.py:FLOW --name NAME [--queue Q] [--param k=v ...] [--tag T ...]
                  [--description D] [--storage BLOCK_OR_URL] [--infra TYPE|block:NAME]
                  [--cron EXPR ...] [--interval 15m ... [--anchor ISO]] [--rrule RULE ...]
                  [--timezone TZ] [--no-schedules] [--skip-late-after 10m]
                  [--concurrency-limit N]
    vivace deploy --all [--file vivace.yaml]      every deployment of the project file
    vivace deploy --name NAME [--file vivace.yaml]  one of them
    vivace deployment ls [--flow NAME] [--api-url URL]
    vivace deployment inspect NAME [--api-url URL]
    vivace deployment delete NAME [--yes] [--api-url URL]
    vivace deployment run NAME [--param k=v ...] [--start-in 10m | --start-at ISO]
                          [--idempotency-key K] [--tag T ...] [--watch] [--api-url URL]
    vivace deployment schedule ls | pause | resume ...   (vivace.cli.schedules)

Without FILE.py:FLOW, ``deploy`` reads ``vivace.yaml`` (``--file``, else the nearest one in the
current folder or above; see :mod:`vivace.deployments.project_file`); options given on the
command line then override the file's values (``--param`` updates its parameters). Every entry
is checked (its flow, parameters, infrastructure, storage) before any is uploaded, so an entry
that fails a check deploys nothing; an upload or save that fails later (storage or database
unreachable) leaves the entries deployed before it deployed.

``--param k=v`` values are read as JSON, except where the flow's parameter takes text
(``--param version=1.0`` gives a ``str`` parameter ``"1.0"``).

Schedules: ``--cron``, ``--interval`` and ``--rrule`` can each be repeated; together they
replace the deployment's schedules (crons first, then intervals, then rrules, which is their
order in ``schedule ls``), all in ``--timezone`` (default UTC); ``--anchor`` is when the
intervals count from. Without any of them a redeploy keeps the schedules the deployment has
(those of ``vivace.yaml`` when it lists ``schedules:``); ``--no-schedules`` removes them.

The ``deployment`` commands work straight on the database, or, given ``--api-url`` (or
``VIVACE_API_URL``; the option wins), through a vivace server's API with ``vivace.client``
(sending ``VIVACE_API_KEY``; ``run``, ``delete`` and ``schedule pause|resume`` need an admin
key), with the same output: for a machine that reaches the server but not its database. ``run``
reads the deployment first either way, to read each ``--param`` with its schema, and sends the
idempotency key and tags with the run; ``--watch`` then follows the run through the same
server. ``deploy`` itself uploads the project and writes the database: it has no ``--api-url``.

Errors print one line: exit 2 for bad input (a ``--param`` that is not NAME=VALUE or does not
match the flow, a bad ``--start-in``, an API key the server refuses), 1 when something is not
found or cannot be done (the server or the database cannot be reached).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vivace.cli import (
    _api_url_option,
    _BadInput,
    _console,
    _Failure,
    _flow_runs_table,
    _history,
    _table,
    _text,
    _time,
    cli,
)

if TYPE_CHECKING:
    from vivace.client import VivaceClient
    from vivace.deployments.deploy import PreparedDeployment
    from vivace.schedules import Schedule
    from vivace.store.deployments import DeploymentRecord
    from vivace.store.records import FlowRunRecord
    from vivace.store.schedules import ScheduleRecord

_INSPECT_VERSIONS = 10
_INSPECT_RUNS = 10
_LIST_LIMIT = 1000  # the most one API page holds


# -- deploy -------------------------------------------------------------------------------------


@cli.command("deploy")
@click.argument("entrypoint", required=False, metavar="[FILE.py:FLOW]")
@click.option("--name", "-n", metavar="NAME", help="The deployment's name.")
@click.option("--queue", "-q", "work_queue", metavar="Q", help="Work queue of its runs.")
@click.option(
    "--param", "-p", "params", multiple=True, metavar="k=v", help="A default parameter (JSON)."
)
@click.option("--tag", "-t", "tags", multiple=True, metavar="T", help="A tag of its runs.")
@click.option("--description", "-d", metavar="D", help="What the deployment is for.")
@click.option(
    "--storage",
    metavar="BLOCK_OR_URL",
    help="Where to upload the project: a folder, an fsspec URL (s3://bucket/flows), block:NAME "
    "or a saved block's name. Default: VIVACE_DEPLOYMENT_STORAGE or $VIVACE_HOME/deployments.",
)
@click.option(
    "--infra",
    "infrastructure",
    metavar="TYPE",
    help="process (default), docker, kubernetes, ecs, or block:NAME of a saved one.",
)
@click.option(
    "--cron",
    "crons",
    multiple=True,
    metavar="EXPR",
    help='A cron schedule, e.g. "0 9 * * 1-5" (repeatable).',
)
@click.option(
    "--interval",
    "intervals",
    multiple=True,
    metavar="DURATION",
    help="An interval schedule: 15m, 1h30m, 2d, PT15M or seconds (repeatable).",
)
@click.option("--anchor", metavar="ISO", help="When the --interval schedules count from.")
@click.option(
    "--rrule",
    "rrules",
    multiple=True,
    metavar="RULE",
    help='An RFC 5545 schedule, e.g. "FREQ=WEEKLY;BYDAY=MO,WE" (repeatable).',
)
@click.option(
    "--timezone",
    metavar="TZ",
    help="The time zone of the schedules given, e.g. Europe/Lisbon (default UTC).",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Remove the deployment's schedules (without a schedule option they are kept).",
)
@click.option(
    "--skip-late-after",
    metavar="DURATION",
    help="Skip, rather than start, a run not started this long after its time: 10m, 1h.",
)
@click.option(
    "--concurrency-limit",
    type=int,
    metavar="N",
    help="At most N runs of the deployment claimed and not over at a time.",
)
@click.option("--all", "deploy_all", is_flag=True, help="Deploy every entry of vivace.yaml.")
@click.option(
    "--file",
    "project_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The project file (default: the nearest vivace.yaml in this folder or above).",
)
def deploy(
    entrypoint: str | None,
    name: str | None,
    work_queue: str | None,
    params: tuple[str, ...],
    tags: tuple[str, ...],
    description: str | None,
    storage: str | None,
    infrastructure: str | None,
    crons: tuple[str, ...],
    intervals: tuple[str, ...],
    anchor: str | None,
    rrules: tuple[str, ...],
    timezone: str | None,
    no_schedules: bool,
    skip_late_after: str | None,
    concurrency_limit: int | None,
    deploy_all: bool,
    project_file: Path | None,
) -> None:
    """Deploy a flow: upload its project folder and record how to run it.

    Give FILE.py:FLOW and --name, or deploy from vivace.yaml: --all, or --name of one entry.
    Schedules given (--cron, --interval, --rrule; crons first, then intervals, then rrules)
    replace the deployment's; without any, a redeploy keeps them (--no-schedules removes them).
    """
    from vivace.deployments.deploy import load_entrypoint, prepare_deployment
    from vivace.deployments.parameters import parameter_schema

    _parameters(params)  # NAME=VALUE or not: said before anything is loaded
    overrides: dict[str, Any] = {
        "work_queue": work_queue,
        "tags": list(tags) or None,
        "description": description,
        "storage": storage,
        "infrastructure": infrastructure,
        "schedules": _cli_schedules(crons, intervals, anchor, rrules, timezone, no_schedules),
        "skip_late_after": _duration("--skip-late-after", skip_late_after),
        "concurrency_limit": _concurrency_limit(concurrency_limit),
    }
    if entrypoint is not None:
        if deploy_all or project_file is not None:
            raise _BadInput("give either FILE.py:FLOW or --all/--file (vivace.yaml), not both")
        if not name:
            raise _BadInput("--name is required: the name to deploy the flow under")
        flow = load_entrypoint(entrypoint)
        given = {key: value for key, value in overrides.items() if value is not None}
        if params:
            given["parameters"] = _parameters(params, parameter_schema(flow))
        prepared = [prepare_deployment(flow, name, **given)]
    else:
        prepared = _prepare_from_project_file(project_file, name, deploy_all, params, overrides)
    for index, plan in enumerate(prepared):
        if index:
            click.echo()
        _report(plan.deploy(), plan.url)


def _prepare_from_project_file(
    path: Path | None,
    name: str | None,
    deploy_all: bool,
    params: tuple[str, ...],
    overrides: dict[str, Any],
) -> list[PreparedDeployment]:
    from vivace.deployments.project_file import (
        PROJECT_FILE,
        entry_named,
        find_project_file,
        prepare_entry,
        read_project_file,
    )

    if deploy_all == bool(name):
        raise _BadInput(
            "give FILE.py:FLOW --name NAME, or --all to deploy every entry of vivace.yaml, or "
            "--name NAME to deploy one of its entries"
        )
    found = path if path is not None else find_project_file()
    if found is None:
        raise _Failure(
            f"no {PROJECT_FILE} in {str(Path.cwd())!r} or a folder above it; give FILE.py:FLOW "
            "--name NAME, or --file PATH"
        )
    if not found.is_file():
        raise _Failure(f"project file {str(found)!r} does not exist")
    project = read_project_file(found)
    entries = project.deployments if deploy_all else [entry_named(project, str(name), found)]
    return [
        prepare_entry(entry, found.parent, parameter_texts=params, **overrides) for entry in entries
    ]


def _cli_schedules(
    crons: tuple[str, ...],
    intervals: tuple[str, ...],
    anchor: str | None,
    rrules: tuple[str, ...],
    timezone: str | None,
    no_schedules: bool,
) -> list[Schedule] | None:
    """The schedules the options give (None: none given, keep the deployment's)."""
    from vivace.exceptions import ConfigurationError
    from vivace.schedules import Cron, Interval, RRule, parse_interval

    given = [
        *(("--cron", text) for text in crons),
        *(("--interval", text) for text in intervals),
        *(("--rrule", text) for text in rrules),
    ]
    if no_schedules and given:
        raise _BadInput("give --no-schedules or schedules (--cron/--interval/--rrule), not both")
    if timezone is not None and not given:
        raise _BadInput(
            "--timezone is the time zone of the schedules given; give --cron, --interval or "
            "--rrule with it"
        )
    if anchor is not None and not intervals:
        raise _BadInput("--anchor is when the --interval schedules count from; give --interval")
    if no_schedules:
        return []
    if not given:
        return None
    # A time without a zone is in the schedules' (--timezone, else UTC), as Interval reads it.
    anchor_time = _start_at(anchor, "--anchor", local=False)
    schedules: list[Schedule] = []
    for option, text in given:
        try:
            if option == "--cron":
                schedules.append(Cron(text, timezone))
            elif option == "--interval":
                schedules.append(Interval(parse_interval(text), anchor_time, timezone))
            else:
                schedules.append(RRule(text, timezone))
        except ConfigurationError as error:
            raise _BadInput(f"{option} {text!r}: {error}") from None
    return schedules


def _report(record: DeploymentRecord, url: str) -> None:
    from vivace.deployments.parameters import run_command
    from vivace.deployments.storage import describe_storage
    from vivace.store.schedules import read_deployment_schedules

    click.echo(f"Deployed {record.name!r} (flow {record.flow_name!r}), version {record.version}.")
    click.echo(f"  entrypoint:     {record.entrypoint}")
    click.echo(f"  storage:        {describe_storage(record.storage)}")
    click.echo(f"  work queue:     {record.work_queue_name}")
    click.echo(f"  infrastructure: {record.infrastructure_type}")
    for schedule in read_deployment_schedules(url, record.id):
        paused = "" if schedule.active else " (paused)"
        click.echo(f"  schedule {schedule.position}:     {schedule.schedule.describe()}{paused}")
    if record.skip_late_after is not None:
        click.echo(f"  skip late after: {_seconds_text(record.skip_late_after)}")
    if record.concurrency_limit is not None:
        click.echo(f"  concurrency limit: {record.concurrency_limit} run(s) at a time")
    click.echo(f"Run it with: {run_command(record)}")
    # A worker only claims runs of its own infrastructure type (process by default).
    kind = record.infrastructure_type
    worker = f"vivace worker start --queue {_quoted(record.work_queue_name)}"
    click.echo(f"(a worker serving it: {worker}{'' if kind == 'process' else f' --type {kind}'})")


# -- deployment ls | inspect | delete | run ------------------------------------------------------


@cli.group("deployment")
def deployment() -> None:
    """Deployments: flows the server can run on demand."""


_api_url_admin_option = click.option(
    "--api-url",
    metavar="URL",
    help=(
        "Go through the vivace server at URL (e.g. http://127.0.0.1:4200/api; an admin key in "
        "VIVACE_API_KEY) instead of the database. Default: VIVACE_API_URL when set."
    ),
)


@deployment.command("ls")
@click.option("--flow", "flow_name", metavar="NAME", help="Only deployments of this flow.")
@_api_url_option
def deployment_ls(flow_name: str | None, api_url: str | None) -> None:
    """List deployments by name (their latest versions)."""
    from vivace.deployments.storage import describe_storage

    records = _deployments(api_url).read_deployments(flow_name=flow_name, limit=_LIST_LIMIT)
    if not records:
        click.echo("No deployments." if flow_name is None else f"No deployments of {flow_name!r}.")
        return
    table = _table("Name", "Flow", "Version", "Queue", "Infra", "Storage", "Updated")
    for record in records:
        table.add_row(
            _text(record.name),
            _text(record.flow_name),
            str(record.version),
            _text(record.work_queue_name),
            _text(record.infrastructure_type),
            _text(describe_storage(record.storage)),
            _time(record.updated),
        )
    _console().print(table)


@deployment.command("inspect")
@click.argument("name")
@_api_url_option
def deployment_inspect(name: str, api_url: str | None) -> None:
    """Show a deployment: its fields, parameters, versions and latest runs."""
    from vivace.deployments.storage import describe_storage, shown_infrastructure

    source = _deployments(api_url)
    record = _existing_deployment(source, name)
    details = _table("", "", title=f"Deployment {record.name!r}", show_header=False)
    for label, value in (
        ("ID", str(record.id)),
        ("Name", record.name),
        ("Version", str(record.version)),
        ("Flow", record.flow_name),
        ("Entrypoint", record.entrypoint),
        ("Storage", describe_storage(record.storage)),
        ("Infrastructure", json.dumps(shown_infrastructure(record.infrastructure), sort_keys=True)),
        ("Work queue", record.work_queue_name),
        ("Tags", ", ".join(record.tags)),
        ("Description", record.description or ""),
        ("Parameters", json.dumps(record.parameters, default=str)),
        ("Skip late after", _seconds_text(record.skip_late_after)),
        ("Concurrency limit", _limit_text(record.concurrency_limit)),
        ("Created", _time(record.created)),
        ("Updated", _time(record.updated)),
    ):
        details.add_row(label, _text(value))
    console = _console()
    console.print(details)
    console.print()
    console.print(_schema_table(record))
    console.print()
    schedules = source.read_deployment_schedules(record.id)
    if schedules:
        from vivace.cli.schedules import schedules_table

        console.print(schedules_table(schedules, title="Schedules"))
    else:
        console.print("No schedules.")
    console.print()
    versions = _table("Version", "Created", "Entrypoint", "Storage", title="Versions")
    for old in source.read_deployment_versions(record.id, limit=_INSPECT_VERSIONS):
        versions.add_row(
            str(old.version),
            _time(old.created),
            _text(old.entrypoint),
            _text(describe_storage(old.storage)),
        )
    if record.version > _INSPECT_VERSIONS:
        versions.caption = f"the latest {_INSPECT_VERSIONS} of {record.version} versions"
    console.print(versions)
    console.print()
    runs, _ = source.read_deployment_flow_runs(record.id, sort="created_desc", limit=_INSPECT_RUNS)
    if runs:
        console.print(_flow_runs_table(runs, title=f"Latest runs (up to {_INSPECT_RUNS})"))
    else:
        console.print("No runs yet.")


@deployment.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_api_url_admin_option
def deployment_delete(name: str, yes: bool, api_url: str | None) -> None:
    """Delete a deployment and its versions; its runs not started yet are cancelled."""
    source = _deployments(api_url)
    record = _existing_deployment(source, name)
    if not yes:
        click.confirm(
            f"Delete deployment {record.name!r} ({record.version} version(s)) and cancel its "
            "runs that have not started?",
            abort=True,
        )
    _, cancelled = source.delete_deployment(record.id)
    click.echo(f"Deleted deployment {record.name!r}; cancelled {cancelled} scheduled run(s) of it.")


@deployment.command("run")
@click.argument("name")
@click.option(
    "--param", "-p", "params", multiple=True, metavar="k=v", help="A parameter (JSON value)."
)
@click.option("--start-in", metavar="DURATION", help="Start later: 90s, 10m, 2h, 1d.")
@click.option("--start-at", metavar="ISO", help="Start at a time: 2026-12-01T08:00[+01:00].")
@click.option(
    "--idempotency-key",
    metavar="K",
    help="Retrying with the same key creates no second run: the first one is shown.",
)
@click.option("--tag", "-t", "tags", multiple=True, metavar="T", help="Tags of the run.")
@click.option("--watch", "-w", is_flag=True, help="Follow the run until it ends.")
@_api_url_admin_option
@click.pass_context
def deployment_run(
    ctx: click.Context,
    name: str,
    params: tuple[str, ...],
    start_in: str | None,
    start_at: str | None,
    idempotency_key: str | None,
    tags: tuple[str, ...],
    watch: bool,
    api_url: str | None,
) -> None:
    """Create a run of a deployment; a worker on its work queue starts it."""
    from vivace.deployments.runs import _check_run_options
    from vivace.exceptions import ParameterValidationError

    if start_in is not None and start_at is not None:
        raise _BadInput("give --start-in or --start-at, not both")
    start_in_seconds, start_time = _start_in(start_in), _start_at(start_at)
    # Said before anything is looked up, in the same words with or without a server.
    _check_run_options(idempotency_key, list(tags) or None)
    _parameters(params)  # NAME=VALUE or not
    source = _deployments(api_url)
    record = _existing_deployment(source, name)
    parameters = _parameters(params, record.parameter_schema)
    try:
        run, created = source.create_deployment_run(
            record.id,
            parameters=parameters,
            start_at=start_time,
            start_in_seconds=start_in_seconds,
            idempotency_key=idempotency_key,
            tags=list(tags) or None,
        )
    except ParameterValidationError as error:
        raise _BadInput(str(error)) from None
    if created:
        later = start_in_seconds is not None or start_time is not None
        when = _time(run.expected_start_time) if later else "now"
        click.echo(
            f"Created flow run {run.name!r} ({run.id}) of deployment {name!r} "
            f"(version {run.deployment_version}), to start {when} from work queue "
            f"{run.work_queue_name!r}."
        )
    else:
        click.echo(
            f"Flow run {run.name!r} ({run.id}) was already created with idempotency key "
            f"{idempotency_key!r}; no new run."
        )
    if watch:
        from vivace.cli.watch import watch_flow_run

        ctx.exit(watch_flow_run(source.url if isinstance(source, _Database) else source, run.id))
    click.echo(f"Follow it with: vivace flow-run watch {run.id}")


# -- where the deployment commands read and write ----------------------------------------------


class _Database:
    """The deployment commands' reads and writes straight in the database.

    Has the methods of ``vivace.client.VivaceClient`` that the commands use, with the same
    arguments and answers, so a command runs the same way on either.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def read_deployments(self, *, flow_name: str | None, limit: int) -> list[DeploymentRecord]:
        from vivace.store.deployments import read_deployments

        return read_deployments(self.url, flow_name=flow_name, limit=limit)

    def read_deployment(self, name_or_id: str) -> DeploymentRecord | None:
        from vivace.store.deployments import read_deployment

        return read_deployment(self.url, name_or_id)

    def read_deployment_versions(
        self, deployment_id: uuid.UUID, *, limit: int
    ) -> list[DeploymentRecord]:
        from vivace.store.deployments import read_deployment_versions

        return read_deployment_versions(self.url, deployment_id, limit=limit)

    def read_deployment_flow_runs(
        self, deployment_id: uuid.UUID, *, sort: str, limit: int
    ) -> tuple[list[FlowRunRecord], str | None]:
        from vivace.store.queries import read_flow_runs

        return read_flow_runs(self.url, deployment_id=deployment_id, sort=sort, limit=limit)

    def delete_deployment(self, deployment_id: uuid.UUID) -> tuple[DeploymentRecord, int]:
        from vivace.store.deployments import delete_deployment

        return delete_deployment(self.url, deployment_id)

    def read_deployment_schedules(self, deployment_id: uuid.UUID) -> list[ScheduleRecord]:
        from vivace.store.schedules import read_deployment_schedules

        return read_deployment_schedules(self.url, deployment_id)

    def pause_deployment_schedule(self, schedule_id: uuid.UUID) -> tuple[ScheduleRecord, int]:
        from vivace.store.schedules import set_schedule_active

        return set_schedule_active(self.url, schedule_id, False)

    def resume_deployment_schedule(self, schedule_id: uuid.UUID) -> ScheduleRecord:
        from vivace.store.schedules import set_schedule_active

        return set_schedule_active(self.url, schedule_id, True)[0]

    def create_deployment_run(
        self,
        deployment_id: uuid.UUID,
        *,
        parameters: dict[str, Any],
        start_at: dt.datetime | None,
        start_in_seconds: float | None,
        idempotency_key: str | None,
        tags: list[str] | None,
    ) -> tuple[FlowRunRecord, bool]:
        import time

        from vivace.deployments.runs import create_run

        start = None if start_at is None else start_at.timestamp()
        if start_in_seconds is not None:
            start = time.time() + start_in_seconds
        return create_run(
            self.url,
            deployment_id,
            parameters,
            expected_start_time=start,
            idempotency_key=idempotency_key,
            tags=tags,
        )


def _deployments(api_url: str | None) -> _Database | VivaceClient:
    """Where the deployment commands go: the server at ``api_url`` or VIVACE_API_URL, else the
    database (the same choice as the ``flow-run`` commands')."""
    from vivace.client import VivaceClient

    history = _history(api_url)
    return history if isinstance(history, VivaceClient) else _Database(history.url)


def _existing_deployment(source: _Database | VivaceClient, name: str) -> DeploymentRecord:
    from vivace.exceptions import DeploymentNotFoundError

    record = source.read_deployment(name)
    if record is None:
        raise DeploymentNotFoundError(
            f"no deployment named {name!r}; `vivace deployment ls` lists them"
        )
    return record


# -- helpers ------------------------------------------------------------------------------------


def _parameters(pairs: tuple[str, ...], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    from vivace.deployments.parameters import parse_cli_parameters
    from vivace.exceptions import ParameterValidationError

    try:
        return parse_cli_parameters(pairs, schema)
    except ParameterValidationError as error:
        raise _BadInput(str(error)) from None


def _start_in(start_in: str | None) -> float | None:
    """``--start-in`` in seconds."""
    from vivace.deployments.runs import parse_duration
    from vivace.exceptions import ConfigurationError

    if start_in is None:
        return None
    try:
        return parse_duration(start_in)
    except ConfigurationError as error:
        raise _BadInput(f"--start-in: {error}") from None


def _start_at(
    start_at: str | None, option: str = "--start-at", *, local: bool = True
) -> dt.datetime | None:
    """``--start-at`` (or ``option``) as a time; one without a zone is in the local one, or,
    without ``local``, left without a zone."""
    if start_at is None:
        return None
    try:
        when = dt.datetime.fromisoformat(start_at.strip())
    except ValueError:
        raise _BadInput(
            f"{option} {start_at!r} is not an ISO time; expected e.g. 2026-12-01T08:00 or "
            "2026-12-01T08:00+01:00"
        ) from None
    if when.tzinfo is None and local:
        when = when.astimezone()  # the local time zone
    return when


def _concurrency_limit(value: int | None) -> int | None:
    """``--concurrency-limit``, refused as bad input (exit 2, one line) before anything loads."""
    from vivace.deployments.deploy import _MAX_LIMIT

    if value is not None and not 1 <= value <= _MAX_LIMIT:
        raise _BadInput(
            f"--concurrency-limit is {value}; expected 1 to {_MAX_LIMIT} runs at a time "
            "(leave it out for no limit)"
        )
    return value


def _duration(option: str, text: str | None) -> float | None:
    """A duration option in seconds."""
    from vivace.deployments.runs import parse_duration
    from vivace.exceptions import ConfigurationError

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ConfigurationError as error:
        raise _BadInput(f"{option}: {error}") from None


def _seconds_text(seconds: float | None) -> str:
    """``skip_late_after`` in words (``10m``, ``1h30m``); empty when None."""
    from vivace.schedules import format_interval

    return "" if seconds is None else format_interval(dt.timedelta(seconds=seconds))


def _limit_text(limit: int | None) -> str:
    return "" if limit is None else f"{limit} run(s) at a time"


def _schema_table(record: DeploymentRecord) -> Any:
    from vivace.deployments.parameters import parameter_rows

    table = _table("Parameter", "Type", "Required", "Default", "Description", title="Parameters")
    for row in parameter_rows(record.parameter_schema, record.parameters):
        default = row.default or ""
        if row.deployment_default:
            default += " (deployment)"
        table.add_row(
            _text(row.name),
            _text(row.type),
            "yes" if row.required else "",
            _text(default),
            _text(row.description or ""),
        )
    if record.parameter_schema.get("additionalProperties"):
        table.caption = "other parameters are accepted too (**kwargs)"
    return table


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)
