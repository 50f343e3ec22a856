"""``vivace concurrency-limit``: limits on task tags and on ``vivace.concurrency(name)`` blocks.

    vivace concurrency-limit create TAG N [--inactive]           # task runs tagged TAG
    vivace concurrency-limit create --global NAME N [--inactive] # with vivace.concurrency(NAME)
    vivace concurrency-limit ls
    vivace concurrency-limit inspect NAME
    vivace concurrency-limit update NAME [--limit N] [--active | --inactive]
    vivace concurrency-limit delete NAME
    vivace concurrency-limit reset NAME

A tag's limit is named ``tag:TAG`` (as ``ls`` shows it); the other commands take that name, or
the bare tag when no limit has that exact name. ``inspect`` lists the live leases: who holds the
slots (host:pid, and the task or flow run). ``reset`` drops them all, for slots held by processes
known to be gone that you do not want to wait ``VIVACE_CONCURRENCY_LEASE_SECONDS`` for. The
commands read and change the database directly, like ``work-queue``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

from vivace.cli import (
    _BadInput,
    _console,
    _database_url,
    _Failure,
    _table,
    _text,
    _time,
    cli,
)

if TYPE_CHECKING:
    from vivace.store.concurrency import ConcurrencyLimitRecord


@cli.group("concurrency-limit")
def concurrency_limit() -> None:
    """Concurrency limits: how many task runs of a tag, or holders of a name, at once."""


@concurrency_limit.command("create")
@click.argument("name", metavar="TAG|NAME")
@click.argument("limit", type=click.IntRange(min=0, max=2**31 - 1))
@click.option(
    "--global",
    "is_global",
    is_flag=True,
    help="NAME is for `with vivace.concurrency(NAME)`, not a task tag.",
)
@click.option("--inactive", is_flag=True, help="Create it not enforced (activate it later).")
def concurrency_limit_create(name: str, limit: int, is_global: bool, inactive: bool) -> None:
    """Create a limit: at most LIMIT task runs tagged TAG running at once (or, with --global,
    LIMIT slots of NAME held at once)."""
    from vivace.store.concurrency import TAG_PREFIX, create_limit, tag_limit_name

    if is_global and name.startswith(TAG_PREFIX):
        # It would silently become the limit of the task tag after the prefix.
        raise _BadInput(
            f"--global limit name {name!r} starts with {TAG_PREFIX!r}, which names a task tag's "
            f"limit; expected a name without it, or `vivace concurrency-limit create "
            f"{name[len(TAG_PREFIX) :]} {limit}` for the tag's limit"
        )
    full_name = name if is_global or name.startswith(TAG_PREFIX) else tag_limit_name(name)
    record = create_limit(_database_url(), full_name, limit, active=not inactive)
    click.echo(f"Created concurrency limit {record.name!r}: {_describe(record)}.")


@concurrency_limit.command("ls")
def concurrency_limit_ls() -> None:
    """List the limits, with the slots in use now."""
    from vivace.store.concurrency import read_limits, slots_in_use

    url = _database_url()
    limits = read_limits(url)
    if not limits:
        click.echo(
            "No concurrency limits yet; create one with `vivace concurrency-limit create TAG N`."
        )
        return
    used = slots_in_use(url, [limit.name for limit in limits])
    table = _table("Name", "For", "Limit", "In use", "Active")
    for limit in limits:
        table.add_row(
            _text(limit.name),
            _text(_for(limit)),
            str(limit.limit),
            str(used[limit.name]),
            "yes" if limit.active else "no",
        )
    _console().print(table)


@concurrency_limit.command("inspect")
@click.argument("name")
def concurrency_limit_inspect(name: str) -> None:
    """Show a limit and who holds its slots now (its live leases)."""
    from vivace.store.concurrency import read_leases

    url = _database_url()
    limit = _limit(url, name)
    leases = read_leases(url, limit.name)
    used = sum(lease.occupy for lease in leases)
    console = _console()
    console.print(_text(f"Concurrency limit {limit.name!r} ({_for(limit)})"))
    console.print(_text(f"  {_describe(limit)}; {used} slot(s) in use"))
    console.print(_text(f"  created {_time(limit.created)}, updated {_time(limit.updated)}"))
    if not leases:
        console.print("No slot is held.")
        return
    now = dt.datetime.now(dt.UTC)
    table = _table("Holder", "Slots", "Acquired", "Expires in", "Lease ID")
    for lease in leases:
        table.add_row(
            _text(lease.holder),
            str(lease.occupy),
            _time(lease.acquired),
            f"{max(0.0, (lease.expires - now).total_seconds()):.0f}s",
            str(lease.id),
        )
    console.print(table)


@concurrency_limit.command("update")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0, max=2**31 - 1), help="The new number of slots.")
@click.option(
    "--active/--inactive",
    default=None,
    help="Enforce the limit, or keep it without enforcing it.",
)
def concurrency_limit_update(name: str, limit: int | None, active: bool | None) -> None:
    """Change a limit's number of slots, or whether it is enforced."""
    from vivace.store.concurrency import update_limit

    if limit is None and active is None:
        raise click.UsageError("nothing to change; expected --limit N, --active or --inactive")
    url = _database_url()
    record = update_limit(url, _limit(url, name).name, limit=limit, active=active)
    click.echo(f"Concurrency limit {record.name!r}: {_describe(record)}.")


@concurrency_limit.command("delete")
@click.argument("name")
def concurrency_limit_delete(name: str) -> None:
    """Delete a limit (and its leases): what it limited runs unlimited."""
    from vivace.store.concurrency import delete_limit

    url = _database_url()
    record = _limit(url, name)
    delete_limit(url, record.name)
    click.echo(f"Deleted concurrency limit {record.name!r}.")


@concurrency_limit.command("reset")
@click.argument("name")
def concurrency_limit_reset(name: str) -> None:
    """Drop every lease of a limit: its slots are free at once, even those held by processes
    still running (they go on, and log that they lost their lease)."""
    from vivace.store.concurrency import reset_limit

    url = _database_url()
    record = _limit(url, name)
    dropped = reset_limit(url, record.name)
    click.echo(f"Reset concurrency limit {record.name!r}: dropped {dropped} lease(s).")


def _limit(url: str, name: str) -> ConcurrencyLimitRecord:
    from vivace.store.concurrency import find_limit

    record = find_limit(url, name)
    if record is None:
        raise _Failure(
            f"concurrency limit {name!r} not found (nor 'tag:{name}'); "
            "see `vivace concurrency-limit ls`"
        )
    return record


def _for(limit: ConcurrencyLimitRecord) -> str:
    tag = limit.tag
    return f"task runs tagged {tag!r}" if tag is not None else f"vivace.concurrency({limit.name!r})"


def _describe(limit: ConcurrencyLimitRecord) -> str:
    slots = f"{limit.limit} slot{'s' if limit.limit != 1 else ''}"
    return slots + ("" if limit.active else ", inactive (not enforced)")
