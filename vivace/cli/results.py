"""``vivace cache ls | clear`` and ``vivace flow-run retry ID``: the cache index, and resuming.

    vivace cache ls [--task NAME] [--limit N]
    vivace cache clear [--task NAME] [--key KEY] [--yes]
    vivace flow-run retry ID

Clearing the cache removes index entries only: the persisted values stay in result storage,
where task runs may still refer to them.
"""

from __future__ import annotations

import click

from vivace.cli import _BadInput, _console, _database_url, _table, _text, _time, cli, flow_run


@cli.group()
def cache() -> None:
    """The task cache index (cache_policy / cache_key_fn)."""


@cache.command("ls")
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task.")
@click.option("--limit", default=50, show_default=True, help="How many entries to list (1-1000).")
def cache_ls(task_name: str | None, limit: int) -> None:
    """List cache entries, newest first."""
    from vivace.results import cache_index

    if not 1 <= limit <= 1000:
        raise _BadInput(f"--limit {limit} is out of range; expected a number from 1 to 1000")
    url = _database_url()
    entries = cache_index.read_entries(url, task_name=task_name, limit=limit)
    if not entries:
        click.echo("No cache entries found.")
        return
    total = cache_index.count_entries(url, task_name=task_name)
    table = _table("Key", "Task", "Created", "Expires", "Result")
    for entry in entries:
        table.add_row(
            _text(entry.key),
            _text(entry.task_name),
            _time(entry.created),
            "never" if entry.expires is None else _time(entry.expires),
            _text(f"{entry.result_storage} {entry.result_key} ({entry.result_serializer})"),
        )
    console = _console()
    console.print(table)
    if total > len(entries):
        console.print(f"Showing {len(entries)} of {total} entries; use --limit to see more.")


@cache.command("clear")
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task.")
@click.option("--key", metavar="KEY", help="Only the entry with this key.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(task_name: str | None, key: str | None, yes: bool) -> None:
    """Delete cache entries (all, one task's, or one key); stored values stay."""
    from vivace.results import cache_index

    url = _database_url()
    scope = " and ".join(
        part
        for part in (
            None if task_name is None else f"of task {task_name!r}",
            None if key is None else f"with key {key!r}",
        )
        if part
    )
    if not yes and task_name is None and key is None:
        click.confirm("Delete every cache entry?", abort=True)
    removed = cache_index.delete_entries(url, task_name=task_name, key=key)
    noun = "entry" if removed == 1 else "entries"
    click.echo(f"Deleted {removed} cache {noun}{' ' + scope if scope else ''}.")


@flow_run.command("retry")
@click.argument("flow_run_id", metavar="ID")
def flow_run_retry(flow_run_id: str) -> None:
    """Run a failed flow run again as a new attempt; completed tasks with persisted results
    are reused, so only the failed part runs."""
    from vivace._ids import parse_id
    from vivace.results.resume import resume_flow_run, retry_deployment_run
    from vivace.store.queries import read_flow_run

    run_id = parse_id(flow_run_id, "flow run id")
    record = read_flow_run(_database_url(), run_id)
    if record is not None and record.deployment_id is not None:
        rescheduled = retry_deployment_run(run_id)
        click.echo(
            f"Flow run {run_id} is back in work queue {rescheduled.work_queue_name!r}: a worker "
            f"runs attempt {rescheduled.run_count + 1}."
        )
        return
    state = resume_flow_run(run_id, return_state=True)
    click.echo(f"Flow run {run_id} finished in state {state.name} ({state.type.value}).")
    if not state.is_completed():
        if state.message:
            click.echo(state.message, err=True)
        raise SystemExit(1)
