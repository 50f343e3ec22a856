"""``vivace flow-run cancel ID [--api-url URL]``: cancel a deployment's flow run.

Only runs created from a deployment can be cancelled: nothing on the server side could stop a
plain flow call or a subflow (stop the process running it); for those the command is an error.
A run that has not started is CANCELLED at once; a claimed or running one becomes CANCELLING,
and its worker (or its own engine, on its next heartbeat) stops it and ends it CANCELLED. The
command changes the database directly, or, given ``--api-url`` (or ``VIVACE_API_URL``), asks
the server (``POST /api/flow-runs/{id}/cancel``, which needs an admin key in VIVACE_API_KEY).
Cancelling a run that already ended otherwise is an error (exit 1).
"""

from __future__ import annotations

import click

from vivace.cli import _database_url, _history, flow_run


@flow_run.command("cancel")
@click.argument("flow_run_id", metavar="ID")
@click.option(
    "--api-url",
    metavar="URL",
    help=(
        "Cancel through the vivace server at URL (e.g. http://127.0.0.1:4200/api; an admin key "
        "in VIVACE_API_KEY) instead of in the database. Default: VIVACE_API_URL when set."
    ),
)
def flow_run_cancel(flow_run_id: str, api_url: str | None) -> None:
    """Cancel a deployment's flow run: at once if it has not started, else through its worker
    (or its engine's heartbeat)."""
    from vivace._ids import parse_id
    from vivace.client import VivaceClient
    from vivace.engine.states import StateType

    run_id = parse_id(flow_run_id, "flow run id")
    history = _history(api_url)  # the server at --api-url or VIVACE_API_URL, else the database
    if isinstance(history, VivaceClient):
        run = history.cancel_flow_run(run_id)
    else:
        from vivace.store.run_control import request_cancellation

        run = request_cancellation(_database_url(), run_id)
    if run.state_type is StateType.CANCELLED:
        click.echo(f"Flow run {run.name!r} ({run.id}) is cancelled.")
    else:
        click.echo(
            f"Flow run {run.name!r} ({run.id}) is {run.state_type.value}: its worker or engine "
            "stops it, and it ends CANCELLED."
        )
