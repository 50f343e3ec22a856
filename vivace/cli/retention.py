"""``vivace db vacuum``: delete old run history now, what the retention service does every hour.

    vivace db vacuum [--older-than DAYS] [--dry-run] [--yes] [--compact]

It deletes the flow runs in a final state that ended more than DAYS days ago (default
``VIVACE_RETENTION_DAYS``), with their states, task runs and logs, and the rest that
:mod:`vivace.store.retention` lists, in transactions of ``VIVACE_RETENTION_BATCH_SIZE`` flow
runs, until none is left; then prints the rows deleted per table. ``--dry-run`` counts them
instead and changes nothing.

The space: PostgreSQL's autovacuum makes deleted rows' space reusable, and nothing more is done
there (``VACUUM FULL`` would lock the tables; run it yourself if you must shrink them). A SQLite
file reuses the freed pages for new rows but does not shrink; ``--compact`` runs ``VACUUM``,
which rewrites the file: it needs as much free disk again and makes every writer wait until it
is done, hence off by default.
"""

from __future__ import annotations

import datetime as dt

import click

from vivace.cli import _BadInput, _database_url, db


@db.command("vacuum")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0, min_open=True),
    metavar="DAYS",
    help="Delete runs that ended more than DAYS days ago. Default: VIVACE_RETENTION_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--compact",
    is_flag=True,
    help="SQLite: then rewrite the file to give the space back (VACUUM; writers wait).",
)
def db_vacuum(days: float | None, dry_run: bool, yes: bool, compact: bool) -> None:
    """Delete flow runs, task runs and logs that ended more than DAYS days ago."""
    from vivace.settings import get_settings
    from vivace.store.database import masked_url
    from vivace.store.retention import (
        compact_sqlite,
        count_expired,
        delete_expired,
        retention_cutoff,
    )

    settings = get_settings()
    days = days if days is not None else settings.retention_days
    if days is None:
        raise _BadInput(
            "no retention period given; expected --older-than DAYS or VIVACE_RETENTION_DAYS"
        )
    url = _database_url()
    cutoff = retention_cutoff(days)
    ended = dt.datetime.fromtimestamp(cutoff, dt.UTC).isoformat(" ", "seconds")
    what = f"the runs that ended before {ended} ({days:g} days ago) in {masked_url(url)}"
    if dry_run:
        counts = count_expired(url, cutoff)
        click.echo(f"Would delete {what}:")
        _print_counts(counts)
        return
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)
    report = delete_expired(url, cutoff, batch_size=settings.retention_batch_size)
    click.echo(f"Deleted {what}:")
    _print_counts(report.deleted)
    if compact:
        sizes = compact_sqlite(url)
        if sizes is None:
            click.echo("Not compacted: PostgreSQL's autovacuum reuses the space of deleted rows.")
        else:
            before, after = sizes
            click.echo(f"Compacted the SQLite file: {_size(before)} -> {_size(after)}.")


def _print_counts(counts: dict[str, int]) -> None:
    width = max(len(table) for table in counts)
    for table, count in counts.items():
        click.echo(f"  {table:<{width}}  {count:>10,}")


def _size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
