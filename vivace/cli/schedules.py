"""``vivace deployment schedule``: list, pause and resume a deployment's schedules.

    vivace deployment schedule ls NAME [--api-url URL]
    vivace deployment schedule pause|resume NAME [--schedule ID|POSITION] [--api-url URL]

``pause`` stops the scheduler creating runs of a schedule (all of the deployment's without
``--schedule``) and removes its runs that have not started; ``resume`` undoes it (the next
scheduler loop creates its runs again). Like the other ``deployment`` commands
(:mod:`vivace.cli.deployments`, whose group these register on), they work straight on the
database or, with ``--api-url`` (or ``VIVACE_API_URL``), through a vivace server's API (``pause``
and ``resume`` need an admin key). Schedules are given with ``vivace deploy --cron/--interval/
--rrule`` or in ``vivace.yaml``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from vivace.cli import _api_url_option, _BadInput, _console, _Failure, _table, _text
from vivace.cli.deployments import (
    _api_url_admin_option,
    _Database,
    _deployments,
    _existing_deployment,
    _quoted,
    deployment,
)

if TYPE_CHECKING:
    from vivace.client import VivaceClient
    from vivace.store.schedules import ScheduleRecord


@deployment.group("schedule")
def deployment_schedule() -> None:
    """A deployment's schedules: list them, pause or resume them."""


@deployment_schedule.command("ls")
@click.argument("name")
@_api_url_option
def schedule_ls(name: str, api_url: str | None) -> None:
    """List a deployment's schedules and the next times each creates a run for."""
    source = _deployments(api_url)
    record = _existing_deployment(source, name)
    schedules = source.read_deployment_schedules(record.id)
    if not schedules:
        click.echo(
            f"Deployment {record.name!r} has no schedules; `vivace deploy ... --cron EXPR` "
            "gives it one."
        )
        return
    _console().print(schedules_table(schedules, title=f"Schedules of {record.name!r}"))


_which_option = click.option(
    "--schedule",
    "which",
    metavar="ID|POSITION",
    help="Only this schedule (its id, or its position in `schedule ls`); default: all.",
)


@deployment_schedule.command("pause")
@click.argument("name")
@_which_option
@_api_url_admin_option
def schedule_pause(name: str, which: str | None, api_url: str | None) -> None:
    """Pause a deployment's schedules: no new runs, and their runs not started are removed."""
    source = _deployments(api_url)
    chosen = _chosen_schedules(source, name, which)
    removed = 0
    for schedule in chosen:
        _, count = source.pause_deployment_schedule(schedule.id)
        removed += count
    click.echo(
        f"Paused {_schedules_text(chosen)} of deployment {name!r}; removed {removed} "
        "scheduled run(s) that had not started."
    )


@deployment_schedule.command("resume")
@click.argument("name")
@_which_option
@_api_url_admin_option
def schedule_resume(name: str, which: str | None, api_url: str | None) -> None:
    """Resume a deployment's schedules: the scheduler creates their runs again."""
    source = _deployments(api_url)
    chosen = _chosen_schedules(source, name, which)
    for schedule in chosen:
        source.resume_deployment_schedule(schedule.id)
    click.echo(
        f"Resumed {_schedules_text(chosen)} of deployment {name!r}; the scheduler creates "
        "their runs on its next loop."
    )


def _chosen_schedules(
    source: _Database | VivaceClient, name: str, which: str | None
) -> list[ScheduleRecord]:
    """The deployment's schedules that ``--schedule`` names (all of them without it)."""
    record = _existing_deployment(source, name)
    schedules = source.read_deployment_schedules(record.id)
    if not schedules:
        raise _Failure(f"deployment {record.name!r} has no schedules")
    if which is None:
        return schedules
    text = which.strip()
    for schedule in schedules:
        if text == str(schedule.id) or text == str(schedule.position):
            return [schedule]
    positions = ", ".join(str(schedule.position) for schedule in schedules)
    raise _BadInput(
        f"--schedule {which!r} is neither the id nor the position of a schedule of deployment "
        f"{record.name!r}; its positions are {positions} (`vivace deployment schedule ls "
        f"{_quoted(record.name)}` lists them with their ids)"
    )


def _schedules_text(schedules: list[ScheduleRecord]) -> str:
    if len(schedules) == 1:
        return f"schedule {schedules[0].position} ({schedules[0].schedule.describe()})"
    return f"{len(schedules)} schedules"


def schedules_table(schedules: list[ScheduleRecord], title: str | None = None) -> Any:
    """The schedules with their next times (in their own zones), as `schedule ls` and
    `deployment inspect` show them."""
    from vivace.deployments.schedule_info import local_text, upcoming_times

    table = _table("Position", "ID", "Schedule", "Parameters", "Status", "Next runs", title=title)
    for schedule in schedules:
        if schedule.active:
            times = upcoming_times(schedule.schedule)
            upcoming = ", ".join(local_text(when, schedule.schedule) for when in times)
            status = "active"
        else:
            upcoming, status = "", "paused"
        table.add_row(
            str(schedule.position),
            str(schedule.id),
            _text(schedule.schedule.describe()),
            _text(json.dumps(schedule.parameters, default=str) if schedule.parameters else ""),
            status,
            upcoming or "—",
        )
    return table
