"""``POST /api/flow-runs/{id}/cancel``: cancel a flow run (admin key).

Only runs created from a deployment can be cancelled (:mod:`vivace.store.run_control`). One
waiting in its work queue (SCHEDULED) is CANCELLED at once. One that is claimed or running (or
waiting for its engine to retry it) becomes CANCELLING: its worker stops its infrastructure when
it next heartbeats, or its engine notices on its own heartbeat and stops itself, and the run
then ends CANCELLED. Cancelling a run already CANCELLING or CANCELLED answers it as it is; one
that ended otherwise is a 409, and so is a run not created from a deployment (a plain flow call
or a subflow: nothing can stop it from the server; stop the process running it).

``/api/flow_runs/{id}/cancel`` (the issue's spelling) is the same endpoint, left out of the
schema so the API keeps one spelling of its paths.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from vivace.exceptions import FlowRunStateError
from vivace.server import auth, deps
from vivace.server.api.models import FlowRun, error_responses
from vivace.store import queries
from vivace.store.run_control import request_cancellation

router = APIRouter(tags=["flow runs"], dependencies=[Depends(auth.require_admin)])

DatabaseUrl = Annotated[str, Depends(deps.database_url)]
FlowRunId = Annotated[uuid.UUID, Path(description="The flow run's id.")]


@router.post(
    "/flow-runs/{flow_run_id}/cancel",
    response_model=FlowRun,
    responses=error_responses(403, 404, 409, 422, 503),
)
def cancel_flow_run(database_url: DatabaseUrl, flow_run_id: FlowRunId) -> FlowRun:
    """Cancel a deployment's run: CANCELLED at once if it waits in its queue, else CANCELLING
    until its worker or engine stops it. Answers with the run afterwards."""
    try:
        run = request_cancellation(database_url, flow_run_id)
    except FlowRunStateError as error:
        if queries.read_flow_run(database_url, flow_run_id) is None:
            raise HTTPException(404, f"flow run {flow_run_id} not found") from None
        raise HTTPException(409, str(error)) from None
    return FlowRun.from_record(run)


router.add_api_route(
    "/flow_runs/{flow_run_id}/cancel",
    cancel_flow_run,
    methods=["POST"],
    response_model=FlowRun,
    include_in_schema=False,
)
