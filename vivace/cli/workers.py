"""``vivace worker start`` and ``vivace work-queue``: who runs deployments, and where they wait.

    vivace worker start --queue Q [--queue Q2] [--limit 4] [--type process|docker|kubernetes|ecs]
                        [--name N] [--api-url URL] [--database-url URL] [--prefetch-seconds S]
                        [--poll-interval S] [--run-once]
    vivace work-queue ls
    vivace work-queue create NAME [--priority P] [--limit N]
    vivace work-queue pause NAME | resume NAME
    vivace work-queue set-concurrency NAME N|none

The worker talks to a vivace server (``--api-url`` or ``VIVACE_API_URL``, with an admin key in
``VIVACE_API_KEY`` once the server has keys); the runs it launches record into the database
(``--database-url``, else the worker's own ``VIVACE_DATABASE_URL``). The ``work-queue`` commands
read and change the database directly, like the other commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from vivace.cli import _BadInput, _console, _database_url, _Failure, _table, _text, _time, cli

# The infrastructure types (vivace.infrastructure.base.INFRASTRUCTURE_TYPES), spelled here so
# that `vivace --help` does not import the infrastructure module.
WORKER_TYPES = ("process", "docker", "kubernetes", "ecs")

if TYPE_CHECKING:
    from vivace.store.work_queues import WorkQueueRecord


@cli.group("worker")
def worker() -> None:
    """Workers: start the runs of deployments waiting in work queues."""


@worker.command("start")
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A work queue to take runs from (repeatable; created if new).",
)
@click.option(
    "--limit",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many runs at a time.",
)
@click.option(
    "--type",
    "worker_type",
    type=click.Choice(WORKER_TYPES),
    default="process",
    show_default=True,
    help="The infrastructure it starts runs on (it takes only runs of deployments of that type).",
)
@click.option("--name", metavar="NAME", help="The worker's name (default: type, host and pid).")
@click.option(
    "--api-url",
    metavar="URL",
    help="The vivace server, e.g. http://127.0.0.1:4200/api. Default: VIVACE_API_URL.",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="The database the runs record into. Default: the worker's VIVACE_DATABASE_URL.",
)
@click.option(
    "--prefetch-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, max=3600),
    help="Also claim runs due this soon, and launch each at its time.",
)
@click.option(
    "--poll-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between claims.",
)
@click.option("--run-once", is_flag=True, help="Claim once, run what was claimed, then exit.")
def worker_start(
    queues: tuple[str, ...],
    limit: int,
    worker_type: str,
    name: str | None,
    api_url: str | None,
    database_url: str | None,
    prefetch_seconds: float,
    poll_interval: float,
    run_once: bool,
) -> None:
    """Start a worker: claim due runs of its queues, launch them, watch them, until stopped
    (Ctrl-C or SIGTERM stops the runs it launched, then the worker)."""
    from vivace.engine.run_logging import setup_logging
    from vivace.settings import get_settings, secret_value
    from vivace.workers import Worker

    settings = get_settings()
    url = api_url or settings.api_url
    if not url:
        raise _BadInput(
            "no vivace server given; expected --api-url URL or VIVACE_API_URL, such as "
            "http://127.0.0.1:4200/api (start one with `vivace server start`)"
        )
    setup_logging()
    runner = Worker(
        url,
        api_key=secret_value(settings.api_key),
        queues=queues,
        limit=limit,
        worker_type=worker_type,
        name=name,
        prefetch_seconds=prefetch_seconds,
        poll_interval=poll_interval,
        database_url=database_url,
    )
    if run_once:
        handled = runner.run_once()
        click.echo(f"Ran {len(handled)} flow run(s).")
    else:
        runner.run()


@cli.group("work-queue")
def work_queue() -> None:
    """Work queues: where deployment runs wait for a worker."""


@work_queue.command("ls")
def work_queue_ls() -> None:
    """List the work queues, in the order workers serve them (priority, then name)."""
    from vivace.store.work_queues import count_active_runs, read_work_queues

    url = _database_url()
    queues = read_work_queues(url)
    if not queues:
        click.echo("No work queues yet; one is created by the first deploy or worker naming it.")
        return
    active = count_active_runs(url, [queue.name for queue in queues])
    table = _table("Name", "Priority", "Limit", "Paused", "Active runs", "Last polled")
    for queue in queues:
        table.add_row(
            _text(queue.name),
            str(queue.priority),
            "-" if queue.concurrency_limit is None else str(queue.concurrency_limit),
            "yes" if queue.paused else "no",
            str(active[queue.name]),
            _time(queue.last_polled),
        )
    _console().print(table)


@work_queue.command("create")
@click.argument("name")
@click.option(
    "--priority", type=int, help="Lower is served first by a worker of several queues (10)."
)
@click.option(
    "--limit",
    "concurrency_limit",
    type=click.IntRange(min=0),
    help="At most this many of its runs claimed and not over (default: no limit).",
)
def work_queue_create(name: str, priority: int | None, concurrency_limit: int | None) -> None:
    """Create a work queue."""
    from vivace.store.work_queues import read_work_queue, update_work_queue

    url = _database_url()
    if read_work_queue(url, name) is not None:
        raise _Failure(f"work queue {name!r} already exists; see `vivace work-queue ls`")
    queue = update_work_queue(url, name, priority=priority, concurrency_limit=concurrency_limit)
    click.echo(f"Created work queue {queue.name!r}: {_describe(queue)}.")


@work_queue.command("pause")
@click.argument("name")
def work_queue_pause(name: str) -> None:
    """Pause a work queue: workers take none of its runs until it is resumed."""
    queue = _update(name, paused=True)
    click.echo(f"Paused work queue {queue.name!r}.")


@work_queue.command("resume")
@click.argument("name")
def work_queue_resume(name: str) -> None:
    """Resume a paused work queue."""
    queue = _update(name, paused=False)
    click.echo(f"Resumed work queue {queue.name!r}.")


@work_queue.command("set-concurrency")
@click.argument("name")
@click.argument("limit", metavar="N|none")
def work_queue_set_concurrency(name: str, limit: str) -> None:
    """Set how many of a queue's runs may be claimed and not over at a time (none: no limit)."""
    if limit.strip().lower() == "none":
        value = None
    else:
        try:
            value = int(limit)
        except ValueError:
            value = -1
        if value < 0:
            raise _BadInput(
                f"concurrency limit {limit!r} is not valid; expected a whole number >= 0, or none"
            )
    queue = _update(name, concurrency_limit=value)
    click.echo(f"Work queue {queue.name!r}: {_describe(queue)}.")


def _update(name: str, **changes: Any) -> WorkQueueRecord:
    from vivace.store.work_queues import read_work_queue, update_work_queue

    url = _database_url()
    if read_work_queue(url, name) is None:
        raise _Failure(f"work queue {name!r} not found; see `vivace work-queue ls`")
    return update_work_queue(url, name, **changes)


def _describe(queue: WorkQueueRecord) -> str:
    limit = queue.concurrency_limit
    return (
        f"priority {queue.priority}, "
        + ("no concurrency limit" if limit is None else f"at most {limit} runs at a time")
        + (", paused" if queue.paused else "")
    )
